"""Helpers for the tests of `fizz serve`: the server as a real process, clients over real
sockets, and a check that the server's stderr never shows a traceback.

Fixtures (a test module takes them with `serve = serving.serve`, and so on):
  serve   start servers on the test's database; each must stop cleanly (exit 0) and
          without any traceback on its stderr at the end of the test
  client  a client of one such server
  shared  one server for a whole module, on a database of its own

Run as a script, this file serves with settings the command line does not expose (short
leases and timeouts for tests): python serving.py URL '{"http_lease": 0.5}'
"""

from __future__ import annotations

import http.client
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve()


def allow_open_files(wanted: int) -> None:
    """Raise this process's soft limit on open files (for tests that open thousands of
    connections)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        try:  # as root, the hard limit can be raised too
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(wanted, hard)))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


class ServerProcess:
    """`fizz serve` (or, with `settings`, this file as a script) on a free port; stderr is
    collected line by line."""

    def __init__(self, url: str | None, *options: str, settings: dict[str, Any] | None = None,
                 env: dict[str, str] | None = None, cli: tuple[str, ...] = ()) -> None:
        if settings is not None:
            assert url is not None
            argv = [sys.executable, str(HERE), url, json.dumps({"port": 0, **settings})]
        else:
            argv = [sys.executable, "-m", "fizzbuzz_cli", *cli, "serve", "--port", "0",
                    *(["--database-url", url] if url else []), *options]
        self.lines: list[str] = []
        self.address = threading.Event()
        self.base = ""
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, env={**os.environ, **(env or {})})
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            found = re.search(r"serving the fizz API on (http://\S+)", line)
            if found:
                self.base = found.group(1)
                self.address.set()
        self.address.set()

    def wait_ready(self, timeout: float = 60) -> ServerProcess:
        assert self.address.wait(timeout), "fizz serve did not start in time"
        assert self.base, f"fizz serve did not start:\n{self.log()}"
        return self

    @property
    def host(self) -> str:
        return self.base.removeprefix("http://").rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.base.rsplit(":", 1)[1])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def client(self, token: str | None = None) -> Client:
        return Client(self.base, token)

    def log(self) -> str:
        return "".join(self.lines)

    def wait_for_log(self, text: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            assert time.monotonic() < deadline, f"no {text!r} in the log:\n{self.log()}"
            time.sleep(0.05)

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._reader.join(timeout=5)
        return code

    def rss_kib(self) -> int:
        text = Path(f"/proc/{self.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", text).group(1))  # type: ignore[union-attr]

    def assert_clean(self) -> None:
        """Never a traceback on stderr (nor asyncio's 'never retrieved' complaints)."""
        text = self.log()
        for bad in ("Traceback", "never retrieved", "was never awaited"):
            assert bad not in text, f"the server's stderr shows {bad!r}:\n{text[-5000:]}"


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

    def __init__(self, base: str, token: str | None = None, timeout: float = 10) -> None:
        host, port = base.removeprefix("http://").rsplit(":", 1)
        self.token = token
        self.conn = http.client.HTTPConnection(host, int(port), timeout=timeout)

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

    def close(self) -> None:
        self.conn.close()


def raw(base: str, data: bytes, timeout: float = 5, done: bool = False,
        keep_open: bool = False) -> bytes:
    """Send raw bytes and return whatever comes back until the server closes (a reset
    raises ConnectionResetError: the tests want an answer, never a reset). A server that
    neither closes nor answers within `timeout` fails the test (AssertionError); with
    `keep_open`, a connection the server rightly keeps open returns what came so far.
    `done`: shut our side for writing after sending, as a client with nothing more to say."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        if done:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            if not keep_open:
                raise AssertionError(f"no close within {timeout} s; got {b''.join(chunks)[:200]!r}"
                                     ) from None
    return b"".join(chunks)


def responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split what a server sent on one connection into (status, headers, body) answers
    (bodies framed by Content-Length, as this server frames its error answers)."""
    found = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"an incomplete answer: {data[:200]!r}"
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        found.append((status, headers, rest[:length]))
        data = rest[length:]
    return found


# ---------------------------------------------------------------------------- fixtures

Serve = Callable[..., "ServerProcess"]


def finish(servers: list[ServerProcess]) -> None:
    for server in servers:
        code = server.stop()
        server.assert_clean()
        assert code == 0, f"fizz serve exited {code}:\n{server.log()[-3000:]}"


@pytest.fixture
def serve(database: str) -> Iterator[Serve]:
    started: list[ServerProcess] = []

    def start(*options: str, url: str | None = None, settings: dict[str, Any] | None = None,
              **kwargs: Any) -> ServerProcess:
        server = ServerProcess(url or database, *options, settings=settings, **kwargs)
        started.append(server)
        return server.wait_ready()

    yield start
    finish(started)


@pytest.fixture
def client(serve: Serve) -> Client:
    return serve().client()


@pytest.fixture(scope="module")
def shared(pg_server: Any) -> Iterator[ServerProcess]:
    from helpers import TEMPLATE

    name = f"fizz_test_shared_{os.getpid()}_{time.monotonic_ns()}"
    url = pg_server.create_database(name, template=TEMPLATE)
    server = ServerProcess(url).wait_ready()
    try:
        yield server
    finally:
        finish([server])
        pg_server.drop_database(name)


def main() -> int:
    from fizzbuzz_cli.cli import _configure_logging
    from fizzbuzz_cli.config import ServerSettings
    from fizzbuzz_cli.server import serve

    _configure_logging(verbose=0, quiet=False)
    return serve(sys.argv[1], ServerSettings(**json.loads(sys.argv[2])))


if __name__ == "__main__":
    sys.exit(main())
