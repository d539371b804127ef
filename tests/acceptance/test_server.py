"""`fizz serve` over real HTTP: every route, every error, bulk adds, the token, start and stop.

Servers run as real processes (see serving.py); each test's servers must stop with exit 0
and without a traceback on stderr.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import serving
from helpers import PgServer, new_home, query, table
from serving import Client, ServerProcess, raw

from fizzbuzz_cli.embedded import EmbeddedServer

serve = serving.serve
client = serving.client
shared = serving.shared
Serve = serving.Serve


def count(url: str) -> int:
    return query(url, "SELECT count(*) FROM tasks")[0][0]


# ------------------------------------------------------------------ the original README


def test_the_original_readme_examples(client: Client) -> None:
    created = client("POST", "/tasks", {"type": "Fizz", "time": "2023-03-28T11:59:59Z"})
    assert (created.status, created.json, created.headers["location"]) == (201, {"id": 1},
                                                                          "/tasks/1")
    client("POST", "/tasks", {"type": "Buzz", "time": "2023-03-28T12:00:00Z"})
    every = client("GET", "/tasks")
    assert every.status == 200 and every.headers["content-type"] == "application/json"
    assert [(t["id"], t["type"], t["typ"], t["status"], t["time"]) for t in every.json] == [
        (1, "Fizz", "Fizz", "Waiting", "2023-03-28T11:59:59Z"),
        (2, "Buzz", "Buzz", "Waiting", "2023-03-28T12:00:00Z"),
    ]
    filtered = client("GET", "/tasks?filters.type=fizz&filters.status=waiting")
    assert [t["id"] for t in filtered.json] == [1]
    assert client("GET", "/tasks?filters.type=BUZZ").json[0]["id"] == 2
    one = client("GET", "/tasks/1")
    assert one.status == 200 and one.json["typ"] == "Fizz"
    deleted = client("DELETE", "/tasks/1")
    assert deleted.status == 200 and deleted.json == one.json
    assert client("GET", "/tasks/1").status == 404


def test_the_original_curl_examples(serve: Serve, database: str) -> None:
    """The original README's commands, run with curl itself when it is installed."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    base = serve().base

    def curl(*args: str) -> str:
        return subprocess.run(["curl", "-s", *args], capture_output=True, text=True,
                              check=True, timeout=30).stdout

    assert json.loads(curl("-X", "POST", "-H", "content-type: application/json", "-d",
                           '{"type": "Fizz", "time": "2023-03-28T11:59:59Z"}',
                           f"{base}/tasks")) == {"id": 1}
    listed = json.loads(curl("-X", "GET", f"{base}/tasks?filters.type=fizz&filters.status="
                                          "waiting"))
    assert [t["id"] for t in listed] == [1]
    assert json.loads(curl("-X", "GET", f"{base}/tasks/1"))["type"] == "Fizz"
    assert json.loads(curl("-X", "DELETE", f"{base}/tasks/1"))["id"] == 1
    assert count(database) == 0


def test_list_limit_and_streaming_of_many_rows(serve: Serve, database: str) -> None:
    query(database, "INSERT INTO tasks (tasktype, status, time) SELECT 'Fizz', 'Waiting', "
                    "now() FROM generate_series(1, 3000)")
    query(database, "UPDATE tasks SET status = 'Complete' WHERE id % 3 = 0")
    client = serve(settings={"list_page": 250}).client()  # many pages
    listed = client("GET", "/tasks")
    assert listed.headers["transfer-encoding"] == "chunked"
    assert [t["id"] for t in listed.json] == list(range(1, 3001))
    assert [t["id"] for t in client("GET", "/tasks?limit=2").json] == [1, 2]
    assert [t["id"] for t in client("GET", "/tasks?limit=600").json] == list(range(1, 601))
    assert client("GET", "/tasks?limit=0").json == []
    complete = client("GET", "/tasks?filters.status=complete&limit=700").json
    assert [t["id"] for t in complete] == list(range(3, 2101, 3))
    assert client("GET", "/tasks?filters.type=buzz").json == []


# ------------------------------------------------------------------ the worker routes


def test_next_pull_complete(client: Client) -> None:
    assert client("GET", "/tasks/next").status == 404
    client("POST", "/tasks", {"type": "FizzBuzz", "time": "2030-01-01T00:00:00Z"})
    client("POST", "/tasks", {"type": "Fizz", "time": "2023-03-28T11:59:59Z"})
    assert client("GET", "/tasks/next").json == {"id": 2, "time": "2023-03-28T11:59:59Z"}
    pulled = client("POST", "/tasks/pull/2")
    assert pulled.status == 200
    assert (pulled.json["status"], pulled.json["attempts"]) == ("Claimed", 1)
    assert pulled.json["worker"] == "http:127.0.0.1"
    assert client("POST", "/tasks/pull/2").status == 404  # no longer waiting
    assert client("GET", "/tasks/next").json["id"] == 1
    done = client("POST", "/tasks/2")
    assert (done.status, done.json["status"]) == (200, "Complete")
    assert done.json["completed_at"] is not None
    again = client("POST", "/tasks/2")
    assert (again.status, again.json) == (404, {"error": "task 2 is not claimed (or does "
                                                         "not exist)"})


def test_claims_of_clients_that_died_go_back_to_waiting(serve: Serve, database: str) -> None:
    default = serve().client()
    default("POST", "/tasks", {"type": "Buzz", "time": "2023-03-28T11:59:59Z"})
    assert default("POST", "/tasks/pull/1").json["status"] == "Claimed"
    assert query(database, "SELECT lease_until - claimed_at FROM tasks") == [
        (timedelta(seconds=60),)]  # the original worker gets a minute per task
    query(database, "UPDATE tasks SET status = 'Waiting', worker = NULL")
    server = serve(settings={"http_lease": 1.0, "reap_interval": 0.2})
    client = server.client()
    assert client("POST", "/tasks/pull/1").json["status"] == "Claimed"
    # Handed back once the lease (1 s) has run out and the server has watched the database
    # for a whole lease since: about 1 s later.
    deadline = time.monotonic() + 10
    while client("GET", "/tasks/1").json["status"] != "Waiting":
        assert time.monotonic() < deadline, "the expired claim was not handed back"
        time.sleep(0.1)
    assert client("POST", "/tasks/pull/1").json["attempts"] == 3
    server.wait_for_log("task 1 was claimed by http:127.0.0.1, whose lease ran out")


def test_a_client_driving_the_worker_routes_like_the_original_worker(
    client: Client, database: str
) -> None:
    """next -> (due?) pull -> run -> complete, one task at a time, as the Rust worker did."""
    for i in range(5):
        client("POST", "/tasks", {"type": "FizzBuzz", "time": f"2023-03-28T11:59:5{i}Z"})
    client("POST", "/tasks", {"type": "Fizz", "time": "2023-03-28T12:00:00Z"})
    ran = []
    while (upcoming := client("GET", "/tasks/next")).status == 200:
        task = client("POST", f"/tasks/pull/{upcoming.json['id']}").json
        ran.append(task["id"])
        assert client("POST", f"/tasks/{task['id']}").json["status"] == "Complete"
    assert ran == [1, 2, 3, 4, 5, 6]
    assert query(database, "SELECT count(*) FROM tasks WHERE status = 'Complete'") == [(6,)]


# ------------------------------------------------------------------ bulk adds


def test_bulk_add_is_all_or_none_and_answers_the_ids_in_order(serve: Serve,
                                                              database: str) -> None:
    client = serve().client()
    client("POST", "/tasks", {"type": "Fizz", "time": "2023-03-28T11:59:59Z"})
    tasks = [{"type": ["Fizz", "Buzz", "FizzBuzz"][i % 3],
              "time": f"2030-01-01T00:00:{i % 60:02d}Z"} for i in range(5000)]
    added = client("POST", "/tasks", tasks)
    assert added.status == 201 and "location" not in added.headers
    ids = added.json["ids"]
    assert len(ids) == 5000 and ids == sorted(ids) and len(set(ids)) == 5000
    rows = query(database, "SELECT id, tasktype, status, time FROM tasks WHERE id = ANY(%s) "
                           "ORDER BY id", [ids])
    assert [(r[1], r[2]) for r in rows] == [(t["type"], "Waiting") for t in tasks]
    assert rows[61][3].isoformat() == "2030-01-01T00:00:01+00:00"
    one_bad = [*tasks[:100], {"type": "fizz", "time": "2030-01-01T00:00:00Z"}]
    refused = client("POST", "/tasks", one_bad)
    assert refused.status == 400
    assert refused.json["error"] == ("tasks[100]: invalid \"type\" 'fizz': use Fizz, Buzz or "
                                     "FizzBuzz (case-sensitive)")
    assert client("POST", "/tasks", [{"type": "Fizz"}]).json["error"].startswith(
        'tasks[0]: missing "time"')
    assert client("POST", "/tasks", [1, 2]).json["error"].startswith(
        "tasks[0]: expected an object")
    assert client("POST", "/tasks", []).json == {"ids": []}
    assert count(database) == 5001  # nothing from the refused arrays
    assert client("GET", "/tasks/next").json["id"] == 1


def test_bulk_add_body_limits(serve: Serve, database: str) -> None:
    base = serve().base
    client = Client(base)
    big = [{"type": "FizzBuzz", "time": "2030-01-01T00:00:00Z"}] * 20000  # ~1 MiB
    assert client("POST", "/tasks", big).status == 201
    spaced = b"  \n" + json.dumps(big).encode()
    assert Client(base)("POST", "/tasks", spaced).status == 201
    too_big = b"[" + b" " * (8 * 1024 * 1024) + b"]"
    refused = Client(base)("POST", "/tasks", too_big)
    assert (refused.status, refused.json["error"]) == (
        413, f"the body is {len(too_big)} bytes; the limit is 65536 (8388608 for a JSON array "
             "of tasks)")
    assert refused.headers["connection"] == "close"
    an_object = json.dumps({"type": "Fizz", "time": "2030-01-01T00:00:00Z",
                            "padding": "x" * 70000}).encode()
    refused = Client(base)("POST", "/tasks", an_object)
    assert (refused.status, refused.json["error"]) == (
        413, f"the body is {len(an_object)} bytes; the limit is 65536")
    assert count(database) == 40000


# ------------------------------------------------------------------ client errors


@pytest.mark.parametrize(("body", "message"), [
    (b"{not json", "invalid JSON: "),
    (b'"Fizz"', "the body must be a JSON object"),
    (b"3", "the body must be a JSON object"),
    (b'{"time": "2023-03-28T11:59:59Z"}', 'missing "type": one of Fizz, Buzz, FizzBuzz'),
    (b'{"type": "fizz", "time": "2023-03-28T11:59:59Z"}',
     "invalid \"type\" 'fizz': use Fizz, Buzz or FizzBuzz (case-sensitive)"),
    (b'{"type": 3, "time": "2023-03-28T11:59:59Z"}', 'invalid "type" 3'),
    (b'{"type": "Fizz"}', 'missing "time": an RFC 3339 time'),
    (b'{"type": "Fizz", "time": 5}', '"time" must be a string'),
    (b'{"type": "Fizz", "time": "yesterday"}', "invalid \"time\" 'yesterday': use RFC 3339"),
    (b'{"type": "Fizz", "time": "0000-01-01T00:00:00Z"}', "invalid \"time\""),
    (b'{"type": "Fizz", "time": "9999-12-31T23:59:60Z"}', "invalid \"time\""),
    (b'{"type": "Fizz", "time": "9999-12-31T23:59:59-01:00"}', "invalid \"time\""),
    (b"[" * 30000 + b"]" * 30000, "invalid JSON"),
    (b'{"type": "Fizz", "time": "2023-03-28T11:59:59Z", "n": 1' + b"0" * 5000 + b"}",
     "invalid JSON"),
])
def test_create_rejects_bad_bodies_with_400(shared: ServerProcess, body: bytes,
                                            message: str) -> None:
    reply = shared.client()("POST", "/tasks", body)
    assert reply.status == 400
    assert reply.json["error"].startswith(message), reply.json


def test_body_framing_errors(serve: Serve, database: str) -> None:
    base = serve().base
    no_length = raw(base, b"POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                          b"\r\nConnection: close\r\n\r\n")
    assert no_length.startswith(b"HTTP/1.1 411 ")
    chunked = raw(base, b"POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    assert chunked.startswith(b"HTTP/1.1 411 ")
    client = Client(base)
    huge = client("POST", "/tasks", b"x" * 70000)
    assert (huge.status, huge.json["error"]) == (413, "the body is 70000 bytes; the limit is "
                                                      "65536")
    form = Client(base)("POST", "/tasks", b"type=Fizz",
                        {"Content-Type": "application/x-www-form-urlencoded"})
    assert (form.status, form.json["error"]) == (415, "the body must be JSON (Content-Type: "
                                                      "application/json), not "
                                                      "application/x-www-form-urlencoded")
    untyped = raw(base, b'POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n'
                        b'Connection: close\r\n\r\n{}')
    assert untyped.startswith(b"HTTP/1.1 415 ")
    charset = Client(base)("POST", "/tasks", {"type": "Fizz", "time": "2023-03-28T11:59:59Z"},
                           {"Content-Type": "application/json; charset=utf-8"})
    assert charset.status == 201
    assert count(database) == 1


@pytest.mark.parametrize(("path", "status", "message"), [
    ("/tasks/abc", 400, "invalid task id 'abc': use a whole number from 1 to 2147483647"),
    ("/tasks/-1", 400, "invalid task id '-1'"),
    ("/tasks/0", 400, "invalid task id '0'"),
    ("/tasks/99999999999", 400, "invalid task id '99999999999'"),
    ("/tasks/1.5", 400, "invalid task id '1.5'"),
    ("/tasks/%31", 400, "invalid task id '%31'"),
    ("/tasks/42", 404, "task 42 not found"),
    ("/tasks?filters.type=fuzz", 400, "invalid filters.type: unknown task type 'fuzz': use "
                                      "one of fizz, buzz, fizzbuzz"),
    ("/tasks?filters.status=done", 400, "invalid filters.status: unknown status 'done'"),
    ("/tasks?filters.status=", 400, "invalid filters.status"),
    ("/tasks?filters.type=fizz&filters.type=buzz", 400, "filters.type is given 2 times"),
    ("/tasks?limit=-1", 400, "invalid limit: '-1' is not a whole number"),
    ("/tasks?limit=abc", 400, "invalid limit"),
    ("/nowhere", 404, "no such resource: /nowhere"),
    ("/tasks/", 404, "no such resource: /tasks/"),
    ("/tasks/1/extra", 404, "no such resource"),
])
def test_bad_paths_and_queries(shared: ServerProcess, path: str, status: int,
                               message: str) -> None:
    reply = shared.client()("GET", path)
    assert reply.status == status
    assert reply.json["error"].startswith(message), reply.json


def test_pull_and_complete_validate_ids(shared: ServerProcess) -> None:
    client = shared.client()
    assert client("POST", "/tasks/pull/abc").status == 400
    assert client("POST", "/tasks/pull/2000000000").json == {
        "error": "task 2000000000 is not waiting (or does not exist)"}
    assert client("DELETE", "/tasks/99999999999").status == 400


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("PUT", "/tasks", "GET, HEAD, POST"),
    ("PATCH", "/tasks/1", "DELETE, GET, HEAD, POST"),
    ("DELETE", "/tasks/next", "GET, HEAD"),
    ("GET", "/tasks/pull/1", "POST"),
    ("BREW", "/healthz", "GET, HEAD"),
    ("OPTIONS", "/openapi.json", "GET, HEAD"),
])
def test_wrong_methods_get_405_with_allow(shared: ServerProcess, method: str, path: str,
                                          allow: str) -> None:
    reply = shared.client()(method, path)
    assert (reply.status, reply.headers["allow"]) == (405, allow)
    assert reply.json["error"] == f"method {method} is not allowed on {path}: use {allow}"


def test_head_answers_like_get_without_a_body(client: Client) -> None:
    client("POST", "/tasks", {"type": "Fizz", "time": "2023-03-28T11:59:59Z"})
    reply = client("HEAD", "/tasks/1")
    assert (reply.status, reply.raw) == (200, b"")
    assert int(reply.headers["content-length"]) > 0
    assert client("HEAD", "/tasks/2").status == 404
    assert client("GET", "/tasks/1").json["id"] == 1  # the connection stayed in step


# ------------------------------------------------------------------ keep-alive and load


def test_keep_alive_serves_many_requests_on_one_connection(client: Client) -> None:
    for i in range(20):
        assert client("POST", "/tasks", {"type": "Fizz", "time": "2023-03-28T11:59:59Z"}
                      ).json == {"id": i + 1}
    sock = client.conn.sock
    assert client("GET", "/tasks/20").status == 200
    assert client.conn.sock is sock  # the same TCP connection throughout


def test_concurrent_creates_lose_nothing(serve: Serve, database: str) -> None:
    base = serve("--pool-size", "4").base
    ids: list[int] = []
    lock = threading.Lock()

    def create(n: int) -> None:
        mine = Client(base)
        for _ in range(n):
            reply = mine("POST", "/tasks", {"type": "FizzBuzz", "time": "2030-01-01T00:00:00Z"})
            assert reply.status == 201
            with lock:
                ids.append(reply.json["id"])

    threads = [threading.Thread(target=create, args=(50,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(ids) == list(range(1, 401))
    assert count(database) == 400


def test_requests_that_share_a_statement_each_get_their_own_answer(serve: Serve,
                                                                    database: str) -> None:
    """Single POSTs and GETs arriving together are answered by one statement each (one
    commit for the inserts): every client still gets its own task, under its own id."""
    server = serve()
    clients, per_client = 24, 20
    created: dict[int, tuple[str, str]] = {}
    read: list[tuple[int, int, str]] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def one_client(number: int) -> None:
        client = server.client()
        try:
            start.wait()
            for k in range(per_client):
                kind = ("Fizz", "Buzz", "FizzBuzz")[(number + k) % 3]
                when = f"2031-01-{1 + number:02d}T00:00:{k:02d}Z"
                reply = client("POST", "/tasks", {"type": kind, "time": when})
                if reply.status != 201:
                    errors.append(f"POST {reply.status}")
                    continue
                task_id = reply.json["id"]
                with lock:
                    assert task_id not in created
                    created[task_id] = (kind, when)
                got = client("GET", f"/tasks/{task_id}")
                with lock:
                    read.append((task_id, got.status, got.json.get("time", "")))
        finally:
            client.close()

    threads = [threading.Thread(target=one_client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert len(created) == clients * per_client
    assert all(status == 200 and created[task_id][1] == when
               for task_id, status, when in read), read[:5]
    rows = {r[0]: (r[1], r[2]) for r in query(
        database, "SELECT id, tasktype, to_char(time AT TIME ZONE 'UTC', "
                  "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM tasks")}
    assert rows == created
    # An id that does not exist, asked for with others, is still a 404 of its own.
    client = server.client()
    assert client("GET", "/tasks/999999").status == 404


# ------------------------------------------------------------------ ops endpoints


def test_health_metrics_and_openapi(client: Client) -> None:
    assert client("GET", "/healthz").json == {"status": "ok", "database": "ok"}
    client("POST", "/tasks", {"type": "Fizz", "time": "2023-03-28T11:59:59Z"})
    client("GET", "/tasks/1")
    client("GET", "/tasks/abc")
    metrics = client("GET", "/metrics")
    assert metrics.headers["content-type"] == "text/plain; version=0.0.4"
    text = metrics.raw.decode()
    assert 'fizz_tasks{type="Fizz",status="Waiting"} 1\n' in text
    assert 'fizz_tasks{type="Buzz",status="Complete"} 0\n' in text
    assert 'fizz_http_requests_total{route="/tasks",method="POST",status="201"} 1\n' in text
    assert 'fizz_http_requests_total{route="/tasks/{id}",method="GET",status="200"} 1\n' in text
    assert 'fizz_http_requests_total{route="/tasks/{id}",method="GET",status="400"} 1\n' in text
    assert 'fizz_http_request_duration_seconds_count{route="/tasks/{id}"} 2\n' in text
    assert 'fizz_http_request_duration_seconds_bucket{route="/tasks/{id}",le="+Inf"} 2\n' in text
    buckets = [int(n) for n in re.findall(
        r'fizz_http_request_duration_seconds_bucket\{route="/tasks/\{id\}",le="[^"]+"\} (\d+)',
        text)]
    assert buckets == sorted(buckets) and len(buckets) == 13  # cumulative
    spec = client("GET", "/openapi.json").json
    assert spec["openapi"].startswith("3.")
    assert set(spec["paths"]) == {"/tasks", "/tasks/next", "/tasks/pull/{id}", "/tasks/{id}",
                                  "/healthz", "/metrics", "/openapi.json", "/schedules",
                                  "/", "/stats", "/workers",
                                  "/schedules/{id}", "/schedules/{id}/pause",
                                  "/schedules/{id}/resume"}
    assert set(spec["paths"]["/tasks/{id}"]) == {"get", "delete", "post", "parameters"}


@pytest.mark.parametrize("given", ["--token", "FIZZ_API_TOKEN"])
def test_bearer_token_on_every_route_but_healthz(serve: Serve, database: str,
                                                 given: str) -> None:
    if given == "--token":
        server = serve("--token", "s3cret")
    else:
        server = serve(env={"FIZZ_API_TOKEN": "s3cret"})
    base = server.base
    query(database, "INSERT INTO tasks (tasktype, status, time) VALUES ('Fizz', 'Waiting', now())")
    anonymous = Client(base)
    denied = anonymous("GET", "/tasks")
    assert (denied.status, denied.headers["www-authenticate"]) == (401, 'Bearer realm="fizz"')
    assert denied.json == {"error": "missing or wrong bearer token (Authorization: Bearer "
                                    "<token>)"}
    assert anonymous("GET", "/tasks", headers={"Authorization": "Bearer wrong"}).status == 401
    assert anonymous("GET", "/tasks", headers={"Authorization": "Basic s3cret"}).status == 401
    # Every route of the API document, every method, with a real id: refused without the
    # token, and nothing changes.
    spec = Client(base, token="s3cret")("GET", "/openapi.json").json
    routes = [(method.upper(), path.replace("{id}", "1")) for path, methods in spec["paths"].items()
              for method in methods if path not in ("/healthz", "/")]
    assert {"DELETE", "POST", "GET"} <= {method for method, _ in routes}
    before = table(database)
    for method, path in [*routes, ("GET", "/openapi.json")]:
        body = {"type": "Fizz", "time": "2023-03-28T11:59:59Z"} if method == "POST" else None
        assert anonymous(method, path, body).status == 401, (method, path)
    assert table(database) == before
    # Unknown routes and wrong methods too: routes cannot be listed without the token.
    for method, path in (("GET", "/no/such/route"), ("GET", "/tasks/1/x"), ("PUT", "/tasks")):
        assert anonymous(method, path).status == 401, (method, path)
    assert anonymous("GET", "/healthz").status == 200
    # The dashboard's page and its files hold no data: open, so the page can ask for the token.
    page = anonymous("GET", "/")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    trusted = Client(base, token="s3cret")
    assert trusted("GET", "/tasks").status == 200
    assert trusted("DELETE", "/tasks/1").status == 200
    assert trusted("GET", "/no/such/route").status == 404
    spec = trusted("GET", "/openapi.json").json
    assert spec["security"] == [{"bearerAuth": []}]
    assert spec["paths"]["/healthz"]["get"]["security"] == []


def test_database_outage_is_503_never_500(serve: Serve, pg_server: PgServer) -> None:
    name = f"fizz_test_outage_{os.getpid()}_{time.monotonic_ns()}"  # never shared by runs
    url = pg_server.create_database(name, template="fizz_test_template")
    try:
        client = serve(url=url, settings={"db_timeout": 1.0}).client()
        assert client("GET", "/tasks").status == 200
        pg_server.drop_database(name)
        for path in ("/tasks", "/tasks/1", "/tasks/next"):
            started = time.monotonic()
            reply = client("GET", path)
            assert reply.status == 503, (path, reply)
            assert reply.json == {"error": "database unavailable, try again shortly"}
            assert reply.headers["retry-after"] == "1"
            assert time.monotonic() - started < 3
        assert client("GET", "/healthz").json == {"status": "unavailable",
                                                  "database": "unreachable"}
    finally:
        pg_server.drop_database(name)


# ------------------------------------------------------------------ the real command


def test_fizz_serve_logs_each_request_and_stops_cleanly_on_sigterm(serve: Serve,
                                                                   database: str) -> None:
    server = serve()
    query(database, "INSERT INTO tasks (tasktype, status, time) SELECT 'Fizz', 'Waiting', "
                    "now() FROM generate_series(1, 200000)")
    idle = server.client()
    assert idle("GET", "/healthz").status == 200  # a keep-alive connection left open
    result: dict[str, Any] = {}

    def fetch_all() -> None:
        result["reply"] = Client(server.base, timeout=60)("GET", "/tasks")

    fetcher = threading.Thread(target=fetch_all)
    fetcher.start()
    time.sleep(0.3)  # the list is streaming
    server.proc.send_signal(signal.SIGTERM)
    fetcher.join(timeout=60)
    fetched = time.monotonic()
    assert server.proc.wait(timeout=15) == 0
    # It stopped as soon as the request in flight was done, not at some fallback timeout...
    assert time.monotonic() - fetched < 2.0, time.monotonic() - fetched
    assert result["reply"].status == 200
    assert len(result["reply"].json) == 200000  # ... and the request in flight was finished
    # The idle keep-alive connection was closed, not left hanging.
    idle.conn.sock.settimeout(2)
    assert idle.conn.sock.recv(1) == b""
    server.stop()
    log = server.log()
    assert '"GET /tasks" 200' in log and "stopped" in log
    stamp = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")
    assert all(stamp.match(line) for line in log.splitlines()), log  # timestamps throughout


def test_fizz_serve_refuses_a_busy_port_with_exit_1(database: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "fizzbuzz_cli", "serve", "--port",
                               str(port), "--database-url", database],
                              capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert done.stderr == f"Error: cannot listen on 127.0.0.1:{port}: Address already in use\n"


def test_fizz_serve_starts_the_embedded_database_like_every_other_command() -> None:
    home = new_home("fizz-test-serve-home-")
    env = {"FIZZ_HOME": str(home)}
    embedded = EmbeddedServer(home)
    try:
        first = subprocess.run([sys.executable, "-m", "fizzbuzz_cli", "db", "start"],
                               env={**os.environ, **env}, capture_output=True, text=True,
                               timeout=120)
        assert first.returncode == 0, first.stderr
        assert embedded.stop()  # the embedded database is stopped
        server = ServerProcess(None, env=env).wait_ready(120)
        try:
            assert embedded.status().running
            client = server.client()
            assert client("POST", "/tasks", {"type": "Fizz", "time": "2023-03-28T11:59:59Z"}
                          ).status == 201
            assert client("GET", "/healthz").json["database"] == "ok"
        finally:
            assert server.stop() == 0
            server.assert_clean()
        stamp = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")
        lines = server.log().splitlines()
        assert any("embedded PostgreSQL" in line for line in lines), lines
        assert lines and all(stamp.match(line) for line in lines), lines
    finally:
        embedded.stop()
        shutil.rmtree(home, ignore_errors=True)


def test_fizz_serve_listens_on_loopback_port_8000_by_default(database: str) -> None:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", 8000))
        except OSError:
            pytest.skip("port 8000 is taken on this machine")
    server = subprocess.Popen([sys.executable, "-m", "fizzbuzz_cli", "serve", "--database-url",
                               database], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", 8000), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, server.stderr
                time.sleep(0.1)
        # Bound to 127.0.0.1 only: the listening socket's local address in /proc/net/tcp.
        table = Path("/proc/net/tcp").read_text().splitlines()[1:]
        listening = [line.split()[1] for line in table
                     if line.split()[3] == "0A" and line.split()[1].endswith(":1F40")]
        assert listening == ["0100007F:1F40"], listening
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
