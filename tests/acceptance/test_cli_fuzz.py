"""Arbitrary text thrown at the command line: every input gets a clear answer.

Whatever the arguments of add, list, show, delete and schedule (add, list, show, pause,
resume, delete), and whatever a file given to `add --file` holds: the exit status is 0, 1
or 2; stderr never holds a traceback; a failure is exactly one line, `Error: ...`; a success
writes at most one line (a log line) on stderr; and after exit 2 the tasks and schedules
tables are exactly as they were, every row and every column.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import psycopg
import pytest
from helpers import Fizz, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fizzbuzz_cli import schedules
from fizzbuzz_cli.recurrence import parse_schedule_spec

FUZZ = settings(max_examples=200, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

# Words that steer arbitrary text into option values and past the usual first checks, and
# words that broke parsers somewhere (NUL, line breaks of every kind, an escape sequence, a
# lone surrogate as Python makes of undecodable argv bytes, digits of other scripts).
STEERING = ["--json", "--", "-", "-1d", "+5m", "now", "Fizz", "buzz", "FIZZBUZZ", "waiting",
            "1", "2", "0", "-1", "json", "csv", "9999-12-31T23:59:60Z", "2023-03-28T11:59:59Z"]
NASTY = ["\x00", "a\x00b", "\n", "\r\n", "\x85", "\u2028", "\x1b[31m", "\udcff", "١", "²",
         "", " ", "'", '"', "9" * 30, "+1e9d", "inf", "nan", "-", "--file", "-v"]
OPTIONS = {"add": ["--file", "-f", "--format"], "list": ["--type", "-t", "--status", "-s",
                                                          "--limit", "-n"],
           "schedule": ["--every", "--cron", "--tz", "--start", "--end", "--catch-up",
                        "--max-catch-up", "--next", "-n", "--json"]}
SCHEDULE_COMMANDS = ["add", "list", "show", "pause", "resume", "delete"]
SCHEDULE_WORDS = ["5m", "1h30m", "1 w", "0s", "3651d", "*/5 * * * *", "30 2 * * *", "@daily",
                  "@reboot", "61 * * * *", "0 0 30 2 *", "Europe/Paris", "Europe/Pariss",
                  "right/UTC", "all", "NONE", "latest", "100", "10001", "2020-01-01T00:00:00Z"]
text = st.text(alphabet=st.one_of(st.sampled_from("\x00\n\r\x85\udcff١²-"), st.characters()),
               max_size=30)
words = st.one_of(text, st.sampled_from(STEERING), st.sampled_from(NASTY))
schedule_words = st.one_of(words, st.sampled_from(SCHEDULE_WORDS))


def argv(command: str) -> st.SearchStrategy[list[str]]:
    """Up to four words or (option, word) pairs of the command's own options."""
    vocabulary = schedule_words if command == "schedule" else words
    groups = vocabulary.map(lambda word: [word])
    if command in OPTIONS:
        groups |= st.tuples(st.sampled_from(OPTIONS[command]), vocabulary).map(list)
    mixed = st.lists(groups, max_size=4).map(lambda gs: [word for group in gs for word in group])
    if command == "schedule":  # a subcommand (most of the time), then the rest
        first = st.one_of(st.sampled_from(SCHEDULE_COMMANDS), words)
        return st.tuples(first, mixed).map(lambda t: [t[0], *t[1]])
    if command != "add":
        return mixed
    # A file name and a format alone, so that they get past "TYPE or --file, not both".
    files = st.tuples(st.sampled_from(["--file", "-f"]), words, st.sampled_from(
        [[], ["--format"]]), words).map(lambda t: [t[0], t[1], *t[2], *([t[3]] if t[2] else [])])
    return mixed | files


VERBOSE = re.compile(r"-[a-zA-Z]*v[a-zA-Z]*|--verbose")

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
                      st.sampled_from(["Fizz", "buzz", "now", "+1h", "-1d", "", "2023-03-28",
                                       "9999-12-31T23:59:60Z", "0001-01-01T00:00:00+01:00"]))
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)
record = st.dictionaries(st.sampled_from(["type", "typ", "time", "id"]), json_value, max_size=3)
endings = st.sampled_from(["\n", "\r\n", "\r"])
json_lines = st.tuples(st.lists(st.one_of(record.map(json.dumps), st.text(max_size=30)),
                                max_size=5), endings).map(lambda t: t[1].join(t[0]))
json_array = st.lists(record, max_size=5).map(json.dumps)
csv_cell = st.one_of(st.text(max_size=12), st.sampled_from(["Fizz", "Buzz", "now", "", '"',
                                                            "+1h", "type", "time"]))
csv_text = st.tuples(st.lists(st.lists(csv_cell, max_size=3).map(",".join), max_size=5),
                     endings).map(lambda t: t[1].join(t[0]))
contents = st.one_of(st.binary(max_size=120),
                     st.one_of(st.text(max_size=120), json_lines, json_array, csv_text).map(
                         lambda text: text.encode("utf-8", "surrogatepass")))


def table(url: str) -> list[tuple]:
    """Every row of the tasks and schedules tables."""
    with psycopg.connect(url) as conn:
        return [*conn.execute("SELECT * FROM tasks ORDER BY id").fetchall(),
                *conn.execute("SELECT * FROM fizz_schedules ORDER BY id").fetchall()]


def seed(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO tasks (tasktype, status, time) SELECT 'Fizz', 'Waiting', "
                     "'2023-03-28T11:59:59Z' FROM generate_series(1, 3)")
        schedules.create_schedule(conn, parse_schedule_spec(
            "Buzz", every="1h", start="2030-01-01T00:00:00Z"))


def check(result: Result, before: list[tuple], url: str, args: list[str]) -> None:
    assert result.code in (0, 1, 2), (args, result)
    assert "Traceback" not in result.err, (args, result.err)
    lines = result.err.splitlines()
    if result.code != 0:
        assert lines and lines[-1].startswith("Error: "), (args, result.err)
    if not any(VERBOSE.fullmatch(arg) for arg in args):
        assert len(lines) == 1 if result.code else len(lines) <= 1, (args, result.err)
        assert result.err.count("\n") == len(lines), (args, result.err)  # no stray \r or \x85
    if result.code == 2:
        assert result.out == "", (args, result.out)
        assert table(url) == before, args


@pytest.mark.parametrize("command", ["add", "list", "show", "delete", "schedule"])
def test_arbitrary_arguments_get_a_clear_answer(command: str, database: str) -> None:
    fizz = Fizz(database)
    seed(database)

    @FUZZ
    @given(args=argv(command))
    def attempt(args: list[str]) -> None:
        before = table(database)
        check(fizz(command, *args), before, database, [command, *args])

    attempt()


def test_arbitrary_files_get_a_clear_answer(database: str, tmp_path: Path) -> None:
    fizz = Fizz(database)
    seed(database)

    @FUZZ
    @given(content=contents, suffix=st.sampled_from([".jsonl", ".json", ".csv", ".txt", ""]),
           fmt=st.sampled_from([None, "auto", "jsonl", "json", "csv"]),
           stdin=st.booleans())
    def attempt(content: bytes, suffix: str, fmt: str | None, stdin: bool) -> None:
        options = ["--format", fmt] if fmt else []
        before = table(database)
        if stdin:
            args = ["add", "--file", "-", *options]
            result = fizz(*args, input=content)
        else:
            path = tmp_path / f"tasks{suffix}"
            path.write_bytes(content)
            args = ["add", "--file", str(path), *options]
            result = fizz(*args)
        check(result, before, database, args)
        if result.code == 0:
            assert re.fullmatch(r"[0-9]+\n", result.out), (args, result.out)

    attempt()
