"""Every command that touches the database, on a database it cannot reach and on one with
no fizz schema: one line naming the database and what to do, exit 1, no traceback."""

from __future__ import annotations

import time

import pytest
from helpers import Fizz

UNREACHABLE = "postgresql://fizz@127.0.0.1:1/nothing"

COMMANDS = [
    ["list"], ["list", "--json"], ["add", "Fizz"], ["add", "--file", "-"], ["show", "1"],
    ["delete", "1"], ["delete", "1", "2"], ["work"], ["work", "--drain"],
    ["serve", "--port", "0"], ["stats"], ["stats", "--json"], ["workers"],
    ["purge", "--before", "1d"], ["purge", "--before", "1d", "--dry-run"],
]


@pytest.mark.parametrize("command", [*COMMANDS, ["init-db"]], ids=" ".join)
def test_an_unreachable_database_is_one_line_at_once(command: list[str]) -> None:
    started = time.monotonic()
    result = Fizz(UNREACHABLE)(*command, input="Fizz,now\n")
    assert time.monotonic() - started < 10
    assert (result.code, result.out) == (1, "")
    assert result.err == ("Error: cannot connect to PostgreSQL at 127.0.0.1:1: "
                          "Connection refused\n")


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_database_without_schema_is_named_with_what_to_do(command: list[str],
                                                            empty_database: str) -> None:
    result = Fizz(empty_database)(*command, input="Fizz,now\n")
    assert (result.code, result.out) == (1, "")
    assert result.err.startswith(f"Error: the database in FIZZ_DATABASE_URL ({empty_database}) "
                                 "has no fizz schema"), result.err
    assert result.err.endswith(": run 'fizz init-db' with the same FIZZ_DATABASE_URL\n")
    assert result.err.count("\n") == 1
