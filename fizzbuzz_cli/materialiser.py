"""The materialiser loop: keeps every active schedule's occurrences in the tasks table.

`fizz work` and `fizz serve` each run one, on a thread of its own (any number of them at
once give each occurrence once: see fizzbuzz_cli.schedules). The loop runs a pass of
``schedules.materialise``, then sleeps until the pass says a schedule needs it again (at
most ``idle`` seconds), or until a notification on ``fizz_schedules`` (a schedule added,
paused, resumed or deleted anywhere) or ``stop()`` wakes it. A pass with nothing to do is
three small queries (the database's clock and two index lookups): well under a millisecond.

Threading: the thread owns its connection and its selector; other threads only call
``stop()``, which sets a flag and writes to a pipe. The loop survives the database going
away: it reconnects with backoff (0.1 s doubling to 2 s).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import selectors
import threading
from collections.abc import Callable

import psycopg

from fizzbuzz_cli import claims, db, schedules
from fizzbuzz_cli.errors import DatabaseUnavailable, FizzError

log = logging.getLogger("fizz.materialiser")

BACKOFF_FIRST = 0.1  # seconds before the first reconnection attempt
BACKOFF_CAP = 2.0  # ... doubling up to this, as workers do


class Materialiser(threading.Thread):
    def __init__(
        self,
        url: str,
        *,
        ahead: float = schedules.MATERIALISE_AHEAD,
        idle: float = schedules.MATERIALISE_IDLE,
        connect: Callable[[str], psycopg.Connection] = db.connect,
    ) -> None:
        super().__init__(name="fizz-materialiser", daemon=True)
        self.url, self.ahead, self.idle, self._connect = url, ahead, idle, connect
        self.passes = 0  # passes completed (for tests and logs)
        self.last_report: schedules.MaterialiseReport | None = None
        self._stopping = False
        self._conn: psycopg.Connection | None = None
        self._conn_fd = -1
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")

    def stop(self, timeout: float | None = 5.0) -> None:
        """Ask the loop to end and wait for it (it ends within one database round trip)."""
        self._stopping = True
        with contextlib.suppress(BlockingIOError, OSError):  # (OSError: the loop has ended)
            os.write(self._wake_w, b"x")
        if self.is_alive():
            self.join(timeout)

    def run(self) -> None:
        delay = BACKOFF_FIRST
        try:
            while not self._stopping:
                try:
                    with db.translate_errors():
                        conn = self._connection()
                        report = schedules.materialise(conn, ahead=self.ahead)
                    self.passes += 1
                    self.last_report = report
                    delay = BACKOFF_FIRST
                    wait = self.idle if report.wait is None else min(report.wait, self.idle)
                    if report.inserted:
                        log.debug("materialised %d occurrence(s) of %d schedule(s)",
                                  report.inserted, report.schedules)
                    self._wait(wait)
                except (DatabaseUnavailable, psycopg.OperationalError,
                        psycopg.InterfaceError) as exc:
                    log.warning("materialiser: %s; reconnecting", exc)
                    self._disconnect()
                    self._wait(delay * random.uniform(0.75, 1.25))
                    delay = min(delay * 2, BACKOFF_CAP)
                except (FizzError, psycopg.Error) as exc:  # e.g. a schema without schedules
                    log.warning("materialiser: %s; trying again in %s s", exc, self.idle)
                    self._disconnect()
                    self._wait(self.idle)
        finally:
            self._disconnect()
            self._selector.close()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            conn = self._connect(self.url)
            claims.listen(conn, schedules.SCHEDULES_CHANNEL)
            self._conn, self._conn_fd = conn, conn.fileno()
            self._selector.register(self._conn_fd, selectors.EVENT_READ, "db")
        return self._conn

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(self._conn_fd)
        self._conn_fd = -1
        with contextlib.suppress(Exception):
            conn.close()

    def _wait(self, timeout: float) -> None:
        """Sleep up to `timeout` seconds; a notification or stop() ends it early."""
        if self._stopping:
            return
        for key, _ in self._selector.select(max(0.0, timeout)):
            if key.data == "wake":
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
            elif self._conn is not None:
                for note in self._conn.notifies(timeout=0):
                    log.debug("schedule %s changed", note.payload)
