"""Configuration: which database to use, and the defaults of the worker and the server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from fizzbuzz_cli import db

DATABASE_URL_ENV = "FIZZ_DATABASE_URL"
API_TOKEN_ENV = "FIZZ_API_TOKEN"
HOME_ENV = "FIZZ_HOME"  # the embedded server's folder (default: see default_home)
RECONNECT_ALLOWANCE = 5.0  # seconds live workers get to reconnect after PostgreSQL restarts


def default_home() -> Path:
    """Where the embedded server keeps its data (see fizzbuzz_cli.embedded)."""
    if env := os.environ.get(HOME_ENV):
        return Path(env).expanduser().absolute()
    if os.geteuid() == 0:
        return Path("/var/lib/fizz")
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "fizz"


@dataclass(frozen=True)
class WorkerSettings:
    concurrency: int = 10_000  # tasks in flight at most (claimed and not yet completed)
    lease: float = 10.0  # seconds a claim lasts unless renewed (renewed every lease / 3)
    ahead: float = 0.25  # claim tasks this long before they are due
    batch: int = 1000  # tasks per claim query at most
    grace: float = 6.0  # on stop, how long running tasks may take to finish
    drain: bool = False  # stop once nothing is due or in flight

    @property
    def reap_grace(self) -> float:
        """Seconds after a PostgreSQL restart during which no expired lease is reaped: one
        lease plus time for live workers to reconnect (their backoff stops at 2 s)."""
        return self.lease + RECONNECT_ALLOWANCE

    def __post_init__(self) -> None:
        if not 0 <= self.ahead <= self.lease / 2:
            raise ValueError("ahead must be between 0 and half the lease")


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"  # loopback only unless told otherwise
    port: int = 8000
    token: str | None = None  # when set, every route but /healthz needs "Bearer <token>"
    pool_size: int = 16  # database connections at most
    max_connections: int = 10_000  # client connections at once (beyond: the longest idle one
    #                                makes room, else a 503 and a close)
    idle_timeout: float = 15.0  # seconds a connection may wait for its next request
    head_timeout: float = 10.0  # seconds from a request's first byte to the end of its head
    stall_timeout: float = 10.0  # seconds a body read or a response write may make no progress
    db_timeout: float = 3.5  # seconds a request may wait on PostgreSQL in all (a free
    #                          connection included), then 503; also the statement timeout
    health_timeout: float = 1.25  # seconds /healthz waits for its probe, then 503
    max_body: int = 64 * 1024  # bytes of request body at most (413 beyond) ...
    max_array_body: int = 8 * 1024 * 1024  # ... but for a JSON array of tasks (bulk POST)
    list_page: int = 1000  # tasks per page read by GET /tasks (no connection held between)
    http_lease: float = 60.0  # seconds a claim made through POST /tasks/pull/<id> lasts
    reap_interval: float = 5.0  # how often the server hands back expired claims
    reap_grace: float = WorkerSettings.lease + RECONNECT_ALLOWANCE  # see WorkerSettings


def database_url(explicit: str | None) -> tuple[str, bool]:
    """(URL, is_embedded): --database-url, else FIZZ_DATABASE_URL, else the embedded server.

    The embedded server is started on first use, with its database created and migrated.
    """
    url = explicit or os.environ.get(DATABASE_URL_ENV)
    if url:
        return url, False
    from fizzbuzz_cli.embedded import EmbeddedServer

    return EmbeddedServer().ensure_database(), True


def prepared_database_url(explicit: str | None) -> str:
    """The URL for the long-running commands (work, serve), checked before they start: the
    embedded database is migrated; another one must already have the current schema."""
    url, embedded = database_url(explicit)
    with db.session(url) as conn:
        if embedded:
            db.ensure_schema(conn)
        else:
            db.require_schema(conn)
    return url


@contextmanager
def open_database(explicit: str | None) -> Iterator[psycopg.Connection]:
    """One connection to the configured database, errors translated for the user.

    The embedded database is fizz's own, so its schema is created or upgraded on the spot;
    a database named by URL is left alone until `fizz init-db` is run on it.
    """
    url, embedded = database_url(explicit)
    with db.session(url) as conn:
        if embedded:
            db.ensure_schema(conn)
        yield conn
