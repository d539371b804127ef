"""Schedules in PostgreSQL and the materialiser: each occurrence becomes one task, whoever
materialises it and however many materialise at once; catch-up after downtime; pause,
resume and delete. Times are given explicitly (the materialiser takes `now`)."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from helpers import query

from fizzbuzz_cli import claims, schedules
from fizzbuzz_cli.errors import BadInput, ScheduleNotFound
from fizzbuzz_cli.recurrence import CatchUp, ScheduleSpec, parse_schedule_spec
from fizzbuzz_cli.tasks import format_time

UTC = timezone.utc
T0 = datetime(2030, 1, 7, 12, 0, tzinfo=UTC)  # a Monday


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def spec(every: str | None = None, cron: str | None = None, **options: str) -> ScheduleSpec:
    return parse_schedule_spec("FizzBuzz", every=every, cron=cron, now=T0, **options)


def occurrences(conn: psycopg.Connection, schedule_id: int) -> list[datetime]:
    rows = conn.execute("SELECT occurrence, time FROM tasks WHERE schedule_id = %s "
                        "ORDER BY occurrence", [schedule_id]).fetchall()
    assert all(o == t for o, t in rows)  # each task runs at its occurrence
    return [o for o, _ in rows]


def seconds(times: list[datetime]) -> list[float]:
    return [(t - T0).total_seconds() for t in times]


# ---------------------------------------------------------------------------- creating


def test_create_materialises_the_first_occurrences_at_once(conn: psycopg.Connection) -> None:
    claims.listen(conn, schedules.SCHEDULES_CHANNEL, claims.NOTIFY_CHANNEL)
    created = schedules.create_schedule(conn, spec(every="1s"), now=T0)
    # Every occurrence due within MATERIALISE_AHEAD (2 s), and the next one after that.
    assert seconds(occurrences(conn, created.id)) == [0, 1, 2, 3]
    assert (created.state, created.next_at, created.last_occurrence) == ("active", at(4), at(3))
    rows = conn.execute("SELECT tasktype, status, schedule_id FROM tasks").fetchall()
    assert rows == [("FizzBuzz", "Waiting", created.id)] * 4
    channels = Counter(n.channel for n in conn.notifies(timeout=0.5, stop_after=2))
    assert channels == {"fizz_schedules": 1, "fizz_tasks": 1}  # workers wake for the tasks


def test_a_start_in_the_past_only_sets_the_rhythm(conn: psycopg.Connection) -> None:
    """Occurrences before the schedule was created were not missed: nothing catches up."""
    created = schedules.create_schedule(
        conn, spec(every="1h", start="2030-01-01T00:30:00Z", catch_up="all"), now=T0)
    assert occurrences(conn, created.id) == [at(1800)]  # 12:30, anchored at 00:30
    assert schedules.materialise(conn, at(10)).missed == []


def test_a_future_start_waits_for_it(conn: psycopg.Connection) -> None:
    created = schedules.create_schedule(
        conn, spec(cron="0 9 * * *", tz="Europe/Paris", start="2030-02-01T00:00:00Z"), now=T0)
    assert occurrences(conn, created.id) == [datetime(2030, 2, 1, 8, 0, tzinfo=UTC)]


def test_list_get_and_json(conn: psycopg.Connection) -> None:
    one = schedules.create_schedule(conn, spec(every="5m"), now=T0)
    two = schedules.create_schedule(
        conn, spec(cron="30 2 * * *", tz="America/New_York", end="2030-03-01T00:00:00Z",
                   catch_up="all", max_catch_up="5"), now=T0)
    assert [s.id for s in schedules.list_schedules(conn)] == [one.id, two.id]
    assert schedules.get_schedule(conn, two.id).to_json(now=at(60)) == {
        "id": two.id, "type": "FizzBuzz", "every": None, "cron": "30 2 * * *",
        "tz": "America/New_York", "start": "2030-01-07T12:00:00Z", "end": "2030-03-01T00:00:00Z",
        "catch_up": "all", "max_catch_up": 5, "state": "active",
        "created_at": "2030-01-07T12:00:00Z", "next": "2030-01-08T07:30:00Z"}
    assert one.to_json()["every"] == "5m" and one.to_json()["next"] is None
    with pytest.raises(ScheduleNotFound, match="schedule 999 not found"):
        schedules.get_schedule(conn, 999)


def test_bad_input_changes_nothing(conn: psycopg.Connection) -> None:
    for bad in ({"cron": "61 * * * *"}, {"every": "5m", "tz": "Europe/Pariss"}):
        with pytest.raises(BadInput, match=r"invalid cron|unknown time zone"):
            schedules.create_schedule(conn, spec(**bad), now=T0)
    with pytest.raises(BadInput, match="would never run: its end, 2030-01-01T00:00:00Z, has "
                                        "passed"):
        schedules.create_schedule(conn, parse_schedule_spec(
            "Fizz", every="1m", start="2029-12-31T00:00:00Z", end="2030-01-01T00:00:00Z",
            now=T0), now=T0)
    assert query_count(conn) == (0, 0)


def query_count(conn: psycopg.Connection) -> tuple[int, int]:
    row = conn.execute("SELECT (SELECT count(*) FROM fizz_schedules), "
                       "(SELECT count(*) FROM tasks)").fetchone()
    assert row is not None
    return row[0], row[1]


# ---------------------------------------------------------------------------- materialising


def test_materialise_keeps_the_next_occurrence_ahead(conn: psycopg.Connection) -> None:
    created = schedules.create_schedule(conn, spec(every="1s"), now=T0)
    assert schedules.materialise(conn, at(0.5)).inserted == 0  # nothing new is due yet
    report = schedules.materialise(conn, at(1))
    assert (report.schedules, report.inserted, report.missed) == (1, 1, [])
    assert seconds(occurrences(conn, created.id)) == [0, 1, 2, 3, 4]
    assert report.wait == pytest.approx(1.0)  # 4 s is in the table: work again at 2 s
    again = schedules.materialise(conn, at(1))
    assert (again.schedules, again.inserted) == (0, 0)


def test_a_daily_schedule_has_tomorrow_in_the_table(conn: psycopg.Connection) -> None:
    created = schedules.create_schedule(conn, spec(cron="0 3 * * *", tz="Europe/London"),
                                        now=T0)
    tomorrow = datetime(2030, 1, 8, 3, 0, tzinfo=UTC)
    assert occurrences(conn, created.id) == [tomorrow]
    report = schedules.materialise(conn, T0)
    assert report.inserted == 0
    assert report.wait == pytest.approx((tomorrow - T0).total_seconds() - 2)
    schedules.materialise(conn, tomorrow - timedelta(seconds=2))
    assert occurrences(conn, created.id) == [tomorrow, tomorrow + timedelta(days=1)]


def test_wait_is_none_without_active_schedules(conn: psycopg.Connection) -> None:
    assert schedules.materialise(conn, T0).wait is None
    created = schedules.create_schedule(conn, spec(every="1h"), now=T0)
    schedules.pause_schedule(conn, created.id)
    assert schedules.materialise(conn, T0).wait is None


def test_a_schedule_ends(conn: psycopg.Connection) -> None:
    created = schedules.create_schedule(conn, spec(every="1s", end="2030-01-07T12:00:05Z"),
                                        now=T0)
    schedules.materialise(conn, at(3))
    schedules.materialise(conn, at(10))
    assert seconds(occurrences(conn, created.id)) == [0, 1, 2, 3, 4, 5]
    assert schedules.get_schedule(conn, created.id).state == "finished"
    assert schedules.materialise(conn, at(20)).wait is None


def test_the_unique_index_refuses_a_second_copy(conn: psycopg.Connection) -> None:
    created = schedules.create_schedule(conn, spec(every="1h"), now=T0)
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute("INSERT INTO tasks (tasktype, status, time, schedule_id, occurrence) "
                     "VALUES ('Fizz', 'Waiting', %s, %s, %s)", [T0, created.id, T0])
    # Ordinary tasks are not in the index at all.
    conn.execute("INSERT INTO tasks (tasktype, status, time) VALUES ('Fizz', 'Waiting', %s), "
                 "('Fizz', 'Waiting', %s)", [T0, T0])


@pytest.mark.parametrize(("policy", "expected"), [
    # Down from 2.5 s to 10.5 s: 0..3 were tasks already and run late, as any overdue task;
    # 4..10 were missed; 11, 12 are due within the 2 s ahead and 13 is the next after that.
    ("latest", [0, 1, 2, 3, 10, 11, 12, 13]),
    ("all", [0, 1, 2, 3, 7, 8, 9, 10, 11, 12, 13]),  # --max-catch-up 4: the latest 4
    ("none", [0, 1, 2, 3, 11, 12, 13]),
])
def test_catch_up_after_downtime(conn: psycopg.Connection, caplog: pytest.LogCaptureFixture,
                                 policy: str, expected: list[float]) -> None:
    created = schedules.create_schedule(
        conn, spec(every="1s", catch_up=policy, max_catch_up="4"), now=T0)
    with caplog.at_level(logging.WARNING, logger="fizz.schedules"):
        report = schedules.materialise(conn, at(10.5))
    assert seconds(occurrences(conn, created.id)) == expected
    [missed] = report.missed
    assert (missed.schedule_id, missed.policy) == (created.id, CatchUp(policy))
    skipped = {"latest": 6, "all": 3, "none": 7}[policy]
    assert (missed.plan.skipped, missed.plan.first_skipped) == (skipped, at(4))
    [record] = caplog.records
    assert record.getMessage().startswith(
        f"schedule {created.id} (every 1s): occurrences missed while no worker ran; "
        f"catch-up {policy}: ")
    assert f"{skipped} skipped (2030-01-07T12:00:04Z to " in record.getMessage()
    assert schedules.materialise(conn, at(10.5)).missed == []


def test_catch_up_through_daylight_saving(conn: psycopg.Connection) -> None:
    """A 02:30 New York job, with every worker down over the spring jump: 'all' runs the
    missed days in order, the day of the jump at 03:00 EDT."""
    start = datetime(2025, 3, 7, 12, 0, tzinfo=UTC)
    created = schedules.create_schedule(conn, parse_schedule_spec(
        "Fizz", cron="30 2 * * *", tz="America/New_York", catch_up="all", now=start), now=start)
    assert occurrences(conn, created.id) == [datetime(2025, 3, 8, 7, 30, tzinfo=UTC)]
    schedules.materialise(conn, datetime(2025, 3, 11, 12, 0, tzinfo=UTC))
    assert occurrences(conn, created.id) == [
        datetime(2025, 3, 8, 7, 30, tzinfo=UTC), datetime(2025, 3, 9, 7, 0, tzinfo=UTC),
        datetime(2025, 3, 10, 6, 30, tzinfo=UTC), datetime(2025, 3, 11, 6, 30, tzinfo=UTC),
        datetime(2025, 3, 12, 6, 30, tzinfo=UTC)]


def test_a_schedule_this_host_cannot_read_is_postponed(
        conn: psycopg.Connection, caplog: pytest.LogCaptureFixture) -> None:
    broken = schedules.create_schedule(conn, spec(every="1s"), now=T0)
    fine = schedules.create_schedule(conn, spec(every="1s"), now=T0)
    conn.execute("UPDATE fizz_schedules SET time_zone = 'Mars/Olympus_Mons' WHERE id = %s",
                 [broken.id])
    with caplog.at_level(logging.ERROR, logger="fizz.schedules"):
        report = schedules.materialise(conn, at(1))
    assert report.schedules == 1 and seconds(occurrences(conn, fine.id))[-1] == 4
    assert f"schedule {broken.id} cannot be materialised on this host" in caplog.text
    assert "unknown time zone 'Mars/Olympus_Mons'" in caplog.text
    assert report.wait == pytest.approx(1.0)  # the broken one does not make it spin
    assert seconds(occurrences(conn, broken.id)) == [0, 1, 2, 3]


# ---------------------------------------------------------------------------- races


def test_racing_materialisers_give_each_occurrence_once(database: str) -> None:
    """8 threads, each with its own connection, materialise 20 schedules through the same
    60 simulated seconds, all at once, with catch-up in the middle: every occurrence exists
    exactly once, and none is missing."""
    with psycopg.connect(database, autocommit=True) as conn:
        made = [schedules.create_schedule(conn, spec(every=every, catch_up="all"), now=T0)
                for every in ("1s", "2s", "3s", "7s") * 5]
        created = query_count(conn)[1]
    steps = [at(s) for s in [*range(0, 30), 45, 46, 47, *range(48, 60)]]
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []
    reports: list[schedules.MaterialiseReport] = []

    def materialiser() -> None:
        try:
            with psycopg.connect(database, autocommit=True) as conn:
                for now in steps:
                    barrier.wait(timeout=30)
                    reports.append(schedules.materialise(conn, now, batch=3))
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=materialiser) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    # Each schedule was handled by one materialiser at a time: its outage was caught up
    # (and reported) once, and every insert counted was a new task.
    assert Counter(m.schedule_id for r in reports for m in r.missed) == {
        s.id: 1 for s in made}
    with psycopg.connect(database, autocommit=True) as conn:
        rows = conn.execute("SELECT schedule_id, occurrence FROM tasks").fetchall()
        assert len(rows) == len(set(rows)) == created + sum(r.inserted for r in reports)
        for schedule in made:
            got = [o for s, o in rows if s == schedule.id]
            interval = schedule.rule.interval
            assert interval is not None
            # Every occurrence from 0 to the last materialised one (catch-up 'all' covers
            # the jump from 29 s to 45 s: 16 s is under its cap of 100).
            expected = [T0 + k * interval for k in range(len(got))]
            assert sorted(got) == expected
            assert sorted(got)[-1] > at(59 + 2)


def test_creating_while_materialising(database: str) -> None:
    """Schedules created while 4 materialisers run flat out each get their occurrences once."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def materialiser() -> None:
        try:
            with psycopg.connect(database, autocommit=True) as conn:
                while not stop.is_set():
                    schedules.materialise(conn, at(1))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=materialiser) for _ in range(4)]
    for thread in threads:
        thread.start()
    with psycopg.connect(database, autocommit=True) as conn:
        made = [schedules.create_schedule(conn, spec(every="1s"), now=T0) for _ in range(30)]
    time.sleep(0.3)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    with psycopg.connect(database, autocommit=True) as conn:
        schedules.materialise(conn, at(1))  # whatever the racers left (nothing, usually)
        for schedule in made:
            assert seconds(occurrences(conn, schedule.id)) == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------------------- pause, resume, delete


def _claim(conn: psycopg.Connection, schedule_id: int, occurrence: datetime,
           status: str) -> None:
    conn.execute("UPDATE tasks SET status = %s, worker = 'w', lease_until = now() + "
                 "interval '1 minute', completed_at = CASE WHEN %s = 'Complete' THEN now() END "
                 "WHERE schedule_id = %s AND occurrence = %s",
                 [status, status, schedule_id, occurrence])


def test_pause_removes_what_has_not_started_and_stops(conn: psycopg.Connection) -> None:
    """History stays: complete tasks, and claims whose time has come (running). Claims
    whose time is still ahead have not started: they go, like waiting tasks."""
    past = datetime(2020, 1, 1, tzinfo=UTC)
    created = schedules.create_schedule(conn, parse_schedule_spec(
        "Fizz", every="1s", start=past.isoformat(), now=past), now=past)
    _claim(conn, created.id, past, "Complete")
    _claim(conn, created.id, past + timedelta(seconds=1), "Claimed")  # running (time passed)
    future = datetime(2099, 1, 1, tzinfo=UTC)
    conn.execute("UPDATE tasks SET time = %s, occurrence = %s WHERE schedule_id = %s AND "
                 "occurrence = %s", [future, future, created.id, past + timedelta(seconds=2)])
    _claim(conn, created.id, future, "Claimed")  # claimed ahead of its time: not started
    paused = schedules.pause_schedule(conn, created.id)
    assert paused.state == "paused"
    rows = conn.execute("SELECT occurrence, status FROM tasks ORDER BY occurrence").fetchall()
    assert rows == [(past, "Complete"), (past + timedelta(seconds=1), "Claimed")]
    assert schedules.materialise(conn, past + timedelta(seconds=30)).inserted == 0
    assert schedules.pause_schedule(conn, created.id).state == "paused"  # again: no change


def test_resume_carries_on_from_now_without_catching_up(conn: psycopg.Connection) -> None:
    created = schedules.create_schedule(conn, spec(every="1s", catch_up="all"), now=T0)
    schedules.pause_schedule(conn, created.id)
    assert occurrences(conn, created.id) == []
    resumed = schedules.resume_schedule(conn, created.id, now=at(100.5))
    assert resumed.state == "active"
    assert seconds(occurrences(conn, created.id)) == [101, 102, 103]
    report = schedules.materialise(conn, at(102))
    assert report.missed == [] and seconds(occurrences(conn, created.id)) == [101, 102, 103,
                                                                              104, 105]
    same = schedules.resume_schedule(conn, created.id, now=at(500))  # already active
    assert (same.state, same.next_at) == ("active", at(106))
    assert len(occurrences(conn, created.id)) == 5


def test_delete_keeps_history_and_marks_the_schedule(conn: psycopg.Connection) -> None:
    created = schedules.create_schedule(conn, spec(every="1s"), now=T0)
    _claim(conn, created.id, T0, "Complete")
    deleted = schedules.delete_schedule(conn, created.id)
    assert (deleted.id, deleted.state) == (created.id, "deleted")
    assert conn.execute("SELECT schedule_id, occurrence, status FROM tasks").fetchall() == [
        (created.id, T0, "Complete")]
    assert schedules.list_schedules(conn) == []
    gone = f"schedule {created.id} not found (it was deleted at {format_time(deleted.deleted_at)})"
    with pytest.raises(ScheduleNotFound) as caught:
        schedules.get_schedule(conn, created.id)
    assert str(caught.value) == gone
    assert schedules.get_schedule(conn, created.id, include_deleted=True).state == "deleted"
    for change in (schedules.delete_schedule, schedules.pause_schedule,
                   schedules.resume_schedule):
        with pytest.raises(ScheduleNotFound) as caught:
            change(conn, created.id)
        assert str(caught.value) == gone
    assert schedules.materialise(conn, at(60)).inserted == 0


def test_deleting_the_row_by_hand_keeps_the_tasks(conn: psycopg.Connection) -> None:
    created = schedules.create_schedule(conn, spec(every="1h"), now=T0)
    conn.execute("DELETE FROM fizz_schedules WHERE id = %s", [created.id])
    rows = conn.execute("SELECT schedule_id, occurrence FROM tasks ORDER BY id").fetchall()
    assert rows == [(None, T0), (None, at(3600))]


@pytest.mark.parametrize("change", ["pause", "delete"])
def test_pause_and_delete_wait_for_a_materialiser_mid_pass(database: str, change: str) -> None:
    """A materialiser holds the schedule's row while it inserts; pausing or deleting waits
    for it, then removes what it inserted: no occurrence survives the change."""
    with psycopg.connect(database, autocommit=True) as conn:
        created = schedules.create_schedule(conn, spec(every="1s"), now=T0)
    holder = psycopg.connect(database, autocommit=True)
    done = threading.Event()
    try:
        with holder.transaction():
            holder.execute("SELECT 1 FROM fizz_schedules WHERE id = %s FOR NO KEY UPDATE",
                           [created.id])
            schedule = schedules.get_schedule(holder, created.id)
            schedules._apply(holder, [schedules._plan(schedule, at(4), at(10), 2.0)])

            def run() -> None:
                with psycopg.connect(database, autocommit=True) as conn:
                    getattr(schedules, f"{change}_schedule")(conn, created.id)
                done.set()

            thread = threading.Thread(target=run)
            thread.start()
            assert not done.wait(0.5)  # blocked behind the materialiser's lock
        thread.join(timeout=10)
        assert done.is_set()
    finally:
        holder.close()
    rows = query(database, "SELECT count(*) FROM tasks WHERE status = 'Waiting'")
    assert rows == [(0,)]


# ---------------------------------------------------------------------------- steps


def test_an_operation_is_its_steps_in_one_transaction(conn: psycopg.Connection) -> None:
    """Each operation is a generator of statements (what fizz serve runs on its pool): the
    statements come one at a time, and an error between them leaves nothing behind."""
    steps = schedules.create_steps(spec(every="1s"), now=T0)
    statements = []
    answer = None
    with conn.transaction():
        try:
            while True:
                statement = steps.send(answer)  # type: ignore[arg-type]
                statements.append(statement.query)
                cur = conn.execute(statement.query, statement.params)
                answer = schedules.Answer(cur.fetchall() if cur.description else [],
                                          cur.rowcount)
        except StopIteration as done:
            created = done.value
    assert statements == [schedules.INSERT_SCHEDULE, schedules.INSERT_OCCURRENCES,
                          schedules.ADVANCE_SCHEDULES, schedules.NOTIFY_SCHEDULES,
                          schedules.GET_SCHEDULE]
    assert seconds(occurrences(conn, created.id)) == [0, 1, 2, 3]
    never = parse_schedule_spec("Fizz", every="1m", start="2029-12-31T00:00:00Z",
                                end="2030-01-01T00:00:00Z", now=T0)
    with pytest.raises(BadInput, match="would never run"):
        schedules.transact(conn, schedules.create_steps(never, now=T0))
    with pytest.raises(ScheduleNotFound):  # after its lock: the transaction is rolled back
        schedules.transact(conn, schedules.pause_steps(created.id + 1))
    assert query_count(conn) == (1, 4)


def test_list_pages(conn: psycopg.Connection) -> None:
    made = [schedules.create_schedule(conn, spec(every="1h"), now=T0) for _ in range(5)]
    schedules.delete_schedule(conn, made[1].id)
    first = schedules.perform(conn, schedules.list_page_steps(0, 2))
    rest = schedules.perform(conn, schedules.list_page_steps(first[-1].id, 10))
    assert [s.id for s in first + rest] == [made[i].id for i in (0, 2, 3, 4)]
