"""The database's clock as seen from this machine: tasks run on it when ours differs.

Threading: the dispatcher measures and sets `offset` (one float: written atomically);
everyone else only reads it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import psycopg

from fizzbuzz_cli import claims
from fizzbuzz_cli.tasks import UTC

log = logging.getLogger("fizz.worker")

SKEW_WARNING = 0.5  # seconds of difference worth a warning


class DbClock:
    def __init__(self) -> None:
        self.offset = 0.0  # database clock minus ours, when it is large enough to matter

    def measure(self, conn: psycopg.Connection) -> None:
        offset, uncertainty = claims.database_clock(conn)
        self.offset = clock_correction(offset, uncertainty)
        if abs(offset) > SKEW_WARNING:
            log.warning("this machine's clock is %.3f s %s the database's; tasks run on the "
                        "database's clock", abs(offset), "behind" if offset > 0 else "ahead of")

    def now(self) -> datetime:
        """The current UTC time on the database's clock (ours, unless they differ)."""
        now = datetime.now(UTC)
        return now + timedelta(seconds=self.offset) if self.offset else now


def clock_correction(offset: float, uncertainty: float) -> float:
    """The offset to run on: none when the difference is within the measurement's noise (one
    machine, or clocks in sync to the millisecond), else the measured one."""
    return offset if abs(offset) > max(uncertainty, 0.001) else 0.0
