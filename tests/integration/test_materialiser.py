"""The materialiser loop (fizz work and fizz serve each run one): it materialises on its
own, wakes when a schedule changes, stops promptly, and survives a database without the
schedules table."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from helpers import query, wait_for

from fizzbuzz_cli import schedules
from fizzbuzz_cli.materialiser import Materialiser
from fizzbuzz_cli.recurrence import parse_schedule_spec

UTC = timezone.utc


def test_the_loop_materialises_and_wakes_on_changes(database: str) -> None:
    loop = Materialiser(database, idle=30.0)
    loop.start()
    try:
        wait_for(lambda: loop.passes >= 1, 10, "for the first pass")
        now = datetime.now(UTC)
        with psycopg.connect(database, autocommit=True) as conn:
            created = schedules.create_schedule(conn, parse_schedule_spec(
                "FizzBuzz", every="1s", now=now), now=now)
        # The loop sleeps 30 s at most when idle; the notification wakes it, and from then on
        # it keeps one second ahead of a 1 s schedule by itself.
        wait_for(lambda: len(query(database, "SELECT 1 FROM tasks WHERE schedule_id = %s",
                                   [created.id])) >= 7, 10, "for occurrences")
        rows = query(database, "SELECT occurrence FROM tasks WHERE schedule_id = %s "
                     "ORDER BY occurrence", [created.id])
        assert [r[0] for r in rows] == [now + timedelta(seconds=k) for k in range(len(rows))]
    finally:
        started = time.monotonic()
        loop.stop()
        assert not loop.is_alive() and time.monotonic() - started < 2


def test_the_loop_survives_a_schema_without_schedules(empty_database: str,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="fizz.materialiser"):
        loop = Materialiser(empty_database, idle=30.0)
        loop.start()
        wait_for(lambda: "run 'fizz init-db'" in caplog.text, 10, "for the warning")
        loop.stop()
    assert not loop.is_alive()


def test_the_loop_reconnects_when_its_connection_is_killed(database: str) -> None:
    now = datetime.now(UTC)
    with psycopg.connect(database, autocommit=True) as conn:
        created = schedules.create_schedule(conn, parse_schedule_spec(
            "FizzBuzz", every="1s", now=now), now=now)
    loop = Materialiser(database, idle=30.0)
    loop.start()

    def count() -> int:
        return len(query(database, "SELECT 1 FROM tasks WHERE schedule_id = %s", [created.id]))

    try:
        wait_for(lambda: loop.passes >= 1, 10, "for the first pass")
        killed = query(database, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE application_name = 'fizz' AND datname = current_database()")
        assert killed == [(True,)]
        before = count()
        wait_for(lambda: count() >= before + 2, 10, "for occurrences after the reconnection")
    finally:
        loop.stop()
    assert not loop.is_alive()
