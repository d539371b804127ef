"""The worker: runs each due task at its time, exactly once, until it is stopped.

Four threads, each with one job and (where it needs one) its own connection:

- the dispatcher (the calling thread) LISTENs for new tasks, keeps a timer for the next due
  time, and claims tasks a short, bounded time (``ahead``) before they are due, in batches;
- the runner sleeps to the exact time of each claimed task and prints its line;
- the completer marks printed tasks complete in batches, fenced by worker and attempt;
- the lease keeper renews this worker's leases and returns other workers' expired claims
  to Waiting, on a thread of its own so that a busy runner cannot starve it.

Exactly once: a task is printed only while this worker's lease on it is known to hold
(claimed or renewed less than ``lease`` ago), and completed only if the claim is still
this worker's. A worker that dies loses its leases; any other worker's keeper then hands
its tasks back. Leases are never reaped in the first ``lease`` seconds after PostgreSQL
(re)started, so live workers can reconnect and renew first.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import random
import secrets
import selectors
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TextIO

import psycopg

from fizzbuzz_cli import db
from fizzbuzz_cli.config import WorkerSettings
from fizzbuzz_cli.errors import DatabaseUnavailable, brief
from fizzbuzz_cli.tasks import UTC

log = logging.getLogger("fizz.worker")

SAFETY_RECHECK = 30.0  # seconds: re-read the next due time even when nothing was announced
_CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError, DatabaseUnavailable)


@dataclass(eq=False, slots=True)
class Job:
    claim: db.Claim
    start: float  # local epoch seconds at which the task starts
    fire: float  # local epoch seconds at which it prints its line
    claimed: float  # monotonic time just before the claim was sent: its lease holds from then
    cancelled: bool = False


class Backoff:
    """Delays for reconnecting: 0.1 s doubling to 2 s, with jitter so workers spread out."""

    def __init__(self, first: float = 0.1, cap: float = 2.0) -> None:
        self.first, self.cap, self.delay = first, cap, first

    def next(self) -> float:
        delay, self.delay = self.delay, min(self.delay * 2, self.cap)
        return delay * random.uniform(0.75, 1.25)

    def reset(self) -> None:
        self.delay = self.first


class Worker:
    def __init__(self, url: str, settings: WorkerSettings | None = None,
                 out: TextIO | None = None) -> None:
        self.url = url
        self.settings = settings or WorkerSettings()
        self.out = out or sys.stdout
        self.id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.offset = 0.0  # database clock minus ours, when it is large enough to matter
        self.stopping = False  # first signal: take no new task
        self.immediate = False  # second signal: hand back everything now
        self.ran = self.handed_back = 0
        self.failure: str | None = None  # set when the worker must stop with an error
        self._inflight = 0  # claimed and not yet completed or handed back
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.runner = Runner(self)
        self.completer = Completer(self)
        self.keeper = LeaseKeeper(self)
        self._conn: psycopg.Connection | None = None
        self._conn_fd = -1
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._next_due: float | None = None  # database epoch of the earliest waiting task
        self._retry_at = 0.0  # database epoch before which not to claim again
        self._recheck_at = 0.0  # monotonic time at which to re-read the next due time
        self._announced: list[tuple[float, float, int | None]] = []  # (when, due, xid)
        self._signals: list[str] = []

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> int:
        """Work until stopped (or, with drain, until idle); returns the exit status: 0, or 1
        after a failure (see `failure`)."""
        self._connect()  # fails fast, with a clear error, if the database is unreachable
        self._install_signal_handlers()
        previous_interval = sys.getswitchinterval()
        sys.setswitchinterval(0.0005)  # let the runner take the GIL quickly at a task's time
        for thread in (self.runner, self.completer, self.keeper):
            thread.start()
        log.info("worker %s ready: concurrency %s, lease %ss, claiming %ss ahead%s",
                 self.id, self.settings.concurrency, _num(self.settings.lease),
                 _num(self.settings.ahead), ", draining" if self.settings.drain else "")
        try:
            self._dispatch()
        finally:
            self._shutdown()
            sys.setswitchinterval(previous_interval)
        log.info("worker %s stopped: ran %s tasks, handed back %s", self.id, self.ran,
                 self.handed_back)
        return 1 if self.failure else 0

    def fail(self, message: str) -> None:
        """Stop at once (handing everything back) and exit 1 with this message."""
        if self.failure is None:
            self.failure = message
            log.error("%s: stopping", message)
            with contextlib.suppress(OSError, ValueError):  # later writes go nowhere
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self.out.fileno())
        self.stopping = self.immediate = True
        self.wake()

    def request_stop(self) -> None:
        """First call: stop taking tasks and finish gracefully. Second: hand back now."""
        if self.stopping:
            self.immediate = True
        self.stopping = True
        self.wake()

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # a full pipe: the dispatcher wakes anyway
            os.write(self._wake_w, b"\0")

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handle(signum: int, frame: object) -> None:
            self._signals.append(signal.Signals(signum).name)  # logged by the main loop
            self.request_stop()

        signal.signal(signal.SIGINT, handle)
        signal.signal(signal.SIGTERM, handle)

    # ------------------------------------------------------------------ bookkeeping

    @property
    def inflight(self) -> int:
        return self._inflight

    def _count(self, delta: int) -> None:
        with self._lock:
            self._inflight += delta
        if delta < 0:
            self.wake()  # capacity freed, or the worker may be idle now

    def lease_holds(self, job: Job) -> bool:
        """Is this job's lease certainly still ours (claimed or renewed recently enough)?"""
        since = max(job.claimed, self.keeper.renewed)
        margin = min(1.0, self.settings.lease * 0.2)
        return time.monotonic() < since + self.settings.lease - margin

    def now(self) -> datetime:
        """The current UTC time on the database's clock (ours, unless they differ)."""
        now = datetime.now(UTC)
        return now + timedelta(seconds=self.offset) if self.offset else now

    # ------------------------------------------------------------------ dispatcher

    def _connect(self) -> None:
        conn = db.connect(self.url)
        try:
            conn.add_notify_handler(self._on_notify)
            # LISTEN before reading the next due time, so that nothing falls in between.
            db.listen(conn, db.NOTIFY_CHANNEL, db.NEXT_CHANNEL, db.CANCEL_CHANNEL)
            self._measure_clock(conn)
            self._next_due = db.next_due(conn)[0]
            self._recheck_at = time.monotonic() + SAFETY_RECHECK
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._conn_fd = conn.pgconn.socket
        self._selector.register(self._conn_fd, selectors.EVENT_READ, "db")

    def _disconnect(self) -> None:
        if self._conn is None:
            return
        with contextlib.suppress(KeyError):
            self._selector.unregister(self._conn_fd)
        self._conn.close()
        self._conn = None

    def _measure_clock(self, conn: psycopg.Connection) -> None:
        offset, uncertainty = db.database_clock(conn)
        self.offset = clock_correction(offset, uncertainty)
        if abs(offset) > 0.5:
            log.warning("this machine's clock is %.3f s %s the database's; tasks run on the "
                        "database's clock", abs(offset), "behind" if offset > 0 else "ahead of")

    def _dispatch(self) -> None:
        backoff = Backoff()
        while not self.stopping:
            try:
                if self._conn is None:
                    self._connect()
                    log.info("reconnected to the database")
                    backoff.reset()
                timeout = self._claim_what_is_due()
                if timeout is None:
                    return  # drained
                self._wait(timeout)
            except _CONNECTION_ERRORS as exc:
                log.warning("database connection lost (%s); reconnecting", brief(exc))
                self._disconnect()
                self._wait(backoff.next())

    def _claim_what_is_due(self) -> float | None:
        """Claim due tasks while there are some and room for them; return how long to wait
        (None when draining and there is nothing left to do)."""
        s = self.settings
        assert self._conn is not None
        if time.monotonic() >= self._recheck_at:  # a safety net for missed announcements
            self._next_due = db.next_due(self._conn)[0]
            self._recheck_at = time.monotonic() + SAFETY_RECHECK
        while not self.stopping:
            room = s.concurrency - self._inflight
            now = time.time() + self.offset
            due = self._next_due is not None and self._next_due - s.ahead <= now
            if due and room > 0 and now >= self._retry_at:
                limit = min(s.batch, room)
                sent = time.monotonic()
                claims = db.claim_due(self._conn, self.id, ahead=s.ahead, limit=limit,
                                      lease=s.lease)
                log.debug("claim query: %s tasks", len(claims))
                if claims:
                    self._count(len(claims))
                    self.runner.add(claims, sent)
                if len(claims) == limit:
                    continue  # there may be more
                self._next_due, snapshot = db.next_due(self._conn)
                db.announce_next(self._conn, self._next_due, snapshot)
                now = time.time() + self.offset
                if self._next_due is not None and self._next_due - s.ahead <= now:
                    # Due, yet not claimable: another worker holds the row locked right now.
                    self._retry_at = now + random.uniform(0.005, 0.02)
                continue
            if s.drain and not due and self._inflight == 0:
                return None
            if room <= 0 or self._next_due is None:
                return SAFETY_RECHECK if room > 0 else 1.0
            # Sleep until it is time to claim. Idle workers wake at slightly different
            # moments: the first one claims and announces the next due time, and the others
            # learn from that announcement instead of querying.
            claim_at = max(self._next_due - s.ahead, self._retry_at)
            spread = s.ahead / 2 if claim_at > now else 0.002
            return min(max(claim_at - now, 0.0) + random.uniform(0, spread), SAFETY_RECHECK)
        return 0.0

    def _wait(self, timeout: float) -> None:
        """Sleep until the timeout, a wake-up (signal, freed capacity) or a notification."""
        for key, _ in self._selector.select(timeout):
            if key.data == "wake":
                with contextlib.suppress(BlockingIOError):
                    while os.read(self._wake_r, 4096):
                        pass
            elif self._conn is not None:
                try:
                    pgconn = self._conn.pgconn
                    pgconn.consume_input()
                    while (note := pgconn.notifies()) is not None:
                        pgconn.notify_handler(note)  # type: ignore[misc]
                except _CONNECTION_ERRORS as exc:
                    log.warning("database connection lost (%s); reconnecting", brief(exc))
                    self._disconnect()
        self._log_signals()

    def _log_signals(self) -> None:
        while self._signals:
            name = self._signals.pop(0)
            if self.immediate:
                log.warning("%s again: handing back every task now", name)
            else:
                log.info("%s: taking no new tasks; running ones get %ss to finish", name,
                         _num(self.settings.grace))

    def _on_notify(self, note: psycopg.Notify) -> None:
        if note.channel == db.NOTIFY_CHANNEL:
            earliest, xid = _parse_announcement(note.payload)
            self._announced.append((time.monotonic(), earliest, xid))
            if self._next_due is None or earliest < self._next_due:
                self._next_due = earliest
        elif note.channel == db.NEXT_CHANNEL:
            self._on_next(note.payload)
        elif note.channel == db.CANCEL_CHANNEL:
            if note.payload == "*":
                self.keeper.renew_soon()
            else:
                self.runner.cancel({int(i) for i in note.payload.split(",") if i.isdigit()},
                                   "it was deleted")

    def _on_next(self, payload: str) -> None:
        """A worker claimed, then read the next due time in `snapshot`: take its word, but
        keep every new task announced by a transaction that snapshot could not see (it may
        have committed just after, and been announced to us first)."""
        due_text, _, snapshot = payload.partition(" ")
        try:
            due = None if due_text == "-" else float(due_text)
            xmin, xmax, running = _parse_snapshot(snapshot)
        except ValueError:
            return  # not ours to understand: keep what we know
        horizon = time.monotonic() - 60.0
        self._announced = [a for a in self._announced if a[0] > horizon]
        for _, earliest, xid in self._announced:
            seen = xid is not None and (xid < xmin or (xid < xmax and xid not in running))
            if not seen and (due is None or earliest < due):
                due = earliest
        self._next_due = due

    # ------------------------------------------------------------------ stopping

    def _shutdown(self) -> None:
        self.stopping = True
        self._log_signals()
        unstarted = self.runner.take(lambda job: job.start > time.time())
        self._hand_back(unstarted, "not yet started")
        deadline = time.monotonic() + self.settings.grace
        while self.runner.pending() and not self.immediate and time.monotonic() < deadline:
            self._wait(min(0.1, max(deadline - time.monotonic(), 0)))
        rest = self.runner.take(lambda job: True)
        self._hand_back(rest, "still running when the grace period ended"
                        if not self.immediate else "stopped at once")
        self.runner.close()
        self.completer.close(timeout=self.settings.lease)
        self.keeper.close()
        self._disconnect()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _hand_back(self, jobs: list[Job], why: str) -> None:
        if not jobs:
            return
        ids = [job.claim.id for job in jobs]
        backoff = Backoff()
        deadline = time.monotonic() + 5.0
        while True:
            try:
                if self._conn is None:
                    self._connect()
                released = db.release_claims(self._conn, self.id, ids)  # type: ignore[arg-type]
                break
            except _CONNECTION_ERRORS as exc:
                self._disconnect()
                if time.monotonic() > deadline:
                    log.error("could not hand back %s tasks (%s); they return to Waiting when "
                              "their lease ends", len(ids), brief(exc))
                    released = 0
                    break
                time.sleep(backoff.next())
        self.handed_back += released
        self._count(-len(jobs))
        log.info("handed back %s tasks (%s)", released, why)


class Runner(threading.Thread):
    """Sleeps to the exact time of each claimed task, then prints its line."""

    def __init__(self, worker: Worker) -> None:
        super().__init__(name="fizz-runner", daemon=True)
        self.worker = worker
        self.cond = threading.Condition()
        self.heap: list[tuple[float, int, Job]] = []
        self.jobs: dict[int, Job] = {}  # claimed and not yet printed, by task id
        self.unconfirmed: list[Job] = []  # due, but waiting for the lease to be confirmed
        self.seq = itertools.count()
        self.closed = False

    def add(self, claims: list[db.Claim], claimed: float) -> None:
        now = time.time()
        offset = self.worker.offset
        superseded = 0
        with self.cond:
            for claim in claims:
                # Never early: 1 us of margin against float rounding of the due time.
                start = max(claim.due - offset + 1e-6, now)
                job = Job(claim, start, start + claim.type.duration, claimed)
                old = self.jobs.get(claim.id)
                if old is not None:  # our lease on it ran out and we claimed it again
                    old.cancelled = True
                    superseded += 1
                self.jobs[claim.id] = job
                heapq.heappush(self.heap, (job.fire, next(self.seq), job))
            self.cond.notify()
        if superseded:
            self.worker._count(-superseded)

    def pending(self) -> int:
        with self.cond:
            return len(self.jobs)

    def take(self, which: Callable[[Job], bool]) -> list[Job]:
        """Remove (and cancel) the unprinted jobs that match, e.g. to hand them back."""
        with self.cond:
            taken = [job for job in self.jobs.values() if which(job)]
            for job in taken:
                job.cancelled = True
                del self.jobs[job.claim.id]
            self.cond.notify()
        return taken

    def cancel(self, ids: Iterable[int], why: str) -> None:
        with self.cond:
            dropped = [self.jobs.pop(i) for i in ids if i in self.jobs]
            for job in dropped:
                job.cancelled = True
        for job in dropped:
            log.warning("dropped task %s: %s", job.claim.id, why)
        if dropped:
            self.worker._count(-len(dropped))

    def reconcile(self, held: set[tuple[int, int]], asked: float) -> None:
        """After a renewal: drop jobs whose claim was lost, run those now confirmed."""
        with self.cond:
            lost = [job.claim.id for job in self.jobs.values()
                    if job.claimed < asked and (job.claim.id, job.claim.attempt) not in held]
            confirmed, self.unconfirmed = self.unconfirmed, []
            for job in confirmed:
                heapq.heappush(self.heap, (0.0, next(self.seq), job))
            self.cond.notify()
        self.cancel(lost, "its claim was lost (deleted, or its lease ran out)")

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify()
        self.join(timeout=5)

    def run(self) -> None:
        while True:
            with self.cond:
                while True:
                    if self.closed:
                        return
                    wait = self.heap[0][0] - time.time() if self.heap else None
                    if wait is not None and wait <= 0:
                        break
                    self.cond.wait(wait)
                ready = []
                now = time.time()
                while self.heap and self.heap[0][0] <= now:
                    ready.append(heapq.heappop(self.heap)[2])
            for job in ready:
                self._fire(job)

    def _fire(self, job: Job) -> None:
        worker = self.worker
        with self.cond:
            if job.cancelled or worker.failure:
                return  # (after a failure, every unprinted job is handed back)
            if not worker.lease_holds(job):
                self.unconfirmed.append(job)
                worker.keeper.renew_soon()
                return
            del self.jobs[job.claim.id]  # from here on it cannot be cancelled
        line = job.claim.type.output(job.claim.id, worker.now())
        try:
            worker.out.write(line + "\n")
            worker.out.flush()
        except (OSError, ValueError) as exc:  # stdout is gone (e.g. piped into `head`)
            with self.cond:
                self.jobs[job.claim.id] = job  # not run: handed back with the rest
            worker.fail(f"cannot write to stdout ({exc})")
            return
        worker.completer.put(job.claim)


class Completer(threading.Thread):
    """Marks printed tasks complete, in batches, on its own connection; retries until done."""

    def __init__(self, worker: Worker) -> None:
        super().__init__(name="fizz-completer", daemon=True)
        self.worker = worker
        self.cond = threading.Condition()
        self.queue: list[db.Claim] = []
        self.busy = False
        self.closing = False
        self.conn: psycopg.Connection | None = None

    def put(self, claim: db.Claim) -> None:
        with self.cond:
            self.queue.append(claim)
            self.cond.notify()

    def close(self, timeout: float) -> None:
        with self.cond:
            self.closing = True
            self.cond.notify()
        self.join(timeout)
        if self.is_alive():
            log.error("could not record the completion of some tasks; they return to Waiting "
                      "when their lease ends")
        elif self.conn is not None:
            self.conn.close()

    def run(self) -> None:
        backoff = Backoff()
        while True:
            with self.cond:
                while not self.queue and not self.closing:
                    self.cond.wait()
                if not self.queue:
                    return
                batch, self.queue = self.queue, []
            while True:
                try:
                    if self.conn is None:
                        self.conn = db.connect(self.worker.url)
                    started = time.perf_counter()
                    held = db.complete_claims(self.conn, self.worker.id, batch)
                    log.debug("completed %s tasks in %.1f ms", len(batch),
                              (time.perf_counter() - started) * 1000)
                    backoff.reset()
                    break
                except _CONNECTION_ERRORS as exc:
                    if self.conn is not None:
                        self.conn.close()
                        self.conn = None
                    log.warning("could not record %s completions (%s); retrying", len(batch),
                                brief(exc))
                    time.sleep(backoff.next())
            for claim in batch:
                if claim.id not in held:
                    log.warning("task %s ran, but was no longer this worker's to complete "
                                "(deleted, or its lease ran out)", claim.id)
            self.worker.ran += len(batch)
            self.worker._count(-len(batch))


class LeaseKeeper(threading.Thread):
    """Renews this worker's leases every lease / 3 and hands back others' expired claims."""

    def __init__(self, worker: Worker) -> None:
        super().__init__(name="fizz-lease-keeper", daemon=True)
        self.worker = worker
        self.renewed = 0.0  # monotonic time just before the last successful renewal
        self._event = threading.Event()
        self._closing = False
        self.conn: psycopg.Connection | None = None

    def renew_soon(self) -> None:
        self._event.set()

    def close(self) -> None:
        self._closing = True
        self._event.set()
        self.join(timeout=5)
        if self.conn is not None:
            self.conn.close()

    def run(self) -> None:
        lease = self.worker.settings.lease
        backoff = Backoff()
        next_reap = 0.0
        while not self._closing:
            try:
                if self.conn is None:
                    self.conn = db.connect(self.worker.url)
                if self.worker.inflight or self.worker.runner.unconfirmed:
                    asked = time.monotonic()
                    held = db.renew_leases(self.conn, self.worker.id, lease)
                    self.renewed = asked
                    self.worker.runner.reconcile(held, asked)
                if time.monotonic() >= next_reap and not self.worker.stopping:
                    grace = self.worker.settings.reap_grace
                    for reaped in db.reap_expired(self.conn, grace=grace):
                        log.warning("task %s was claimed by %s, whose lease ran out: back to "
                                    "Waiting", reaped.id, reaped.worker or "an unknown worker")
                    next_reap = time.monotonic() + lease / 2 * random.uniform(0.8, 1.2)
                backoff.reset()
                pause = lease / 3
            except _CONNECTION_ERRORS as exc:
                if self.conn is not None:
                    self.conn.close()
                    self.conn = None
                log.warning("could not renew leases (%s); retrying", brief(exc))
                pause = backoff.next()
            self._event.wait(pause)
            self._event.clear()


def clock_correction(offset: float, uncertainty: float) -> float:
    """The offset to run on: none when the difference is within the measurement's noise (one
    machine, or clocks in sync to the millisecond), else the measured one."""
    return offset if abs(offset) > max(uncertainty, 0.001) else 0.0


def _parse_announcement(payload: str) -> tuple[float, int | None]:
    """'<epoch> <xid>' from the insert trigger (an xid may be missing: then never 'seen')."""
    parts = payload.split()
    try:
        earliest = float(parts[0])
    except (ValueError, IndexError):
        return time.time(), None  # unreadable: act as if something is due now
    xid = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    return earliest, xid


def _parse_snapshot(text: str) -> tuple[int, int, set[int]]:
    """PostgreSQL's pg_snapshot text, 'xmin:xmax:xip,xip,...'."""
    xmin, xmax, running = text.split(":")
    return int(xmin), int(xmax), {int(x) for x in running.split(",") if x}


def _num(value: float) -> str:
    return f"{value:g}"
