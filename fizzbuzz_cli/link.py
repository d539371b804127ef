"""Long-lived database connections that notice a dead peer and heal themselves.

One ``Link`` per thread: it opens its connection lazily, with TCP keepalives and a TCP user
timeout on both ends (so a cut network or a vanished host is noticed within a third of the
lease, by the client and by the server's backend alike), and with statement and lock
timeouts. When a statement fails because the connection broke, the link drops it and the
next call reconnects, after a backoff that never sleeps through a stop request. The links
of one process share an ``Outage``, so a cut is logged once, and the recovery once.

Threading: a Link belongs to one thread. An Outage is shared and locks its own state.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import psycopg

from fizzbuzz_cli import db
from fizzbuzz_cli.errors import DatabaseUnavailable, brief

log = logging.getLogger("fizz.link")

T = TypeVar("T")

# A statement that fails for one of these may have lost its connection: reconnect.
CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError, DatabaseUnavailable)


class LinkDown(Exception):
    """The statement could not run, or its answer was lost; the connection is dropped."""


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long a connection may wait for anything, derived from the lease."""

    dead_peer: float  # seconds to notice a peer that went away (a third of the lease)
    statement: float  # seconds a statement may run (PostgreSQL cancels it after)
    lock: float  # seconds a statement may wait for a row lock

    @classmethod
    def for_lease(cls, lease: float) -> Timeouts:
        third = lease / 3
        return cls(dead_peer=third, statement=max(third, 1.0), lock=min(max(third / 2, 0.5), 2.0))

    def params(self, reconnecting: bool = False) -> dict[str, object]:
        """libpq parameters: the client's keepalives and user timeout, and the same for the
        server's end of the socket (a backend whose client is cut off gives up its locks).

        `reconnecting`: attempts made during an outage wait 2 s at most (libpq's least),
        however long the lease. A connection attempt whose first SYN was lost retransmits
        it after 1 s, then 3 s: one that began while the network was still down could
        otherwise go on for seconds after it came back, where a fresh attempt gets through
        at once."""
        # A keepalive probe goes out after 1 s of silence and every second after; the kernel
        # drops the connection at the first probe after `user_ms` without an answer, so a
        # cut is noticed within user_ms + 1 s: a third of the lease.
        user_ms = max(int((self.dead_peer - 1.0) * 1000), 500)
        server = {
            "statement_timeout": f"{int(self.statement * 1000)}ms",
            "lock_timeout": f"{int(self.lock * 1000)}ms",
            "idle_in_transaction_session_timeout": f"{int(max(self.statement * 2, 5) * 1000)}ms",
            "tcp_keepalives_idle": "1",
            "tcp_keepalives_interval": "1",
            "tcp_keepalives_count": "3",
            "tcp_user_timeout": f"{user_ms}ms",
        }
        return {
            "keepalives": 1,
            "keepalives_idle": 1,
            "keepalives_interval": 1,
            "keepalives_count": 3,
            "tcp_user_timeout": user_ms,
            "connect_timeout": 2 if reconnecting else max(2, math.ceil(self.dead_peer)),
            "options": " ".join(f"-c {key}={value}" for key, value in server.items()),
        }


def connection_params(url: str, timeouts: Timeouts, application: str) -> dict[str, object]:
    """libpq parameters for a URL with these timeouts (the URL's own `options` are kept,
    ours added after them)."""
    params = db.parse_url(url)
    ours = timeouts.params()
    if params.get("options"):
        ours["options"] = f"{params['options']} {ours['options']}"
    return {**params, **ours, "application_name": application}


def connect(url: str, timeouts: Timeouts, application: str,
            reconnecting: bool = False) -> psycopg.Connection:
    """An autocommit connection with these timeouts."""
    params = timeouts.params(reconnecting)
    given = db.parse_url(url).get("options")
    if given:
        params["options"] = f"{given} {params['options']}"
    return db.connect(url, application_name=application, **params)


DURABLE = "SELECT current_setting('synchronous_commit')"


def make_durable(conn: psycopg.Connection) -> None:
    """On a server that acknowledges commits before they are on disk (synchronous_commit
    off), make this connection's commits durable: a completion lost in a crash after a line
    was printed would let a task run again."""
    if conn.execute(DURABLE).fetchone() == ("off",):
        conn.execute("SET synchronous_commit = on")


class Backoff:
    """Delays between reconnection attempts: 0.1 s doubling to `cap`, with jitter so that
    workers spread out. Time already spent in a failed attempt counts towards the delay, so
    that after a network cut heals, some attempt starts within `cap` seconds."""

    def __init__(self, first: float = 0.1, cap: float = 1.0) -> None:
        self.first, self.cap, self.delay = first, cap, first

    def next(self, spent: float = 0.0) -> float:
        delay, self.delay = self.delay, min(self.delay * 2, self.cap)
        return max(delay * random.uniform(0.75, 1.25) - spent, 0.0)

    def reset(self) -> None:
        self.delay = self.first


class Outage:
    """The database as this process sees it through all its links: logs an outage when the
    first link notices it, and its end when that link is back. Links that notice the same
    outage later (their connections were opened before it began: they only now tried to
    use them) reconnect quietly."""

    def __init__(self, logger: logging.Logger = log) -> None:
        self._lock = threading.Lock()
        self._loud: set[str] = set()  # links whose loss opened the current outage
        self._began = -math.inf  # monotonic time the latest outage was noticed
        self._log = logger

    @property
    def down(self) -> bool:
        return bool(self._loud)

    def lost(self, name: str, opened: float, reason: str) -> None:
        """Link `name`, connected since `opened` (monotonic; -inf: never), failed."""
        with self._lock:
            known = bool(self._loud) or opened < self._began
            if not known:
                self._loud.add(name)
                self._began = time.monotonic()
        if known:
            self._log.debug("%s: lost the database too (%s)", name, reason)
        else:
            self._log.warning("lost the database (%s); reconnecting", reason)

    def back(self, name: str) -> None:
        with self._lock:
            if name not in self._loud:
                return
            self._loud.discard(name)
            took = time.monotonic() - self._began
        self._log.info("the database is back (after %.1f s)", took)


class Link:
    """One thread's connection: opened on demand, dropped on failure, reopened with backoff.

    `setup` runs on every new connection (LISTEN, say) before it is used. `wait(seconds)`
    sleeps between attempts and returns True when the owner is stopping.
    """

    def __init__(self, url: str, name: str, timeouts: Timeouts, outage: Outage, *,
                 application: str = "fizz", setup: Callable[[psycopg.Connection], None] | None
                 = None, wait: Callable[[float], bool] | None = None) -> None:
        self.url, self.name, self.timeouts, self.outage = url, name, timeouts, outage
        self.application = application
        self.setup = setup
        self.wait = wait or threading.Event().wait
        self.conn: psycopg.Connection | None = None
        self._opened = -math.inf  # monotonic time the current connection was made
        self._failing = False  # the latest attempt or connection failed
        self._backoff = Backoff()

    def open(self) -> psycopg.Connection:
        """The connection, connecting first if there is none (one attempt; LinkDown if it
        fails)."""
        if self.conn is None:
            try:
                conn = connect(self.url, self.timeouts, self.application,
                               reconnecting=self._failing or self.outage.down)
            except CONNECTION_ERRORS as exc:
                self._failed(exc)
                raise LinkDown(brief(exc)) from None
            try:
                if self.setup is not None:
                    self.setup(conn)
            except CONNECTION_ERRORS as exc:
                conn.close()
                self._failed(exc)
                raise LinkDown(brief(exc)) from None
            except BaseException:
                conn.close()
                raise
            self.conn = conn
            self._opened = time.monotonic()
            self._failing = False
            self._backoff.reset()
            self.outage.back(self.name)
        return self.conn

    def run(self, work: Callable[[psycopg.Connection], T]) -> T:
        """Run `work` once on the connection; LinkDown (connection dropped) if it broke."""
        conn = self.open()
        try:
            result = work(conn)
        except CONNECTION_ERRORS as exc:
            if _still_usable(conn):
                raise  # the statement failed (a timeout, say); the connection is fine
            self.broke(exc)
            raise LinkDown(brief(exc)) from None
        return result

    def call(self, work: Callable[[psycopg.Connection], T],
             stop: Callable[[], bool] = lambda: False) -> T | None:
        """Run `work` until it succeeds, reconnecting as needed; None if `stop()` turns true
        (checked between attempts) first. Failures other than the connection's propagate."""
        while not stop():
            started = time.monotonic()
            try:
                return self.run(work)
            except (LinkDown, *CONNECTION_ERRORS):
                if self.wait(self.pause(time.monotonic() - started)):
                    return None
        return None

    def pause(self, spent: float = 0.0) -> float:
        """How long to wait before the next attempt."""
        return self._backoff.next(spent)

    def broke(self, exc: BaseException) -> None:
        """The connection failed outside `run` (reading notifications): drop it."""
        self.drop()
        self._failed(exc)

    def drop(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            finally:
                self.conn = None

    close = drop

    def _failed(self, exc: BaseException) -> None:
        self._failing = True
        self.outage.lost(self.name, self._opened, brief(exc))


def _still_usable(conn: psycopg.Connection) -> bool:
    """After an error: is the connection still open and idle (a cancelled or timed-out
    statement), rather than broken?"""
    return not conn.closed and not conn.broken and (
        conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE)
