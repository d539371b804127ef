"""The lease keeper: renews this worker's claims, hands back its orphans, and reaps.

Every `lease / 3` it renews exactly the claims the book says this worker holds (a claim
whose answer has not been read yet is not renewed, and is not judged either); a held claim
the renewal did not find is lost (deleted, completed by someone else, or reaped while this
worker could not renew) and its job is dropped before it can be recorded. When a claim's
answer was lost (and every tenth renewal, as a safety net), it then hands back the rows
Claimed under this worker's name that it does not hold and that were claimed no later than
the last claim it read back: nothing of this worker's stays Claimed without a job behind it.

The renewal also keeps the worker's row in fizz_workers fresh (what it holds and has run).
Between renewals it ticks the reaper (see fizzbuzz_cli.reaper) a few times a second; every
statement on this connection is an observation of the database for it.

Threading: one thread, with its own connection (a Link); shares only the book.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

import psycopg

from fizzbuzz_cli import claims
from fizzbuzz_cli.errors import brief
from fizzbuzz_cli.link import CONNECTION_ERRORS, Link, LinkDown
from fizzbuzz_cli.reaper import Reaper
from fizzbuzz_cli.worker.book import JobBook
from fizzbuzz_cli.worker.metrics import WorkerMetrics
from fizzbuzz_cli.worker.thread import WorkerThread

log = logging.getLogger("fizz.worker")


ORPHAN_CHECK_EVERY = 10  # renewals between two checks for orphans when none is suspected


def reap_interval(lease: float) -> float:
    """Seconds between reaper ticks: often enough that a gap of three is short next to the
    lease (a holder renews every third of it)."""
    return min(0.5, lease / 6)


class Keeper(WorkerThread):
    def __init__(self, book: JobBook, link: Link, describe: Callable[[], claims.WorkerInfo],
                 lease: float, metrics: WorkerMetrics, on_crash: Callable[[str], None]) -> None:
        super().__init__("fizz-keeper", on_crash)
        self.book, self.link, self.describe, self.lease = book, link, describe, lease
        self.reaper = Reaper(reap_interval(lease))
        self.metrics = metrics
        self.worker = describe().id
        self._renewals = 0
        self.reaping = True  # a stopping worker stops handing back others' claims
        self._soon = threading.Event()
        self._closing = threading.Event()

    def renew_soon(self) -> None:
        self._soon.set()

    def close(self) -> None:
        self._closing.set()
        self._soon.set()
        self.join(timeout=10)
        self.link.close()

    def work(self) -> None:
        next_renewal = 0.0
        while not self._closing.is_set():
            try:
                if time.monotonic() >= next_renewal or self._soon.is_set():
                    self._soon.clear()
                    self.link.run(self._renew)
                    next_renewal = time.monotonic() + self.lease / 3
                if self.reaping:
                    self.metrics.reaped.inc(len(self.link.run(self.reaper.tick)))
                pause = self.reaper.interval * random.uniform(0.9, 1.1)
            except LinkDown:
                self.reaper.broken()
                pause = self.link.pause()
            except CONNECTION_ERRORS as exc:  # a statement timed out; the connection is fine
                log.warning("lease keeping: %s; retrying", brief(exc))
                self.reaper.broken()
                pause = self.reaper.interval
            self._soon.wait(min(pause, max(next_renewal - time.monotonic(), 0.0)))

    def _renew(self, conn: psycopg.Connection) -> None:
        pending, keep, cutoff = self.book.held()
        started = time.perf_counter()
        renewal = claims.renew_leases(conn, self.describe(), pending)
        self.metrics.renewals.observe(time.perf_counter() - started)
        self.reaper.observe(renewal.at)
        self._renewals += 1
        if self.book.orphans_suspected() or self._renewals % ORPHAN_CHECK_EVERY == 0:
            released = claims.release_orphans(conn, self.worker, keep, cutoff)
            self.book.orphans_checked(cutoff)
            if released:
                log.warning("handed back %s tasks claimed under this worker's name without "
                            "its knowing (a claim whose answer was lost): %s", len(released),
                            ", ".join(map(str, released[:20])))
        lost = [claim for claim in pending if claim.id not in renewal.held]
        dropped = self.book.lost(lost)
        self.metrics.dropped.inc(len(dropped))
        for job in dropped:
            log.warning("dropped task %s: its claim is no longer this worker's (deleted, "
                        "completed elsewhere, or handed back after its lease ran out)", job.id)
