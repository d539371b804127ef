"""`fizz serve`: the original project's HTTP API on the standard library, hardened.

``ThreadingHTTPServer`` with HTTP/1.1 keep-alive and a thread per connection, over a
psycopg_pool connection pool and the same database layer as the CLI and the worker.
Routes are plain functions that parse, call one function of ``db``, and return a
``Response``; everything a client sends that is wrong becomes a 4xx JSON error.
"""

from __future__ import annotations

import contextlib
import hmac
import itertools
import json
import logging
import re
import signal
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from fizzbuzz_cli import __version__, db
from fizzbuzz_cli.config import ServerSettings, WorkerSettings
from fizzbuzz_cli.errors import BadInput, TaskNotFound, WrongState, brief
from fizzbuzz_cli.link import Link, Outage, Timeouts
from fizzbuzz_cli.reaper import Reaper, reap_until
from fizzbuzz_cli.tasks import (
    MAX_TASK_ID,
    Status,
    TaskType,
    format_time,
    parse_task_id,
    parse_task_record,
)

log = logging.getLogger("fizz.server")

JSON = "application/json"


# ---------------------------------------------------------------------------- responses


@dataclass
class Response:
    status: int
    body: bytes | Iterator[bytes] = b""  # an iterator is sent with chunked encoding
    content_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, payload: Any, **headers: str) -> Response:
    return Response(status, json.dumps(payload).encode(), headers=headers)


class ApiError(Exception):
    """A client error (or 503): answered as {"error": message}."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}

    def response(self) -> Response:
        return json_response(self.status, {"error": self.message}, **self.headers)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Any  # email.message.Message
    body: Callable[[], bytes]  # reads the body (checked for size and type)
    client: str
    params: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------- the API


class Api:
    """Routes requests to small functions; knows the pool, the settings and the metrics."""

    def __init__(self, pool: ConnectionPool, settings: ServerSettings, url: str = "") -> None:
        self.pool = pool
        self.url = url
        self.settings = settings
        self.metrics = Metrics()
        self.routes: list[Route] = [
            Route("POST", "/tasks", self.create_task),
            Route("GET", "/tasks", self.list_tasks),
            Route("GET", "/tasks/next", self.next_task),
            Route("POST", "/tasks/pull/{id}", self.pull_task),
            Route("GET", "/tasks/{id}", self.get_task),
            Route("DELETE", "/tasks/{id}", self.delete_task),
            Route("POST", "/tasks/{id}", self.complete_task),
            Route("GET", "/healthz", self.health, public=True),
            Route("GET", "/metrics", self.export_metrics),
            Route("GET", "/openapi.json", self.openapi),
        ]

    def handle(self, request: Request) -> tuple[str, Response]:
        """(route template for metrics, response); never raises."""
        template = "unmatched"
        try:
            route, params = self.resolve(request.method, request.path)
            template = route.template
            request.params = params
            if not route.public:
                self.authorize(request)
            return template, route.handler(request)
        except ApiError as exc:
            return template, exc.response()
        except (BadInput, TaskNotFound, WrongState) as exc:
            return template, ApiError(exc.http_status, str(exc)).response()
        except (PoolTimeout, psycopg.OperationalError) as exc:
            log.warning("database unavailable: %s", brief(exc))
            return template, ApiError(503, "database unavailable, try again shortly",
                                      {"Retry-After": "1"}).response()

    def resolve(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        matches = [(route, params) for route in self.routes
                   if (params := route.match(path)) is not None]
        literal = [(r, p) for r, p in matches if not p]
        candidates = literal or matches  # /tasks/next is not /tasks/{id}
        for route, params in candidates:
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return route, params
        if not candidates:
            raise ApiError(404, f"no such resource: {path}")
        allowed = sorted({r.method for r, _ in candidates} | (
            {"HEAD"} if any(r.method == "GET" for r, _ in candidates) else set()))
        raise ApiError(405, f"method {method} is not allowed on {path}: use "
                       f"{', '.join(allowed)}", {"Allow": ", ".join(allowed)})

    def authorize(self, request: Request) -> None:
        token = self.settings.token
        if not token:
            return
        given = request.headers.get("Authorization", "")
        scheme, _, credentials = given.partition(" ")
        expected = token.encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(credentials.strip().encode(),
                                                                 expected):
            raise ApiError(401, "missing or wrong bearer token (Authorization: Bearer <token>)",
                           {"WWW-Authenticate": 'Bearer realm="fizz"'})

    # -------------------------------------------------------------- routes

    def create_task(self, request: Request) -> Response:
        kind, moment = parse_task_record(read_json(request), exact_type=True,
                                         time_required=True, relative=False)
        with self.pool.connection() as conn:
            task = db.add_task(conn, kind, moment)
        return json_response(201, {"id": task.id}, Location=f"/tasks/{task.id}")

    def list_tasks(self, request: Request) -> Response:
        kind = _filter(request, "filters.type", TaskType.parse)
        status = _filter(request, "filters.status", Status.parse)
        limit = _filter(request, "limit", _limit)
        # Streams: the first rows are checked out before the 200 is committed to, then the
        # array goes out in chunks while a server-side cursor reads on.
        rows = _stream_json_array(self.pool, kind, status, limit)
        first = next(rows)
        return Response(200, itertools.chain([first], rows))

    def next_task(self, request: Request) -> Response:
        with self.pool.connection() as conn:
            found = db.next_waiting(conn)
        if found is None:
            raise ApiError(404, "no waiting task")
        return json_response(200, {"id": found[0], "time": format_time(found[1])})

    def pull_task(self, request: Request) -> Response:
        task_id = parse_task_id(request.params["id"])
        with self.pool.connection() as conn:
            task = db.claim_task(conn, task_id, f"http:{request.client}",
                                 self.settings.http_lease)
        return json_response(200, task.to_json())

    def get_task(self, request: Request) -> Response:
        task_id = parse_task_id(request.params["id"])
        with self.pool.connection() as conn:
            return json_response(200, db.get_task(conn, task_id).to_json())

    def delete_task(self, request: Request) -> Response:
        task_id = parse_task_id(request.params["id"])
        with self.pool.connection() as conn:
            return json_response(200, db.delete_task(conn, task_id).to_json())

    def complete_task(self, request: Request) -> Response:
        task_id = parse_task_id(request.params["id"])
        with self.pool.connection() as conn:
            task = db.complete_task(conn, task_id)
        return json_response(200, task.to_json())

    def health(self, request: Request) -> Response:
        try:
            with self.pool.connection(timeout=min(2.0, self.settings.pool_timeout)) as conn:
                conn.execute("SELECT 1")
        except (PoolTimeout, psycopg.OperationalError):
            return json_response(503, {"status": "unavailable", "database": "unreachable"})
        return json_response(200, {"status": "ok", "database": "ok"})

    def export_metrics(self, request: Request) -> Response:
        with self.pool.connection() as conn:
            counts = db.count_tasks(conn)
        text = self.metrics.render(counts)
        return Response(200, text.encode(), content_type="text/plain; version=0.0.4")

    def openapi(self, request: Request) -> Response:
        from fizzbuzz_cli.openapi import spec

        return json_response(200, spec(token=bool(self.settings.token),
                                       max_body=self.settings.max_body))


@dataclass(frozen=True)
class Route:
    method: str
    template: str  # e.g. /tasks/{id}
    handler: Callable[[Request], Response]
    public: bool = False
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        regex = re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/]+)", re.escape(self.template))
        object.__setattr__(self, "pattern", re.compile(regex + r"\Z"))

    def match(self, path: str) -> dict[str, str] | None:
        found = self.pattern.match(path)
        return found.groupdict() if found else None


def _limit(text: str) -> int:
    if not re.fullmatch(r"[0-9]{1,10}", text) or int(text) > MAX_TASK_ID:
        raise BadInput(f"{text!r} is not a whole number from 0 to {MAX_TASK_ID}")
    return int(text)


def _filter(request: Request, name: str, parse: Callable[[str], Any]) -> Any:
    values = request.query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise ApiError(400, f"{name} is given {len(values)} times: give it once")
    try:
        return parse(values[0])
    except BadInput as exc:
        raise ApiError(400, f"invalid {name}: {exc}") from None


def read_json(request: Request) -> dict[str, Any]:
    raw = request.body()
    try:
        payload = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"invalid JSON: {exc}" if isinstance(exc, ValueError)
                       else "invalid JSON: nested too deeply") from None
    if not isinstance(payload, dict):
        raise ApiError(400, 'the body must be a JSON object such as {"type": "Fizz", "time": '
                       '"2023-03-28T11:59:59Z"}')
    return payload


def _stream_json_array(pool: ConnectionPool, kind: TaskType | None, status: Status | None,
                       limit: int | None) -> Iterator[bytes]:
    with pool.connection() as conn:
        tasks = db.iter_tasks(conn, kind, status, limit)
        chunk = [b"["]
        separator = b""
        first = True
        for task in tasks:
            chunk.append(separator + json.dumps(task.to_json()).encode())
            separator = b","
            if len(chunk) >= 500 or first:
                yield b"".join(chunk)
                chunk, first = [], False
        chunk.append(b"]")
        yield b"".join(chunk)


# ---------------------------------------------------------------------------- metrics


class Metrics:
    """Prometheus counters and histograms kept in memory (text format 0.0.4)."""

    BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = {}
        self.durations: dict[str, list[float]] = {}  # route -> bucket counts + [sum, count]

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        with self._lock:
            key = (route, method, status)
            self.requests[key] = self.requests.get(key, 0) + 1
            series = self.durations.setdefault(route, [0.0] * (len(self.BUCKETS) + 2))
            for i, bound in enumerate(self.BUCKETS):
                if seconds <= bound:
                    series[i] += 1
            series[-2] += seconds
            series[-1] += 1

    def render(self, tasks: dict[tuple[str, str], int]) -> str:
        out = ["# HELP fizz_tasks Tasks in the database, by type and status.",
               "# TYPE fizz_tasks gauge"]
        for kind in TaskType:
            for status in Status:
                count = tasks.get((kind.value, status.value), 0)
                out.append(f'fizz_tasks{{type="{kind.value}",status="{status.value}"}} {count}')
        out += ["# HELP fizz_http_requests_total HTTP requests, by route, method and status.",
                "# TYPE fizz_http_requests_total counter"]
        with self._lock:
            requests = sorted(self.requests.items())
            durations = sorted((k, list(v)) for k, v in self.durations.items())
        for (route, method, status), count in requests:
            out.append(f'fizz_http_requests_total{{route="{route}",method="{method}",'
                       f'status="{status}"}} {count}')
        out += ["# HELP fizz_http_request_duration_seconds Time to answer an HTTP request.",
                "# TYPE fizz_http_request_duration_seconds histogram"]
        for route, series in durations:
            for bound, count in zip(self.BUCKETS, series, strict=False):
                out.append(f'fizz_http_request_duration_seconds_bucket{{route="{route}",'
                           f'le="{bound:g}"}} {count:.0f}')
            out.append(f'fizz_http_request_duration_seconds_bucket{{route="{route}",'
                       f'le="+Inf"}} {series[-1]:.0f}')
            out.append(f'fizz_http_request_duration_seconds_sum{{route="{route}"}} '
                       f"{series[-2]:.6f}")
            out.append(f'fizz_http_request_duration_seconds_count{{route="{route}"}} '
                       f"{series[-1]:.0f}")
        return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------- HTTP


class Handler(BaseHTTPRequestHandler):
    """One connection: parses requests (with limits), asks the Api, writes responses."""

    protocol_version = "HTTP/1.1"
    server_version = f"fizz/{__version__}"
    wbufsize = 64 * 1024  # headers and body leave in one write (flushed after each answer)
    server: FizzHTTPServer
    MAX_REQUEST_LINE = 8192
    MAX_HEADERS = 64

    def version_string(self) -> str:
        return self.server_version

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.settings.idle_timeout)
        # No Nagle: a response must not wait for the client's delayed ACK (40 ms).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.waiting_since: float | None = None  # waiting for, or reading, a request
        self.answering = False
        self.server.track(self)

    def finish(self) -> None:
        self.server.untrack(self)
        with contextlib.suppress(OSError):  # the client went away
            super().finish()

    def handle_one_request(self) -> None:
        try:
            self.waiting_since = time.monotonic()
            self.raw_requestline = self.rfile.readline(self.MAX_REQUEST_LINE + 1)
            if not self.raw_requestline:
                self.close_connection = True
                return
            self.started = time.perf_counter()
            if len(self.raw_requestline) > self.MAX_REQUEST_LINE:
                self.requestline, self.request_version, self.command = "", "HTTP/1.1", "GET"
                self._error(414, f"request line longer than {self.MAX_REQUEST_LINE} bytes")
                return
            if not self.parse_request():  # answers 400/431/505 itself, through send_error
                return
            # Every method (PUT, PATCH, OPTIONS, BREW...) goes to the router: 404 or 405 with
            # Allow, never http.server's 501.
            if len(self.headers) > self.MAX_HEADERS:
                self._error(431, f"more than {self.MAX_HEADERS} header lines")
                return
            self._answer()
            self.wfile.flush()
        except TimeoutError:
            self.close_connection = True  # idle or too slow: drop the connection
        except (ConnectionError, BrokenPipeError):
            self.close_connection = True
        finally:
            self.waiting_since = None
            self.answering = False
            if self.server.closing:
                self.close_connection = True

    def _answer(self) -> None:
        url = urlsplit(self.path)
        request = Request(
            method=self.command, path=url.path, query=parse_qs(url.query, keep_blank_values=True),
            headers=self.headers, body=self._read_body, client=self.client_address[0],
        )
        self._consumed_body = False
        self.waiting_since, self.answering = None, True
        route, response = self.server.api.handle(request)
        if not self._consumed_body:
            self._discard_body()
        self._send(response, route)

    def _read_body(self) -> bytes:
        """The request body, checked: present (411), small enough (413), JSON (415)."""
        self._consumed_body = True
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise ApiError(411, "send the body with a Content-Length (chunked bodies are not "
                           "accepted)")
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            raise ApiError(411, "a Content-Length header is required")
        if not length_header.strip().isdigit():
            self.close_connection = True
            raise ApiError(400, f"invalid Content-Length {length_header!r}")
        length = int(length_header)
        limit = self.server.settings.max_body
        if length > limit:
            self.close_connection = True  # the body is not read: the connection is unusable
            raise ApiError(413, f"the body is {length} bytes; the limit is {limit}")
        self.waiting_since = time.monotonic()  # a body trickling in counts as a slow request
        body = self.rfile.read(length)
        self.waiting_since = None
        if len(body) < length:
            self.close_connection = True
            raise ApiError(400, "the body is shorter than its Content-Length")
        if "Content-Type" not in self.headers:
            raise ApiError(415, f"the body must be JSON: send Content-Type: {JSON}")
        content_type = self.headers.get_content_type()
        if content_type != JSON and not content_type.endswith("+json"):
            raise ApiError(415, f"the body must be JSON (Content-Type: {JSON}), not "
                           f"{content_type}")
        return body

    def _discard_body(self) -> None:
        """Read (and ignore) a body the route did not want, to keep the connection in step."""
        length = self.headers.get("Content-Length", "0").strip()
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
        elif length.isdigit() and int(length) <= self.server.settings.max_body:
            self.rfile.read(int(length))
        elif length not in ("", "0"):
            self.close_connection = True

    def _send(self, response: Response, route: str) -> None:
        head_only = self.command == "HEAD"
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if self.close_connection or self.server.closing:
            self.send_header("Connection", "close")
            self.close_connection = True
        if isinstance(response.body, bytes):
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            if not head_only:
                self.wfile.write(response.body)
        else:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self._send_chunks(response.body, head_only)
        self._record(route, response.status)

    def _send_chunks(self, chunks: Iterator[bytes], head_only: bool) -> None:
        try:
            if head_only:
                return
            for chunk in chunks:
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        except (psycopg.OperationalError, PoolTimeout) as exc:
            # The 200 is already out; the only honest signal left is a broken stream.
            log.warning("list stream cut short: %s", exc)
            self.close_connection = True
        finally:
            close = getattr(chunks, "close", None)
            if close:
                close()

    def _error(self, status: int, message: str) -> None:
        self.close_connection = True
        self._send(ApiError(status, message).response(), "unmatched")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (bad request line, bad version...) as JSON too."""
        if not getattr(self, "started", None):
            self.started = time.perf_counter()
        if self.request_version == "HTTP/0.9":  # garbage request line: answer in HTTP/1.1
            self.request_version = "HTTP/1.1"
        self._error(int(code), message or HTTPStatus(code).phrase)

    def _record(self, route: str, status: int) -> None:
        elapsed = time.perf_counter() - getattr(self, "started", time.perf_counter())
        method = self.command if self.command in _METHODS else "OTHER"
        self.server.api.metrics.observe(route, method, status, elapsed)
        log.info('%s "%s %s" %s %.1fms', self.client_address[0], self.command or "-",
                 (self.path or "-")[:200], status, elapsed * 1000)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request is written by _record


_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


class FizzHTTPServer(ThreadingHTTPServer):
    """Bounded threads, timeouts for slow or idle clients, and a graceful shutdown."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, api: Api, settings: ServerSettings) -> None:
        self.api = api
        self.settings = settings
        self.closing = False
        self._stopped = threading.Event()
        self._slots = threading.BoundedSemaphore(settings.max_connections)
        self._connections: set[Handler] = set()
        self._lock = threading.Lock()
        super().__init__((settings.host, settings.port), Handler)
        for job, name in ((self._watch, "watchdog"), (self._reap, "reaper")):
            threading.Thread(target=job, name=f"fizz-http-{name}", daemon=True).start()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            body = b'{"error": "too many connections, try again shortly"}'
            with contextlib.suppress(OSError):
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: "
                                b"application/json\r\nRetry-After: 1\r\nConnection: close\r\n"
                                b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def track(self, handler: Handler) -> None:
        with self._lock:
            self._connections.add(handler)

    def untrack(self, handler: Handler) -> None:
        with self._lock:
            self._connections.discard(handler)

    def _watch(self) -> None:
        """Cut connections that idle, or send their request, for too long (slow clients)."""
        while True:
            time.sleep(min(1.0, self.settings.request_timeout / 4))
            limit = time.monotonic() - self.settings.request_timeout
            with self._lock:
                slow = [h for h in self._connections
                        if h.waiting_since is not None and h.waiting_since < limit]
            for handler in slow:
                _shutdown_socket(handler.connection)

    def _reap(self) -> None:
        """Hand back expired claims: those of clients that pulled a task and died (the
        original worker), and of fizz workers, even when no fizz worker runs."""
        link = Link(self.api.url, "reaper", Timeouts.for_lease(WorkerSettings.lease),
                    Outage(log), application="fizz serve", wait=self._stopped.wait)
        reap_until(self._stopped, link, Reaper(self.settings.reap_interval))

    def close_gracefully(self, timeout: float) -> None:
        """Stop accepting, let requests in flight finish, then close idle keep-alive ones."""
        self.closing = True
        self._stopped.set()
        self.shutdown()  # stops serve_forever
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                idle = [h for h in self._connections if not h.answering]
                busy = len(self._connections) - len(idle)
            for handler in idle:
                _shutdown_socket(handler.connection)
            if not busy and not idle:
                break
            time.sleep(0.02)
        self.server_close()


def _shutdown_socket(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


# ---------------------------------------------------------------------------- running


class Pool(ConnectionPool):
    """A pool whose checkout check costs a round trip only for connections that sat idle.

    psycopg_pool's check_connection pings on every checkout, which under load doubles the
    round trips of a request. A connection handed back less than a second ago is as good
    as a ping; one that sat idle (through a database restart, say) is pinged, and replaced
    by the pool if it is dead. (Stamping in putconn rather than in a reset callback keeps
    the return on the request's own thread.)
    """

    IDLE = 1.0  # seconds

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        returned: weakref.WeakKeyDictionary[psycopg.Connection, float] = (
            weakref.WeakKeyDictionary())

        def check(conn: psycopg.Connection) -> None:
            if time.monotonic() - returned.get(conn, 0.0) > self.IDLE:
                ConnectionPool.check_connection(conn)

        self._returned = returned
        super().__init__(*args, check=check, **kwargs)

    def putconn(self, conn: psycopg.Connection) -> None:
        self._returned[conn] = time.monotonic()
        super().putconn(conn)


def make_pool(url: str, size: int, timeout: float = 5.0) -> Pool:
    params = db.parse_url(url)
    params.setdefault("connect_timeout", db.CONNECT_TIMEOUT)
    params.setdefault("application_name", "fizz serve")
    pool = Pool(kwargs={**params, "autocommit": True}, min_size=min(2, size), max_size=size,
                timeout=timeout, open=False, name="fizz")
    pool.open(wait=True, timeout=10.0)
    return pool


def serve(url: str, settings: ServerSettings, ready: Callable[[str], None] | None = None) -> int:
    """Serve until SIGINT/SIGTERM; returns the exit status (0)."""
    pool = make_pool(url, settings.pool_size, settings.pool_timeout)
    try:
        server = FizzHTTPServer(Api(pool, settings, url), settings)
    except OSError as exc:
        pool.close()
        where = f"{settings.host}:{settings.port}"
        raise BadInput(f"cannot listen on {where}: {exc.strerror}") from None
    host, port = server.server_address[:2]
    address = f"http://{host}:{port}"
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              name="fizz-http", daemon=True)
    thread.start()
    log.info("serving the fizz API on %s%s", address,
             " (bearer token required)" if settings.token else "")
    if ready:
        ready(address)
    try:
        while not stop.wait(0.5):
            pass
        log.info("stopping: finishing requests in flight")
        server.close_gracefully(timeout=10.0)
        thread.join(timeout=5)
    finally:
        pool.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    log.info("stopped")
    return 0
