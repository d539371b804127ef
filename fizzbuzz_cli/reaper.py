"""The reaper: hands back claims whose holder is gone, and never those of a holder that only
could not reach the database.

A lease that ran out proves nothing by itself: if PostgreSQL was frozen, restarted or cut
off, nobody could renew, and the holders are alive and about to record their runs. So a
reaper judges only what it has watched: it keeps the database times at which its current
run of unbroken observations began (`since`) and was last extended (`last`). Every
statement it runs is an observation; two observations more than `max_gap` apart break the
run (a freeze or a cut of PostgreSQL, of the network, or of the reaper itself), and so does
an error. A claim is handed back only when it has expired and the run has lasted at least
the claim's whole lease: its holder had all that time, with the database answering, to
renew, and did not. The test is made by the reaping statement itself, against its own
now(), so a reaper frozen between two statements cannot act on a stale view.

Used by every worker (on its lease keeper's connection) and by `fizz serve` (on a thread of
its own). Threading: a Reaper belongs to the one thread that calls it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import psycopg

from fizzbuzz_cli import claims
from fizzbuzz_cli.errors import brief
from fizzbuzz_cli.link import CONNECTION_ERRORS, Link, LinkDown

log = logging.getLogger("fizz.reaper")


@dataclass(slots=True)
class Continuity:
    """How long the database has been seen without a gap, in the database's own time."""

    max_gap: float  # seconds between observations beyond which the run is broken
    since: float | None = None
    last: float | None = None

    def observe(self, at: float) -> None:
        if self.last is None or not 0 <= at - self.last <= self.max_gap:
            self.since = at
        self.last = at

    def broken(self) -> None:
        """The connection failed: whatever happens next starts a new run."""
        self.since = self.last = None

    @property
    def seconds(self) -> float:
        return 0.0 if self.since is None or self.last is None else self.last - self.since


@dataclass(slots=True)
class Reaper:
    """Runs the reaping statement as its observation: call `tick` every `interval` seconds."""

    interval: float  # seconds between ticks
    continuity: Continuity = field(init=False)
    reaped: int = 0

    def __post_init__(self) -> None:
        # Three ticks' worth: one late tick (a busy thread, a slow statement) is no gap.
        self.continuity = Continuity(max_gap=self.interval * 3)

    def tick(self, conn: psycopg.Connection) -> list[claims.Reaped]:
        """One reaping statement; connection errors propagate (call `broken` then)."""
        state = self.continuity
        result = claims.reap_expired(conn, since=state.since, last=state.last,
                                     max_gap=state.max_gap)
        state.observe(result.at)
        for task in result.reaped:
            log.warning("task %s was claimed by %s, whose lease ran out: back to Waiting",
                        task.id, task.worker or "an unknown client")
        self.reaped += len(result.reaped)
        return result.reaped

    def observe(self, at: float) -> None:
        """Another statement on this reaper's connection answered at `at` (database time)."""
        self.continuity.observe(at)

    def broken(self) -> None:
        self.continuity.broken()


def reap_until(stop: threading.Event, link: Link, reaper: Reaper) -> None:
    """A reaper of its own (`fizz serve`'s): tick until `stop` is set, through outages."""
    while not stop.is_set():
        pause = reaper.interval
        try:
            link.run(reaper.tick)
        except LinkDown:
            reaper.broken()
            pause = link.pause()
        except CONNECTION_ERRORS as exc:  # a statement timed out; the connection is fine
            log.warning("reaping: %s; retrying", brief(exc))
            reaper.broken()
        stop.wait(pause)
    link.close()
