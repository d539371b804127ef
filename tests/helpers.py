"""What tests share: the test PostgreSQL server, running fizz in-process and as processes,
waiting, and reading the database. Fixtures live in conftest.py; everything else a test
imports comes from here (never from conftest, whose module name is not unique)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from typer.testing import CliRunner

from fizzbuzz_cli.cli import app
from fizzbuzz_cli.embedded import EmbeddedServer

TEMPLATE = "fizz_test_template"


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


def run_fizz(*args: str, env: dict[str, str] | None = None,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Runs `python -m fizzbuzz_cli` as a real process."""
    return subprocess.run([sys.executable, "-m", "fizzbuzz_cli", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


class WorkerProc:
    """A real `fizz work` process whose stdout lines are collected with arrival times."""

    def __init__(self, url: str, *args: str, options: tuple[str, ...] = ()) -> None:
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
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait()

    def log(self) -> str:
        return "".join(self.stderr)


def wait_for(condition: Callable[[], object], timeout: float, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s {message}")
        time.sleep(0.02)


def query(url: str, sql_text: str, params: object = None) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql_text, params)
        return cursor.fetchall() if cursor.description else []


def table(url: str) -> list[tuple]:  # type: ignore[type-arg]
    """Every row of tasks, every column, in id order: "nothing changed" is this, equal."""
    return query(url, "SELECT * FROM tasks ORDER BY id")
