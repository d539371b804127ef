"""Reaping for `fizz serve`: expired claims go back to Waiting, even when no worker runs.

Clients of POST /tasks/pull/<id> (the original worker) that die never complete their
claims; db.reap_expired hands those back, and those of fizz workers that died. This piece
is kept apart on purpose, to be replaced by the shared reaper component (issue 7): a thread
of its own with a connection of its own (the sync database layer, as the worker uses it),
so it never waits on, or holds up, the event loop or the request pool.
"""

from __future__ import annotations

import logging
import threading

import psycopg

from fizzbuzz_cli import db
from fizzbuzz_cli.errors import FizzError

log = logging.getLogger("fizz.server")


class Reaper:
    """Calls db.reap_expired every `interval` seconds until stopped."""

    def __init__(self, url: str, interval: float, grace: float) -> None:
        self.url = url
        self.interval = interval
        self.grace = grace
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fizz-serve-reaper",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Ask it to stop; wait a little (a statement on a frozen server may never end:
        the thread is a daemon and does not hold the process)."""
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        conn: psycopg.Connection | None = None
        failing = False
        while not self._stop.wait(self.interval):
            try:
                if conn is None or conn.closed:
                    conn = db.connect(self.url, application_name="fizz serve reaper")
                reaped = db.reap_expired(conn, grace=self.grace)
            except (FizzError, psycopg.Error) as exc:
                if not failing:  # once per outage, not once per interval
                    log.warning("cannot hand back expired claims for now: %s",
                                str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                failing = True
                if conn is not None:
                    conn.close()
                conn = None
                continue
            failing = False
            for task in reaped:
                log.warning("task %s was claimed by %s, whose lease ran out: back to Waiting",
                            task.id, task.worker or "an unknown client")
        if conn is not None:
            conn.close()
