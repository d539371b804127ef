"""`fizz serve`'s schedules over real HTTP: every route, every error, the token, and the
materialiser that `fizz serve` runs (occurrences become tasks with no worker running).

Servers run as real processes (see serving.py); each test's servers must stop with exit 0
and without a traceback on stderr.
"""

from __future__ import annotations

import json
import time
import zoneinfo
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
import serving
from helpers import PgServer, WorkerProc, query
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving import Client, ServerProcess

from fizzbuzz_cli import schedules
from fizzbuzz_cli.recurrence import parse_schedule_spec

serve = serving.serve
client = serving.client
shared = serving.shared
Serve = serving.Serve

UTC = timezone.utc
SPRING = "2030-03-08T12:00:00Z"  # New York springs forward on 2030-03-10


def snapshot(url: str) -> list[tuple]:
    return [*query(url, "SELECT * FROM fizz_schedules ORDER BY id"),
            *query(url, "SELECT * FROM tasks ORDER BY id")]


def occurrences(url: str, schedule_id: int) -> list[datetime]:
    return [row[0] for row in query(url, "SELECT occurrence FROM tasks WHERE schedule_id = %s "
                                         "ORDER BY occurrence", [schedule_id])]


# ---------------------------------------------------------------------------- the routes


def test_create_get_list(client: Client, database: str) -> None:
    created = client("POST", "/schedules", {"type": "Buzz", "cron": "30 2 * * *",
                                            "tz": "America/New_York", "start": SPRING})
    assert (created.status, created.headers["location"]) == (201, "/schedules/1")
    body = created.json
    assert body.pop("created_at").endswith("Z")
    assert body == {"id": 1, "type": "Buzz", "every": None, "cron": "30 2 * * *",
                    "tz": "America/New_York", "start": SPRING, "end": None,
                    "catch_up": "latest", "max_catch_up": 100, "state": "active",
                    "next": "2030-03-09T07:30:00Z"}
    assert occurrences(database, 1) == [datetime(2030, 3, 9, 7, 30, tzinfo=UTC)]
    one = client("GET", "/schedules/1?next=3")
    assert one.status == 200
    assert one.json["upcoming"] == [
        {"time": "2030-03-09T07:30:00Z", "local": "2030-03-09T02:30:00-05:00"},
        {"time": "2030-03-10T07:00:00Z", "local": "2030-03-10T03:00:00-04:00"},  # the jump
        {"time": "2030-03-11T06:30:00Z", "local": "2030-03-11T02:30:00-04:00"}]
    assert len(client("GET", "/schedules/1").json["upcoming"]) == 5  # by default
    assert client("GET", "/schedules/1?next=0").json["upcoming"] == []
    second = client("POST", "/schedules", {"type": "fizzbuzz", "every": "1h30m",
                                           "start": "2030-01-01T00:00:00Z", "end": None,
                                           "catch_up": "ALL", "max_catch_up": 7})
    assert (second.status, second.json["type"], second.json["every"],
            second.json["catch_up"], second.json["max_catch_up"]) == (
        201, "FizzBuzz", "1h30m", "all", 7)
    listed = client("GET", "/schedules")
    assert listed.status == 200 and listed.headers["transfer-encoding"] == "chunked"
    assert [(s["id"], s["state"]) for s in listed.json] == [(1, "active"), (2, "active")]
    assert client("HEAD", "/schedules/1").status == 200


def test_the_list_comes_in_pages(client: Client) -> None:
    for _ in range(230):  # more than two pages of 100
        assert client("POST", "/schedules", {"type": "Fizz", "every": "1d",
                                             "start": "2030-01-01T00:00:00Z"}).status == 201
    client("DELETE", "/schedules/150")
    ids = [s["id"] for s in client("GET", "/schedules").json]
    assert ids == [i for i in range(1, 231) if i != 150]


def test_pause_resume_delete(client: Client, database: str) -> None:
    client("POST", "/schedules", {"type": "Fizz", "every": "1h",
                                  "start": "2030-01-01T00:00:00Z"})
    client("POST", "/tasks", {"type": "Buzz", "time": "2030-01-01T00:00:00Z"})
    paused = client("POST", "/schedules/1/pause")
    assert (paused.status, paused.json["state"], paused.json["next"]) == (200, "paused", None)
    assert occurrences(database, 1) == []
    assert client("POST", "/schedules/1/pause").json["state"] == "paused"  # no change
    assert client("GET", "/schedules/1?next=1").json["upcoming"][0]["time"] == (
        "2030-01-01T00:00:00Z")  # what resuming now would give
    resumed = client("POST", "/schedules/1/resume")
    assert (resumed.status, resumed.json["state"]) == (200, "active")
    assert occurrences(database, 1) == [datetime(2030, 1, 1, tzinfo=UTC)]
    task = client("GET", "/tasks/3").json  # (1 was the occurrence that the pause removed)
    assert (task["schedule_id"], task["occurrence"]) == (1, "2030-01-01T00:00:00Z")
    assert client("GET", "/tasks/2").json["schedule_id"] is None  # the ordinary one
    deleted = client("DELETE", "/schedules/1")
    assert (deleted.status, deleted.json["state"]) == (200, "deleted")
    assert occurrences(database, 1) == []
    assert query(database, "SELECT id FROM tasks") == [(2,)]
    for method, path in (("GET", "/schedules/1"), ("DELETE", "/schedules/1"),
                         ("POST", "/schedules/1/pause"), ("POST", "/schedules/1/resume")):
        gone = client(method, path)
        assert gone.status == 404, (method, path)
        assert gone.json["error"].startswith("schedule 1 not found (it was deleted at 20")
    assert client("GET", "/schedules").json == []


# ---------------------------------------------------------------------------- errors

ZONES = "use an IANA name such as Europe/Paris, America/New_York or UTC"


@pytest.mark.parametrize(("body", "message"), [
    (b"{not json", "invalid JSON: "),
    (b"3", 'the body must be a JSON object such as {"type": "Fizz", "every": "5m"}'),
    (b"[]", 'expected an object such as {"type": "Fizz", "every": "5m"}'),
    (b'[{"type": "Fizz", "every": "5m"}]', "expected an object"),
    (b'{"every": "5m"}', 'missing "type": one of Fizz, Buzz, FizzBuzz'),
    (b'{"type": "Fuzz", "every": "5m"}', "unknown task type 'Fuzz': use one of fizz, buzz, "
                                         "fizzbuzz"),
    (b'{"type": 3, "every": "5m"}', '"type" must be a string'),
    (b'{"type": "Fizz"}', "give exactly one rule: every (such as 5m) or cron"),
    (b'{"type": "Fizz", "every": null, "cron": null}', "give exactly one rule"),
    (b'{"type": "Fizz", "every": "5m", "cron": "* * * * *"}', "give exactly one rule"),
    (b'{"type": "Fizz", "every": 5}', '"every" must be a string'),
    (b'{"type": "Fizz", "every": "5x"}', "invalid interval '5x': use a duration such as 90s"),
    (b'{"type": "Fizz", "every": "1 w' + b" " * 30000 + b'x"}', "invalid interval '1 w "),
    (b'{"type": "Fizz", "cron": "61 * * * *"}', "invalid cron expression '61 * * * *': bad "
                                                "minute field '61': use 0-59"),
    (b'{"type": "Fizz", "cron": "0 0 30 2 *"}', "invalid cron expression '0 0 30 2 *': "
                                               "day-of-month '30' never occurs in month '2'"),
    (b'{"type": "Fizz", "every": "5m", "tz": "Europe/Pariss"}',
     "unknown time zone 'Europe/Pariss': did you mean 'Europe/Paris'?"),
    (b'{"type": "Fizz", "every": "5m", "tz": ""}', f"empty time zone: {ZONES}"),
    (b'{"type": "Fizz", "every": "5m", "tz": ["UTC"]}', '"tz" must be a string'),
    (b'{"type": "Fizz", "every": "5m", "start": "soonish"}', "start: invalid time 'soonish'"),
    (b'{"type": "Fizz", "every": "5m", "start": "+2h", "end": "+1h"}', "end "),
    (b'{"type": "Fizz", "every": "5m", "end": "2020-01-01T00:00:00Z"}',
     "end 2020-01-01T00:00:00Z is before start"),
    (b'{"type": "Fizz", "every": "5m", "start": "2020-01-01T00:00:00Z", '
     b'"end": "2020-02-01T00:00:00Z"}', "the schedule would never run: its end, "
                                       "2020-02-01T00:00:00Z, has passed"),
    (b'{"type": "Fizz", "every": "5m", "catch_up": "some"}', "unknown catch-up policy 'some'"),
    (b'{"type": "Fizz", "every": "5m", "max_catch_up": 0}', "invalid max catch-up 0: use a "
                                                            "whole number from 1 to 10000"),
    (b'{"type": "Fizz", "every": "5m", "max_catch_up": "5"}', '"max_catch_up" must be a whole'),
    (b'{"type": "Fizz", "every": "5m", "max_catch_up": 5.0}', '"max_catch_up" must be a whole'),
    (b'{"type": "Fizz", "every": "5m", "max_catch_up": true}', '"max_catch_up" must be a whole'),
    (b'{"type": "Fizz", "every": "5m", "zone": "UTC"}', "unknown field 'zone': use type, every, "
                                                        "cron, tz, start, end, catch_up, "
                                                        "max_catch_up"),
    (b'{"type": "Fizz", "every": "5m", "n": 1' + b"0" * 5000 + b"}", "invalid JSON"),
])
def test_create_rejects_bad_bodies_with_400_and_changes_nothing(
        shared: ServerProcess, body: bytes, message: str) -> None:
    reply = shared.client()("POST", "/schedules", body)
    assert reply.status == 400, reply
    assert reply.json["error"].startswith(message), reply.json
    assert len(reply.json["error"]) < 400
    assert shared.client()("GET", "/schedules").json == []


def test_body_framing_errors(serve: Serve, database: str) -> None:
    base = serve().base
    array = json.dumps([{"type": "Fizz", "every": "5m"}] * 5000).encode()  # over 64 KiB:
    huge = Client(base)("POST", "/schedules", array)  # large arrays are for tasks only
    assert (huge.status, huge.json["error"]) == (
        413, f"the body is {len(array)} bytes; the limit is 65536")
    form = Client(base)("POST", "/schedules", b"type=Fizz",
                        {"Content-Type": "application/x-www-form-urlencoded"})
    assert form.status == 415
    assert snapshot(database) == []


@pytest.mark.parametrize(("method", "path", "status", "message"), [
    ("GET", "/schedules/abc", 400, "invalid schedule id 'abc': use a whole number from 1 to "
                                   "2147483647"),
    ("GET", "/schedules/0", 400, "invalid schedule id '0'"),
    ("DELETE", "/schedules/99999999999", 400, "invalid schedule id '99999999999'"),
    ("POST", "/schedules/-1/pause", 400, "invalid schedule id '-1'"),
    ("POST", "/schedules/x/resume", 400, "invalid schedule id 'x'"),
    ("GET", "/schedules/" + "9" * 5000, 400, "invalid schedule id '999999999999999999999999999999'"
                                             "... (5000 characters)"),
    ("GET", "/schedules/42", 404, "schedule 42 not found"),
    ("DELETE", "/schedules/42", 404, "schedule 42 not found"),
    ("POST", "/schedules/42/pause", 404, "schedule 42 not found"),
    ("POST", "/schedules/42/resume", 404, "schedule 42 not found"),
    ("GET", "/schedules/1?next=101", 400, "invalid next: '101' is not a whole number from 0 "
                                          "to 100"),
    ("GET", "/schedules/1?next=-1", 400, "invalid next"),
    ("GET", "/schedules/1?next=", 400, "invalid next"),
    ("GET", "/schedules/1?next=1&next=2", 400, "next is given 2 times: give it once"),
    ("GET", "/schedules/1/pause", 405, "method GET is not allowed on /schedules/1/pause: use "
                                       "POST"),
    ("PUT", "/schedules", 405, "method PUT is not allowed on /schedules: use GET, HEAD, POST"),
    ("POST", "/schedules/1", 405, "method POST is not allowed on /schedules/1: use DELETE, "
                                  "GET, HEAD"),
    ("GET", "/schedules/1/stop", 404, "no such resource: /schedules/1/stop"),
    ("GET", "/schedules/", 404, "no such resource: /schedules/"),
])
def test_bad_paths_and_queries(shared: ServerProcess, method: str, path: str, status: int,
                               message: str) -> None:
    reply = shared.client()(method, path)
    assert reply.status == status, reply
    assert reply.json["error"].startswith(message), reply.json


def test_the_token_guards_the_schedules(serve: Serve) -> None:
    base = serve(env={"FIZZ_API_TOKEN": "s3cret"}).base
    anonymous = Client(base)
    for method, path in (("GET", "/schedules"), ("POST", "/schedules"),
                         ("GET", "/schedules/1"), ("DELETE", "/schedules/1"),
                         ("POST", "/schedules/1/pause"), ("POST", "/schedules/1/resume"),
                         ("GET", "/schedules/abc")):
        assert anonymous(method, path).status == 401, (method, path)
    trusted = Client(base, token="s3cret")
    assert trusted("POST", "/schedules", {"type": "Fizz", "every": "1h"}).status == 201
    assert trusted("GET", "/schedules/1").status == 200


def test_database_outage_is_503(serve: Serve, pg_server: PgServer) -> None:
    url = pg_server.create_database("fizz_test_sched_outage", template="fizz_test_template")
    try:
        client = serve(url=url, settings={"db_timeout": 1.0}).client()
        assert client("GET", "/schedules").status == 200
        pg_server.drop_database("fizz_test_sched_outage")
        for method, path, body in (("GET", "/schedules", None), ("GET", "/schedules/1", None),
                                   ("POST", "/schedules", {"type": "Fizz", "every": "5m"}),
                                   ("POST", "/schedules/1/pause", None)):
            reply = client(method, path, body)
            assert reply.status == 503, (path, reply)
            assert reply.json == {"error": "database unavailable, try again shortly"}
    finally:
        pg_server.drop_database("fizz_test_sched_outage")


# ---------------------------------------------------------------------------- materialising


@pytest.mark.slow
def test_fizz_serve_keeps_the_next_occurrences_in_the_table(serve: Serve,
                                                            database: str) -> None:
    """No worker runs: fizz serve's own materialiser keeps each occurrence due within 2 s
    (and the next one) in the tasks table, every second, each once; after it stops, no one
    does. Two servers at once change nothing: each occurrence is still there once."""
    first = serve()
    second = serve()
    created = first.client()("POST", "/schedules", {"type": "FizzBuzz", "every": "1s"}).json
    start = datetime.fromisoformat(created["start"].replace("Z", "+00:00"))
    time.sleep(6)
    now = datetime.now(UTC)
    found = occurrences(database, created["id"])
    assert found == [start + timedelta(seconds=k) for k in range(len(found))]  # once each
    assert found[-1] >= now + timedelta(seconds=2)  # ahead of time, with no worker
    assert query(database, "SELECT count(*) FROM tasks WHERE status <> 'Waiting'") == [(0,)]
    assert first.stop() == 0 and second.stop() == 0
    first.assert_clean()
    second.assert_clean()
    stopped = len(occurrences(database, created["id"]))
    time.sleep(3)
    assert len(occurrences(database, created["id"])) == stopped  # no materialiser left


def test_a_schedule_added_elsewhere_wakes_fizz_serve_at_once(serve: Serve,
                                                             database: str) -> None:
    """The materialiser sleeps while no schedule needs it; a schedule added by another
    client is announced (NOTIFY) and materialised well within its first seconds."""
    server = serve()
    time.sleep(1)  # its materialiser has made its first pass and sleeps
    with psycopg.connect(database, autocommit=True) as conn:
        made = schedules.create_schedule(conn, parse_schedule_spec("Fizz", every="1s"))
    deadline = time.monotonic() + 10
    while len(occurrences(database, made.id)) < 7:  # 4 at its creation, then one a second
        assert time.monotonic() < deadline, occurrences(database, made.id)
        time.sleep(0.1)
    assert server.proc.poll() is None


# ---------------------------------------------------------------------------- any valid body


def _every() -> st.SearchStrategy[str]:
    """Valid intervals as people write them: whole units, largest first, any spacing, any
    case (1s to 3650d)."""
    parts = st.tuples(*(st.integers(0, limit) for limit in (500, 3000, 100, 100, 100)))
    return parts.filter(lambda p: 1 <= sum(n * u for n, u in zip(
        p, (604800, 86400, 3600, 60, 1), strict=True)) <= 3650 * 86400).flatmap(
        lambda p: st.tuples(st.just(p), st.sampled_from(["", " "]), st.booleans())).map(
        lambda t: t[1].join(f"{n}{u.upper() if t[2] else u}" for n, u in zip(
            t[0], "wdhms", strict=True) if n))


def _field(low: int, high: int, names: list[str] | None = None) -> st.SearchStrategy[str]:
    value = st.integers(low, high).map(str)
    if names:
        value |= st.sampled_from(names).map(lambda n: n.lower() if len(n) % 2 else n)
    pair = st.tuples(st.integers(low, high), st.integers(low, high)).map(sorted)
    item = st.one_of(
        value, st.just("*"), st.integers(1, high).map(lambda k: f"*/{k}"),
        pair.map(lambda p: f"{p[0]}-{p[1]}"),
        st.tuples(pair, st.integers(1, high)).map(lambda t: f"{t[0][0]}-{t[0][1]}/{t[1]}"))
    return st.lists(item, min_size=1, max_size=3).map(",".join)


MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
cron = st.one_of(
    st.sampled_from(["@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually",
                     "@midnight"]),
    st.tuples(_field(0, 59), _field(0, 23), _field(1, 28), _field(1, 12, MONTHS),
              _field(0, 7, DAYS)).map(" ".join))
zones = st.sampled_from(sorted(zoneinfo.available_timezones() - {"localtime", "Factory"}))
times = st.datetimes(datetime(2031, 1, 1), datetime(2090, 1, 1), timezones=st.just(UTC))


@st.composite
def new_schedules(draw: st.DrawFn) -> dict[str, object]:
    body: dict[str, object] = {"type": draw(st.sampled_from(["Fizz", "buzz", "FIZZBUZZ"]))}
    if draw(st.booleans()):
        body["every"] = draw(_every())
    else:
        body["cron"] = draw(cron)
    for key, value in (("tz", zones), ("catch_up", st.sampled_from(["latest", "ALL", "none"]))):
        if draw(st.booleans()):
            body[key] = draw(value)
    if body.get("catch_up") == "ALL" and draw(st.booleans()):
        body["max_catch_up"] = draw(st.integers(1, 10000))
    if draw(st.booleans()):
        start = draw(times)
        body["start"] = start.isoformat()
        if draw(st.booleans()):  # long enough for any rule to occur (--every 3650d included)
            body["end"] = (start + timedelta(days=3651)).isoformat().replace("+00:00", "Z")
    return body


@pytest.mark.slow
def test_any_valid_schedule_is_created_and_its_occurrences_agree(serve: Serve) -> None:
    """Bodies valid by construction (any interval, any cron expression of the grammar, any
    zone, any start): each is a 201, reads back the same, and its next occurrences come in
    order, from its start on, each the same instant in UTC and on the zone's wall clock."""
    client = serve().client()

    @settings(max_examples=60, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(body=new_schedules())
    def attempt(body: dict[str, object]) -> None:
        created = client("POST", "/schedules", body)
        assert created.status == 201, (body, created.json)
        shown = client("GET", f"{created.headers['location']}?next=4").json
        assert shown["type"].lower() == str(body["type"]).lower()
        assert shown["tz"] == body.get("tz", "UTC")
        assert shown["catch_up"] == str(body.get("catch_up", "latest")).lower()
        times = [datetime.fromisoformat(o["time"].replace("Z", "+00:00"))
                 for o in shown["upcoming"]]
        assert times, (body, shown)
        assert times == sorted(set(times))
        assert times[0] >= datetime.fromisoformat(shown["start"].replace("Z", "+00:00"))
        assert shown["next"] == shown["upcoming"][0]["time"]
        for occurrence, when in zip(shown["upcoming"], times, strict=True):
            assert datetime.fromisoformat(occurrence["local"]) == when

    attempt()
    assert len(client("GET", "/schedules").json) >= 50  # the examples were run


@pytest.mark.slow
def test_a_schedule_added_and_deleted_over_http_runs_on_a_worker(
        serve: Serve, workers: Callable[..., WorkerProc], database: str) -> None:
    """The whole way: a schedule added over HTTP, materialised by fizz serve and the worker,
    run by the worker, each occurrence printed once; deleted over HTTP, nothing more runs."""
    client = serve().client()
    worker = workers()
    created = client("POST", "/schedules", {"type": "Fizz", "every": "1s"}).json
    time.sleep(5)
    deleted = client("DELETE", f"/schedules/{created['id']}")
    assert deleted.status == 200
    stopped = datetime.now(UTC)
    time.sleep(4.5)  # what was running when it was deleted finishes (a Fizz takes 3 s)
    assert worker.stop() == 0
    printed = Counter(int(line.split()[1]) for line in worker.output())
    rows = query(database, "SELECT id, occurrence, status FROM tasks WHERE schedule_id = %s "
                           "ORDER BY occurrence", [created["id"]])
    assert rows and all(status == "Complete" for _, _, status in rows), rows
    assert all(occurrence <= stopped for _, occurrence, _ in rows), rows
    assert printed == Counter(task_id for task_id, _, _ in rows)  # each once, nothing else
    assert len(rows) >= 4
