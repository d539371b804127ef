"""Recurring tasks run by real workers: every occurrence once and on time; catch-up after
every worker was down obeys each policy exactly; pause and delete stop the occurrences."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import psycopg
from helpers import WorkerProc, query, wait_for

from fizzbuzz_cli import schedules
from fizzbuzz_cli.recurrence import parse_schedule_spec

UTC = timezone.utc
Start = Callable[..., WorkerProc]


def create(url: str, kind: str = "Fizz", **options: str) -> schedules.Schedule:
    with psycopg.connect(url, autocommit=True) as conn:
        return schedules.create_schedule(conn, parse_schedule_spec(kind, **options))


def occurrences(url: str, schedule_id: int) -> list[tuple[int, datetime, str]]:
    return query(url, "SELECT id, occurrence, status FROM tasks WHERE schedule_id = %s "
                      "ORDER BY occurrence", [schedule_id])


def printed(crew: list[WorkerProc]) -> Counter[int]:
    return Counter(int(line.split()[1]) for w in crew for line in w.output())


def test_every_second_for_20_s_with_3_workers(database: str, workers: Start) -> None:
    crew = [workers() for _ in range(3)]
    schedule = create(database, every="1s")
    time.sleep(20)
    for worker in crew:
        assert worker.stop() == 0
    lines = {int(line.split()[1]): at for w in crew for at, line in w.lines}
    rows = occurrences(database, schedule.id)
    done = [(i, when) for i, when, status in rows if status == "Complete"]
    assert len(done) >= 15, rows
    # One second apart, none missing, from the schedule's start.
    assert [when for _, when in done] == [done[0][1] + timedelta(seconds=k)
                                         for k in range(len(done))]
    assert done[0][1] == schedule.start
    # Each printed once, on time: 3 s after its occurrence, as any Fizz.
    assert printed(crew) == Counter(i for i, _ in done)
    late = sorted(lines[i] - (when.timestamp() + 3.0) for i, when in done)
    assert late[0] >= 0 and late[int(len(late) * 0.99)] < 0.25, late


def test_catch_up_after_every_worker_was_down(database: str, workers: Start) -> None:
    """One worker killed, the other two frozen for 10 s: no one materialises meanwhile.
    What was already a task runs late; of the occurrences after it, `latest` runs the most
    recent once, `all` runs every one, `none` runs none; then each carries on."""
    crew = [workers() for _ in range(3)]
    policies = {policy: create(database, every="1s", catch_up=policy)
                for policy in ("latest", "all", "none")}
    time.sleep(4)
    crew[0].proc.kill()
    for worker in crew[1:]:
        worker.signal(signal.SIGSTOP)
    down = time.time()
    made = {p: max(when for _, when, _ in occurrences(database, s.id))
            for p, s in policies.items()}  # the latest occurrence that was a task
    time.sleep(10)
    for worker in crew[1:]:
        worker.signal(signal.SIGCONT)
    back = time.time()
    time.sleep(6)
    for worker in crew[1:]:
        assert worker.stop() == 0
    for policy, schedule in policies.items():
        times = [when.timestamp() for _, when, _ in occurrences(database, schedule.id)]
        last = made[policy].timestamp()
        assert last >= down - 1  # it kept ahead while the workers ran
        before = [t for t in times if t <= last]
        after = [t for t in times if t > last]
        assert before == [times[0] + k for k in range(len(before))]  # no gap before
        missed = [last + k for k in range(1, int(back - last) + 2) if last + k < back - 0.5]
        if policy == "all":
            assert after[:len(missed)] == missed, (policy, after, missed)
        elif policy == "latest":
            # The most recent occurrence missed when the first materialiser came back (a
            # moment after the thaw), and none of the ones before it.
            assert after[0] - last > 5 and back - 1.5 < after[0] <= back + 0.5, (
                policy, after, back)
        else:
            assert after[0] >= back - 1.0, (policy, after, back)
        # and then one per second again, whatever the policy
        assert after[-3:] == [after[-3] + k for k in range(3)], (policy, after)
    counts = printed(crew)
    assert all(n == 1 for n in counts.values()), counts


def test_pausing_or_deleting_stops_the_occurrences(database: str, workers: Start) -> None:
    crew = [workers(), workers()]
    paused = create(database, every="1s")
    deleted = create(database, every="1s")
    time.sleep(3)
    with psycopg.connect(database, autocommit=True) as conn:
        schedules.pause_schedule(conn, paused.id)
        schedules.delete_schedule(conn, deleted.id)
        stopped = conn.execute("SELECT now()").fetchone()[0]
    time.sleep(5)
    for worker in crew:
        assert worker.stop() == 0
    counts = printed(crew)
    for schedule in (paused, deleted):
        rows = occurrences(database, schedule.id)
        assert rows and all(when <= stopped for _, when, _ in rows), rows
        assert all(status == "Complete" for _, _, status in rows), rows
        assert all(counts[i] == 1 for i, _, _ in rows)
    assert sum(counts.values()) == len(occurrences(database, paused.id)) + len(
        occurrences(database, deleted.id))
    wait_for(lambda: True, 0)
