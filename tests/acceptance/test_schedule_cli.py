"""`fizz schedule` through Typer's CliRunner, against a fresh database per test: adding,
listing, showing (the next occurrences in UTC and on the zone's wall clock, through
daylight-saving changes), pausing, resuming and deleting; every bad input refused with one
line and exit 2, the database untouched; `fizz list` and `fizz show` naming a task's
schedule."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from helpers import Fizz, query

UTC = timezone.utc
SPRING = "2030-03-08T12:00:00Z"  # New York springs forward on 2030-03-10, falls back on 11-03
AUTUMN = "2030-11-02T12:00:00Z"


def snapshot(url: str) -> tuple[list[tuple], list[tuple]]:
    """Every row of both tables, every column: what "nothing changed" compares."""
    with psycopg.connect(url) as conn:
        return (conn.execute("SELECT * FROM fizz_schedules ORDER BY id").fetchall(),
                conn.execute("SELECT * FROM tasks ORDER BY id").fetchall())


def occurrences(url: str, schedule_id: int) -> list[datetime]:
    return [row[0] for row in query(url, "SELECT occurrence FROM tasks WHERE schedule_id = %s "
                                         "ORDER BY occurrence", [schedule_id])]


# ---------------------------------------------------------------------------- add


def test_add_prints_only_the_id_and_materialises_at_once(fizz: Fizz, database: str) -> None:
    first = fizz("schedule", "add", "Fizz", "--every", "1h", "--start", "2030-01-01T00:00:00Z")
    second = fizz("schedule", "add", "buzz", "--cron", "0 9 * * MON-FRI", "--tz",
                  "europe/paris", "--start", SPRING)
    assert (first.code, first.out, first.err) == (0, "1\n", "")
    assert (second.code, second.out, second.err) == (0, "2\n", "")
    rows = query(database, "SELECT id, tasktype, rule_kind, rule, time_zone, catch_up, "
                           "max_catch_up, paused FROM fizz_schedules ORDER BY id")
    assert rows == [(1, "Fizz", "every", "1h", "UTC", "latest", 100, False),
                    (2, "Buzz", "cron", "0 9 * * MON-FRI", "Europe/Paris", "latest", 100,
                     False)]
    # The next occurrence of each is a waiting task already (a future start: its first).
    assert occurrences(database, 1) == [datetime(2030, 1, 1, tzinfo=UTC)]
    assert occurrences(database, 2) == [datetime(2030, 3, 11, 8, 0, tzinfo=UTC)]  # Monday 09:00


def test_add_json_and_every_option(fizz: Fizz) -> None:
    added = fizz("schedule", "add", "FizzBuzz", "--cron", "*/15 9-17 * * mon-fri", "--tz",
                 "America/New_York", "--start", SPRING, "--end", "2030-12-31T23:59:59Z",
                 "--catch-up", "ALL", "--max-catch-up", "7", "--json")
    assert added.code == 0, added.err
    schedule = json.loads(added.out)
    created = schedule.pop("created_at")
    assert created.endswith("Z")
    assert schedule == {
        "id": 1, "type": "FizzBuzz", "every": None, "cron": "*/15 9-17 * * MON-FRI",
        "tz": "America/New_York", "start": SPRING, "end": "2030-12-31T23:59:59Z",
        "catch_up": "all", "max_catch_up": 7, "state": "active",
        "next": "2030-03-08T14:00:00Z"}  # 09:00 EST on Friday 8 March


def test_add_with_relative_times_and_the_defaults(fizz: Fizz, database: str) -> None:
    before = datetime.now(UTC)
    assert fizz("schedule", "add", "Fizz", "--every", "90s", "--start", "+1h", "--end",
                "in 2 hours").out == "1\n"
    [(start, end, tz, policy)] = query(database, "SELECT start_at, end_at, time_zone, catch_up "
                                                 "FROM fizz_schedules")
    assert abs(start - (before + timedelta(hours=1))) < timedelta(seconds=10)
    assert abs(end - (before + timedelta(hours=2))) < timedelta(seconds=10)
    assert (tz, policy) == ("UTC", "latest")
    # A start in the past (written with a dash, as fizz add takes it) only sets the rhythm.
    assert fizz("schedule", "add", "Buzz", "--every", "1d", "--start", "-1h").out == "2\n"
    [first] = occurrences(database, 2)
    assert abs(first - (before + timedelta(hours=23))) < timedelta(seconds=10)


# ---------------------------------------------------------------------------- list


def test_list_table_and_json(fizz: Fizz) -> None:
    assert fizz("schedule", "list").out == "No schedules.\n"
    assert fizz("schedule", "list", "--json").out == "[]\n"
    fizz("schedule", "add", "Fizz", "--every", "1h30m", "--start", "2030-01-01T00:00:00Z")
    fizz("schedule", "add", "Buzz", "--cron", "30 2 * * *", "--tz", "America/New_York",
         "--start", SPRING, "--catch-up", "all", "--max-catch-up", "5")
    fizz("schedule", "add", "FizzBuzz", "--cron", "@daily", "--catch-up", "none")
    fizz("schedule", "pause", "3")
    assert fizz("schedule", "list").out == (
        "ID  TYPE      RULE               TZ                CATCH-UP  STATE   NEXT\n"
        " 1  Fizz      every 1h30m        UTC               latest    active  "
        "2030-01-01T00:00:00Z\n"
        " 2  Buzz      cron '30 2 * * *'  America/New_York  all 5     active  "
        "2030-03-09T07:30:00Z\n"
        " 3  FizzBuzz  cron '@daily'      UTC               none      paused  -\n")
    listed = json.loads(fizz("schedule", "list", "--json").out)
    assert [(s["id"], s["every"], s["cron"], s["state"], s["next"]) for s in listed] == [
        (1, "1h30m", None, "active", "2030-01-01T00:00:00Z"),
        (2, None, "30 2 * * *", "active", "2030-03-09T07:30:00Z"),
        (3, None, "@daily", "paused", None)]
    fizz("schedule", "delete", "2")
    assert [s["id"] for s in json.loads(fizz("schedule", "list", "--json").out)] == [1, 3]


# ---------------------------------------------------------------------------- show


def test_show_the_next_occurrences_through_the_spring_jump(fizz: Fizz) -> None:
    """30 2 * * * in New York: 02:30 does not exist on 10 March 2030; the job runs right
    after the jump, at 03:00 EDT, once (Debian's cron)."""
    fizz("schedule", "add", "Buzz", "--cron", "30 2 * * *", "--tz", "America/New_York",
         "--start", SPRING)
    shown = fizz("schedule", "show", "1", "--next", "4")
    assert shown.code == 0
    lines = shown.out.splitlines()
    assert lines[:4] == ["id            1", "type          Buzz", "cron          30 2 * * *",
                         "tz            America/New_York"]
    assert "every" not in shown.out
    assert lines[-7:] == [
        "next          2030-03-09T07:30:00Z",
        "",
        "next occurrences (UTC, then America/New_York):",
        "  2030-03-09T07:30:00Z  2030-03-09 02:30:00 EST (-05:00)",
        "  2030-03-10T07:00:00Z  2030-03-10 03:00:00 EDT (-04:00)",
        "  2030-03-11T06:30:00Z  2030-03-11 02:30:00 EDT (-04:00)",
        "  2030-03-12T06:30:00Z  2030-03-12 02:30:00 EDT (-04:00)",
    ]


def test_show_json_through_the_autumn_repeat(fizz: Fizz) -> None:
    """A fixed time in the repeated hour runs once, at the first of the two; a */30 job
    keeps its real-time rhythm through both copies of the hour."""
    fizz("schedule", "add", "Fizz", "--cron", "30 1 * * *", "--tz", "America/New_York",
         "--start", AUTUMN)
    fizz("schedule", "add", "Fizz", "--cron", "*/30 * * * *", "--tz", "America/New_York",
         "--start", "2030-11-03T04:00:00Z")
    fixed = json.loads(fizz("schedule", "show", "1", "--next", "2", "--json").out)
    assert fixed["upcoming"] == [
        {"time": "2030-11-03T05:30:00Z", "local": "2030-11-03T01:30:00-04:00"},
        {"time": "2030-11-04T06:30:00Z", "local": "2030-11-04T01:30:00-05:00"}]
    rhythm = json.loads(fizz("schedule", "show", "2", "-n", "6", "--json").out)
    assert [o["local"] for o in rhythm["upcoming"]] == [
        "2030-11-03T00:00:00-04:00", "2030-11-03T00:30:00-04:00", "2030-11-03T01:00:00-04:00",
        "2030-11-03T01:30:00-04:00", "2030-11-03T01:00:00-05:00", "2030-11-03T01:30:00-05:00"]
    assert [o["time"][11:16] for o in rhythm["upcoming"]] == [
        "04:00", "04:30", "05:00", "05:30", "06:00", "06:30"]  # 30 real minutes apart


def test_show_every_and_none(fizz: Fizz) -> None:
    fizz("schedule", "add", "Fizz", "--every", "1d", "--tz", "Europe/London", "--start",
         "2030-03-30T00:30:00Z")
    upcoming = json.loads(fizz("schedule", "show", "1", "--json").out)["upcoming"]
    # --every is real time: 24 hours, whatever London's clock does (BST from 31 March).
    assert [o["time"] for o in upcoming] == [f"2030-0{d}T00:30:00Z" for d in (
        "3-30", "3-31", "4-01", "4-02", "4-03")]
    assert upcoming[1]["local"] == "2030-03-31T00:30:00+00:00"
    assert upcoming[2]["local"] == "2030-04-01T01:30:00+01:00"
    assert json.loads(fizz("schedule", "show", "1", "--next", "0", "--json").out)[
        "upcoming"] == []
    assert "next occurrences" not in fizz("schedule", "show", "1", "--next", "0").out
    fizz("schedule", "add", "Fizz", "--every", "1h", "--start", "2030-01-01T00:00:00Z",
         "--end", "2030-01-01T01:00:00Z")
    assert len(json.loads(fizz("schedule", "show", "2", "--next", "1000", "--json").out)[
        "upcoming"]) == 2


def test_show_a_paused_schedule_says_what_resuming_would_give(fizz: Fizz) -> None:
    fizz("schedule", "add", "Fizz", "--every", "1h", "--start", "2030-01-01T00:00:00Z")
    fizz("schedule", "pause", "1")
    text = fizz("schedule", "show", "1", "-n", "1").out
    assert "state         paused\n" in text and "next          -\n" in text
    assert text.endswith("next occurrences if resumed now (UTC, then UTC):\n"
                         "  2030-01-01T00:00:00Z  2030-01-01 00:00:00 UTC (+00:00)\n")


# ---------------------------------------------------------------------------- pause, resume, delete


def test_pause_resume_delete(fizz: Fizz, database: str) -> None:
    fizz("schedule", "add", "Fizz", "--every", "1h", "--start", "2030-01-01T00:00:00Z")
    fizz("add", "Buzz", "2030-01-01T00:00:00Z")  # an ordinary task, untouched throughout
    assert occurrences(database, 1) == [datetime(2030, 1, 1, tzinfo=UTC)]
    paused = fizz("schedule", "pause", "1")
    assert paused.code == 0
    assert "state         paused\n" in paused.out
    assert "schedule 1 paused; 1 task(s) not yet started removed" in paused.err
    assert occurrences(database, 1) == []
    again = fizz("schedule", "pause", "1", "--json")
    assert json.loads(again.out)["state"] == "paused"
    resumed = json.loads(fizz("schedule", "resume", "1", "--json").out)
    assert (resumed["state"], resumed["next"]) == ("active", "2030-01-01T00:00:00Z")
    assert occurrences(database, 1) == [datetime(2030, 1, 1, tzinfo=UTC)]
    deleted = fizz("schedule", "delete", "1", "--json")
    assert json.loads(deleted.out)["state"] == "deleted"
    assert occurrences(database, 1) == []
    assert query(database, "SELECT tasktype, schedule_id FROM tasks") == [("Buzz", None)]
    for command in ("show", "pause", "resume", "delete"):
        gone = fizz("schedule", command, "1")
        assert (gone.code, gone.out) == (1, "")
        assert gone.err.startswith("Error: schedule 1 not found (it was deleted at 20")
    missing = fizz("schedule", "show", "7")
    assert (missing.code, missing.err) == (1, "Error: schedule 7 not found\n")


def test_deleting_keeps_the_history_and_fizz_show_names_the_schedule(
        fizz: Fizz, database: str) -> None:
    fizz("schedule", "add", "Fizz", "--every", "1h", "--start", "2030-01-01T00:00:00Z")
    fizz("add", "Buzz", "2030-01-01T00:00:00Z")
    query(database, "UPDATE tasks SET status = 'Complete', completed_at = now() WHERE id = 1")
    assert fizz("list").out == (
        "ID  TYPE      STATUS    SCHEDULE  TIME\n"
        " 1  Fizz      Complete  1         2030-01-01T00:00:00Z\n"
        " 2  Buzz      Waiting   -         2030-01-01T00:00:00Z\n")
    fizz("schedule", "delete", "1")
    shown = fizz("show", "1").out.splitlines()
    assert shown[-2:] == ["schedule_id   1", "occurrence    2030-01-01T00:00:00Z"]
    listed = json.loads(fizz("list", "--json").out)
    assert [(t["id"], t["schedule_id"], t["occurrence"]) for t in listed] == [
        (1, 1, "2030-01-01T00:00:00Z"), (2, None, None)]


# ---------------------------------------------------------------------------- bad input

TIME_ZONE = "use an IANA name such as Europe/Paris, America/New_York or UTC"
RULE = "Error: give one rule: --every DURATION (such as 5m) or --cron EXPR (such as '30 2 * * *'), not both\n"
ID = "use a whole number from 1 to 2147483647"


@pytest.mark.parametrize(("args", "message"), [
    (["add", "Fizz"], RULE),
    (["add", "Fizz", "--every", "5m", "--cron", "* * * * *"], RULE),
    (["add"], "Error: missing TYPE (see 'fizz schedule add --help')\n"),
    (["add", "Fuzz", "--every", "5m"],
     "Error: unknown task type 'Fuzz': use one of fizz, buzz, fizzbuzz\n"),
    (["add", "Fizz", "--every", "5x"], "Error: invalid interval '5x': use a duration such as "
                                       "90s, 5m, 1h30m or 1d (units w, d, h, m, s; at least "
                                       "1s)\n"),
    (["add", "Fizz", "--every", "0s"], "Error: invalid interval '0s': it must be from 1s to "
                                       "3650d\n"),
    (["add", "Fizz", "--every", "3651d"], "it must be from 1s to 3650d"),
    (["add", "Fizz", "--every", "-5m"], "Error: invalid interval '-5m'"),
    (["add", "Fizz", "--every", ""], "Error: invalid interval ''"),
    (["add", "Fizz", "--every", "1 w" + " " * 30000 + "x"], "invalid interval '1 w "),
    (["add", "Fizz", "--cron", "61 * * * *"],
     "Error: invalid cron expression '61 * * * *': bad minute field '61': use 0-59, with "
     "ranges (1-5), lists (1,15) and steps (*/10)\n"),
    (["add", "Fizz", "--cron", "* * * *"], "it has 4 fields, not 5"),
    (["add", "Fizz", "--cron", "0 0 30 2 *"], "day-of-month '30' never occurs in month '2'"),
    (["add", "Fizz", "--cron", "0 0 L * *"], "bad day-of-month field 'L'"),
    (["add", "Fizz", "--cron", "@reboot"], "unknown macro '@reboot'"),
    (["add", "Fizz", "--cron", ""], "Error: empty cron expression"),
    (["add", "Fizz", "--every", "5m", "--tz", "Europe/Pariss"],
     "Error: unknown time zone 'Europe/Pariss': did you mean 'Europe/Paris'?\n"),
    (["add", "Fizz", "--every", "5m", "--tz", "Nowhere"],
     f"Error: unknown time zone 'Nowhere': {TIME_ZONE}\n"),
    (["add", "Fizz", "--every", "5m", "--tz", ""], f"Error: empty time zone: {TIME_ZONE}\n"),
    (["add", "Fizz", "--every", "5m", "--tz", "localtime"], "means whatever each host is set to"),
    (["add", "Fizz", "--every", "5m", "--tz", "right/UTC"], "use 'UTC'"),
    (["add", "Fizz", "--every", "5m", "--start", "soonish"],
     "Error: start: invalid time 'soonish': use RFC 3339"),
    (["add", "Fizz", "--every", "5m", "--end", "9999-12-31T23:59:60Z"],
     "Error: end: time '9999-12-31T23:59:60Z' is out of range (years 1 to 9999)\n"),
    (["add", "Fizz", "--every", "5m", "--start", "+2h", "--end", "+1h"], "is before start"),
    (["add", "Fizz", "--every", "5m", "--start", "2020-01-01T00:00:00Z", "--end",
      "2020-02-01T00:00:00Z"],
     "Error: the schedule would never run: its end, 2020-02-01T00:00:00Z, has passed\n"),
    (["add", "Fizz", "--cron", "0 0 29 2 *", "--start", "2030-03-01T00:00:00Z", "--end",
      "2031-12-31T00:00:00Z"], "the schedule would never run: its end, 2031-12-31T00:00:00Z, "),
    (["add", "Fizz", "--every", "5m", "--catch-up", "some"],
     "Error: unknown catch-up policy 'some': use one of latest, all, none\n"),
    (["add", "Fizz", "--every", "5m", "--max-catch-up", "5"],
     "Error: --max-catch-up goes with --catch-up all\n"),
    (["add", "Fizz", "--every", "5m", "--catch-up", "none", "--max-catch-up", "5"],
     "--max-catch-up goes with --catch-up all"),
    (["add", "Fizz", "--every", "5m", "--catch-up", "all", "--max-catch-up", "0"],
     "Error: invalid max catch-up '0': use a whole number from 1 to 10000\n"),
    (["add", "Fizz", "--every", "5m", "--catch-up", "all", "--max-catch-up", "10001"],
     "invalid max catch-up '10001'"),
    (["add", "Fizz", "--every", "5m", "--catch-up", "all", "--max-catch-up", "١"],
     "invalid max catch-up '١'"),
    (["add", "Fizz", "--every"], "Error: --every needs a value\n"),
    (["add", "Fizz", "--evry", "5m"], "Error: no such option '--evry': did you mean '--every'?"),
    (["add", "Fizz", "Buzz", "--every", "5m"],
     "Error: unexpected argument 'Buzz' (see 'fizz schedule add --help')\n"),
    (["show"], "Error: missing ID (see 'fizz schedule show --help')\n"),
    (["show", "abc"], f"Error: invalid schedule id 'abc': {ID}\n"),
    (["show", "0"], f"Error: invalid schedule id '0': {ID}\n"),
    (["show", "1", "--next", "1001"],
     "Error: invalid --next '1001': use a whole number from 0 to 1000\n"),
    (["show", "1", "--next", "-1"], "invalid --next '-1'"),
    (["pause", "99999999999"], "invalid schedule id '99999999999'"),
    (["resume", "-1"], "invalid schedule id '-1'"),
    (["delete", "1.5"], "invalid schedule id '1.5'"),
    (["delete", "1", "2"], "Error: unexpected argument '2' (see 'fizz schedule delete --help')"),
    (["list", "--bogus"], "Error: no such option '--bogus' (see 'fizz schedule list --help')\n"),
    (["lst"], "Error: no such command 'lst': did you mean 'list'? (see 'fizz schedule --help')\n"),
    (["edit", "1"], "Error: no such command 'edit': use one of add, list, show, pause, "
                    "resume, delete (see 'fizz schedule --help')\n"),
])
def test_bad_input_exits_2_with_one_line_and_changes_nothing(
        fizz: Fizz, database: str, args: list[str], message: str) -> None:
    fizz("schedule", "add", "Fizz", "--every", "1h", "--start", "2030-01-01T00:00:00Z")
    fizz("add", "Buzz", "2030-01-01T00:00:00Z")
    before = snapshot(database)
    result = fizz("schedule", *args)
    assert (result.code, result.out) == (2, ""), result
    assert result.err.startswith("Error: ") and message in result.err, result.err
    assert result.err.count("\n") == 1 and "Traceback" not in result.err
    assert len(result.err) < 400
    assert snapshot(database) == before


def test_an_unreachable_database_is_one_line(fizz: Fizz) -> None:
    result = Fizz("postgresql://fizz@127.0.0.1:1/nothing")("schedule", "list")
    assert (result.code, result.err) == (1, "Error: cannot connect to PostgreSQL at "
                                            "127.0.0.1:1: Connection refused\n")


def test_a_database_without_the_schedules_table_says_what_to_do(
        fizz: Fizz, database: str) -> None:
    query(database, "DROP TABLE fizz_schedules CASCADE")
    result = fizz("schedule", "add", "Fizz", "--every", "5m")
    assert result.code == 1
    assert 'no fizz schema (relation "fizz_schedules" does not exist)' in result.err
    assert result.err.endswith("run 'fizz init-db' with the same FIZZ_DATABASE_URL\n")
