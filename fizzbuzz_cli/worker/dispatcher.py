"""The dispatcher: knows when the next task is due, and claims tasks just before they are.

It LISTENs for new tasks (the insert trigger's `fizz_tasks`), for the next due time other
workers announce after claiming (`fizz_next`), and for deleted claims (`fizz_cancel`); it
keeps a timer for the next due time, and claims in batches `ahead` seconds before it, as
long as there is room (`concurrency`). Idle workers wake at slightly different moments; the
first to claim announces the next due time, and the others take its word instead of each
querying: a wave of tasks costs one claim, not one per idle worker.

Threading: runs on the worker's main thread, with its own connection (a Link); it waits in
a selector on that connection's socket and on a wake-up pipe (signals, freed room). It
shares only the book.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import selectors
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg

from fizzbuzz_cli import claims
from fizzbuzz_cli.config import WorkerSettings
from fizzbuzz_cli.link import CONNECTION_ERRORS, Link, LinkDown, make_durable
from fizzbuzz_cli.worker.book import JobBook
from fizzbuzz_cli.worker.clock import DbClock
from fizzbuzz_cli.worker.metrics import WorkerMetrics

log = logging.getLogger("fizz.worker")

SAFETY_RECHECK = 30.0  # seconds: re-read the next due time even when nothing was announced
ANNOUNCEMENT_MEMORY = 60.0  # seconds an insert announcement is kept to judge a fizz_next


@dataclass(slots=True)
class DueTracker:
    """The database time of the earliest waiting task, as far as this worker knows: from
    its own queries, from insert announcements, and from other workers' `fizz_next`."""

    due: float | None = None
    retry_at: float = 0.0  # database epoch before which not to claim again (a locked row)
    recheck_at: float = 0.0  # monotonic time at which to read the next due time anyway
    announced: list[tuple[float, float, int | None]] = field(default_factory=list)

    def read(self, due: float | None) -> None:
        """A fresh answer from the database."""
        self.due = due
        self.recheck_at = time.monotonic() + SAFETY_RECHECK

    def inserted(self, payload: str) -> None:
        """`fizz_tasks`: '<epoch> <xid>' from the insert trigger, or from a hand-back."""
        earliest, xid = parse_announcement(payload)
        self.announced.append((time.monotonic(), earliest, xid))
        if self.due is None or earliest < self.due:
            self.due = earliest

    def next_announced(self, payload: str) -> None:
        """`fizz_next`: a worker claimed, then read the next due time in `snapshot`. Take its
        word, but keep every new task announced by a transaction that snapshot could not
        see (it may have committed just after, and been announced to us first)."""
        due_text, _, snapshot = payload.partition(" ")
        try:
            due = None if due_text == "-" else float(due_text)
            xmin, xmax, running = parse_snapshot(snapshot)
        except ValueError:
            return  # not ours to understand: keep what we know
        horizon = time.monotonic() - ANNOUNCEMENT_MEMORY
        self.announced = [a for a in self.announced if a[0] > horizon]
        for _, earliest, xid in self.announced:
            seen = xid is not None and (xid < xmin or (xid < xmax and xid not in running))
            if not seen and (due is None or earliest < due):
                due = earliest
        self.due = due

    def is_due(self, now: float, ahead: float) -> bool:
        return self.due is not None and self.due - ahead <= now

    def wants_recheck(self) -> bool:
        return time.monotonic() >= self.recheck_at


class Dispatcher:
    def __init__(self, worker: str, settings: WorkerSettings, book: JobBook, clock: DbClock,
                 metrics: WorkerMetrics, link_factory: Callable[..., Link],
                 on_cancel_all: Callable[[], None]) -> None:
        self.worker, self.settings, self.book, self.clock = worker, settings, book, clock
        self.metrics = metrics
        self.on_cancel_all = on_cancel_all  # '*' on fizz_cancel: too many to list
        self.due = DueTracker()
        self.stopping = False
        self._claiming = False  # a claim statement is out
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._socket = -1
        self.link = link_factory("dispatcher", setup=self._setup, wait=self._pause)

    # ------------------------------------------------------------------ connection

    def _setup(self, conn: psycopg.Connection) -> None:
        """On every (re)connection: durable commits (a claim lost in a crash of PostgreSQL
        would give its attempt number to the next claim of the task, and the fence of a
        record could no longer tell the two apart); LISTEN before reading the next due
        time, so that nothing falls in between; measure the clocks."""
        make_durable(conn)
        conn.add_notify_handler(self._on_notify)
        claims.listen(conn, claims.NOTIFY_CHANNEL, claims.NEXT_CHANNEL, claims.CANCEL_CHANNEL)
        self.clock.measure(conn)
        self.due.read(claims.next_due(conn)[0])

    def connect(self) -> None:
        """Connect now (at start-up: a database that cannot be reached fails the command)."""
        self._watch(self.link.open())

    def _watch(self, conn: psycopg.Connection) -> None:
        if conn.pgconn.socket != self._socket:
            self._unwatch()
            self._socket = conn.pgconn.socket
            self._selector.register(self._socket, selectors.EVENT_READ, "db")

    def _unwatch(self) -> None:
        if self._socket >= 0:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(self._socket)
            self._socket = -1

    def close(self) -> None:
        self._unwatch()
        self.link.close()
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    # ------------------------------------------------------------------ waking

    def wake(self) -> None:
        """From any thread or a signal handler: stop waiting and look again."""
        with contextlib.suppress(BlockingIOError, OSError):  # a full pipe wakes us anyway
            os.write(self._wake_w, b"\0")

    def _pause(self, seconds: float) -> bool:
        """The link's wait between reconnection attempts: wakes for a stop request."""
        self.wait(seconds)
        return self.stopping

    def wait(self, timeout: float) -> None:
        """Sleep until the timeout, a wake-up, or a notification (handled here)."""
        for key, _ in self._selector.select(max(timeout, 0.0)):
            if key.data == "wake":
                with contextlib.suppress(BlockingIOError):
                    while os.read(self._wake_r, 4096):
                        pass
            elif self.link.conn is not None:
                try:
                    pgconn = self.link.conn.pgconn
                    pgconn.consume_input()
                    while (note := pgconn.notifies()) is not None:
                        pgconn.notify_handler(note)  # type: ignore[misc]
                except CONNECTION_ERRORS as exc:
                    self._unwatch()
                    self.link.broke(exc)

    def _on_notify(self, note: psycopg.Notify) -> None:
        if note.channel == claims.NOTIFY_CHANNEL:
            self.due.inserted(note.payload)
        elif note.channel == claims.NEXT_CHANNEL:
            self.due.next_announced(note.payload)
        elif note.channel == claims.CANCEL_CHANNEL:
            if note.payload == "*":
                self.on_cancel_all()
            else:
                ids = {int(i) for i in note.payload.split(",") if i.isdigit()}
                for job in self.book.cancel(ids):
                    log.warning("dropped task %s: it was deleted", job.id)

    # ------------------------------------------------------------------ the loop

    def step(self) -> float | None:
        """Claim what is due (reconnecting first if needed); return how long to sleep, or
        None when draining and there is nothing left to do. Connection trouble is handled
        here: it returns the reconnection delay."""
        try:
            conn = self.link.open()
            self._watch(conn)
            if self.due.wants_recheck():
                self.due.read(self.link.run(claims.next_due)[0])
            self.link.run(self._claim_while_due)
        except LinkDown:
            if self._claiming:  # that claim may have committed: look for orphans
                self._claiming = False
                self.book.suspect_orphans()
            self._unwatch()
            return self.link.pause()
        except CONNECTION_ERRORS as exc:  # a statement timed out; the connection is fine
            log.warning("claiming: %s; retrying", exc)
            return 0.1
        return self._sleep_time()

    def _claim_while_due(self, conn: psycopg.Connection) -> None:
        """Claim batches while tasks are due and there is room."""
        s = self.settings
        retried = False
        while not self.stopping:
            room = s.concurrency - len(self.book)
            now = time.time() + self.clock.offset
            if room <= 0 or not self.due.is_due(now, s.ahead) or now < self.due.retry_at:
                return
            limit = min(s.batch, room)
            started = time.perf_counter()
            self._claiming = True
            batch = claims.claim_due(conn, self.worker, ahead=s.ahead, limit=limit,
                                     lease=s.lease)
            self._claiming = False
            self.metrics.claims.observe(time.perf_counter() - started)
            log.debug("claim query: %s tasks", len(batch.claims))
            if batch.claims:
                self.book.add(batch, self.clock.offset)
            if len(batch.claims) == limit:
                continue  # there may be more
            due, snapshot = claims.next_due(conn)
            self.due.read(due)
            claims.announce_next(conn, due, snapshot)
            now = time.time() + self.clock.offset
            if self.due.is_due(now, s.ahead):
                # Due, yet not claimable: another worker held the rows locked as this claim
                # passed them. Its claim has most likely committed by now: try once more
                # at once, then back off a little (a long transaction may hold them).
                if not retried:
                    retried = True
                    continue
                self.due.retry_at = now + random.uniform(0.005, 0.02)

    def idle(self) -> bool:
        """Nothing in flight and nothing due."""
        now = time.time() + self.clock.offset
        return not len(self.book) and not self.due.is_due(now, self.settings.ahead)

    def _sleep_time(self) -> float:
        s = self.settings
        now = time.time() + self.clock.offset
        room = s.concurrency - len(self.book)
        if room <= 0:
            return 1.0  # the book wakes us when room frees up
        if self.due.due is None:
            return SAFETY_RECHECK
        # Sleep until it is time to claim. Idle workers wake at slightly different moments:
        # the first one claims and announces the next due time, and the others learn from
        # that announcement instead of querying.
        claim_at = max(self.due.due - s.ahead, self.due.retry_at)
        spread = s.ahead / 2 if claim_at > now else 0.002
        return min(max(claim_at - now, 0.0) + random.uniform(0, spread), SAFETY_RECHECK)


def parse_announcement(payload: str) -> tuple[float, int | None]:
    """'<epoch> <xid>' from the insert trigger (an xid may be missing: then never 'seen')."""
    parts = payload.split()
    try:
        earliest = float(parts[0])
    except (ValueError, IndexError):
        return time.time(), None  # unreadable: act as if something is due now
    xid = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    return earliest, xid


def parse_snapshot(text: str) -> tuple[int, int, set[int]]:
    """PostgreSQL's pg_snapshot text, 'xmin:xmax:xip,xip,...'."""
    xmin, xmax, running = text.split(":")
    return int(xmin), int(xmax), {int(x) for x in running.split(",") if x}
