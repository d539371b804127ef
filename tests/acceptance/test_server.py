"""`fizz serve` over real HTTP: every route, every error, security, limits and shutdown."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from conftest import PgServer, query

from fizzbuzz_cli.config import ServerSettings
from fizzbuzz_cli.server import Api, FizzHTTPServer, make_pool


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    raw: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.raw)


class Client:
    """A keep-alive HTTP/1.1 client (http.client) for one server."""

    def __init__(self, base: str, token: str | None = None) -> None:
        self.host, self.port = base.removeprefix("http://").split(":")
        self.token = token
        self.conn = http.client.HTTPConnection(self.host, int(self.port), timeout=10)

    def __call__(self, method: str, path: str, body: Any = None,
                 headers: dict[str, str] | None = None) -> Reply:
        sent = dict(headers or {})
        if self.token:
            sent.setdefault("Authorization", f"Bearer {self.token}")
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        self.conn.request(method, path, body=data, headers=sent)
        response = self.conn.getresponse()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()},
                     response.read())


def raw(base: str, data: bytes, timeout: float = 5) -> bytes:
    """Send raw bytes and return whatever comes back until the server closes."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
    return b"".join(chunks)


@pytest.fixture
def serve(database: str) -> Iterator[Callable[..., str]]:
    """Start servers in this process (real sockets, real pool) on this test's database."""
    running: list[tuple[FizzHTTPServer, Any]] = []

    def start(url: str | None = None, **overrides: Any) -> str:
        settings = ServerSettings(**{"port": 0, "pool_size": 4, **overrides})
        pool = make_pool(url or database, settings.pool_size, settings.pool_timeout)
        server = FizzHTTPServer(Api(pool, settings, url or database), settings)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        running.append((server, pool))
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server, pool in running:
        server.close_gracefully(timeout=2)
        pool.close()


@pytest.fixture
def client(serve: Callable[..., str]) -> Client:
    return Client(serve())


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


def test_list_limit_and_streaming_of_many_rows(client: Client, database: str) -> None:
    query(database, "INSERT INTO tasks (tasktype, status, time) SELECT 'Fizz', 'Waiting', "
                    "now() FROM generate_series(1, 3000) RETURNING id")
    listed = client("GET", "/tasks")
    assert listed.headers["transfer-encoding"] == "chunked"
    assert [t["id"] for t in listed.json] == list(range(1, 3001))
    assert [t["id"] for t in client("GET", "/tasks?limit=2").json] == [1, 2]
    assert client("GET", "/tasks?limit=0").json == []
    assert client("GET", "/tasks?filters.status=complete").json == []


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


def test_claims_of_clients_that_died_go_back_to_waiting(serve: Callable[..., str],
                                                        database: str) -> None:
    default = Client(serve())
    default("POST", "/tasks", {"type": "Buzz", "time": "2023-03-28T11:59:59Z"})
    assert default("POST", "/tasks/pull/1").json["status"] == "Claimed"
    assert query(database, "SELECT lease_until - claimed_at FROM tasks") == [
        (timedelta(seconds=60),)]  # the original worker gets a minute per task
    query(database, "UPDATE tasks SET status = 'Waiting', worker = NULL")
    client = Client(serve(http_lease=1.0, reap_interval=0.2))
    assert client("POST", "/tasks/pull/1").json["status"] == "Claimed"
    # Handed back once the lease (1 s) has run out and the server has watched the database
    # for a whole lease since: about 1 s later.
    deadline = time.monotonic() + 10
    while client("GET", "/tasks/1").json["status"] != "Waiting":
        assert time.monotonic() < deadline, "the expired claim was not handed back"
        time.sleep(0.1)
    assert client("POST", "/tasks/pull/1").json["attempts"] == 3


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
        if task["type"] == "Fizz":
            time.sleep(3)
        ran.append(task["id"])
        assert client("POST", f"/tasks/{task['id']}").json["status"] == "Complete"
    assert ran == [1, 2, 3, 4, 5, 6]
    assert query(database, "SELECT count(*) FROM tasks WHERE status = 'Complete'") == [(6,)]


# ------------------------------------------------------------------ client errors


@pytest.mark.parametrize(("body", "message"), [
    (b"{not json", "invalid JSON: "),
    (b"[1, 2]", "the body must be a JSON object"),
    (b'"Fizz"', "the body must be a JSON object"),
    (b'{"time": "2023-03-28T11:59:59Z"}', 'missing "type": one of Fizz, Buzz, FizzBuzz'),
    (b'{"type": "fizz", "time": "2023-03-28T11:59:59Z"}',
     "invalid \"type\" 'fizz': use Fizz, Buzz or FizzBuzz (case-sensitive)"),
    (b'{"type": 3, "time": "2023-03-28T11:59:59Z"}', 'invalid "type" 3'),
    (b'{"type": "Fizz"}', 'missing "time": an RFC 3339 time'),
    (b'{"type": "Fizz", "time": 5}', '"time" must be a string'),
    (b'{"type": "Fizz", "time": "yesterday"}', "invalid \"time\" 'yesterday': use RFC 3339"),
    (b'{"type": "Fizz", "time": "0000-01-01T00:00:00Z"}', "invalid \"time\""),
    (b"[" * 100000 + b"]" * 100000, "invalid JSON"),
])
def test_create_rejects_bad_bodies_with_400(client: Client, database: str, body: bytes,
                                            message: str) -> None:
    if len(body) > 65536:
        reply = client("POST", "/tasks", body[:30000] + body[-30000:])
    else:
        reply = client("POST", "/tasks", body)
    assert reply.status == 400
    assert reply.json["error"].startswith(message), reply.json
    assert query(database, "SELECT count(*) FROM tasks") == [(0,)]


def test_body_framing_errors(serve: Callable[..., str], database: str) -> None:
    base = serve()
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
    assert query(database, "SELECT count(*) FROM tasks") == [(0,)]


@pytest.mark.parametrize(("path", "status", "message"), [
    ("/tasks/abc", 400, "invalid task id 'abc': use a whole number from 1 to 2147483647"),
    ("/tasks/-1", 400, "invalid task id '-1'"),
    ("/tasks/0", 400, "invalid task id '0'"),
    ("/tasks/99999999999", 400, "invalid task id '99999999999'"),
    ("/tasks/1.5", 400, "invalid task id '1.5'"),
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
def test_bad_paths_and_queries(client: Client, path: str, status: int, message: str) -> None:
    reply = client("GET", path)
    assert reply.status == status
    assert reply.json["error"].startswith(message), reply.json


def test_pull_and_complete_validate_ids(client: Client) -> None:
    assert client("POST", "/tasks/pull/abc").status == 400
    assert client("POST", "/tasks/pull/7").json == {"error": "task 7 is not waiting (or does "
                                                             "not exist)"}
    assert client("DELETE", "/tasks/99999999999").status == 400


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("PUT", "/tasks", "GET, HEAD, POST"),
    ("PATCH", "/tasks/1", "DELETE, GET, HEAD, POST"),
    ("DELETE", "/tasks/next", "GET, HEAD"),
    ("GET", "/tasks/pull/1", "POST"),
    ("BREW", "/healthz", "GET, HEAD"),
    ("OPTIONS", "/openapi.json", "GET, HEAD"),
])
def test_wrong_methods_get_405_with_allow(client: Client, method: str, path: str,
                                          allow: str) -> None:
    reply = client(method, path)
    assert (reply.status, reply.headers["allow"]) == (405, allow)
    assert reply.json["error"] == f"method {method} is not allowed on {path}: use {allow}"


def test_head_answers_like_get_without_a_body(client: Client) -> None:
    client("POST", "/tasks", {"type": "Fizz", "time": "2023-03-28T11:59:59Z"})
    reply = client("HEAD", "/tasks/1")
    assert (reply.status, reply.raw) == (200, b"")
    assert int(reply.headers["content-length"]) > 0


def test_request_line_and_header_limits(serve: Callable[..., str]) -> None:
    base = serve()
    long_line = raw(base, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n")
    assert long_line.startswith(b"HTTP/1.1 414 ")
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(80))
    assert raw(base, b"GET /healthz HTTP/1.1\r\n" + many + b"\r\n").startswith(
        b"HTTP/1.1 431 ")
    garbage = raw(base, b"\x16\x03\x01 hello there\r\n\r\n")
    assert garbage.startswith(b"HTTP/1.1 400 ")
    assert b'{"error": ' in garbage


def test_no_500_and_no_traceback_for_garbage(serve: Callable[..., str]) -> None:
    base = serve()
    for data in (b"GET\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"\r\n\r\n",
                 b"POST /tasks HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
                 b"POST /tasks HTTP/1.1\r\nContent-Length: 10\r\nContent-Type: "
                 b"application/json\r\n\r\n{}"):
        answer = raw(base, data, timeout=2)
        assert b" 500 " not in answer[:20] and b"Traceback" not in answer, (data, answer)


# ------------------------------------------------------------------ keep-alive and load


def test_keep_alive_serves_many_requests_on_one_connection(client: Client) -> None:
    for i in range(20):
        assert client("POST", "/tasks", {"type": "Fizz", "time": "2023-03-28T11:59:59Z"}
                      ).json == {"id": i + 1}
    sock = client.conn.sock
    assert client("GET", "/tasks/20").status == 200
    assert client.conn.sock is sock  # the same TCP connection throughout


def test_concurrent_creates_lose_nothing(serve: Callable[..., str], database: str) -> None:
    base = serve(pool_size=4)
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
    assert query(database, "SELECT count(*) FROM tasks") == [(400,)]


def test_slow_clients_are_cut_off(serve: Callable[..., str]) -> None:
    base = serve(request_timeout=1.0, idle_timeout=5.0)
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finishes its headers
        for _ in range(5):
            time.sleep(0.3)
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except OSError:
                break
        assert sock.recv(100) == b""  # closed by the server
        assert time.monotonic() - started < 4


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
    spec = client("GET", "/openapi.json").json
    assert spec["openapi"].startswith("3.")
    assert set(spec["paths"]) == {"/tasks", "/tasks/next", "/tasks/pull/{id}", "/tasks/{id}",
                                  "/healthz", "/metrics", "/openapi.json"}
    assert set(spec["paths"]["/tasks/{id}"]) == {"get", "delete", "post", "parameters"}


def test_bearer_token(serve: Callable[..., str]) -> None:
    base = serve(token="s3cret")
    anonymous = Client(base)
    denied = anonymous("GET", "/tasks")
    assert (denied.status, denied.headers["www-authenticate"]) == (401, 'Bearer realm="fizz"')
    assert denied.json == {"error": "missing or wrong bearer token (Authorization: Bearer "
                                    "<token>)"}
    assert anonymous("GET", "/tasks", headers={"Authorization": "Bearer wrong"}).status == 401
    assert anonymous("GET", "/tasks", headers={"Authorization": "Basic s3cret"}).status == 401
    assert anonymous("POST", "/tasks", {"type": "Fizz", "time": "now"}).status == 401
    assert anonymous("GET", "/healthz").status == 200
    trusted = Client(base, token="s3cret")
    assert trusted("GET", "/tasks").status == 200
    spec = trusted("GET", "/openapi.json").json
    assert spec["security"] == [{"bearerAuth": []}]
    assert spec["paths"]["/healthz"]["get"]["security"] == []


def test_database_outage_is_503_never_500(serve: Callable[..., str], pg_server: PgServer) -> None:
    url = pg_server.create_database("fizz_test_outage", template="fizz_test_template")
    try:
        client = Client(serve(url=url, pool_timeout=0.5))
        assert client("GET", "/tasks").status == 200
        pg_server.drop_database("fizz_test_outage")
        for path in ("/tasks", "/tasks/1", "/tasks/next"):
            reply = client("GET", path)
            assert reply.status == 503, (path, reply)
            assert reply.json == {"error": "database unavailable, try again shortly"}
        assert client("GET", "/healthz").json == {"status": "unavailable",
                                                  "database": "unreachable"}
    finally:
        pg_server.drop_database("fizz_test_outage")


# ------------------------------------------------------------------ the real command


def start_fizz_serve(url: str, *args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "fizzbuzz_cli", "serve", "--port", "0",
                             "--database-url", url, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "serving the fizz API on " in line:
            return proc, line.split("serving the fizz API on ")[1].split()[0]
    raise AssertionError(f"fizz serve did not start: {proc.wait()}")


def test_fizz_serve_logs_each_request_and_stops_cleanly_on_sigterm(database: str) -> None:
    proc, base = start_fizz_serve(database)
    assert base.startswith("http://127.0.0.1:")
    query(database, "INSERT INTO tasks (tasktype, status, time) SELECT 'Fizz', 'Waiting', "
                    "now() FROM generate_series(1, 200000)")
    idle = Client(base)
    assert idle("GET", "/healthz").status == 200  # a keep-alive connection left open
    result: dict[str, Any] = {}

    def fetch_all() -> None:
        result["reply"] = Client(base)("GET", "/tasks")

    fetcher = threading.Thread(target=fetch_all)
    fetcher.start()
    time.sleep(0.3)  # the list is streaming
    proc.send_signal(signal.SIGTERM)
    fetcher.join(timeout=30)
    assert proc.wait(timeout=15) == 0
    assert result["reply"].status == 200
    assert len(result["reply"].json) == 200000  # the request in flight was finished
    log = proc.stderr.read() if proc.stderr else ""
    assert '"GET /tasks" 200' in log and "stopped" in log


def test_fizz_serve_refuses_a_busy_port(database: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "fizzbuzz_cli", "serve", "--port",
                               str(port), "--database-url", database],
                              capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr == f"Error: cannot listen on 127.0.0.1:{port}: Address already in use\n"


def test_fizz_serve_on_an_unreachable_database() -> None:
    done = subprocess.run([sys.executable, "-m", "fizzbuzz_cli", "serve", "--database-url",
                           "postgresql://fizz@127.0.0.1:1/nothing"],
                          capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stderr) == (1, "Error: cannot connect to PostgreSQL at "
                                                 "127.0.0.1:1: Connection refused\n")
