"""`fizz serve` under hostile load: many connections, slow clients, slow readers, and a
PostgreSQL that is frozen or gone. Each test is a row of the issue that rebuilt the server
on asyncio (what was done, and what must happen now).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import serving
from helpers import new_home, query
from serving import Client, ServerProcess, allow_open_files, raw, responses

from fizzbuzz_cli import db
from fizzbuzz_cli.embedded import EmbeddedServer

serve = serving.serve
Serve = serving.Serve

GET = b"GET /tasks/next HTTP/1.1\r\nHost: x\r\n\r\n"


async def ask(host: str, port: int, data: bytes = GET, timeout: float = 30) -> bytes:
    """One request on a new connection; everything the server sends until it closes or
    has answered (a reset raises)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(data)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        return head + await asyncio.wait_for(reader.readexactly(length), timeout)
    finally:
        writer.close()


def timed(client: Client, method: str, path: str, body: object = None) -> tuple[int, float]:
    started = time.monotonic()
    reply = client(method, path, body)
    return reply.status, time.monotonic() - started


# ------------------------------------------------------------------ many connections


def test_two_thousand_connections_at_once_are_all_answered(serve: Serve) -> None:
    """Was: 256 served, 1744 reset. Now every one gets its answer."""
    allow_open_files(6000)
    server = serve()

    async def everyone() -> list[bytes | BaseException]:
        return await asyncio.gather(*(ask(server.host, server.port) for _ in range(2000)),
                                    return_exceptions=True)

    answers = asyncio.run(everyone())
    failures = [a for a in answers if isinstance(a, BaseException)]
    assert not failures, failures[:5]
    assert all(a.startswith(b"HTTP/1.1 404 ") for a in answers)  # type: ignore[union-attr]


def test_beyond_the_limit_a_503_and_a_close_never_a_reset(serve: Serve) -> None:
    allow_open_files(2000)
    server = serve("--max-connections", "50", "--head-timeout", "30")
    busy = []
    for _ in range(50):  # 50 connections in the middle of a request: none of them idles
        sock = socket.create_connection((server.host, server.port), timeout=10)
        sock.sendall(b"GET /tasks/next HTTP/1.1\r\n")
        busy.append(sock)
    time.sleep(0.5)

    async def more() -> list[bytes | BaseException]:
        return await asyncio.gather(*(ask(server.host, server.port) for _ in range(200)),
                                    return_exceptions=True)

    answers = asyncio.run(more())
    failures = [a for a in answers if isinstance(a, BaseException)]
    assert not failures, failures[:5]
    for answer in answers:
        assert isinstance(answer, bytes)
        status, headers, body = responses(answer)[0]
        assert (status, headers["connection"], headers["retry-after"]) == (503, "close", "1")
        assert body == b'{"error": "too many connections, try again shortly"}'
    for sock in busy[:10]:
        sock.close()
    time.sleep(0.5)
    assert asyncio.run(ask(server.host, server.port)).startswith(b"HTTP/1.1 404 ")
    for sock in busy[10:]:
        sock.sendall(b"Host: x\r\n\r\n")  # the busy ones finish their requests and are answered
        assert sock.recv(1000).startswith(b"HTTP/1.1 404 ")
        sock.close()


def test_ten_thousand_idle_connections_neither_lock_out_nor_slow_a_client(
        serve: Serve) -> None:
    """Idle clients cost a coroutine: with 10,000 of them open (the default limit), a
    normal client is served, in the place of the longest idle one; idle ones are closed
    after the idle timeout."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    count = min(10_000, hard - 1000)
    allow_open_files(count + 1000)
    server = serve("--idle-timeout", "20")
    idle = []
    for _ in range(count):
        idle.append(socket.create_connection((server.host, server.port), timeout=30))
    try:
        client = server.client()
        took = []
        for _ in range(200):
            status, seconds = timed(client, "GET", "/tasks/next")
            assert status == 404
            took.append(seconds)
        took.sort()
        assert took[100] < 0.05 and took[-1] < 1.0, (took[100], took[-1])
        # The first connections opened made room for the client (the longest idle ones);
        # all the others are still open.
        closed = 0
        for sock in idle:
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                closed += sock.recv(1) == b""
        assert closed <= 2, closed
    finally:
        for sock in idle:
            sock.close()


def test_idle_connections_are_closed_after_the_idle_timeout(serve: Serve) -> None:
    server = serve("--idle-timeout", "1")
    client = server.client()
    assert client("GET", "/healthz").status == 200
    with socket.create_connection((server.host, server.port), timeout=10) as fresh:
        started = time.monotonic()
        assert fresh.recv(100) == b""  # closed by the server, no answer needed
        assert 0.7 < time.monotonic() - started < 4
    time.sleep(0.5)
    with pytest.raises((ConnectionError, OSError)):
        client("GET", "/healthz")  # http.client does not retry: the old socket was closed
        raise ConnectionError("still open")


# ------------------------------------------------------------------ slow clients


def test_slow_clients_neither_starve_others_nor_stay(serve: Serve) -> None:
    """Was: 300 connections sending one byte every 5 s made every normal client get 503
    for 16 s, forever if they reconnected. Now they are cut at the head deadline, and a
    normal client is served all along."""
    allow_open_files(3000)
    server = serve("--head-timeout", "2")
    stop = threading.Event()
    cut = 0
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"y" * 100 + b"\r\n\r\n"

    async def slow_client() -> None:
        nonlocal cut
        while not stop.is_set():  # reconnects when cut off, and keeps at it
            reader, writer = await asyncio.open_connection(server.host, server.port)
            try:
                for byte in request:
                    if stop.is_set():
                        return
                    writer.write(bytes([byte]))
                    await asyncio.sleep(0.5)
                    if reader.at_eof():
                        break
                    await writer.drain()
            except ConnectionError:
                pass
            finally:
                writer.close()
            cut += 1

    async def all_slow_clients() -> None:
        await asyncio.gather(*(slow_client() for _ in range(300)), return_exceptions=True)

    slow = threading.Thread(target=asyncio.run, args=(all_slow_clients(),))
    slow.start()
    try:
        time.sleep(1)
        client = server.client()
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            status, seconds = timed(client, "GET", "/healthz")
            assert (status, seconds < 1) == (200, True), seconds
            time.sleep(0.05)
        assert cut >= 300  # each was cut off at least once
    finally:
        stop.set()
        slow.join(timeout=30)


def test_a_slow_head_is_cut_at_the_head_deadline(serve: Serve) -> None:
    server = serve("--head-timeout", "1")
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finishes its headers
        for _ in range(10):
            time.sleep(0.3)
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except OSError:
                break
        # Closed by the server (unread header bytes at the close may make it a reset: fair
        # for a slowloris).
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(100) == b""
        assert time.monotonic() - started < 4


def test_a_reader_that_stops_reading_is_cut_and_costs_no_memory(serve: Serve,
                                                                database: str) -> None:
    query(database, "INSERT INTO tasks (tasktype, status, time) SELECT 'Fizz', 'Waiting', "
                    "now() FROM generate_series(1, 100000)")
    server = serve(settings={"stall_timeout": 1.5})
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((server.host, server.port))
    sock.sendall(b"GET /tasks HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.recv(1000).startswith(b"HTTP/1.1 200 ")
    time.sleep(3)  # stalled past the deadline
    sock.setblocking(False)
    received = 0
    with pytest.raises((ConnectionResetError, BlockingIOError)):
        while chunk := sock.recv(1 << 20):
            received += len(chunk)
        raise ConnectionResetError  # EOF: cut as well
    sock.close()
    assert received < 5_000_000  # a few pages at most, never the whole list (25 MB)
    assert server.client()("GET", "/tasks/1").status == 200


# ------------------------------------------------------------------ the pool is not a hostage


def test_slow_readers_of_long_lists_hold_no_database_connection(serve: Serve,
                                                               database: str) -> None:
    """Was: 17 clients reading GET /tasks (300k rows) slowly held the 16-connection pool:
    every other database route answered 503 after 5 s and /healthz said the database was
    unreachable. Now the list is read in pages, with no connection held between them."""
    query(database, "INSERT INTO tasks (tasktype, status, time) SELECT 'Fizz', 'Waiting', "
                    "now() FROM generate_series(1, 300000)")
    server = serve("--pool-size", "4")
    client = server.client()
    assert client("GET", "/tasks/1").status == 200
    before = server.rss_kib()
    readers = []
    for _ in range(17):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((server.host, server.port))
        sock.sendall(b"GET /tasks HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(1000).startswith(b"HTTP/1.1 200 ")  # then it stops reading
        readers.append(sock)
    try:
        time.sleep(1)
        for method, path, body in (("GET", "/tasks/1", None), ("GET", "/tasks/next", None),
                                   ("POST", "/tasks", {"type": "Fizz", "time": "2030-01-01T00:00:00Z"}),
                                   ("GET", "/tasks?limit=5", None), ("GET", "/metrics", None),
                                   ("DELETE", "/tasks/2", None)):
            status, seconds = timed(client, method, path, body)
            assert status < 300 and seconds < 1, (method, path, status, seconds)
        assert client("GET", "/healthz").json == {"status": "ok", "database": "ok"}
        grown = server.rss_kib() - before
        assert grown < 60_000, f"{grown} KiB more while 17 readers stall"  # not 17 x 75 MB
    finally:
        for sock in readers:
            sock.close()


def test_a_slow_reader_still_gets_the_whole_list(serve: Serve, database: str) -> None:
    query(database, "INSERT INTO tasks (tasktype, status, time) SELECT 'Fizz', 'Waiting', "
                    "now() FROM generate_series(1, 30000)")
    server = serve(settings={"list_page": 500})
    sock = socket.create_connection((server.host, server.port), timeout=10)
    sock.sendall(b"GET /tasks HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = sock.recv(2000)
    query(database, "DELETE FROM tasks WHERE id = 29999")  # between two pages
    time.sleep(2)  # a pause in the middle
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    _head, _, body = data.partition(b"\r\n\r\n")
    decoded = b""
    while body:
        size, _, rest = body.partition(b"\r\n")
        n = int(size, 16)
        decoded += rest[:n]
        body = rest[n + 2:]
        if n == 0:
            break
    ids = [t["id"] for t in json.loads(decoded)]
    assert ids == [i for i in range(1, 30001) if i != 29999]


# ------------------------------------------------------------------ PostgreSQL frozen or gone


@pytest.fixture
def own_postgres() -> Iterator[tuple[EmbeddedServer, str]]:
    """A PostgreSQL of this test's own (never the session's shared one), to freeze or stop."""
    home = new_home("fizz-test-own-pg-")
    embedded = EmbeddedServer(home, throwaway=True)
    try:
        url = embedded.ensure_database()
        with psycopg.connect(url, autocommit=True) as conn:
            db.migrate(conn)
            conn.execute("INSERT INTO tasks (tasktype, status, time) SELECT 'Fizz', "
                         "'Waiting', now() FROM generate_series(1, 100)")
        yield embedded, url
    finally:
        _thaw(embedded)
        embedded.stop()
        shutil.rmtree(home, ignore_errors=True)


def _postgres_processes(embedded: EmbeddedServer) -> list[int]:
    """The postmaster, then its children."""
    postmaster = embedded.status().pid
    assert postmaster is not None
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == postmaster:
                children.append(int(entry.name))
    return [postmaster, *children]


_frozen: list[int] = []


def _freeze(embedded: EmbeddedServer) -> None:
    for pid in _postgres_processes(embedded):
        os.kill(pid, signal.SIGSTOP)
        _frozen.append(pid)


def _thaw(embedded: EmbeddedServer) -> None:
    while _frozen:
        pid = _frozen.pop()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


DATABASE_ROUTES = [("GET", "/tasks/1", None), ("GET", "/tasks", None),
                   ("GET", "/tasks/next", None), ("POST", "/tasks/pull/3", None),
                   ("POST", "/tasks/4", None), ("DELETE", "/tasks/5", None),
                   ("POST", "/tasks", {"type": "Fizz", "time": "2023-03-28T11:59:59Z"}),
                   ("POST", "/tasks", [{"type": "Fizz", "time": "2023-03-28T11:59:59Z"}]),
                   ("GET", "/metrics", None)]


def _bounded_answers(server: ServerProcess) -> dict[str, tuple[int, float]]:
    """Every database route and /healthz at the same time, each on its own connection."""
    results: dict[str, tuple[int, float]] = {}

    def one(name: str, method: str, path: str, body: object) -> None:
        try:
            results[name] = timed(Client(server.base, timeout=30), method, path, body)
        except OSError:
            results[name] = (-1, 99.0)

    threads = [threading.Thread(target=one, args=(
        f"{m} {p} {'[array]' if isinstance(b, list) else ''}", m, p, b))
        for m, p, b in [*DATABASE_ROUTES, ("GET", "/healthz", None)]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def _check_bounded(results: dict[str, tuple[int, float]]) -> None:
    health = results.pop("GET /healthz ")
    assert health[0] == 503 and health[1] < 2.0, health
    for name, (status, seconds) in results.items():
        assert status == 503 and seconds < 5.0, (name, status, seconds)


def _wait_until_served(server: ServerProcess, timeout: float = 30) -> None:
    client = Client(server.base, timeout=10)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if (client("GET", "/healthz").status == 200
                    and client("GET", "/tasks/1").status == 200):
                return
        except OSError:
            client = Client(server.base, timeout=10)
        assert time.monotonic() < deadline, "the server did not recover"
        time.sleep(0.2)


def test_postgresql_frozen_bounded_answers_and_recovery(
        serve: Serve, own_postgres: tuple[EmbeddedServer, str]) -> None:
    """Was: with PostgreSQL stopped by SIGSTOP for 20 s, /healthz hung 20.6 s then said
    200, and GET /tasks/next hung 20.4 s. Now /healthz answers 503 within 2 s and every
    database route 503 within 5 s, while it is frozen (it answers neither queries nor
    cancel requests); all is well again once it runs."""
    embedded, url = own_postgres
    server = serve(url=url)
    client = server.client()
    assert client("GET", "/tasks/1").status == 200
    time.sleep(1.2)  # pooled connections have idled (they will be checked before use)
    _freeze(embedded)
    try:
        _check_bounded(_bounded_answers(server))
        _check_bounded(_bounded_answers(server))  # and again, with connections cut
    finally:
        _thaw(embedded)
    _wait_until_served(server)


def test_postgresql_gone_bounded_answers_and_recovery(
        serve: Serve, own_postgres: tuple[EmbeddedServer, str]) -> None:
    embedded, url = own_postgres
    server = serve(url=url)
    assert server.client()("GET", "/tasks/1").status == 200
    embedded.stop()
    try:
        _check_bounded(_bounded_answers(server))
    finally:
        embedded.ensure_running()
    _wait_until_served(server)


def test_a_restart_of_postgresql_between_requests_goes_unnoticed(
        serve: Serve, own_postgres: tuple[EmbeddedServer, str]) -> None:
    """Connections that died with a restart are found out before use (the pool's are pinged
    after idling, the probe's is tried again): the first requests after it are answered."""
    embedded, url = own_postgres
    client = serve(url=url).client()
    assert client("GET", "/healthz").status == 200
    assert client("GET", "/tasks/1").status == 200
    embedded.restart()
    time.sleep(1.2)  # the pooled connections have idled
    assert client("GET", "/healthz").json == {"status": "ok", "database": "ok"}
    assert client("GET", "/tasks/1").status == 200
    assert client("GET", "/tasks/next").status == 200


def test_healthz_does_not_wait_behind_a_taken_pool_and_statements_time_out(
        serve: Serve, database: str) -> None:
    """/healthz probes on a connection of its own: a pool taken by statements that wait
    (here on a lock) does not make it say the database is unreachable; the statements
    that wait are stopped by the statement timeout (503), and the pool is whole after."""
    server = serve("--pool-size", "2")
    with psycopg.connect(database) as locker:
        locker.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")  # held until rollback
        results: list[tuple[int, float]] = []
        threads = [threading.Thread(target=lambda: results.append(
            timed(Client(server.base, timeout=30), "GET", "/tasks/1"))) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        status, seconds = timed(server.client(), "GET", "/healthz")
        assert (status, seconds < 2) == (200, True), seconds
        for thread in threads:
            thread.join(timeout=30)
        locker.rollback()
    assert sorted(r[0] for r in results) == [503] * 4
    assert max(r[1] for r in results) < 5.0, results
    query(database, "INSERT INTO tasks (tasktype, status, time) VALUES ('Fizz', 'Waiting', "
                    "now())")
    client = server.client()
    for _ in range(4):
        assert client("GET", "/tasks/1").status == 200


def test_raw_helper_sees_no_reset_on_error_answers(serve: Serve) -> None:
    """A 413 for a body that is never read, with more data still coming: the answer arrives,
    then the close (in stages), never a reset that would destroy the answer."""
    base = serve().base
    answer = raw(base, b"POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Content-Length: 99999999\r\n\r\n" + b"[" * 300000, timeout=10)
    assert answer.startswith(b"HTTP/1.1 413 ")
