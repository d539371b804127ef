"""The materialiser loop: keeps every active schedule's occurrences in the tasks table.

`fizz work` and `fizz serve` each run one, on a thread of its own (any number of them at
once give each occurrence once: see fizzbuzz_cli.schedules). The loop runs a pass of
``schedules.materialise``, then sleeps until the pass says a schedule needs it again (at
most ``idle`` seconds), or until a notification on ``fizz_schedules`` (a schedule added,
paused, resumed or deleted anywhere) or ``stop()`` wakes it. A pass with nothing to do is
three small queries (the database's clock and two index lookups): well under a millisecond.

Threading: the thread owns its connection (a Link: keepalives, timeouts, reconnection with
backoff, an outage logged once) and its selector; other threads only call ``stop()``, which
sets a flag and writes to a pipe.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import threading

import psycopg

from fizzbuzz_cli import claims, db, schedules
from fizzbuzz_cli.errors import FizzError
from fizzbuzz_cli.link import CONNECTION_ERRORS, Link, LinkDown, Outage, Timeouts

log = logging.getLogger("fizz.materialiser")


class Materialiser(threading.Thread):
    def __init__(self, url: str, *, ahead: float = schedules.MATERIALISE_AHEAD,
                 idle: float = schedules.MATERIALISE_IDLE, timeouts: Timeouts | None = None,
                 outage: Outage | None = None, application: str = "fizz") -> None:
        super().__init__(name="fizz-materialiser", daemon=True)
        self.ahead, self.idle = ahead, idle
        self.passes = 0  # passes completed (for tests and logs)
        self.last_report: schedules.MaterialiseReport | None = None
        self._stopping = False
        self._socket = -1
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self.link = Link(url, "materialiser", timeouts or Timeouts.for_lease(10.0),
                         outage or Outage(log), application=application, setup=self._listen,
                         wait=self._pause)

    def stop(self, timeout: float | None = 5.0) -> None:
        """Ask the loop to end and wait for it (it ends within one database round trip)."""
        self._stopping = True
        with contextlib.suppress(BlockingIOError, OSError):  # (OSError: the loop has ended)
            os.write(self._wake_w, b"x")
        if self.is_alive():
            self.join(timeout)

    def run(self) -> None:
        complained = False
        try:
            while not self._stopping:
                try:
                    with db.translate_errors():
                        report = self.link.run(
                            lambda conn: schedules.materialise(conn, ahead=self.ahead))
                except LinkDown:
                    self._unwatch()
                    self._wait(self.link.pause())
                    continue
                except (FizzError, *CONNECTION_ERRORS, psycopg.Error) as exc:
                    # A database without the schedules table, a statement that timed out:
                    # say it once, try again later.
                    (log.debug if complained else log.warning)(
                        "materialiser: %s; trying again in %s s", exc, f"{self.idle:g}")
                    complained = True
                    self._wait(self.idle)
                    continue
                complained = False
                self.passes += 1
                self.last_report = report
                if report.inserted:
                    log.debug("materialised %d occurrence(s) of %d schedule(s)",
                              report.inserted, report.schedules)
                self._wait(self.idle if report.wait is None else min(report.wait, self.idle))
        finally:
            self._unwatch()
            self.link.close()
            self._selector.close()
            os.close(self._wake_r)
            os.close(self._wake_w)

    # ------------------------------------------------------------------ waiting

    def _listen(self, conn: psycopg.Connection) -> None:
        claims.listen(conn, schedules.SCHEDULES_CHANNEL)
        self._unwatch()
        self._socket = conn.pgconn.socket
        self._selector.register(self._socket, selectors.EVENT_READ, "db")

    def _unwatch(self) -> None:
        if self._socket >= 0:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(self._socket)
            self._socket = -1

    def _pause(self, seconds: float) -> bool:
        """The link's wait between reconnection attempts; True when stopping."""
        self._wait(seconds)
        return self._stopping

    def _wait(self, timeout: float) -> None:
        """Sleep up to `timeout` seconds; a notification or stop() ends it early."""
        if self._stopping:
            return
        for key, _ in self._selector.select(max(0.0, timeout)):
            if key.data == "wake":
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
            elif self.link.conn is not None:
                try:
                    for note in self.link.conn.notifies(timeout=0):
                        log.debug("schedule %s changed", note.payload)
                except CONNECTION_ERRORS as exc:
                    self._unwatch()
                    self.link.broke(exc)
