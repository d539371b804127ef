"""Schedules in the database, and the materialiser that turns their occurrences into tasks.

Functions take an open psycopg connection in autocommit mode, as db.py's do, and open their
own transactions. Each operation on schedules is written once, as *steps*: a generator that
yields its statements (`Sql`) and is sent their answers (`Answer`), deciding between them.
`perform` runs steps on a connection; `fizz serve` runs the same steps on its async pool
(fizzbuzz_cli.server.database), so the CLI and the HTTP API share every decision. Nothing here
keeps state between calls, so any number of threads and processes may call any of them at
once (each with its own connection):

- Each occurrence becomes an ordinary task (``schedule_id``, ``occurrence``), so workers run
  it with every guarantee they give any task. The partial unique index on
  (schedule_id, occurrence) makes a second copy impossible, whoever materialises.
- The materialiser takes each due schedule's row with ``FOR NO KEY UPDATE SKIP LOCKED``:
  concurrent materialisers share the work out instead of repeating it, and the task
  inserts (whose foreign key takes KEY SHARE locks) never wait for them.
- Pause, resume and delete lock the schedule row first, so they wait for a materialiser
  that is inserting its tasks, and then see (and remove) what it inserted.

What the materialiser keeps in the tasks table, for each active schedule: every occurrence
due within ``MATERIALISE_AHEAD`` seconds, and the first one after that. An occurrence that
was already a task when every worker stopped runs when one comes back (as any overdue task
does); the occurrences after it that no one materialised in time are *missed*, and the
schedule's catch-up policy decides which of them run (see recurrence.Recurrence.catch_up).
"""

from __future__ import annotations

import logging
import zoneinfo
from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple, TypeVar

import psycopg

from fizzbuzz_cli.errors import BadInput, ScheduleNotFound
from fizzbuzz_cli.recurrence import (
    CatchUp,
    CatchUpPlan,
    Recurrence,
    Rule,
    RuleKind,
    ScheduleSpec,
    parse_zone,
)
from fizzbuzz_cli.tasks import TaskType, format_time

log = logging.getLogger("fizz.schedules")

SCHEDULES_CHANNEL = "fizz_schedules"  # payload: id of a schedule added, paused, resumed or deleted
MATERIALISE_AHEAD = 2.0  # seconds: slack for a materialiser that wakes late under load
MATERIALISE_BATCH = 100  # schedules per transaction: bounds how long rows stay locked
MATERIALISE_IDLE = 60.0  # seconds a materialiser may sleep with nothing due (NOTIFY wakes it)
CREATE_GRACE = 1.0  # seconds: an occurrence this close before a schedule's creation is its first

# ------------------------------------------------------------------------------ queries

_COLUMNS = ("id, tasktype, rule_kind, rule, time_zone, start_at, end_at, catch_up, "
            "max_catch_up, paused, created_at, deleted_at, next_at, last_occurrence")

# A new schedule starts with no pointer: the same transaction materialises it at once.
INSERT_SCHEDULE = f"""
    INSERT INTO fizz_schedules (tasktype, rule_kind, rule, time_zone, start_at, end_at,
                                catch_up, max_catch_up, next_at, created_at)
    VALUES (%(type)s, %(kind)s, %(rule)s, %(tz)s, %(start)s, %(end)s, %(catch_up)s,
            %(max_catch_up)s, NULL, %(now)s)
    RETURNING {_COLUMNS}"""

# Deleted schedules are left out of every listing; they stay only for their tasks' history.
LIST_SCHEDULES = f"SELECT {_COLUMNS} FROM fizz_schedules WHERE deleted_at IS NULL ORDER BY id"

# One page of the listing after the last id sent (fizz serve holds no connection between pages).
LIST_SCHEDULES_PAGE = f"""
    SELECT {_COLUMNS} FROM fizz_schedules
    WHERE deleted_at IS NULL AND id > %(after)s
    ORDER BY id
    LIMIT %(limit)s"""

# Deleted schedules too: a task's history may point to one (and "not found" says when it
# was deleted).
GET_SCHEDULE = f"SELECT {_COLUMNS} FROM fizz_schedules WHERE id = %s"

# Pause, resume and delete take the row first: a materialiser inserting this schedule's
# tasks holds it, so they wait for it, and their next statements see what it inserted.
LOCK_SCHEDULE = f"SELECT {_COLUMNS} FROM fizz_schedules WHERE id = %s FOR NO KEY UPDATE"

# Paused: the materialiser's work list leaves it out.
PAUSE_SCHEDULE = f"UPDATE fizz_schedules SET paused = true WHERE id = %s RETURNING {_COLUMNS}"

# Resumed from scratch: the same transaction materialises it again from now on.
RESUME_SCHEDULE = f"""
    UPDATE fizz_schedules SET paused = false, next_at = NULL, last_occurrence = NULL
    WHERE id = %s RETURNING {_COLUMNS}"""

# Deleted, not removed: its tasks keep a schedule to point to (ids are never reused).
DELETE_SCHEDULE = f"""
    UPDATE fizz_schedules SET deleted_at = now(), next_at = NULL WHERE id = %s
    RETURNING {_COLUMNS}"""

# What has not started: waiting tasks, and claims whose time is still ahead (their worker
# drops them, as it drops any deleted task). Running and complete tasks are history.
DELETE_UNSTARTED = """
    DELETE FROM tasks
    WHERE schedule_id = %s AND (status = 'Waiting' OR (status = 'Claimed' AND time > now()))
    RETURNING id"""

# The materialiser's work: active schedules whose table holds no occurrence past the
# horizon any more, oldest first; rows another materialiser holds are skipped, not waited for.
DUE_SCHEDULES = f"""
    SELECT {_COLUMNS} FROM fizz_schedules
    WHERE deleted_at IS NULL AND NOT paused AND next_at IS NOT NULL
      AND last_occurrence <= %(horizon)s
    ORDER BY last_occurrence
    LIMIT %(limit)s
    FOR NO KEY UPDATE SKIP LOCKED"""

# One statement for a whole batch of schedules (so one wake-up notification from the insert
# trigger); an occurrence that is already a task is left alone.
INSERT_OCCURRENCES = """
    INSERT INTO tasks (tasktype, status, time, schedule_id, occurrence)
    SELECT kind, 'Waiting', o, id, o
    FROM unnest(%(types)s::text[], %(ids)s::int[], %(times)s::timestamptz[]) AS u(kind, id, o)
    ON CONFLICT (schedule_id, occurrence) WHERE schedule_id IS NOT NULL DO NOTHING"""

# Moves the pointers past what this pass inserted (the rows are held: no one else moves them).
ADVANCE_SCHEDULES = """
    UPDATE fizz_schedules AS s SET next_at = u.next, last_occurrence = u.last
    FROM unnest(%(ids)s::int[], %(next)s::timestamptz[], %(last)s::timestamptz[])
         AS u(id, next, last)
    WHERE s.id = u.id"""

# A schedule this host cannot read (its zone is missing here) waits for the next attempt.
POSTPONE_SCHEDULE = """
    UPDATE fizz_schedules SET last_occurrence = greatest(last_occurrence, %(until)s)
    WHERE id = %(id)s"""

# When a materialiser has work next: the active schedule materialised least far ahead.
NEXT_DUE = """
    SELECT min(last_occurrence) FROM fizz_schedules
    WHERE deleted_at IS NULL AND NOT paused AND next_at IS NOT NULL"""

# Wakes every materialiser, delivered when the change commits.
NOTIFY_SCHEDULES = "SELECT pg_notify('fizz_schedules', %s::text)"

# One clock for every materialiser on every host: the database's.
CLOCK = "SELECT clock_timestamp()"

# ------------------------------------------------------------------------------ schedules


@dataclass(frozen=True, slots=True)
class Schedule:
    id: int
    task_type: TaskType
    rule: Rule
    zone: zoneinfo.ZoneInfo
    start: datetime
    end: datetime | None
    catch_up: CatchUp
    max_catch_up: int
    paused: bool
    created_at: datetime
    deleted_at: datetime | None
    next_at: datetime | None  # first occurrence not yet materialised; None: no more to come
    last_occurrence: datetime | None  # latest occurrence materialised

    @property
    def recurrence(self) -> Recurrence:
        return Recurrence(self.rule, self.zone, self.start, self.end)

    @property
    def state(self) -> str:
        """deleted, paused, finished (no occurrence left) or active."""
        if self.deleted_at is not None:
            return "deleted"
        if self.paused:
            return "paused"
        return "finished" if self.next_at is None else "active"

    def upcoming(self, count: int, now: datetime) -> list[datetime]:
        """The next `count` occurrences at or after `now`: those that will run, for an active
        schedule; those that would if it were resumed now, for a paused one; none once it
        is deleted."""
        return [] if self.deleted_at is not None else self.recurrence.upcoming(count, now)

    def to_json(self, now: datetime | None = None) -> dict[str, Any]:
        """The JSON shape shared by the CLI and the HTTP API; `next` (the first occurrence at
        or after `now`) only for an active schedule and a given `now`."""
        nxt = None
        if now is not None and self.state == "active":
            upcoming = self.recurrence.upcoming(1, now)
            nxt = format_time(upcoming[0]) if upcoming else None
        return {
            "id": self.id,
            "type": self.task_type.value,
            "every": self.rule.text if self.rule.kind is RuleKind.EVERY else None,
            "cron": self.rule.text if self.rule.kind is RuleKind.CRON else None,
            "tz": self.zone.key,
            "start": format_time(self.start),
            "end": None if self.end is None else format_time(self.end),
            "catch_up": self.catch_up.value,
            "max_catch_up": self.max_catch_up,
            "state": self.state,
            "created_at": format_time(self.created_at),
            "next": nxt,
        }


def schedule_from_row(row: tuple) -> Schedule:  # type: ignore[type-arg]
    """A Schedule from a row of _COLUMNS; BadInput if this host cannot read it (a time zone
    that its tzdata lacks)."""
    (sid, kind, rule_kind, rule, tz, start, end, catch_up, cap, paused, created, deleted,
     next_at, last) = row
    return Schedule(sid, TaskType(kind), Rule.parse(rule_kind, rule), parse_zone(tz), start,
                    end, CatchUp(catch_up), cap, paused, created, deleted, next_at, last)


def occurrence_json(instant: datetime, zone: zoneinfo.ZoneInfo) -> dict[str, str]:
    """An occurrence for `fizz schedule show --json` and GET /schedules/<id>: UTC with Z, and
    the zone's wall clock in RFC 3339 with its offset."""
    return {"time": format_time(instant), "local": instant.astimezone(zone).isoformat()}


# ------------------------------------------------------------------------------ steps

T = TypeVar("T")


class Sql(NamedTuple):
    """One statement of an operation's steps."""

    query: str
    params: Any = None


class Answer(NamedTuple):
    """What a statement gave back: its rows (none for a statement without a result) and the
    number of rows it touched."""

    rows: list[tuple]  # type: ignore[type-arg]
    count: int


Steps = Generator[Sql, Answer, T]


def perform(conn: psycopg.Connection, steps: Steps[T]) -> T:
    """Run an operation's steps on `conn`, in the caller's transaction (or in autocommit);
    returns what the steps return. (fizz serve's async twin: server.database.perform.)"""
    answer: Answer | None = None
    try:
        while True:
            statement = steps.send(answer)  # type: ignore[arg-type]
            cur = conn.execute(statement.query, statement.params)
            answer = Answer(cur.fetchall() if cur.description else [], cur.rowcount)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


def transact(conn: psycopg.Connection, steps: Steps[T]) -> T:
    """Run an operation's steps in a transaction of their own."""
    with conn.transaction():
        return perform(conn, steps)


def database_now(conn: psycopg.Connection) -> datetime:
    """The database's clock: every materialiser reads the same one, on any host."""
    return perform(conn, _clock())


def _clock() -> Steps[datetime]:
    return (yield Sql(CLOCK)).rows[0][0]  # type: ignore[no-any-return]


def create_steps(spec: ScheduleSpec, now: datetime | None = None) -> Steps[Schedule]:
    """Add a schedule and materialise its first occurrences (to be run in one transaction).
    Its first occurrence is the first at or after both its start and now (less CREATE_GRACE:
    a start of "now" read by the client a few milliseconds before the database's now is the
    first occurrence): the time before it was created was not missed. BadInput (and nothing
    added) if it would never run. `now` defaults to the database's clock."""
    if now is None:
        now = yield from _clock()
    first = spec.recurrence.next_after(now - timedelta(seconds=CREATE_GRACE), inclusive=True)
    if first is None:
        raise BadInput(f"the schedule would never run: its end, {format_time(spec.end)}, "
                       "has passed" if spec.end is not None else
                       "the schedule would never run: it has no occurrence after now")
    params = {
        "type": spec.task_type.value, "kind": spec.rule.kind.value, "rule": spec.rule.text,
        "tz": spec.zone.key, "start": spec.start, "end": spec.end,
        "catch_up": spec.catch_up.value, "max_catch_up": spec.max_catch_up, "now": now,
    }
    created = schedule_from_row((yield Sql(INSERT_SCHEDULE, params)).rows[0])
    # A first occurrence inside the grace is the first one, not a missed one.
    yield from _apply_steps([_plan(created, first, min(now, first), MATERIALISE_AHEAD)])
    yield Sql(NOTIFY_SCHEDULES, [created.id])
    return (yield from get_steps(created.id))


def list_steps() -> Steps[list[Schedule]]:
    """Every schedule that is not deleted, in id order."""
    return [schedule_from_row(row) for row in (yield Sql(LIST_SCHEDULES)).rows]


def list_page_steps(after: int, limit: int) -> Steps[list[Schedule]]:
    """Up to `limit` schedules (not deleted) with ids above `after`, in id order."""
    answer = yield Sql(LIST_SCHEDULES_PAGE, {"after": after, "limit": limit})
    return [schedule_from_row(row) for row in answer.rows]


def get_steps(schedule_id: int, include_deleted: bool = False) -> Steps[Schedule]:
    """One schedule; ScheduleNotFound if there is none (or it was deleted, unless
    include_deleted: a task's history may point to a deleted schedule)."""
    answer = yield Sql(GET_SCHEDULE, [schedule_id])
    return _found(answer, schedule_id, include_deleted)


def pause_steps(schedule_id: int) -> Steps[Schedule]:
    """Stop materialising, and remove the occurrences that have not started (to be run in
    one transaction). Pausing a paused schedule changes nothing."""
    yield from _lock(schedule_id)
    paused = schedule_from_row((yield Sql(PAUSE_SCHEDULE, [schedule_id])).rows[0])
    removed = (yield Sql(DELETE_UNSTARTED, [schedule_id])).count
    yield Sql(NOTIFY_SCHEDULES, [schedule_id])
    log.info("schedule %d paused; %d task(s) not yet started removed", schedule_id, removed)
    return paused


def resume_steps(schedule_id: int, now: datetime | None = None) -> Steps[Schedule]:
    """Carry on from the first occurrence at or after now (to be run in one transaction);
    what fell in the pause is not caught up (pausing is skipping on purpose). Resuming an
    active schedule changes nothing."""
    current = yield from _lock(schedule_id)
    if not current.paused:
        return current
    if now is None:
        now = yield from _clock()
    first = current.recurrence.next_after(now, inclusive=True)
    resumed = schedule_from_row((yield Sql(RESUME_SCHEDULE, [schedule_id])).rows[0])
    yield from _apply_steps([_plan(resumed, first, now, MATERIALISE_AHEAD)])
    yield Sql(NOTIFY_SCHEDULES, [schedule_id])
    return (yield from get_steps(schedule_id))


def delete_steps(schedule_id: int) -> Steps[Schedule]:
    """Delete a schedule (to be run in one transaction): no occurrence is materialised any
    more, and those that have not started are removed. Its history stays: tasks that ran (or
    are running) keep their schedule_id, and the schedule's row stays, marked deleted, so
    that they can still say which schedule they came from. Returns the deleted schedule."""
    yield from _lock(schedule_id)
    deleted = schedule_from_row((yield Sql(DELETE_SCHEDULE, [schedule_id])).rows[0])
    removed = (yield Sql(DELETE_UNSTARTED, [schedule_id])).count
    yield Sql(NOTIFY_SCHEDULES, [schedule_id])
    log.info("schedule %d deleted; %d task(s) not yet started removed", schedule_id, removed)
    return deleted


def _lock(schedule_id: int) -> Steps[Schedule]:
    return _found((yield Sql(LOCK_SCHEDULE, [schedule_id])), schedule_id)


def _found(answer: Answer, schedule_id: int, include_deleted: bool = False) -> Schedule:
    """The schedule of a lookup by id; ScheduleNotFound if there is none, or if it was
    deleted (saying when) and deleted ones are not wanted."""
    if not answer.rows:
        raise ScheduleNotFound(schedule_id)
    found = schedule_from_row(answer.rows[0])
    if found.deleted_at is not None and not include_deleted:
        raise ScheduleNotFound(schedule_id, f"schedule {schedule_id} not found (it was deleted "
                                            f"at {format_time(found.deleted_at)})")
    return found


# The operations on a connection of one's own (the CLI, tests, scripts).


def create_schedule(conn: psycopg.Connection, spec: ScheduleSpec,
                    now: datetime | None = None) -> Schedule:
    return transact(conn, create_steps(spec, now))


def list_schedules(conn: psycopg.Connection) -> list[Schedule]:
    return perform(conn, list_steps())


def get_schedule(conn: psycopg.Connection, schedule_id: int,
                 include_deleted: bool = False) -> Schedule:
    return perform(conn, get_steps(schedule_id, include_deleted))


def pause_schedule(conn: psycopg.Connection, schedule_id: int) -> Schedule:
    return transact(conn, pause_steps(schedule_id))


def resume_schedule(conn: psycopg.Connection, schedule_id: int,
                    now: datetime | None = None) -> Schedule:
    return transact(conn, resume_steps(schedule_id, now))


def delete_schedule(conn: psycopg.Connection, schedule_id: int) -> Schedule:
    return transact(conn, delete_steps(schedule_id))


# ------------------------------------------------------------------------------ materialiser


@dataclass(frozen=True, slots=True)
class Missed:
    """Occurrences of one schedule that no one materialised in time, and what became of them."""

    schedule_id: int
    policy: CatchUp
    plan: CatchUpPlan


@dataclass(slots=True)
class MaterialiseReport:
    schedules: int = 0  # schedules materialised in this pass
    inserted: int = 0  # tasks inserted
    missed: list[Missed] = field(default_factory=list)
    wait: float | None = None  # seconds until a schedule needs materialising; None: none active


def materialise(
    conn: psycopg.Connection,
    now: datetime | None = None,
    *,
    ahead: float = MATERIALISE_AHEAD,
    batch: int = MATERIALISE_BATCH,
) -> MaterialiseReport:
    """One pass: for every active schedule that needs it, put its occurrences due within
    `ahead` seconds, and the first one after that, into the tasks table, applying its
    catch-up policy to the occurrences that no one materialised in time (and logging what
    was skipped). Safe to run from any number of threads and processes at once.

    Cheap when there is nothing to do (the clock and two index lookups; 0.4 ms with 10,000
    schedules, see bench/schedules_bench.py). Call it again after
    `report.wait` seconds, or sooner on a notification on SCHEDULES_CHANNEL; `now` defaults
    to the database's clock."""
    report = MaterialiseReport()
    now = now or database_now(conn)
    horizon = now + timedelta(seconds=ahead)
    while True:
        with conn.transaction():
            due = conn.execute(DUE_SCHEDULES, {"horizon": horizon, "limit": batch}).fetchall()
            plans = []
            for row in due:
                try:
                    schedule = schedule_from_row(row)
                except BadInput as exc:
                    _postpone(conn, row[0], now, exc)
                    continue
                plans.append(_plan(schedule, schedule.next_at, now, ahead))
            report.schedules += len(plans)
            report.inserted += _apply(conn, plans)
            report.missed.extend(p.missed for p in plans if p.missed is not None)
        if len(due) < batch:
            break
    row = conn.execute(NEXT_DUE).fetchone()
    earliest = row[0] if row else None
    if earliest is not None:
        report.wait = max(0.0, (earliest - horizon).total_seconds())
    return report


@dataclass(frozen=True, slots=True)
class _Plan:
    """What one pass does to one schedule: the occurrences to insert, and its new pointer."""

    schedule: Schedule
    times: list[datetime]
    next_at: datetime | None
    last: datetime | None
    missed: Missed | None


def _plan(schedule: Schedule, pointer: datetime | None, now: datetime, ahead: float) -> _Plan:
    """One schedule's occurrences from `pointer` (the first not yet materialised): the missed
    ones its policy keeps, those due within `ahead`, and the next one after those."""
    recurrence = schedule.recurrence
    times: list[datetime] = []
    missed = None
    if pointer is not None and pointer < now:
        plan = recurrence.catch_up(pointer, now, schedule.catch_up, schedule.max_catch_up)
        times.extend(plan.run)
        missed = Missed(schedule.id, schedule.catch_up, plan)
        _log_missed(schedule, plan)
        pointer = recurrence.next_after(now, inclusive=True)
    horizon = now + timedelta(seconds=ahead)
    while pointer is not None and pointer <= horizon:
        times.append(pointer)
        pointer = recurrence.next_after(pointer)
    if pointer is not None:  # the next occurrence is in the table ahead of its time
        times.append(pointer)
        pointer = recurrence.next_after(pointer)
    last = times[-1] if times else schedule.last_occurrence
    return _Plan(schedule, times, pointer, last, missed)


def _apply(conn: psycopg.Connection, plans: list[_Plan]) -> int:
    """Insert the plans' occurrences and move their pointers; returns how many tasks were
    inserted. The caller holds the schedules' rows."""
    return perform(conn, _apply_steps(plans))


def _apply_steps(plans: list[_Plan]) -> Steps[int]:
    """Two statements for the lot: insert the plans' occurrences, move their pointers."""
    if not plans:
        return 0
    types, ids, times = [], [], []
    for plan in plans:
        types.extend([plan.schedule.task_type.value] * len(plan.times))
        ids.extend([plan.schedule.id] * len(plan.times))
        times.extend(plan.times)
    inserted = 0
    if times:
        inserted = (yield Sql(INSERT_OCCURRENCES,
                              {"types": types, "ids": ids, "times": times})).count
    yield Sql(ADVANCE_SCHEDULES, {"ids": [p.schedule.id for p in plans],
                                  "next": [p.next_at for p in plans],
                                  "last": [p.last for p in plans]})
    return inserted


def _postpone(conn: psycopg.Connection, schedule_id: int, now: datetime,
              error: BadInput) -> None:
    """A schedule this host cannot read is left to hosts that can, and retried here after
    MATERIALISE_IDLE seconds (its bookkeeping moves; what the user asked for does not)."""
    log.error("schedule %d cannot be materialised on this host (%s); retrying in %d s",
              schedule_id, error, MATERIALISE_IDLE)
    conn.execute(POSTPONE_SCHEDULE, {"id": schedule_id,
                                     "until": now + timedelta(seconds=MATERIALISE_IDLE)})


def _log_missed(schedule: Schedule, plan: CatchUpPlan) -> None:
    ran = (f"running {len(plan.run)} ({format_time(plan.run[0])}"
           + (f" to {format_time(plan.run[-1])}" if len(plan.run) > 1 else "") + ")"
           if plan.run else "running none")
    log.warning("schedule %d (%s): occurrences missed while no worker ran; catch-up %s: %s, %s",
                schedule.id, schedule.rule.describe(), schedule.catch_up.value, ran,
                plan.describe_skipped())

