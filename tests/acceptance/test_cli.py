"""The task commands through Typer's CliRunner, against a fresh database per test."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from helpers import Fizz, run_fizz

from fizzbuzz_cli import __version__
from fizzbuzz_cli.tasks import UTC

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$")


def count(url: str, where: str = "true") -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT count(*) FROM tasks WHERE {where}").fetchone()[0]


def table(url: str) -> list[tuple]:
    """Every row of the tasks table, every column: what "nothing changed" compares."""
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT * FROM tasks ORDER BY id").fetchall()


def test_version() -> None:
    result = Fizz(None)("--version", url=False)
    assert (result.code, result.out) == (0, f"fizz {__version__}\n")


def test_every_command_has_help_with_examples(fizz: Fizz) -> None:
    for command in ([], ["init-db"], ["add"], ["list"], ["show"], ["delete"], ["work"],
                    ["serve"], ["stats"], ["workers"], ["top"], ["purge"], ["db"],
                    ["db", "start"], ["db", "stop"], ["db", "status"], ["db", "url"],
                    ["schedule"], *(["schedule", c] for c in (
                        "add", "list", "show", "pause", "resume", "delete"))):
        result = fizz(*command, "--help")
        assert result.code == 0, command
        assert "Examples:" in result.out, command
        examples = result.out.split("Examples:\n", 1)[1]
        assert any(line.lstrip().startswith(" ".join(["fizz", *command]))
                   or "fizz " in line for line in examples.splitlines()), command


def test_help_reads_like_the_rest_of_the_click_world(fizz: Fizz) -> None:
    top = fizz("--help").out
    assert top.startswith("Usage: fizz [OPTIONS] COMMAND [ARGS]...\n")
    assert "  -v, --verbose  " in top and "  -q, --quiet  " in top
    assert fizz("add", "--help").out.startswith("Usage: fizz add [OPTIONS] [TYPE] [TIME]\n")
    assert fizz("show", "--help").out.startswith("Usage: fizz show [OPTIONS] ID\n")
    assert fizz("delete", "--help").out.startswith("Usage: fizz delete [OPTIONS] ID...\n")
    assert "  -n, --limit N  " in fizz("list", "--help").out
    for command in ([], ["add"], ["list"], ["show"], ["delete"], ["work"], ["serve"], ["db"],
                    ["schedule"], ["schedule", "add"], ["schedule", "show"]):
        text = fizz(*command, "--help").out
        for leak in ("<bool>", "<int>", "<str>", "{ID}", "[[", "╭"):
            assert leak not in text, (command, leak)


def test_add_file_help_names_every_format(fizz: Fizz) -> None:
    text = " ".join(fizz("add", "--help").out.split())
    assert "JSON lines" in text and "a JSON array" in text and "CSV (type,time)" in text
    assert "--format FORMAT Format of --file: jsonl or json" in text


@pytest.mark.parametrize("args", [[], ["db"], ["schedule"]])
def test_no_arguments_prints_the_help_and_exits_0(fizz: Fizz, args: list[str]) -> None:
    result = fizz(*args)
    assert (result.code, result.err) == (0, "")
    assert result.out.startswith(f"Usage: {' '.join(['fizz', *args])} [OPTIONS] COMMAND")
    assert result.out == fizz(*args, "--help").out


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


ID_RANGE = "use a whole number from 1 to 2147483647"
COMMANDS = "init-db, add, list, show, delete, work, serve, stats, workers, top, purge, db, schedule"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "Fuzz"], "Error: unknown task type 'Fuzz': use one of fizz, buzz, fizzbuzz\n"),
        (["add", "Fizz", "soonish"], "Error: invalid time 'soonish': use RFC 3339"),
        (["add", "Fizz", "+99999999999d"], "Error: time '+99999999999d' is out of range"),
        (["add", "Fizz", "9999-12-31T23:59:60Z"],
         "Error: time '9999-12-31T23:59:60Z' is out of range (years 1 to 9999)\n"),
        (["add", "Fizz", "+" + "1" * 500 + "s"], "characters): use RFC 3339"),
        (["add"], "Error: missing TYPE (Fizz, Buzz or FizzBuzz), or --file PATH\n"),
        (["add", "Fizz", "now", "--file", "x.csv"], "Error: give either TYPE [TIME] or --file PATH"),
        (["add", "--format", "csv", "Fizz"], "Error: --format goes with --file PATH\n"),
        (["add", "--file", "x.xml", "--format", "xml"],
         "Error: unknown format 'xml': use one of auto, jsonl, json, csv\n"),
        (["add", "Fizz", "now", "extra"],
         "Error: unexpected argument 'extra' (see 'fizz add --help')\n"),
        (["list", "--status", "done"],
         "Error: unknown status 'done': use one of waiting, claimed, complete\n"),
        (["list", "--type", "fizzz"], "use one of fizz, buzz, fizzbuzz"),
        (["list", "--limit", "-1"], "Error: invalid --limit '-1': use a whole number from 1 to "
                                    "9223372036854775807\n"),
        (["list", "--limit", "0"], "Error: invalid --limit '0': use a whole number from 1 to"),
        (["list", "--limit", "9223372036854775808"], "invalid --limit '9223372036854775808'"),
        (["list", "--limit", "١"], "invalid --limit '١'"),
        (["list", "--limit", "9" * 5000], "invalid --limit '9999"),
        (["list", "--limit"], "Error: --limit needs a value\n"),
        (["list", "--limt", "3"],
         "Error: no such option '--limt': did you mean '--limit'? (see 'fizz list --help')\n"),
        (["list", "--bogus"], "Error: no such option '--bogus' (see 'fizz list --help')\n"),
        (["show"], "Error: missing ID (see 'fizz show --help')\n"),
        (["show", "abc"], f"Error: invalid task id 'abc': {ID_RANGE}\n"),
        (["show", "²"], f"Error: invalid task id '²': {ID_RANGE}\n"),
        (["show", "99999999999"], "invalid task id '99999999999'"),
        (["show", "1", "2"], "Error: unexpected argument '2' (see 'fizz show --help')\n"),
        (["delete"], "Error: missing ID... (see 'fizz delete --help')\n"),
        (["delete", "0"], "invalid task id '0'"),
        (["delete", "1.5"], "invalid task id '1.5'"),
        (["delete", "١"], f"Error: invalid task id '١': {ID_RANGE}\n"),
        (["delete", "1", "x"], f"Error: invalid task id 'x': {ID_RANGE}\n"),
        (["bogus"], f"Error: no such command 'bogus': use one of {COMMANDS} (see 'fizz --help')\n"),
        (["lst"], "Error: no such command 'lst': did you mean 'list'? (see 'fizz --help')\n"),
        (["--verbose", "2", "list"], "Error: no such command '2': -v takes no number: repeat it "
                                     "instead (-vv) (see 'fizz --help')\n"),
        (["work", "--lease", "inf"],
         "Error: invalid --lease 'inf': use a number of seconds from 1 to 3600\n"),
        (["work", "--lease", "nan"], "invalid --lease 'nan'"),
        (["work", "--lease", "1e999"], "invalid --lease '1e999'"),
        (["work", "--lease", "9" * 400], "invalid --lease '9999"),
        (["work", "--grace", "-1"], "invalid --grace '-1': use a number of seconds from 0 to 3600"),
        (["work", "--ahead", "inf"], "invalid --ahead 'inf'"),
        (["work", "--concurrency", "0"], "invalid --concurrency '0': use a whole number from 1 to "
                                         "1000000"),
        (["work", "--concurrency", "99999999999"], "invalid --concurrency '99999999999'"),
        (["serve", "--port", "70000"], "invalid --port '70000': use a whole number from 0 to 65535"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_changes_nothing(
    fizz: Fizz, database: str, args: list[str], message: str
) -> None:
    fizz("add", "Fizz", "2023-03-28T11:59:59Z")
    before = table(database)
    result = fizz(*args)
    assert result.code == 2
    assert result.out == ""
    assert result.err.startswith("Error: ") and message in result.err
    assert result.err.count("\n") == 1 and "Traceback" not in result.err
    for leak in ("Input should", "Value error", "?.", "Invalid value", "Try '", "Got unexpected"):
        assert leak not in result.err
    assert table(database) == before


def test_list_table_and_filters_any_case(fizz: Fizz) -> None:
    fizz("add", "Fizz", "2023-03-28T11:59:59Z")
    fizz("add", "Buzz", "2023-03-28T12:00:00Z")
    fizz("add", "FizzBuzz", "2023-03-28T12:00:01.5Z")
    assert fizz("list").out == (
        "ID  TYPE      STATUS    SCHEDULE  TIME\n"
        " 1  Fizz      Waiting   -         2023-03-28T11:59:59Z\n"
        " 2  Buzz      Waiting   -         2023-03-28T12:00:00Z\n"
        " 3  FizzBuzz  Waiting   -         2023-03-28T12:00:01.500000Z\n"
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
                             "completed_at", "worker", "attempts", "schedule_id", "occurrence"}
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
    assert lines[5:] == ["claimed_at    -", "completed_at  -", "worker        -", "attempts      0",
                         "schedule_id   -", "occurrence    -"]
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


def test_commands_on_a_database_without_schema_name_it_and_say_what_to_do(
        empty_database: str) -> None:
    """`fizz init-db` typed in a shell without FIZZ_DATABASE_URL would set up the embedded
    database, not this one: the advice says which database it means."""
    result = Fizz(empty_database)("list")
    assert (result.code, result.out) == (1, "")
    assert result.err == (f"Error: the database in FIZZ_DATABASE_URL ({empty_database}) has no "
                          'fizz schema (relation "tasks" does not exist): run \'fizz init-db\' '
                          "with the same FIZZ_DATABASE_URL\n")
    secret = empty_database + " password=s3cret"
    given = Fizz(None)("add", "Fizz", "--database-url", secret, url=False)
    assert given.code == 1
    assert given.err.startswith(f"Error: the database given by --database-url ({empty_database} "
                                "password=***) has no fizz schema")
    assert given.err.endswith(": run 'fizz init-db --database-url URL' with the same URL\n")
    assert "s3cret" not in given.err
    assert Fizz(empty_database)("init-db").code == 0
    assert Fizz(empty_database)("list").out == "No tasks.\n"


def test_db_status_says_the_embedded_server_is_not_in_use_while_a_url_is_set(
        database: str) -> None:
    with_url = Fizz(database)("db", "status")
    assert with_url.code == 0
    assert with_url.out.splitlines()[-1] == ("not in use: FIZZ_DATABASE_URL is set, so fizz "
                                             "commands use that database instead")
    assert json.loads(Fizz(database)("db", "status", "--json").out)["in_use"] is False
    without = Fizz(None)("db", "status", "--json", url=False)
    assert json.loads(without.out)["in_use"] is True
    assert "not in use" not in Fizz(None)("db", "status", url=False).out


@pytest.mark.parametrize("url", ["postgresql://[oops", "connect_timeout=x", "a\x00b"])
def test_invalid_database_url_is_bad_usage(url: str) -> None:
    result = Fizz(None)("list", "--database-url", url, url=False)
    assert result.code == 2 and result.err.startswith("Error: invalid database URL")
    assert result.err.count("\n") == 1


def test_a_file_name_with_a_nul_is_bad_input(fizz: Fizz) -> None:
    result = fizz("add", "--file", "a\x00b")
    assert (result.code, result.err) == (2, "Error: cannot read 'a\\x00b': not a valid file "
                                            "name\n")


def test_database_url_option_beats_the_environment(database: str) -> None:
    result = Fizz("postgresql://fizz@127.0.0.1:1/nothing")("add", "Fizz", "--database-url",
                                                           database)
    assert (result.code, result.out) == (0, "1\n")


def test_python_dash_m_runs_the_same_cli(database: str) -> None:
    done = run_fizz("add", "Fizz", "2023-03-28T11:59:59Z", env={"FIZZ_DATABASE_URL": database})
    assert (done.returncode, done.stdout, done.stderr) == (0, "1\n", "")
    missing = run_fizz("show", "7", env={"FIZZ_DATABASE_URL": database})
    assert (missing.returncode, missing.stderr) == (1, "Error: task 7 not found\n")


@pytest.mark.parametrize(("args", "ago"), [
    (["add", "FizzBuzz", "-1d"], timedelta(days=1)),
    (["add", "Buzz", "-5m"], timedelta(minutes=5)),
    (["add", "Buzz", "-5m", "--json"], timedelta(minutes=5)),
    (["add", "--json", "Fizz", "-30s"], timedelta(seconds=30)),
    (["add", "Fizz", "-1h30m"], timedelta(hours=1, minutes=30)),
])
def test_add_takes_a_time_in_the_past_written_with_a_dash(
        fizz: Fizz, database: str, args: list[str], ago: timedelta) -> None:
    """As the README and `fizz add --help` show it: -1d is a time, not an option."""
    result = fizz(*args)
    assert (result.code, result.err) == (0, "")
    with psycopg.connect(database) as conn:
        [(when,)] = conn.execute("SELECT time FROM tasks").fetchall()
    assert abs(when - (datetime.now(UTC) - ago)) < timedelta(seconds=10)


def test_no_time_means_now_everywhere(fizz: Fizz, database: str, tmp_path: Path) -> None:
    """A CSV row `Buzz,` means what `Buzz` alone, a JSON line without "time" and
    `fizz add Buzz` mean: now."""
    (tmp_path / "t.csv").write_text("Buzz,\nBuzz\nBuzz, \n")
    (tmp_path / "t.jsonl").write_text('{"type": "Buzz"}\n{"type": "Buzz", "time": ""}\n'
                                      '{"type": "Buzz", "time": null}\n')
    assert fizz("add", "--file", str(tmp_path / "t.csv")).out == "3\n"
    assert fizz("add", "--file", str(tmp_path / "t.jsonl")).out == "3\n"
    assert fizz("add", "Buzz", "").out == "7\n"
    assert fizz("add", "Buzz").out == "8\n"
    assert count(database, "abs(extract(epoch FROM time - now())) < 10") == 8


@pytest.mark.parametrize("fmt", ["json", "jsonl", "JSON"])
def test_format_json_and_jsonl_read_arrays_and_lines(fizz: Fizz, database: str,
                                                      tmp_path: Path, fmt: str) -> None:
    array = tmp_path / "tasks.data"
    array.write_text('[{"type": "Fizz", "time": "2023-03-28T11:59:59Z"}, {"typ": "buzz"}]')
    lines = tmp_path / "more.data"
    lines.write_text('{"type": "FizzBuzz"}\n')
    assert fizz("add", "--file", str(array), "--format", fmt).out == "2\n"
    assert fizz("add", "--file", str(lines), "--format", fmt).out == "1\n"
    assert count(database) == 3


HOSTILE_FILES = [
    ("big.jsonl", b'{"type": "Fizz", "time": ' + b"1" * 5000 + b"}\n",
     "Error: line 1: invalid JSON (Exceeds the limit (4300 digits) for integer string "
     "conversion: value has 5000 digits)\n"),
    ("deep.jsonl", b"[" * 100_000, "Error: invalid JSON array (nested too deeply)\n"),
    ("deep.json", b"[" * 100_000, "Error: invalid JSON array (nested too deeply)\n"),
    ("deep2.jsonl", b'{"type": "Fizz"}\n' + b'{"a":' * 100_000 + b"\n",
     "Error: line 2: invalid JSON (nested too deeply)\n"),
    ("wide.csv", b"Fizz,now\nFizz," + b"x" * 200_000 + b"\n",
     "Error: line 2: invalid CSV (field larger than field limit (131072))\n"),
    ("quote.csv", b'Fizz,now\n"Fizz\n', "Error: line 2: invalid CSV (unexpected end of data)\n"),
    ("leap.csv", b"Fizz,now\nFizz,9999-12-31T23:59:60Z\n",
     "Error: line 2: time '9999-12-31T23:59:60Z' is out of range (years 1 to 9999)\n"),
    ("leap.jsonl", b'{"type": "Fizz", "time": "9999-12-31T23:59:60Z"}\n',
     "Error: line 1: time '9999-12-31T23:59:60Z' is out of range (years 1 to 9999)\n"),
    ("latin1.csv", b"Fizz,now\nBuzz,now\nFizz,caf\xe9\n", "Error: line 3: not UTF-8 text\n"),
    ("nul.csv", b"Fizz,now\x00\n", "Error: line 1: invalid time 'now\\x00': use RFC 3339"),
    ("object.json", b'{"type": "Fizz"} {"type": "Buzz"}\n',
     "Error: line 1: invalid JSON (Extra data, column 18)\n"),
]


@pytest.mark.parametrize(("name", "content", "message"), HOSTILE_FILES,
                         ids=[name for name, _, _ in HOSTILE_FILES])
def test_bulk_add_of_a_hostile_file_is_one_line_and_adds_nothing(
        fizz: Fizz, database: str, tmp_path: Path, name: str, content: bytes,
        message: str) -> None:
    fizz("add", "Fizz", "2023-03-28T11:59:59Z")
    before = table(database)
    path = tmp_path / name
    path.write_bytes(content)
    for result in (fizz("add", "--file", str(path)),
                   fizz("add", "--file", "-", "--format", name.split(".")[1].rstrip("l") + "l"
                        if name.endswith("jsonl") else name.split(".")[1], input=content)):
        assert (result.code, result.out) == (2, "")
        assert result.err.startswith(message) and result.err.count("\n") == 1
        assert table(database) == before


@pytest.mark.parametrize("ending", ["\r", "\r\n", "\n"])
def test_bulk_add_takes_any_line_ending(fizz: Fizz, database: str, tmp_path: Path,
                                        ending: str) -> None:
    rows = ["type,time", "Fizz,2023-03-28T11:59:59Z", "Buzz,+1h", "FizzBuzz,"]
    (tmp_path / "t.csv").write_bytes(ending.join(rows).encode() + ending.encode())
    lines = ['{"type": "Fizz"}', '{"type": "Buzz", "time": "+1h"}']
    (tmp_path / "t.jsonl").write_bytes(ending.join(lines).encode())
    assert fizz("add", "--file", str(tmp_path / "t.csv")).out == "3\n"
    assert fizz("add", "--file", str(tmp_path / "t.jsonl")).out == "2\n"
    assert count(database) == 5


def test_add_file_with_stdin_closed_is_one_line(database: str) -> None:
    done = subprocess.run(["bash", "-c", 'exec "$0" -m fizzbuzz_cli add --file - <&-',
                           sys.executable], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "FIZZ_DATABASE_URL": database})
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == ("Error: cannot read stdin: it is closed (give --file PATH, or pipe "
                           "the tasks in)\n")


def test_delete_several_ids_all_or_nothing(fizz: Fizz, database: str) -> None:
    for _ in range(4):
        fizz("add", "Fizz", "2023-03-28T11:59:59Z")
    deleted = fizz("delete", "3", "1", "3", "--json")
    assert deleted.code == 0
    assert [json.loads(line)["id"] for line in deleted.out.splitlines()] == [3, 1]
    assert [row[0] for row in table(database)] == [2, 4]
    before = table(database)
    missing = fizz("delete", "2", "99")
    assert (missing.code, missing.out) == (1, "")
    assert missing.err == "Error: task 99 not found; nothing was deleted\n"
    several = fizz("delete", "2", "98", "4", "99")
    assert several.err == "Error: tasks 98 and 99 not found; nothing was deleted\n"
    assert table(database) == before
    shown = fizz("delete", "2", "4")
    assert shown.code == 0
    blocks = shown.out.split("\n\n")
    assert [block.splitlines()[0] for block in blocks] == ["id            2", "id            4"]
    assert count(database) == 0


def test_verbose_and_quiet_go_before_or_after_the_command(fizz: Fizz) -> None:
    fizz("add", "Fizz", "2023-03-28T11:59:59Z")
    for args in (["-v", "list"], ["list", "-v"], ["list", "--verbose"], ["-q", "list", "-v"]):
        result = fizz(*args)
        assert result.code == 0, args
        assert result.out.splitlines()[1].split()[0] == "1", args
    assert fizz("list", "-q").err == ""


def test_verbose_says_which_database_without_its_password_and_how_long(database: str) -> None:
    url = database + " password=s3cret"
    listed = Fizz(url)("list", "-v")
    assert listed.code == 0
    lines = listed.err.splitlines()
    assert any(line.endswith(f"DEBUG database: {database} password=*** (FIZZ_DATABASE_URL)")
               for line in lines), lines
    assert any(" DEBUG connected in " in line for line in lines)
    assert any(" DEBUG finished in " in line for line in lines)
    assert "s3cret" not in listed.err
    added = Fizz(None)("-vv", "add", "Fizz", "--database-url", url, url=False)
    assert added.code == 0 and added.out == "1\n"
    assert "(--database-url)" in added.err and "s3cret" not in added.err
    assert len(added.err.splitlines()) > len(lines)  # psycopg's own debug lines too
    assert Fizz(url)("add", "Fizz").err == ""  # and nothing without -v


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc")
def test_a_file_that_fails_while_read_is_one_line(fizz: Fizz, database: str) -> None:
    result = fizz("add", "--file", "/proc/self/mem")  # opens, then EIO on the first read
    assert (result.code, result.out) == (1, "")
    assert result.err == "Error: cannot read /proc/self/mem: Input/output error\n"
    assert count(database) == 0
