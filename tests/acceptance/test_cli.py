"""The task commands through Typer's CliRunner, against a fresh database per test."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from conftest import Fizz, run_fizz

from fizzbuzz_cli import __version__
from fizzbuzz_cli.tasks import UTC

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$")


def count(url: str, where: str = "true") -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT count(*) FROM tasks WHERE {where}").fetchone()[0]


def test_version() -> None:
    result = Fizz(None)("--version", url=False)
    assert (result.code, result.out) == (0, f"fizz {__version__}\n")


def test_every_command_has_help_with_examples(fizz: Fizz) -> None:
    for command in (["init-db"], ["add"], ["list"], ["show"], ["delete"], ["db", "start"],
                    ["db", "stop"], ["db", "status"], ["db", "url"]):
        result = fizz(*command, "--help")
        assert result.code == 0, command
        assert "Examples:" in result.out, command
        assert f"fizz {' '.join(command)}" in result.out, command


def test_add_prints_only_the_id(fizz: Fizz, database: str) -> None:
    first = fizz("add", "Fizz", "2023-03-28T11:59:59Z")
    second = fizz("add", "buzz", "+30s")
    assert (first.code, first.out, first.err) == (0, "1\n", "")
    assert (second.code, second.out) == (0, "2\n")
    with psycopg.connect(database) as conn:
        rows = conn.execute("SELECT id, tasktype, status, time FROM tasks ORDER BY id").fetchall()
    assert rows[0] == (1, "Fizz", "Waiting", datetime(2023, 3, 28, 11, 59, 59, tzinfo=UTC))
    assert rows[1][1:3] == ("Buzz", "Waiting")
    assert abs(rows[1][3] - (datetime.now(UTC) + timedelta(seconds=30))) < timedelta(seconds=5)


def test_add_defaults_to_now_and_accepts_relative_times(fizz: Fizz, database: str) -> None:
    assert fizz("add", "FIZZBUZZ").out == "1\n"
    assert fizz("add", "fizzbuzz", "in 10 minutes").out == "2\n"
    with psycopg.connect(database) as conn:
        delays = [r[0] for r in conn.execute(
            "SELECT extract(epoch FROM time - now()) FROM tasks ORDER BY id")]
    assert abs(delays[0]) < 5 and abs(float(delays[1]) - 600) < 5


def test_add_json(fizz: Fizz) -> None:
    result = fizz("add", "Fizz", "2023-03-28T11:59:59Z", "--json")
    task = json.loads(result.out)
    assert {k: task[k] for k in ("id", "type", "typ", "status", "time")} == {
        "id": 1, "type": "Fizz", "typ": "Fizz", "status": "Waiting", "time": "2023-03-28T11:59:59Z"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "Fuzz"], "Error: Invalid value for 'TYPE': unknown task type 'Fuzz': use one of "
                          "fizz, buzz, fizzbuzz. Try 'fizz add --help'\n"),
        (["add", "Fizz", "soonish"], "Error: invalid time 'soonish': use RFC 3339"),
        (["add", "Fizz", "+99999999999d"], "Error: time '+99999999999d' is out of range"),
        (["add"], "Error: missing TYPE (Fizz, Buzz or FizzBuzz), or --file PATH\n"),
        (["add", "Fizz", "now", "--file", "x.csv"], "Error: give either TYPE [TIME] or --file PATH"),
        (["list", "--status", "done"], "Error: Invalid value for '--status' / '-s': unknown status "
                                       "'done': use one of waiting, claimed, complete"),
        (["list", "--type", "fizzz"], "use one of fizz, buzz, fizzbuzz"),
        (["list", "--limit", "-1"], "Error: Invalid value for '--limit'"),
        (["show", "abc"], "Error: Invalid value for 'ID': invalid task id 'abc': use a whole "
                          "number from 1 to 2147483647"),
        (["show", "99999999999"], "invalid task id '99999999999'"),
        (["delete", "0"], "invalid task id '0'"),
        (["delete", "1.5"], "invalid task id '1.5'"),
        (["bogus"], "Error: No such command 'bogus'"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_changes_nothing(
    fizz: Fizz, database: str, args: list[str], message: str
) -> None:
    fizz("add", "Fizz", "2023-03-28T11:59:59Z")
    result = fizz(*args)
    assert result.code == 2
    assert result.out == ""
    assert result.err.startswith("Error: ") and message in result.err
    assert result.err.count("\n") == 1 and "Traceback" not in result.err
    assert count(database) == 1


def test_list_table_and_filters_any_case(fizz: Fizz) -> None:
    fizz("add", "Fizz", "2023-03-28T11:59:59Z")
    fizz("add", "Buzz", "2023-03-28T12:00:00Z")
    fizz("add", "FizzBuzz", "2023-03-28T12:00:01.5Z")
    assert fizz("list").out == (
        "ID  TYPE      STATUS    TIME\n"
        " 1  Fizz      Waiting   2023-03-28T11:59:59Z\n"
        " 2  Buzz      Waiting   2023-03-28T12:00:00Z\n"
        " 3  FizzBuzz  Waiting   2023-03-28T12:00:01.500000Z\n"
    )
    only = fizz("list", "--type", "FIZZ", "--status", "WaItInG")
    assert only.code == 0
    assert [line.split()[0] for line in only.out.splitlines()[1:]] == ["1"]
    assert fizz("list", "--status", "complete").out == "No tasks.\n"


def test_list_json_is_an_array_with_exact_fields(fizz: Fizz) -> None:
    assert fizz("list", "--json").out == "[]\n"
    fizz("add", "Fizz", "2023-03-28T11:59:59Z")
    fizz("add", "Buzz", "2023-03-28T12:00:00Z")
    tasks = json.loads(fizz("list", "--json").out)
    assert [(t["id"], t["type"], t["typ"], t["status"], t["time"]) for t in tasks] == [
        (1, "Fizz", "Fizz", "Waiting", "2023-03-28T11:59:59Z"),
        (2, "Buzz", "Buzz", "Waiting", "2023-03-28T12:00:00Z"),
    ]
    assert set(tasks[0]) == {"id", "type", "typ", "status", "time", "created_at", "claimed_at",
                             "completed_at", "worker", "attempts"}
    assert ISO.match(tasks[0]["created_at"])
    limited = json.loads(fizz("list", "--json", "--limit", "1", "--type", "buzz").out)
    assert [t["id"] for t in limited] == [2]


def test_list_streams_many_rows_in_order(fizz: Fizz, database: str) -> None:
    with psycopg.connect(database) as conn:
        conn.execute("INSERT INTO tasks (tasktype, status, time) "
                     "SELECT 'Fizz', 'Waiting', now() FROM generate_series(1, 5000)")
    tasks = json.loads(fizz("list", "--json").out)
    assert [t["id"] for t in tasks] == list(range(1, 5001))
    table = fizz("list", "--limit", "2500").out.splitlines()
    assert len(table) == 2501 and table[-1].split()[0] == "2500"


def test_show_and_delete(fizz: Fizz, database: str) -> None:
    fizz("add", "Fizz", "2023-03-28T11:59:59Z")
    shown = fizz("show", "1")
    assert shown.code == 0
    lines = shown.out.splitlines()
    assert lines[:4] == [
        "id            1",
        "type          Fizz",
        "status        Waiting",
        "time          2023-03-28T11:59:59Z",
    ]
    assert lines[5:] == ["claimed_at    -", "completed_at  -", "worker        -", "attempts      0"]
    as_json = json.loads(fizz("show", "1", "--json").out)
    assert (as_json["id"], as_json["status"]) == (1, "Waiting")
    deleted = fizz("delete", "1", "--json")
    assert deleted.code == 0 and json.loads(deleted.out)["id"] == 1
    assert count(database) == 0
    missing = fizz("show", "1")
    assert (missing.code, missing.out, missing.err) == (1, "", "Error: task 1 not found\n")
    assert fizz("delete", "1").err == "Error: task 1 not found\n"


def test_bulk_add_json_lines_and_csv(fizz: Fizz, database: str, tmp_path: Path) -> None:
    jsonl = tmp_path / "tasks.jsonl"
    jsonl.write_text('{"type": "Fizz", "time": "2023-03-28T11:59:59Z"}\n'
                     '{"type": "buzz", "time": "+1h"}\n{"type": "FizzBuzz"}\n')
    result = fizz("add", "--file", str(jsonl))
    assert (result.code, result.out) == (0, "3\n")
    assert "added 3 tasks" in result.err
    csv_text = "type,time\nFizz,2023-03-28T11:59:59Z\nBuzz,2023-03-28T12:00:00Z\n"
    piped = fizz("add", "--file", "-", "--json", input=csv_text)
    assert (piped.code, piped.out) == (0, '{"added": 2}\n')
    assert count(database) == 5
    assert count(database, "tasktype = 'Buzz' AND time = '2023-03-28T12:00:00Z'") == 1


def test_bulk_add_is_all_or_nothing(fizz: Fizz, database: str, tmp_path: Path) -> None:
    lines = ['{"type": "Fizz", "time": "2023-03-28T11:59:59Z"}'] * 20000
    lines[12345] = '{"type": "Fizz", "time": "half past nine"}'
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = fizz("add", "--file", str(path))
    assert result.code == 2
    assert result.err == ("Error: line 12346: invalid time 'half past nine': use RFC 3339 such as "
                          "2023-03-28T11:59:59Z (no offset means UTC), 'now', or relative such "
                          "as +30s, +5m, +2h, -1d, 'in 10 minutes', '5 minutes ago'\n")
    assert result.out == ""
    assert count(database) == 0


def test_bulk_add_bad_type_in_csv_from_stdin(fizz: Fizz, database: str) -> None:
    result = fizz("add", "--file", "-", input="Fizz,now\nBuzz,now\nFuzz,now\nFizz,now\n")
    assert (result.code, result.err) == (
        2, "Error: line 3: unknown task type 'Fuzz': use one of fizz, buzz, fizzbuzz\n")
    assert count(database) == 0


def test_bulk_add_missing_file(fizz: Fizz) -> None:
    result = fizz("add", "--file", "/nonexistent/tasks.csv")
    assert (result.code, result.err) == (2, "Error: cannot read /nonexistent/tasks.csv: "
                                            "No such file or directory\n")


def test_init_db_is_idempotent(fizz: Fizz, empty_database: str) -> None:
    first = Fizz(empty_database)("init-db")
    again = Fizz(empty_database)("init-db")
    assert (first.code, first.out) == (0, "Created the fizz schema (version 2).\n")
    assert (again.code, again.out) == (0, "The fizz schema is up to date (version 2, 0 tasks).\n")


def test_commands_on_a_database_without_schema_say_what_to_do(empty_database: str) -> None:
    result = Fizz(empty_database)("list")
    assert result.code == 1
    assert result.err.startswith("Error: the database has no fizz schema")
    assert result.err.endswith("run 'fizz init-db'\n")


@pytest.mark.parametrize("command", [["list"], ["add", "Fizz"], ["show", "1"], ["init-db"]])
def test_unreachable_database_fails_fast_with_one_line(command: list[str]) -> None:
    started = time.monotonic()
    result = Fizz("postgresql://fizz@127.0.0.1:1/nothing")(*command)
    assert time.monotonic() - started < 10
    assert result.code == 1
    assert result.err == ("Error: cannot connect to PostgreSQL at 127.0.0.1:1: "
                          "Connection refused\n")


def test_invalid_database_url_is_bad_usage() -> None:
    result = Fizz("postgresql://[oops")("list")
    assert result.code == 2 and result.err.startswith("Error: invalid database URL")


def test_database_url_option_beats_the_environment(database: str) -> None:
    result = Fizz("postgresql://fizz@127.0.0.1:1/nothing")("add", "Fizz", "--database-url",
                                                           database)
    assert (result.code, result.out) == (0, "1\n")


def test_python_dash_m_runs_the_same_cli(database: str) -> None:
    done = run_fizz("add", "Fizz", "2023-03-28T11:59:59Z", env={"FIZZ_DATABASE_URL": database})
    assert (done.returncode, done.stdout, done.stderr) == (0, "1\n", "")
    missing = run_fizz("show", "7", env={"FIZZ_DATABASE_URL": database})
    assert (missing.returncode, missing.stderr) == (1, "Error: task 7 not found\n")
