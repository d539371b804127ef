"""Settings: the environment variables fizz reads, where the embedded server lives, and the
defaults and bounds of the worker and the server.

A leaf: it imports no other fizz module, so anything may import it. Choosing, opening and
migrating the database is `fizzbuzz_cli.database`'s job.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

DATABASE_URL_ENV = "FIZZ_DATABASE_URL"
API_TOKEN_ENV = "FIZZ_API_TOKEN"
HOME_ENV = "FIZZ_HOME"  # the embedded server's folder (default: see default_home)

# Bounds of `fizz work`'s options: beyond them a value is a slip of the keyboard, not a choice.
MAX_CONCURRENCY = 1_000_000  # tasks in flight in one worker
MAX_LEASE = 3600.0  # seconds: a dead worker's tasks would wait this long to run elsewhere
MAX_GRACE = 3600.0  # seconds a stopping worker waits for its running tasks


@dataclass(frozen=True, slots=True)
class DatabaseChoice:
    """Which database a command is to use, and who chose it."""

    url: str | None  # None: the embedded server's, whose URL is known once it runs
    source: str  # "--database-url", FIZZ_DATABASE_URL or "the embedded default"

    @property
    def embedded(self) -> bool:
        return self.url is None


def database_choice(explicit: str | None) -> DatabaseChoice:
    """--database-url, else FIZZ_DATABASE_URL, else the embedded server. Starts nothing."""
    if explicit:
        return DatabaseChoice(explicit, "--database-url")
    if env := os.environ.get(DATABASE_URL_ENV):
        return DatabaseChoice(env, DATABASE_URL_ENV)
    return DatabaseChoice(None, "the embedded default")


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
    drain_wait: bool = False  # with drain: also wait for tasks due later
    metrics_port: int | None = None  # serve Prometheus text on this port (0: any free one)
    metrics_host: str = "127.0.0.1"  # ... on this address
    retain: timedelta | None = None  # purge tasks completed longer ago than this (--retain)

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
    reap_interval: float = 0.5  # seconds between the reaper's observations (see reaper.py)
    retain: timedelta | None = None  # purge tasks completed longer ago than this (--retain)
