"""Every example in every `--help` parses: the words of each `fizz ...` line are read by the
command they name, values included (times, ids, numbers), without running it."""

from __future__ import annotations

import re
import shlex

import pytest
import typer.main

from fizzbuzz_cli.cli import app

ROOT = typer.main.get_command(app)


def commands(group, path=("fizz",)):  # type: ignore[no-untyped-def]
    yield path, group
    for name, command in getattr(group, "commands", {}).items():
        yield from commands(command, (*path, name))


def examples() -> list[str]:
    found = []
    for _, command in commands(ROOT):
        for line in (command.epilog or "").splitlines()[1:]:
            line = re.sub(r"\s{2,}#.*$", "", line).strip()
            line = line.split("|")[-1].strip()  # cat tasks.csv | fizz add --file -
            words = [w for w in shlex.split(line) if not re.fullmatch(r"[A-Z_]+=\S*", w)]
            if words and words[0] == "fizz":
                found.append(shlex.join(words))
    return found


def test_there_are_examples_everywhere() -> None:
    assert len(examples()) >= 25


@pytest.mark.parametrize("example", examples())
def test_every_help_example_parses(example: str) -> None:
    args = shlex.split(example)[1:]
    group, ctx = ROOT, ROOT.make_context("fizz", list(args))
    while True:
        rest = [*ctx._protected_args, *ctx.args]
        if not rest or not hasattr(group, "commands"):
            return
        name, command, rest = group.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx)
        group = command
