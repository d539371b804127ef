"""The worker's life: start the threads, dispatch until stopped, stop cleanly.

Threading: runs on the calling (main) thread, where signals arrive. It owns the stop
flags; the other threads reach it only through the callbacks it hands them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import socket
import sys
import threading
import time
from typing import TextIO

from fizzbuzz_cli import __version__, claims
from fizzbuzz_cli.config import WorkerSettings
from fizzbuzz_cli.errors import DatabaseUnavailable, FizzError, brief
from fizzbuzz_cli.link import CONNECTION_ERRORS, Link, LinkDown, Outage, Timeouts
from fizzbuzz_cli.materialiser import Materialiser
from fizzbuzz_cli.purge import Purger
from fizzbuzz_cli.tasks import format_epoch
from fizzbuzz_cli.worker.book import Job, JobBook, State
from fizzbuzz_cli.worker.clock import DbClock
from fizzbuzz_cli.worker.dispatcher import Dispatcher
from fizzbuzz_cli.worker.keeper import Keeper
from fizzbuzz_cli.worker.metrics import MetricsServer, WorkerMetrics
from fizzbuzz_cli.worker.printer import Printer
from fizzbuzz_cli.worker.recorder import Recorder, prepare

log = logging.getLogger("fizz.worker")

HAND_BACK_DEADLINE = 5.0  # seconds a stopping worker tries to hand its claims back


class Worker:
    def __init__(self, url: str, settings: WorkerSettings | None = None,
                 out: TextIO | None = None) -> None:
        self.settings = s = settings or WorkerSettings()
        self.out = out or sys.stdout
        self.host, self.pid, self.started = socket.gethostname(), os.getpid(), time.time()
        self.id = f"{self.host}:{self.pid}:{secrets.token_hex(3)}"
        self.failure: str | None = None  # set when the worker must stop with an error
        self.stopping = False  # first signal: take no new task
        self.immediate = False  # second signal: hand back everything now
        self.handed_back = 0
        self._signals: list[str] = []
        self._give_up = threading.Event()  # stop waiting for unanswered records
        timeouts = Timeouts.for_lease(s.lease)
        outage = Outage(log)

        def link(name: str, **options: object) -> Link:
            return Link(url, name, timeouts, outage, application="fizz work",
                        **options)  # type: ignore[arg-type]

        self.clock = DbClock()
        self.book = JobBook(on_freed=self._wake)
        self.metrics = WorkerMetrics(self.id, in_flight=lambda: len(self.book),
                                     database_up=lambda: 0 if outage.down else 1)
        self.keeper = Keeper(self.book, link("keeper"), self.describe, s.lease, self.metrics,
                             self.fail)
        self.dispatcher = Dispatcher(self.id, s, self.book, self.clock, self.metrics, link,
                                     on_cancel_all=self.keeper.renew_soon)
        recording = link("recorder", setup=prepare, wait=self._give_up.wait)
        self.recorder = Recorder(self.book, recording, self.id, self.metrics,
                                 stopping=self._give_up.is_set, on_crash=self.fail)
        self.printer = Printer(self.book, self.clock, self.out, self.metrics,
                               on_broken=self.fail)
        self.metrics_server: MetricsServer | None = None
        self.materialiser = Materialiser(url, timeouts=timeouts, outage=outage,
                                         application="fizz work")
        # --retain: purges completed tasks on a thread and connection of its own.
        self.purger = (Purger(url, s.retain, lease=s.lease, outage=outage) if s.retain
                       else None)

    @property
    def ran(self) -> int:
        return self.book.printed

    def describe(self) -> claims.WorkerInfo:
        """This worker as fizz_workers shows it (called by the keeper at each renewal)."""
        s = self.settings
        return claims.WorkerInfo(self.id, self.host, self.pid, __version__, self.started,
                                 s.lease, s.concurrency, len(self.book), self.ran)

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> int:
        """Work until stopped (or, with drain, until idle); returns the exit status: 0, or 1
        after a failure (see `failure`)."""
        s = self.settings
        try:
            self.dispatcher.connect()  # fails fast, with a clear error, if unreachable
        except LinkDown as exc:
            self.dispatcher.close()
            raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {exc}") from None
        if s.metrics_port is not None:
            try:
                self.metrics_server = MetricsServer(self.metrics, s.metrics_host,
                                                    s.metrics_port)
            except FizzError:
                self.dispatcher.close()
                raise
            self.metrics_server.start()
        self._install_signal_handlers()
        previous_interval = sys.getswitchinterval()
        sys.setswitchinterval(0.0005)  # let the printer take the GIL quickly at a task's time
        for thread in (self.printer, self.recorder, self.keeper, self.materialiser, self.purger):
            if thread is not None:
                thread.start()
        log.info("worker %s ready: concurrency %s, lease %ss, claiming %ss ahead%s",
                 self.id, s.concurrency, _num(s.lease), _num(s.ahead),
                 ", draining" if s.drain else "")
        try:
            self._dispatch()
        finally:
            self._shutdown()
            sys.setswitchinterval(previous_interval)
        log.info("worker %s stopped: ran %s tasks, handed back %s", self.id, self.ran,
                 self.handed_back)
        return 1 if self.failure else 0

    def _dispatch(self) -> None:
        dispatcher, s = self.dispatcher, self.settings
        while not self.stopping:
            timeout = dispatcher.step()
            if s.drain and dispatcher.idle() and self._drained():
                return
            dispatcher.wait(timeout if timeout is not None else 0.0)
            self._log_signals()

    def _drained(self) -> bool:
        """Idle with --drain: done, unless --wait and tasks are due later (the occurrences
        of schedules aside: a schedule always has a next one)."""
        try:
            count, earliest = self.dispatcher.link.run(claims.waiting_summary)
        except (LinkDown, *CONNECTION_ERRORS):
            return False  # ask again once the database answers
        if count and self.settings.drain_wait:
            return False
        if count and earliest is not None:
            log.info("nothing more is due; %s %s due later, the next at %s (--wait waits "
                     "for them)", count, "task is" if count == 1 else "tasks are",
                     format_epoch(earliest))
        return True

    def fail(self, message: str) -> None:
        """Stop at once (handing everything back) and exit 1 with this message (which the
        command line prints: it is not logged here, so it shows once)."""
        if self.failure is None:
            self.failure = message
            with contextlib.suppress(OSError, ValueError):  # later writes go nowhere
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self.out.fileno())
        self.stopping = self.immediate = True
        self.dispatcher.stopping = True
        self._wake()

    def request_stop(self) -> None:
        """First call: stop taking tasks and finish gracefully. Second: hand back now."""
        if self.stopping:
            self.immediate = True
        self.stopping = True
        self.dispatcher.stopping = True
        self._wake()

    def _wake(self) -> None:
        self.dispatcher.wake()

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handle(signum: int, frame: object) -> None:
            self._signals.append(signal.Signals(signum).name)  # logged by the main loop
            self.request_stop()

        signal.signal(signal.SIGINT, handle)
        signal.signal(signal.SIGTERM, handle)

    def _log_signals(self) -> None:
        while self._signals:
            name = self._signals.pop(0)
            if self.immediate:
                log.warning("%s again: handing back every task now", name)
            else:
                log.info("%s: taking no new tasks; running ones get %ss to finish", name,
                         _num(self.settings.grace))

    # ------------------------------------------------------------------ stopping

    def _shutdown(self) -> None:
        self.stopping = self.dispatcher.stopping = True
        self.keeper.reaping = False
        self.materialiser.stop()
        if self.purger is not None:
            self.purger.stop()
        self._log_signals()
        book = self.book
        if not self.immediate:
            unstarted = book.take_pending(lambda job: job.start > time.time())
            self._hand_back(unstarted, "not yet started")
            deadline = time.monotonic() + self.settings.grace
            while len(book) and not self.immediate and time.monotonic() < deadline:
                self.dispatcher.wait(min(0.1, max(deadline - time.monotonic(), 0)))
                self._log_signals()
        self._hand_back(book.take_pending(lambda job: True),
                        "stopped at once" if self.immediate else
                        "still running when the grace period ended")
        if not book.wait_settled(self.settings.lease):
            self._give_up.set()  # the database does not answer: stop asking
            book.wait_settled(5.0)
        if self.failure is not None:
            self._unrecord(book.unprinted())
        else:
            self._wait_printed()
        book.close()
        self._give_up.set()
        self._with_deadline(lambda conn: claims.forget_worker(conn, self.id))
        self.printer.join(timeout=5)
        self.recorder.join(timeout=5)
        self.recorder.link.close()
        self.keeper.close()
        self.dispatcher.close()
        if self.metrics_server is not None:
            self.metrics_server.close()

    def _wait_printed(self) -> None:
        """Recorded jobs are complete in the database: their lines must go out (they are due
        within a few milliseconds)."""
        recorded = self.book.jobs(State.RECORDED)
        if not recorded:
            return
        deadline = time.monotonic() + max(job.fire for job in recorded) - time.time() + 5.0
        while self.book.jobs(State.RECORDED) and time.monotonic() < deadline:
            self.dispatcher.wait(0.01)

    def _hand_back(self, jobs: list[Job], why: str) -> None:
        if not jobs:
            return
        released = self._with_deadline(
            lambda conn: claims.release_claims(conn, self.id, [job.claim for job in jobs]))
        if released is None:
            log.error("could not hand back %s tasks; they return to Waiting when their lease "
                      "ends", len(jobs))
            return
        self.handed_back += released
        self.metrics.handed_back.inc(released)
        log.info("handed back %s tasks (%s)", released, why)

    def _unrecord(self, jobs: list[Job]) -> None:
        """Runs recorded but never printed (stdout went away) go back to Waiting."""
        if not jobs:
            return
        undone = self._with_deadline(
            lambda conn: claims.unrecord_runs(conn, self.id, [job.run for job in jobs]))
        if undone is None:
            log.error("could not hand back %s tasks recorded but not printed; they stay "
                      "Complete", len(jobs))
            return
        self.handed_back += undone
        self.metrics.handed_back.inc(undone)
        log.info("handed back %s tasks (recorded, but their lines could not be printed)", undone)

    def _with_deadline(self, work: object) -> int | None:
        """Run a hand-back statement on the dispatcher's link, retrying for a few seconds."""
        deadline = time.monotonic() + HAND_BACK_DEADLINE
        link = self.dispatcher.link
        while True:
            try:
                return link.run(work)  # type: ignore[arg-type]
            except (LinkDown, *CONNECTION_ERRORS) as exc:
                if time.monotonic() > deadline:
                    log.debug("hand-back failed: %s", brief(exc))
                    return None
                time.sleep(link.pause())


def _num(value: float) -> str:
    return f"{value:g}"
