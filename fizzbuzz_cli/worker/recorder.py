"""The recorder: completes each job in the database shortly before its line is due.

"Record, then print": a job's run is recorded (the task marked Complete, fenced by this
worker's claim: same worker, same attempt, still Claimed) before the printer may print it.
Records go out in batches, `lead` seconds before the earliest line is due, where the lead
is what the statement is expected to take (learned from the last ones) plus a margin, and
grows with a backlog so that even 10,000 lines due at the same instant are all recorded
before it. The window between a record and its line is what a worker killed outright
(kill -9, power loss) loses; its length is logged at debug level and measured in bench/.

A record whose answer is lost (the connection breaks as it commits) is asked about again
after reconnecting: the job is printed (late) if the record committed, and recorded again
if the claim is still this worker's; otherwise it was never recorded and is not printed.
A statement that fails without breaking the connection (a timeout) is retried.

Threading: one thread, with its own connection (a Link); shares only the book.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

import psycopg

from fizzbuzz_cli import claims
from fizzbuzz_cli.errors import brief
from fizzbuzz_cli.link import CONNECTION_ERRORS, Link, LinkDown, make_durable
from fizzbuzz_cli.worker.book import Job, JobBook
from fizzbuzz_cli.worker.metrics import WorkerMetrics
from fizzbuzz_cli.worker.thread import WorkerThread

log = logging.getLogger("fizz.worker")

BATCH = 1000  # runs per record statement at most
MARGIN = 0.001  # seconds of slack beyond the expected statement time
COALESCE = 0.002  # seconds: lines due this close to the first share its statement


def prepare(conn: psycopg.Connection) -> None:
    """The setup of the recorder's connection. On a server that acknowledges commits before
    they are on disk (synchronous_commit off), it asks for durable commits: a record lost
    in a crash after its line was printed would let the task run again. And it runs an
    empty record, so that the first real one finds its plan and catalogs warm."""
    make_durable(conn)
    claims.record_runs(conn, "", [])


class StatementTime:
    """What a record statement for n runs is expected to take: base + per_row * n, each
    part rising at once with a slow sample and decaying slowly (late is worse than early)."""

    def __init__(self, base: float = 0.003, per_row: float = 0.000025) -> None:
        self.base, self.per_row = base, per_row

    def __call__(self, n: int) -> float:
        return self.base + self.per_row * n

    def observe(self, n: int, seconds: float) -> None:
        if n <= 20:
            self.base = _peak_decay(self.base, max(seconds - self.per_row * n, 0.0003))
        else:
            self.per_row = _peak_decay(self.per_row,
                                       max((seconds - self.base) / n, 0.000002))


def _peak_decay(current: float, sample: float) -> float:
    return sample if sample > current else current * 0.9 + sample * 0.1


class Recorder(WorkerThread):
    def __init__(self, book: JobBook, link: Link, worker: str, metrics: WorkerMetrics,
                 stopping: Callable[[], bool], on_crash: Callable[[str], None]) -> None:
        super().__init__("fizz-recorder", on_crash)
        self.book, self.link, self.worker = book, link, worker
        self.stopping = stopping  # an immediate stop: give up on unanswered records
        self.metrics = metrics
        self.expected = StatementTime()

    def work(self) -> None:
        book = self.book
        with contextlib.suppress(LinkDown):  # connect (and warm up) before the first record
            self.link.open()
        while True:
            with book.recorder_wake:
                while True:
                    if book.closed:
                        return
                    at = book.next_record_time(self.expected, BATCH, MARGIN)
                    wait = None if at is None else at - time.time()
                    if wait is not None and wait <= 0:
                        break
                    book.recorder_wake.wait(wait)
                jobs = book.take_for_record(time.time(), COALESCE, BATCH)
            if jobs:
                self._record(jobs)

    def _record(self, jobs: list[Job]) -> None:
        """Record these jobs and settle them in the book, whatever it takes."""
        runs = [job.run for job in jobs]
        while True:
            started = time.perf_counter()
            try:
                recorded = self.link.run(lambda conn: claims.record_runs(conn, self.worker, runs))
            except LinkDown:
                # Committed or not, the answer is lost: the next attempt (after reconnecting)
                # records what is still ours and reports what an earlier attempt recorded.
                if self.link.wait(self.link.pause()) or self.stopping():
                    self._give_up(jobs)
                    return
                continue
            except CONNECTION_ERRORS as exc:  # a timeout: nothing was recorded; try again
                log.warning("could not record %s runs (%s); retrying", len(jobs),
                            brief(exc))
                if self.link.wait(0.05) or self.stopping():
                    self.book.retry(jobs)
                    return
                continue
            break
        elapsed = time.perf_counter() - started
        self.expected.observe(len(jobs), elapsed)
        self.metrics.records.observe(elapsed)
        lost = self.book.settle(jobs, recorded)
        self.metrics.dropped.inc(len(lost))
        for job in lost:
            log.warning("dropped task %s: it is no longer this worker's to run (deleted, or "
                        "handed back after its lease ran out)", job.id)
        log.debug("recorded %s runs in %.1f ms, %.1f ms before the first line",
                  len(jobs) - len(lost), elapsed * 1000, (jobs[0].fire - time.time()) * 1000)

    def _give_up(self, jobs: list[Job]) -> None:
        """Stopping at once with records unanswered: what committed cannot be known, so
        nothing is printed; a committed record stays Complete (its line is lost), one that
        did not commit leaves the claim to run elsewhere when its lease ends."""
        log.error("stopping without knowing whether %s runs were recorded; their lines are "
                  "not printed", len(jobs))
        self.book.settle(jobs, set())
