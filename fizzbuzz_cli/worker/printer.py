"""The printer: sleeps to the exact time of each recorded job and prints its line.

It prints only RECORDED jobs (complete in the database under this worker's claim), so a
line never goes out for a run the database has not agreed to. It runs no SQL and waits on
nothing but the book's condition, so it wakes on time whatever the database is doing.

Lines due at the same moment go out in one write to the file descriptor (a burst of a
thousand lines in one system call, not a thousand), and the bytes the kernel took say
exactly which lines got out, should stdout close on the way. On a stream without a file
descriptor (tests), it writes and flushes line by line.

Threading: one thread; owns nothing but its output stream.
"""

from __future__ import annotations

import os
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
        lines = [(job.claim.type.output(job.id, self.clock.now()) + "\n").encode()
                 for job in jobs]
        try:
            out = self._written(lines)
        except _Broken as broken:  # stdout is gone (e.g. piped into `head`)
            # The jobs not printed stay RECORDED, out of the printing queue: the worker
            # takes back their records (see JobBook.unprinted).
            printed = jobs[:broken.lines]
            for job in printed:
                self._count(job)
            self.broken = True
            self.book.done(printed)
            self.on_broken(f"cannot write to stdout ({broken.error})")
            return
        for job in jobs[:out]:
            self._count(job)
        self.book.done(jobs)

    def _written(self, lines: list[bytes]) -> int:
        """Write the lines; how many got out (all of them, or _Broken says how many)."""
        try:
            fd = self.out.fileno()
        except (OSError, ValueError, AttributeError):
            fd = -1
        if fd < 0:
            for number, line in enumerate(lines):
                try:
                    self.out.write(line.decode())
                    self.out.flush()
                except (OSError, ValueError) as exc:
                    raise _Broken(number, exc) from None
            return len(lines)
        data = b"".join(lines)
        sent = 0
        try:
            self.out.flush()  # nothing may be waiting in the stream's buffer
            while sent < len(data):
                sent += os.write(fd, data[sent:])
        except (OSError, ValueError) as exc:
            whole, total = 0, 0
            for line in lines:  # the lines that got out whole
                total += len(line)
                if total > sent:
                    break
                whole += 1
            raise _Broken(whole, exc) from None
        return len(lines)

    def _count(self, job: Job) -> None:
        """Tasks run, how late each started (on the database's clock), and how long its
        line came after its record: what a kill -9 in between would have lost."""
        claim, now = job.claim, time.time()
        self.metrics.tasks_run.inc(type=claim.type.value)
        started = now + self.clock.offset - claim.type.duration
        self.metrics.lateness.observe(max(started - claim.due, 0.0))
        self.metrics.window.observe(now - job.recorded)


class _Broken(Exception):
    def __init__(self, lines: int, error: BaseException) -> None:
        super().__init__(str(error))
        self.lines, self.error = lines, error
