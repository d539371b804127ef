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
from collections.abc import Callable, Iterator

import psycopg
import pytest
from helpers import TEMPLATE, Fizz, PgServer, WorkerProc, new_home

from fizzbuzz_cli import db
from fizzbuzz_cli.embedded import EmbeddedServer

_counter = itertools.count()


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


@pytest.fixture
def fizz(database: str) -> Fizz:
    return Fizz(database)


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


