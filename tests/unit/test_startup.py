"""Start-up: each command loads what it needs and nothing more.

The figures (`fizz --help`, `fizz add`) come from bench/startup.py; these tests keep the
reasons for them from creeping back: the help loads neither psycopg nor rich nor pydantic,
and adding a task loads no rich, no pydantic (Typer's own parameter conversion), no
python-dateutil, no embedded-server, worker or server code.
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


def loaded_modules(*args: str) -> tuple[int, set[str]]:
    """Runs `fizz ARGS` in a fresh interpreter; its exit status and the modules it loaded."""
    code = ("import sys\n"
            "from fizzbuzz_cli.cli import main\n"
            f"sys.argv = ['fizz', *{list(args)!r}]\n"
            "try:\n"
            "    main()\n"
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


def test_help_loads_no_database_driver_and_no_rich() -> None:
    status, modules = loaded_modules("--help")
    assert status == 0
    assert not tops(modules) & (HEAVY | {"psycopg", "psycopg_pool"})
    assert not modules & (FACES | {"fizzbuzz_cli.db", "fizzbuzz_cli.database"})


@pytest.mark.parametrize("args", [["add", "Fizz"], ["list", "--json"], ["show", "1"],
                                  ["delete", "1", "2"], ["add", "Buzz", "-5m"]])
def test_task_commands_load_psycopg_and_little_else(args: list[str]) -> None:
    status, modules = loaded_modules(*args)
    assert status == 1  # the database is unreachable; the point is what was loaded
    assert "psycopg" in modules
    assert not tops(modules) & HEAVY
    assert not modules & FACES
