"""Test fixtures: one real PostgreSQL per session, one fresh database per test.

The server is started through fizz's own embedded code (as users get it) in a throwaway
folder, unless FIZZ_TEST_DATABASE_URL names a server to use instead (a superuser URL; the
tests create and drop databases on it). A template database is migrated once; every test
that asks for `database` gets a copy of it (CREATE DATABASE ... TEMPLATE: ~20 ms).
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from typer.testing import CliRunner

from fizzbuzz_cli import db
from fizzbuzz_cli.cli import app
from fizzbuzz_cli.embedded import EmbeddedServer

TEMPLATE = "fizz_test_template"
_counter = itertools.count()


@dataclass
class PgServer:
    admin_url: str  # a superuser connection to the maintenance database
    embedded: EmbeddedServer | None  # None when FIZZ_TEST_DATABASE_URL is used

    def url(self, dbname: str) -> str:
        return make_conninfo(self.admin_url, dbname=dbname)

    def create_database(self, name: str, template: str | None = None) -> str:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if template:
                query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
            conn.execute(query)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


def new_home(prefix: str = "fizz-test-") -> Path:
    """A short folder under /tmp (socket paths are short; as root, the server's user must be
    able to enter it, which pytest's 0700 tmp_path does not allow)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


@pytest.fixture(scope="session", autouse=True)
def isolated_environment() -> Iterator[None]:
    """Never touch the user's own embedded server or database during tests."""
    saved = {key: os.environ.get(key) for key in ("FIZZ_HOME", "FIZZ_DATABASE_URL")}
    home = new_home("fizz-test-default-")
    os.environ["FIZZ_HOME"] = str(home)
    os.environ.pop("FIZZ_DATABASE_URL", None)
    yield
    EmbeddedServer(home).stop()
    shutil.rmtree(home, ignore_errors=True)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def pg_server(isolated_environment: None) -> Iterator[PgServer]:
    external = os.environ.get("FIZZ_TEST_DATABASE_URL")
    if external:
        server = PgServer(external, None)
        server.drop_database(TEMPLATE)
        server.create_database(TEMPLATE)
        _migrate(server.url(TEMPLATE))
        yield server
        server.drop_database(TEMPLATE)
        return
    home = new_home()
    embedded = EmbeddedServer(home, throwaway=True)
    try:
        embedded.ensure_running()
        server = PgServer(embedded.url(dbname="postgres"), embedded)
        server.create_database(TEMPLATE)
        _migrate(server.url(TEMPLATE))
        yield server
    finally:
        embedded.stop()
        shutil.rmtree(home, ignore_errors=True)


def _migrate(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        db.migrate(conn)


@pytest.fixture
def database(pg_server: PgServer) -> Iterator[str]:
    """The URL of a fresh, migrated, empty database for this test alone."""
    name = f"fizz_test_{os.getpid()}_{next(_counter)}"
    url = pg_server.create_database(name, template=TEMPLATE)
    yield url
    pg_server.drop_database(name)


@pytest.fixture
def empty_database(pg_server: PgServer) -> Iterator[str]:
    """The URL of a fresh database with no schema at all."""
    name = f"fizz_test_empty_{os.getpid()}_{next(_counter)}"
    url = pg_server.create_database(name)
    yield url
    pg_server.drop_database(name)


@pytest.fixture
def conn(database: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database, autocommit=True) as connection:
        yield connection


@dataclass
class Fizz:
    """Runs `fizz` in-process through Typer's CliRunner, against one test database."""

    url: str | None

    def __call__(self, *args: str, input: str | None = None, url: bool = True) -> Result:
        env = {"FIZZ_DATABASE_URL": self.url} if url and self.url else {}
        result = CliRunner().invoke(app, list(args), input=input, env=env, catch_exceptions=False,
                                    prog_name="fizz")
        return Result(result.exit_code, result.stdout, result.stderr)


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def fizz(database: str) -> Fizz:
    return Fizz(database)


def run_fizz(*args: str, env: dict[str, str] | None = None,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Runs `python -m fizzbuzz_cli` as a real process."""
    return subprocess.run([sys.executable, "-m", "fizzbuzz_cli", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


class WorkerProc:
    """A real `fizz work` process whose stdout lines are collected with arrival times."""

    def __init__(self, url: str, *args: str, options: tuple[str, ...] = ()) -> None:
        import threading

        self.lines: list[tuple[float, str]] = []
        self.stderr: list[str] = []
        self.ready = threading.Event()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fizzbuzz_cli", *options, "work", "--database-url", url,
             *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
        )
        self._threads = [threading.Thread(target=self._read_out, daemon=True),
                         threading.Thread(target=self._read_err, daemon=True)]
        for thread in self._threads:
            thread.start()

    def _read_out(self) -> None:
        import time

        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.time(), line.rstrip("\n")))

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)
            if " ready: " in line:
                self.ready.set()

    def wait_ready(self, timeout: float = 30) -> WorkerProc:
        assert self.ready.wait(timeout), "".join(self.stderr)
        return self

    def output(self) -> list[str]:
        return [line for _, line in self.lines]

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        code = self.proc.wait(timeout)
        for thread in self._threads:
            thread.join(timeout=5)
        return code

    def stop(self) -> int:
        import signal

        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait()

    def log(self) -> str:
        return "".join(self.stderr)


@pytest.fixture
def workers(database: str) -> Iterator[Callable[..., WorkerProc]]:
    """Start real workers on this test's database; any still running are stopped at the end."""
    started: list[WorkerProc] = []

    def start(*args: str, url: str | None = None, ready: bool = True,
              options: tuple[str, ...] = ()) -> WorkerProc:
        proc = WorkerProc(url or database, *args, options=options)
        started.append(proc)
        return proc.wait_ready() if ready else proc

    yield start
    for proc in started:
        if proc.proc.poll() is None:
            proc.proc.kill()
            proc.proc.wait()


def wait_for(condition: Callable[[], object], timeout: float, message: str = "") -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s {message}")
        time.sleep(0.02)


def query(url: str, sql_text: str, params: object = None) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql_text, params)
        return cursor.fetchall() if cursor.description else []
