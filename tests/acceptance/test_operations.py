"""The operator's view through its faces: fizz stats, fizz workers, fizz purge, --retain,
and GET /stats, GET /workers, GET /tasks?order=desc and the page of fizz serve, against
states built in the test database, with exact figures."""

from __future__ import annotations

import json
import time

import psycopg
import pytest
import serving
from helpers import Fizz, WorkerProc, query, table, wait_for
from serving import Client, Serve

serve = serving.serve  # the fixture


def build(url: str) -> None:
    """3 Waiting (one overdue), 1 Claimed, 6 Complete (4 started in the last minute, 2 an
    hour ago), and one worker seen just now."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("""INSERT INTO tasks (tasktype, status, time) VALUES
            ('Fizz', 'Waiting', now() - interval '10 s'),
            ('Buzz', 'Waiting', '2030-01-01T00:00:00Z'),
            ('Buzz', 'Waiting', '2031-01-01T00:00:00Z')""")
        conn.execute("""INSERT INTO tasks (tasktype, status, time, worker, claimed_at,
                                           lease_until, attempts)
            VALUES ('FizzBuzz', 'Claimed', now(), 'w:1:abc', now(), now() + interval '10 s', 1)""")
        conn.execute("""INSERT INTO tasks (tasktype, status, time, started_at, completed_at,
                                           worker, attempts)
            SELECT 'Fizz', 'Complete', now() - interval '30 s',
                   now() - interval '30 s' + g * interval '1 ms',
                   now() - interval '27 s', 'w:1:abc', 1 FROM generate_series(1, 4) AS g""")
        conn.execute("""INSERT INTO tasks (tasktype, status, time, started_at, completed_at)
            SELECT 'FizzBuzz', 'Complete', now() - interval '1 hour',
                   now() - interval '1 hour', now() - interval '1 hour'
            FROM generate_series(1, 2)""")
        conn.execute("""INSERT INTO fizz_workers (id, host, pid, version, started_at,
                        last_seen, lease, concurrency, in_flight, ran)
            VALUES ('w:1:abc', 'w', 1, '9.9', now() - interval '1 h', now(), 10, 100, 1, 6),
                   ('gone:2:def', 'gone', 2, '9.9', now() - interval '1 h',
                    now() - interval '1 minute', 10, 100, 0, 0)""")


EXPECTED_TASKS = {
    "Waiting": 3, "Claimed": 1, "Complete": 6,
    "by_type": {"Fizz": {"Waiting": 1, "Claimed": 0, "Complete": 4},
                "Buzz": {"Waiting": 2, "Claimed": 0, "Complete": 0},
                "FizzBuzz": {"Waiting": 0, "Claimed": 1, "Complete": 2}},
}


def check_snapshot(snapshot: dict) -> None:  # type: ignore[type-arg]
    assert snapshot["tasks"] == EXPECTED_TASKS
    assert snapshot["overdue"] == 1 and snapshot["workers"] == 1
    assert snapshot["next_due"].endswith("Z")
    assert snapshot["lateness_ms"] == {"p50": 2.0, "p99": 4.0, "max": 4.0, "n": 4} or (
        snapshot["lateness_ms"]["n"] == 4 and snapshot["lateness_ms"]["max"] == 4.0), (
        snapshot["lateness_ms"])
    assert snapshot["window_s"] == 900.0
    assert snapshot["throughput"]["1m"] == pytest.approx(4 / 60, abs=0.001)
    assert snapshot["throughput"]["15m"] == pytest.approx(4 / 900, abs=0.001)


def test_fizz_stats(fizz: Fizz, database: str) -> None:
    build(database)
    result = fizz("stats", "--json")
    assert result.code == 0, result.err
    check_snapshot(json.loads(result.out))
    wider = json.loads(fizz("stats", "--json", "--window", "2h").out)
    assert wider["lateness_ms"]["n"] == 6 and wider["window_s"] == 7200.0
    panel = fizz("stats").out
    for label in ("fizz stats", "Waiting", "Claimed", "Complete", "overdue", "next due",
                  "workers alive", "p99 late", "done/s over 1m"):
        assert label in panel, (label, panel)
    bad = fizz("stats", "--window", "2d")
    assert bad.code == 2 and bad.err == "Error: invalid window '2d': use at most 1d\n", bad.err


def test_fizz_workers(fizz: Fizz, database: str, workers: object) -> None:
    build(database)
    listed = json.loads(fizz("workers", "--json").out)
    assert [(w["id"], w["alive"], w["in_flight"], w["ran"]) for w in listed] == [
        ("w:1:abc", True, 1, 6)]
    everyone = json.loads(fizz("workers", "--json", "--all").out)
    assert sorted(w["id"] for w in everyone) == ["gone:2:def", "w:1:abc"]
    assert "w:1:abc" in fizz("workers").out
    real: WorkerProc = workers()  # type: ignore[operator]
    wait_for(lambda: len(json.loads(fizz("workers", "--json").out)) == 2, 10)
    mine = [w for w in json.loads(fizz("workers", "--json").out) if w["pid"] == real.proc.pid]
    assert mine and mine[0]["alive"] and mine[0]["concurrency"] == 10_000
    assert real.stop() == 0
    query(database, "DELETE FROM fizz_workers")
    assert fizz("workers").out == "No workers.\n"


def test_fizz_purge(fizz: Fizz, database: str) -> None:
    build(database)
    before = table(database)
    dry = fizz("purge", "--before", "30m", "--dry-run", "--json")
    assert (dry.code, json.loads(dry.out)["deleted"], json.loads(dry.out)["dry_run"]) == (
        0, 2, True)
    assert table(database) == before
    for bad, message in (("soon", "invalid age 'soon'"), ("-1d", "invalid age '-1d'"),
                         ("", "invalid age ''")):
        refused = fizz("purge", "--before", bad)
        assert refused.code == 2 and message in refused.err, refused.err
        assert refused.err.count("\n") == 1
    assert table(database) == before
    done = fizz("purge", "--before", "30m")
    assert (done.code, done.out) == (0, "2\n")
    statuses = dict(query(database, "SELECT status, count(*) FROM tasks GROUP BY status"))
    assert statuses == {"Waiting": 3, "Claimed": 1, "Complete": 4}  # the fresh ones stay
    again = json.loads(fizz("purge", "--before", "1s", "--json").out)
    assert again["deleted"] == 4 and not again["dry_run"]
    assert dict(query(database, "SELECT status, count(*) FROM tasks GROUP BY status")) == {
        "Waiting": 3, "Claimed": 1}  # never a Waiting or Claimed task
    counted = json.loads(fizz("stats", "--json").out)["tasks"]
    assert counted["Complete"] == 0 and counted["Waiting"] == 3


def test_fizz_serve_and_fizz_work_purge_with_retain(serve: Serve, database: str,
                                                    workers: object) -> None:
    build(database)
    server = serve("--retain", "30m")
    server.wait_for_log("purged 2 tasks completed before")
    assert query(database, "SELECT count(*) FROM tasks WHERE status = 'Complete'") == [(4,)]
    query(database, "UPDATE tasks SET completed_at = now() - interval '2 days' "
                    "WHERE status = 'Complete'")
    worker: WorkerProc = workers("--retain", "1d")  # type: ignore[operator]
    wait_for(lambda: query(database, "SELECT count(*) FROM tasks WHERE status = 'Complete'")
             == [(0,)], 15, worker.log())
    assert worker.stop() == 0
    refused = Fizz(database)("work", "--retain", "2030-01-01T00:00:00Z")
    assert refused.code == 2 and "invalid retention" in refused.err


def test_the_operators_routes(serve: Serve, database: str) -> None:
    build(database)
    server = serve()
    client = server.client()
    reply = client("GET", "/stats")
    assert reply.status == 200
    check_snapshot(reply.json)
    assert client("GET", "/stats?window=7200").json["lateness_ms"]["n"] == 6
    for bad in ("0", "86401", "15m", "abc", ""):
        refused = client("GET", f"/stats?window={bad}")
        assert refused.status == 400 and "window" in refused.json["error"], (bad, refused)
    assert [w["id"] for w in client("GET", "/workers").json] == ["w:1:abc"]
    assert len(client("GET", "/workers?all=true").json) == 2
    assert client("GET", "/workers?all=yes").status == 400
    newest = client("GET", "/tasks?order=desc&limit=3").json
    assert [t["id"] for t in newest] == [10, 9, 8]
    waiting = client("GET", "/tasks?order=desc&filters.status=waiting").json
    assert [t["id"] for t in waiting] == [3, 2, 1]
    assert client("GET", "/tasks?order=sideways").status == 400
    assert [t["id"] for t in client("GET", "/tasks?order=asc&limit=2").json] == [1, 2]
    page = client("GET", "/")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    etag = page.headers["etag"]
    assert client("GET", "/", headers={"If-None-Match": etag}).status == 304
    for path, kind in (("/style.css", "text/css"), ("/app.js", "text/javascript")):
        asset = client("GET", path)
        assert asset.status == 200 and asset.headers["content-type"].startswith(kind)


def test_with_a_token_the_page_is_open_and_its_data_is_not(serve: Serve) -> None:
    base = serve("--token", "s3cret").base
    anonymous = Client(base)
    for path in ("/", "/index.html", "/style.css", "/app.js"):
        assert anonymous("GET", path).status == 200, path
    for path in ("/stats", "/workers", "/tasks?order=desc"):
        assert anonymous("GET", path).status == 401, path
    assert Client(base, token="s3cret")("GET", "/stats").status == 200


def test_a_snapshot_is_shared_by_dashboards_polling_at_once(serve: Serve,
                                                            database: str) -> None:
    """Many open dashboards cost one snapshot a second."""
    server = serve()
    clients = [server.client() for _ in range(5)]
    query(database, "SELECT pg_stat_reset()")
    started = time.monotonic()
    for _ in range(4):
        for client in clients:
            assert client("GET", "/stats").status == 200
    if time.monotonic() - started < 0.9:  # all inside one second: one snapshot at most twice
        calls = query(database, "SELECT xact_commit FROM pg_stat_database "
                                "WHERE datname = current_database()")
        assert calls[0][0] < 60, calls
