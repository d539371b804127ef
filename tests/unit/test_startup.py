"""Start-up: each command loads what it needs and nothing more.

The figures (`fizz --help`, `fizz add`) come from bench/startup.py; these tests keep the
reasons for them from creeping back: the help loads neither psycopg nor rich nor pydantic
(nor the cron grammar and time zones), and adding a task loads no rich, no pydantic
(Typer's own parameter conversion), no python-dateutil, no embedded-server, worker or
server code, and nothing of the schedules; the schedule commands load the cron grammar,
and still nothing heavy.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

UNREACHABLE = "postgresql://fizz@127.0.0.1:1/nothing"
HEAVY = {"pydantic", "rich", "dateutil"}
FACES = {"fizzbuzz_cli.embedded", "fizzbuzz_cli.worker", "fizzbuzz_cli.server",
         "fizzbuzz_cli.bulk"}
SCHEDULES = {"fizzbuzz_cli.recurrence", "fizzbuzz_cli.schedules", "fizzbuzz_cli.materialiser"}


def loaded_modules(*args: str) -> tuple[int, set[str]]:
    """Runs `fizz ARGS` in a fresh interpreter; its exit status and the modules it loaded."""
    code = ("import sys\n"
            "from fizzbuzz_cli.cli import app\n"  # what main() runs, before its quick exit
            f"sys.argv = ['fizz', *{list(args)!r}]\n"
            "try:\n"
            "    app()\n"
            "except SystemExit as exc:\n"
            "    status = exc.code\n"
            "print('\\x00' + ' '.join(sorted(sys.modules)) + '\\x00' + str(status))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "FIZZ_DATABASE_URL": UNREACHABLE},
                          check=False)
    _, modules, status = done.stdout.split("\x00")
    return int(status), set(modules.split())


def tops(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


@pytest.mark.parametrize("args", [["--help"], ["schedule", "--help"],
                                  ["schedule", "add", "--help"]])
def test_help_loads_no_database_driver_and_no_rich(args: list[str]) -> None:
    status, modules = loaded_modules(*args)
    assert status == 0
    assert not tops(modules) & (HEAVY | {"psycopg", "psycopg_pool", "cronsim", "zoneinfo"})
    assert not modules & (FACES | SCHEDULES | {"fizzbuzz_cli.db", "fizzbuzz_cli.database"})


@pytest.mark.parametrize("args", [["add", "Fizz"], ["list", "--json"], ["show", "1"],
                                  ["delete", "1", "2"], ["add", "Buzz", "-5m"]])
def test_task_commands_load_psycopg_and_little_else(args: list[str]) -> None:
    status, modules = loaded_modules(*args)
    assert status == 1  # the database is unreachable; the point is what was loaded
    assert "psycopg" in modules
    assert not tops(modules) & (HEAVY | {"cronsim"})
    assert not modules & (FACES | SCHEDULES)


@pytest.mark.parametrize("args", [["schedule", "add", "Fizz", "--every", "5m"],
                                  ["schedule", "list"], ["schedule", "show", "1"],
                                  ["schedule", "delete", "1", "--json"]])
def test_schedule_commands_load_the_cron_grammar_and_little_else(args: list[str]) -> None:
    status, modules = loaded_modules(*args)
    assert status == 1
    assert {"psycopg", "cronsim", "fizzbuzz_cli.schedules"} <= modules
    assert not tops(modules) & HEAVY
    assert not modules & (FACES | {"fizzbuzz_cli.materialiser"})


def test_the_quick_exit_flushes_everything_first(tmp_path: object) -> None:
    """main() ends the process without the interpreter's teardown, output flushed first:
    stdout to a pipe or a file, and the exit status, are as they would be without it."""
    code = ("import sys; from fizzbuzz_cli.cli import main; "
            "sys.argv = ['fizz', 'list', '--limit', 'x']; main()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == ("Error: invalid --limit 'x': use a whole number from 1 to "
                           "9223372036854775807\n")
    helped = subprocess.run(f"{sys.executable} -m fizzbuzz_cli --help > {tmp_path}/help.txt",
                            shell=True, timeout=60, check=False)
    assert helped.returncode == 0
    text = (tmp_path / "help.txt").read_text()  # type: ignore[operator]
    assert text.startswith("Usage: python -m fizzbuzz_cli [OPTIONS] COMMAND") and text.endswith(
        "Run 'fizz COMMAND --help' for the options and examples of each.\n")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_output_that_cannot_be_written_is_one_line_not_a_traceback() -> None:
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "fizzbuzz_cli", "--help"], stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=60, check=False)
    assert (done.returncode, done.stderr) == (1, "Error: No space left on device\n")
