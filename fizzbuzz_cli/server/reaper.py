"""Reaping for `fizz serve`: expired claims go back to Waiting, even when no worker runs.

Clients of POST /tasks/pull/<id> (the original worker) that die never complete their
claims; the shared reaper (fizzbuzz_cli.reaper) hands those back, and those of fizz workers
that died, under its rule: only a claim that expired while this reaper watched the
database without a break for the claim's whole lease, so a freeze or restart of PostgreSQL
never costs a live holder its claim. It runs on a thread of its own with a connection of its
own (a Link: keepalives, timeouts, reconnection, an outage logged once), so it never waits
on, or holds up, the event loop or the request pool.
"""

from __future__ import annotations

import logging
import threading

from fizzbuzz_cli.config import WorkerSettings
from fizzbuzz_cli.link import Link, Outage, Timeouts
from fizzbuzz_cli.reaper import Reaper as SharedReaper
from fizzbuzz_cli.reaper import reap_until

log = logging.getLogger("fizz.server")


class Reaper:
    """Ticks the shared reaper every `interval` seconds until stopped."""

    def __init__(self, url: str, interval: float) -> None:
        self._stop = threading.Event()
        link = Link(url, "reaper", Timeouts.for_lease(WorkerSettings.lease), Outage(log),
                    application="fizz serve", wait=self._stop.wait)
        self._thread = threading.Thread(target=reap_until,
                                        args=(self._stop, link, SharedReaper(interval)),
                                        name="fizz-serve-reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Ask it to stop; wait a little (a statement on a frozen server may never end: the
        thread is a daemon and does not hold the process)."""
        self._stop.set()
        self._thread.join(timeout)
