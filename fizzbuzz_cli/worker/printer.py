"""The printer: sleeps to the exact time of each recorded job and prints its line.

It prints only RECORDED jobs (complete in the database under this worker's claim), so a
line never goes out for a run the database has not agreed to. It runs no SQL and waits on
nothing but the book's condition, so it wakes on time whatever the database is doing.
Threading: one thread; owns nothing but its output stream.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from fizzbuzz_cli.worker.book import Job, JobBook
from fizzbuzz_cli.worker.clock import DbClock
from fizzbuzz_cli.worker.metrics import WorkerMetrics
from fizzbuzz_cli.worker.thread import WorkerThread


class Printer(WorkerThread):
    def __init__(self, book: JobBook, clock: DbClock, out: TextIO, metrics: WorkerMetrics,
                 on_broken: Callable[[str], None]) -> None:
        super().__init__("fizz-printer", on_broken)
        self.book, self.clock, self.out, self.on_broken = book, clock, out, on_broken
        self.metrics = metrics
        self.broken = False

    def work(self) -> None:
        book = self.book
        while True:
            with book.printer_wake:
                while True:
                    if book.closed or self.broken:
                        return
                    first = book.next_print_time()
                    wait = None if first is None else first - time.time()
                    if wait is not None and wait <= 0:
                        break
                    book.printer_wake.wait(wait)
                ready = book.take_printable(time.time())
            self._print(ready)

    def _print(self, jobs: list[Job]) -> None:
        printed: list[Job] = []
        try:
            for job in jobs:
                self.out.write(job.claim.type.output(job.id, self.clock.now()) + "\n")
                self.out.flush()  # one line at a time: a line that got out is known to have
                printed.append(job)
                self._count(job)
        except (OSError, ValueError) as exc:  # stdout is gone (e.g. piped into `head`)
            # The jobs not printed stay RECORDED, out of the printing queue: the worker
            # takes back their records (see JobBook.unprinted).
            self.broken = True
            self.book.done(printed)
            self.on_broken(f"cannot write to stdout ({exc})")
            return
        self.book.done(printed)

    def _count(self, job: Job) -> None:
        """Tasks run, how late each started (on the database's clock), and how long its
        line came after its record: what a kill -9 in between would have lost."""
        claim, now = job.claim, time.time()
        self.metrics.tasks_run.inc(type=claim.type.value)
        started = now + self.clock.offset - claim.type.duration
        self.metrics.lateness.observe(max(started - claim.due, 0.0))
        self.metrics.window.observe(now - job.recorded)
