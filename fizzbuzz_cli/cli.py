"""The `fizz` command line: parse, call one function, render. Nothing else lives here.

Start-up time is part of the interface (scripts run `fizz add` once per task), so this
module loads only Typer and fizz's small modules (config, errors, tasks); each command
imports what it needs when it runs: psycopg (through fizzbuzz_cli.database), rich (on a
terminal only), the bulk reader, the worker, the server. fizz's own parsers convert every
parameter (see `_Convert`): Typer's conversion would load pydantic (some 50 ms) and put its
phrasing into the errors.

Every error is one line on stderr in fizz's own words, exit 2 for bad usage or input
(nothing is changed) and 1 for a failure at run time. Help is plain Click-style text.

No `from __future__ import annotations` here: Typer reads the signatures of the commands, and
annotations kept as strings would be compiled and evaluated anew on every run (18 ms).
"""

import contextlib
import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Annotated, Any, Optional

import typer
from typer._click.exceptions import (
    BadOptionUsage,
    MissingParameter,
    NoArgsIsHelpError,
    NoSuchOption,
    UsageError,
)
from typer._click.parser import _OptionParser
from typer.core import TyperCommand, TyperGroup

from fizzbuzz_cli import __version__, config
from fizzbuzz_cli.config import ServerSettings, WorkerSettings
from fizzbuzz_cli.errors import BadInput, FizzError, brief
from fizzbuzz_cli.tasks import (
    TIME_HELP,
    Status,
    Task,
    TaskType,
    format_time,
    parse_task_id,
    parse_time,
)

log = logging.getLogger("fizz.cli")

# ---------------------------------------------------------------------------- parsing

MAX_LIMIT = 2**63 - 1  # LIMIT takes a bigint
_NEGATIVE = re.compile(r"-[0-9]")
_WHOLE = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")


def _whole_number(option: str, low: int, high: int) -> Callable[[str], int]:
    """A parser for an option taking a whole number in [low, high], ASCII digits only."""

    def parse(text: str) -> int:
        if not _WHOLE.fullmatch(text) or len(text) > len(str(high)) or not (
                low <= int(text) <= high):
            raise BadInput(f"invalid {option} {text!r}: use a whole number from {low} to {high}")
        return int(text)

    return parse


def _seconds(option: str, low: float, high: float) -> Callable[[str], float]:
    """A parser for an option taking seconds in [low, high]: decimal digits, never inf or nan."""

    def parse(text: str) -> float:
        value = float(text) if _DECIMAL.fullmatch(text) else math.nan
        if not (math.isfinite(value) and low <= value <= high):
            raise BadInput(f"invalid {option} {text!r}: use a number of seconds from {low:g} "
                           f"to {high:g}")
        return value

    return parse


def _file_format(text: str) -> Any:
    from fizzbuzz_cli.bulk import FileFormat

    return FileFormat.parse(text)


class _Convert:
    """Converts a parameter's command-line text with fizz's own parser for it. Installed on
    every parameter in place of Typer's conversion, which goes through pydantic (50 ms of
    start-up, and its phrasing in the errors). A BadInput from the parser is a usage error."""

    def __init__(self, parse: Callable[[str], Any] | None, many: bool) -> None:
        self.parse = parse
        self.many = many

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        if value is None:
            return () if self.many else None
        if self.many:
            return [self._one(item, param, ctx) for item in value]
        return self._one(value, param, ctx)

    def _one(self, value: Any, param: Any, ctx: Any) -> Any:
        if self.parse is None or not isinstance(value, str):
            return value  # text wanted as it is, a flag, a count, or a default
        try:
            return self.parse(value)
        except BadInput as exc:
            raise typer.BadParameter(str(exc), ctx=ctx, param=param) from None


def _use_fizz_parsers(params: Iterable[Any]) -> None:
    """Give every parameter a _Convert (Typer 0.29 asks a parameter's `_runtime_param` how to
    convert it; typer is pinned to 0.29.x for this)."""
    for param in params:
        descriptor = param.type_descriptor
        parse = descriptor.parameter_info.parser
        if parse is None and descriptor.annotation not in (str, bool) and not getattr(
                param, "count", False):
            raise TypeError(f"the parameter {param.name!r} needs a parser")
        param._runtime_param = _Convert(parse, many=param.multiple or param.nargs == -1)


def _with_fizz_parser(option: Any) -> Any:
    """The --help option, made by Click on demand, converted like the others."""
    if option is not None and option._runtime_param is None:
        _use_fizz_parsers([option])
    return option


class _Parser(_OptionParser):
    """Click's option parser, except that a word such as -1d, -5m or -30s is a value (a time
    in the past), never an option: no fizz option is a digit."""

    def _process_opts(self, arg: str, state: Any) -> None:
        if _NEGATIVE.match(arg) and arg not in self._short_opt:
            state.largs.append(arg)
        else:
            super()._process_opts(arg, state)


# ---------------------------------------------------------------------------- help


def _usage_pieces(command: Any, ctx: Any) -> list[str]:
    pieces = [command.options_metavar] if command.options_metavar else []
    for param in command.get_params(ctx):
        if param.param_type_name == "argument":
            name = _metavar(param)
            pieces.append(name if param.required else f"[{name}]")
    return pieces


def _metavar(param: Any) -> str:
    name = param.metavar or param.name.upper()
    return f"{name}..." if param.nargs == -1 else name


def _format_params(command: Any, ctx: Any, formatter: Any) -> None:
    arguments, options = [], []
    for param in command.get_params(ctx):
        if getattr(param, "hidden", False):
            continue
        if param.param_type_name == "argument":
            arguments.append((_metavar(param), _with_default(param, param.help or "")))
            continue
        names = ", ".join(sorted([*param.opts, *param.secondary_opts], key=len))
        if not (param.is_flag or param.count):
            names += f" {param.metavar or 'VALUE'}"
        help_text = _with_default(param, param.help or "")
        if param.envvar and param.show_envvar:
            help_text += f" [env var: {param.envvar}]"
        options.append((names, help_text))
    for title, rows in (("Arguments", arguments), ("Options", options)):
        if rows:
            with formatter.section(title):
                formatter.write_dl(rows)


def _with_default(param: Any, text: str) -> str:
    default = param.default
    if (param.show_default is True and default not in (None, False, "")
            and not getattr(param, "count", False)):
        shown = f"{default:g}" if isinstance(default, float) else str(default)
        return f"{text} [default: {shown}]"
    return text


def _format_epilog(command: Any, formatter: Any) -> None:
    """The examples, one per line, as written (Click would rewrap them into a paragraph)."""
    if command.epilog:
        formatter.write_paragraph()
        for line in command.epilog.splitlines():
            formatter.write(f"{'':>{formatter.current_indent}}{line}\n")


def _examples(*lines: str) -> str:
    return "Examples:\n" + "\n".join(f"  {line}" for line in lines)


# ---------------------------------------------------------------------------- commands and errors


class FizzCommand(TyperCommand):
    """A fizz command: fizz's parsers, -1d as a value, plain help, fizz's error words."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["rich_markup_mode"] = None
        super().__init__(*args, **kwargs)
        _use_fizz_parsers(self.params)

    def get_help_option(self, ctx: Any) -> Any:
        return _with_fizz_parser(super().get_help_option(ctx))

    def make_parser(self, ctx: Any) -> _OptionParser:
        parser = _Parser(ctx)
        for param in self.get_params(ctx):
            param.add_to_parser(parser, ctx)
        return parser

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        allowed, ctx.allow_extra_args = ctx.allow_extra_args, True
        try:
            rest = super().parse_args(ctx, args)
        finally:
            ctx.allow_extra_args = allowed
        if rest and not allowed:
            raise UsageError(f"unexpected argument {rest[0]!r}", ctx)
        return rest

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return _usage_pieces(self, ctx)

    def format_options(self, ctx: Any, formatter: Any) -> None:
        _format_params(self, ctx, formatter)

    def format_epilog(self, ctx: Any, formatter: Any) -> None:
        _format_epilog(self, formatter)


class FizzGroup(TyperGroup):
    """The fizz command (and `fizz db`). Reports every error as one line on stderr with its
    exit status; with no arguments, prints the help and exits 0 (as git and docker do)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs["rich_markup_mode"] = None
        super().__init__(**kwargs)
        _use_fizz_parsers(self.params)

    def get_help_option(self, ctx: Any) -> Any:
        return _with_fizz_parser(super().get_help_option(ctx))

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str, Any, list[str]]:
        name = args[0]
        command = self.get_command(ctx, name)
        if command is None:
            from difflib import get_close_matches

            close = get_close_matches(name, list(self.commands))
            hint = (f"did you mean {' or '.join(repr(c) for c in close)}?" if close
                    else f"use one of {', '.join(self.commands)}")
            if name.isdigit() and ctx.find_root().meta.get("fizz.verbose"):
                hint = "-v takes no number: repeat it instead (-vv)"  # fizz --verbose 2 list
            raise UsageError(f"no such command {name!r}: {hint}", ctx)
        return name, command, args[1:]

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [*_usage_pieces(self, ctx), self.subcommand_metavar]

    def format_options(self, ctx: Any, formatter: Any) -> None:
        _format_params(self, ctx, formatter)
        self.format_commands(ctx, formatter)

    def format_epilog(self, ctx: Any, formatter: Any) -> None:
        _format_epilog(self, formatter)

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        started = time.perf_counter()
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except NoArgsIsHelpError as exc:
            print(exc.ctx.get_help())
            code = 0
        except typer.TyperException as exc:  # Click's usage errors
            _fail(_usage_message(exc), getattr(exc, "exit_code", 2))
        except FizzError as exc:
            _fail(str(exc), exc.exit_code)
        except (typer.Abort, KeyboardInterrupt):
            _fail("interrupted", 130)
        except OSError as exc:  # stdout on a full disk, a file that fails while read
            where = f" ({exc.filename})" if exc.filename else ""
            _fail(f"{exc.strerror or brief(exc)}{where}", 1)
        log.debug("finished in %.1f ms", (time.perf_counter() - started) * 1000)
        sys.exit(code if isinstance(code, int) else 0)


def _usage_message(exc: Exception) -> str:
    """A usage error in fizz's words: what is wrong, and where to read what is valid."""
    ctx = getattr(exc, "ctx", None)
    see = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    if isinstance(exc, MissingParameter) and exc.param is not None:
        param = exc.param
        what = (_metavar(param) if param.param_type_name == "argument"
                else " / ".join(param.opts))
        return f"missing {what}{see}"
    if isinstance(exc, typer.BadParameter):  # from fizz's parsers: names the valid values
        return exc.message
    if isinstance(exc, NoSuchOption):
        from difflib import get_close_matches

        close = get_close_matches(exc.option_name, exc.possibilities or (), cutoff=0.75)
        hint = f": did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        return f"no such option {exc.option_name!r}{hint}{see}"
    if isinstance(exc, BadOptionUsage):
        needs = "needs a value" if "requires" in exc.message else "takes no value"
        return f"{exc.option_name} {needs}{see}"
    if isinstance(exc, UsageError):
        return f"{exc.message}{see}"
    return exc.format_message() if hasattr(exc, "format_message") else str(exc)


def _fail(message: str, code: int) -> None:
    """Exit with one line on stderr (if stderr can still be written to)."""
    line = f"Error: {' '.join(message.splitlines())}\n"
    for stream, text in ((sys.stdout, ""), (sys.stderr, line)):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.write(text)
                stream.flush()
    sys.exit(code)


# ---------------------------------------------------------------------------- logging


def _verbosity(ctx: typer.Context, param: typer.CallbackParam, value: Any) -> None:
    """-v and -q, before the command or after it: they add up over the whole command line."""
    meta = ctx.find_root().meta
    if param.name == "verbose":
        meta["fizz.verbose"] = meta.get("fizz.verbose", 0) + (value or 0)
    elif value:
        meta["fizz.quiet"] = True
    _configure_logging(meta.get("fizz.verbose", 0), meta.get("fizz.quiet", False))


class _StderrHandler(logging.Handler):
    """Writes each record to whatever sys.stderr is at that moment (CliRunner swaps it):
    through rich on a terminal, loaded with the first record so that a command that logs
    nothing never imports it; as plain timestamped lines otherwise."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self._rich: logging.Handler | None = None

    def emit(self, record: logging.LogRecord) -> None:
        stream = sys.stderr
        if stream is None:
            return
        try:
            if stream.isatty():
                self._rich_handler().emit(record)
            else:
                stream.write(self.format(record) + "\n")
                stream.flush()
        except Exception:  # logging must never take a command down
            self.handleError(record)

    def _rich_handler(self) -> logging.Handler:
        if self._rich is None:
            from rich.console import Console
            from rich.logging import RichHandler

            self._rich = RichHandler(console=Console(stderr=True), show_path=False,
                                     markup=False, log_time_format="[%X]")
        return self._rich


_HANDLER = _StderrHandler()


def _configure_logging(verbose: int, quiet: bool) -> None:
    """Logs go to stderr. Default: fizz's INFO lines; -q: warnings and errors only; -v:
    fizz's debug lines (which database, timings); -vv: psycopg's debug lines too."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    for name, wanted in (("fizz", True), ("psycopg", verbose >= 2 and not quiet)):
        logger = logging.getLogger(name)
        if wanted:
            if _HANDLER not in logger.handlers:
                logger.addHandler(_HANDLER)
            logger.setLevel(level)
            logger.propagate = False
        elif _HANDLER in logger.handlers:
            logger.removeHandler(_HANDLER)
            logger.setLevel(logging.NOTSET)
            logger.propagate = True


# ---------------------------------------------------------------------------- the app

_FIZZ_EXAMPLES = _examples(
    "fizz add Fizz 2023-03-28T11:59:59Z",
    "fizz add buzz +30s",
    "fizz list --status waiting",
    "fizz work",
    "fizz -v list --json",
)

app = typer.Typer(
    cls=FizzGroup,
    help="fizz: schedule Fizz, Buzz and FizzBuzz tasks in PostgreSQL and run them on time.",
    epilog=_FIZZ_EXAMPLES + "\n\nRun 'fizz COMMAND --help' for the options and examples of each.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
db_app = typer.Typer(
    cls=FizzGroup,
    help="Manage the embedded local PostgreSQL (the default database).",
    epilog=_examples("fizz db status", "fizz db stop", 'psql "$(fizz db url)"'),
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(db_app, name="db")


def _command(group: typer.Typer, name: str, *examples: str) -> Callable[[Any], Any]:
    return group.command(name, cls=FizzCommand, epilog=_examples(*examples))


DatabaseUrl = Annotated[
    Optional[str],
    typer.Option(
        "--database-url",
        metavar="URL",
        help=f"PostgreSQL URL. Default: ${config.DATABASE_URL_ENV}, else the embedded local "
        "server (started on first use).",
    ),
]
Verbose = Annotated[int, typer.Option(
    "--verbose", "-v", count=True, expose_value=False, callback=_verbosity,
    help="More on stderr: -v which database and timings, -vv psycopg's own debug lines.")]
Quiet = Annotated[bool, typer.Option(
    "--quiet", "-q", expose_value=False, callback=_verbosity,
    help="Only warnings and errors on stderr.")]
TaskId = Annotated[int, typer.Argument(parser=parse_task_id, metavar="ID", show_default=False,
                                       help="The task id.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _window(text: str) -> float:
    from fizzbuzz_cli import stats

    return stats.parse_window(text)


def _age(text: str) -> Any:
    from fizzbuzz_cli import purge

    return purge.parse_age(text)


def _retention(text: str) -> Any:
    from fizzbuzz_cli import purge

    return purge.parse_retention(text)


Window = Annotated[float, typer.Option(
    "--window", "-w", metavar="DURATION", parser=_window, show_default=False,
    help="Lateness over the tasks started in this last stretch of time (1s to 1d). "
         "[default: 15m]")]
Retain = Annotated[Optional[Any], typer.Option(
    "--retain", metavar="AGE", parser=_retention,
    help="Purge tasks completed longer ago than AGE (7d, 12h, ...), as it runs; one process "
         "at a time.")]

_STATUS_STYLE = {Status.WAITING: "yellow", Status.CLAIMED: "cyan", Status.COMPLETE: "green"}


def _version(value: bool) -> None:
    if value:
        print(f"fizz {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[Optional[bool], typer.Option(
        "--version", callback=_version, is_eager=True, help="Show the version and exit.")] = None,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """fizz: schedule Fizz, Buzz and FizzBuzz tasks in PostgreSQL and run them on time."""


@_command(app, "init-db", "fizz init-db",
          "fizz init-db --database-url postgresql://localhost/tasks")
def init_db(database_url: DatabaseUrl = None, verbose: Verbose = 0, quiet: Quiet = False) -> None:
    """Create or upgrade the schema; safe to run any number of times.

    A tasks table made by the original project is upgraded in place, keeping its rows.
    """
    from fizzbuzz_cli import database, db

    url = database.init_url(database_url)
    with db.session(url) as conn:
        result = db.migrate(conn)
    if result.previous == result.current:
        print(f"The fizz schema is up to date (version {result.current}, {result.rows} tasks).")
    elif result.previous is not None:
        print(f"Upgraded the fizz schema from version {result.previous} to {result.current} "
              f"({result.rows} tasks).")
    elif result.had_table:
        print(f"Upgraded the original tasks table to fizz schema version {result.current} "
              f"({result.rows} rows kept).")
    else:
        print(f"Created the fizz schema (version {result.current}).")


@_command(app, "add", "fizz add Fizz 2023-03-28T11:59:59Z", "fizz add buzz +30s",
          "fizz add Buzz -5m", "fizz add FizzBuzz 'in 10 minutes'",
          "fizz add --file tasks.jsonl", "cat tasks.csv | fizz add --file -")
def add(
    task_type: Annotated[Optional[TaskType], typer.Argument(
        metavar="TYPE", parser=TaskType.parse, show_default=False,
        help="Fizz, Buzz or FizzBuzz (any case).")] = None,
    when: Annotated[Any, typer.Argument(
        metavar="TIME", parser=parse_time, help=f"When to run it: {TIME_HELP}.")] = "now",
    file: Annotated[Optional[str], typer.Option(
        "--file", "-f", metavar="PATH",
        help="Add many tasks from a file ('-': stdin), all or nothing: JSON lines "
             '({"type": "Fizz", "time": "..."} per line), a JSON array of such objects, or '
             "CSV (type,time). A missing or empty time means now.")] = None,
    file_format: Annotated[Optional[str], typer.Option(
        "--format", metavar="FORMAT", parser=_file_format,
        help="Format of --file: jsonl or json (JSON lines or a JSON array), or csv. "
             "Default: from the file name, else from the first character.")] = None,
    as_json: AsJson = False,
    database_url: DatabaseUrl = None,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Schedule a task and print its id; with --file, many (and print how many)."""
    if file is not None:
        if task_type is not None:
            raise BadInput("give either TYPE [TIME] or --file PATH, not both")
        _add_file(file, file_format, as_json, database_url)
        return
    if file_format is not None:
        raise BadInput("--format goes with --file PATH")
    if task_type is None:
        raise BadInput("missing TYPE (Fizz, Buzz or FizzBuzz), or --file PATH")
    from fizzbuzz_cli import database, db

    with database.opened(database_url) as conn:
        task = db.add_task(conn, task_type, when)
    print(json.dumps(task.to_json()) if as_json else task.id)


def _add_file(path: str, file_format: Any, as_json: bool, database_url: str | None) -> None:
    from fizzbuzz_cli import database, db
    from fizzbuzz_cli.bulk import FileFormat, TaskReader

    stream, total = _open_input(path)
    reader = TaskReader(stream, file_format or FileFormat.AUTO, name=path)
    started = time.perf_counter()
    with database.opened(database_url) as conn, _progress(total, reader) as progress:
        count = db.add_tasks(conn, reader, progress)
    elapsed = time.perf_counter() - started
    print(json.dumps({"added": count}) if as_json else count)
    rate = f" ({count / elapsed:,.0f} tasks/s)" if elapsed > 0 and count else ""
    logging.getLogger("fizz").info("added %s tasks in %.2f s%s", f"{count:,}", elapsed, rate)


def _open_input(path: str) -> tuple[Any, int | None]:
    """The binary stream to read and its size when known (for the progress bar)."""
    if path == "-":
        if sys.stdin is None:
            raise BadInput("cannot read stdin: it is closed (give --file PATH, or pipe the "
                           "tasks in)")
        return sys.stdin.buffer, None
    try:
        stream = open(path, "rb")  # noqa: SIM115 - read by the caller, closed at exit
        size = os.fstat(stream.fileno()).st_size
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror}") from None
    except ValueError:  # a NUL in the name
        raise BadInput(f"cannot read {path!r}: not a valid file name") from None
    return stream, size or None


class _progress:
    """A rich progress bar on stderr while a bulk file loads, only when stderr is a terminal."""

    def __init__(self, total: int | None, reader: Any) -> None:
        self.total, self.reader, self.bar = total, reader, None

    def __enter__(self) -> Any:
        if sys.stderr is None or not sys.stderr.isatty():
            return None
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        columns = [TextColumn("adding tasks"), BarColumn(), MofNCompleteColumn()]
        if self.total:
            columns = [TextColumn("adding tasks"), BarColumn(), DownloadColumn(),
                       TimeRemainingColumn(), TextColumn("{task.fields[rows]:,} tasks")]
        self.bar = Progress(*columns, console=Console(stderr=True), transient=True)
        self.bar.start()
        job = self.bar.add_task("add", total=self.total, rows=0)

        def update(rows: int) -> None:
            completed = self.reader.bytes_read if self.total else rows
            self.bar.update(job, completed=completed, rows=rows)  # type: ignore[union-attr]

        return update

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


@_command(app, "list", "fizz list", "fizz list --type fizz --status waiting",
          "fizz list --status complete --limit 20 --json")
def list_tasks(
    task_type: Annotated[Optional[TaskType], typer.Option(
        "--type", "-t", metavar="TYPE", parser=TaskType.parse,
        help="Only tasks of this type: fizz, buzz or fizzbuzz (any case).")] = None,
    status: Annotated[Optional[Status], typer.Option(
        "--status", "-s", metavar="STATUS", parser=Status.parse,
        help="Only tasks in this state: waiting, claimed or complete (any case).")] = None,
    limit: Annotated[Optional[int], typer.Option(
        "--limit", "-n", metavar="N", parser=_whole_number("--limit", 1, MAX_LIMIT),
        help="At most N tasks (the first N in id order).")] = None,
    as_json: AsJson = False,
    database_url: DatabaseUrl = None,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """List tasks in id order: a table, or a JSON array with --json.

    SCHEDULE is the id of the schedule a task came from (fizz schedule), if any. Streams: a
    million tasks do not fill the memory.
    """
    from fizzbuzz_cli import database, db

    with database.opened(database_url) as conn:
        tasks = db.iter_tasks(conn, task_type, status, limit)
        if as_json:
            _write_json_array(task.to_json() for task in tasks)
        else:
            _write_table(tasks)


def _write_json_array(items: Iterable[dict[str, Any]]) -> None:
    """A JSON array, one element per line, streamed. Nothing is written until the first
    element (or the end) has come, so that a query that fails leaves stdout empty."""
    out = sys.stdout
    rows = iter(items)
    first = next(rows, None)
    if first is None:
        out.write("[]\n")
        return
    out.write("[\n" + json.dumps(first))
    for item in rows:
        out.write(",\n" + json.dumps(item))
    out.write("\n]\n")


def _write_table(tasks: Iterable[Task], chunk: int = 1000) -> None:
    """Aligned columns, written chunk by chunk so a million rows keep memory flat."""
    console = _stdout_console()
    written = False
    for rows in _chunks(tasks, chunk):
        width = max(len(str(rows[-1].id)), 2)
        lines = []
        if not written:
            header = f"{'ID':>{width}}  {'TYPE':<8}  {'STATUS':<8}  {'SCHEDULE':<8}  TIME"
            lines.append(f"[bold]{header}[/]" if console else header)
        for task in rows:
            status = f"{task.status.value:<8}"
            if console:
                status = f"[{_STATUS_STYLE[task.status]}]{status}[/]"
            schedule = "-" if task.schedule_id is None else task.schedule_id
            lines.append(f"{task.id:>{width}}  {task.type.value:<8}  {status}  "
                         f"{schedule:<8}  {format_time(task.time)}")
        if console:
            console.print("\n".join(lines))
        else:
            sys.stdout.write("\n".join(lines) + "\n")
        written = True
    if not written:
        print("No tasks.")


def _chunks(items: Iterable[Task], size: int) -> Iterator[list[Task]]:
    chunk: list[Task] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@_command(app, "show", "fizz show 42", "fizz show 42 --json")
def show(task_id: TaskId, as_json: AsJson = False, database_url: DatabaseUrl = None,
         verbose: Verbose = 0, quiet: Quiet = False) -> None:
    """Show one task."""
    from fizzbuzz_cli import database, db

    with database.opened(database_url) as conn:
        task = db.get_task(conn, task_id)
    _write_tasks([task], as_json)


@_command(app, "delete", "fizz delete 42", "fizz delete 42 43 44 --json")
def delete(
    task_ids: Annotated[list[int], typer.Argument(
        parser=parse_task_id, metavar="ID", show_default=False,
        help="The ids of the tasks to delete: all of them, or none if one does not exist.")],
    as_json: AsJson = False,
    database_url: DatabaseUrl = None,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Delete tasks and print them (a worker running one drops it). All or nothing.

    With --json, one JSON object per line, one line per task.
    """
    from fizzbuzz_cli import database, db

    with database.opened(database_url) as conn:
        tasks = db.delete_tasks(conn, task_ids)
    _write_tasks(tasks, as_json)


def _write_tasks(tasks: list[Task], as_json: bool) -> None:
    """Tasks as JSON lines, or as blocks of `field  value` lines separated by a blank line."""
    if as_json:
        for task in tasks:
            print(json.dumps(task.to_json()))
        return
    console = _stdout_console()
    blocks = []
    for task in tasks:
        lines = []
        for key, value in task.to_json().items():
            if key == "typ":
                continue
            text = "-" if value is None else str(value)
            if console:
                style = _STATUS_STYLE[task.status] if key == "status" else "default"
                lines.append(f"[bold]{key:<12}[/]  [{style}]{text}[/]")
            else:
                lines.append(f"{key:<12}  {text}")
        blocks.append("\n".join(lines))
    if console:
        console.print("\n\n".join(blocks))
    else:
        print("\n\n".join(blocks))


def _stdout_console() -> Any:
    """A rich console for stdout on a terminal (colours); None for pipes and files."""
    if sys.stdout is None or not sys.stdout.isatty():
        return None
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


@_command(app, "work", "fizz work", "fizz work --concurrency 100 --lease 30",
          "fizz work --drain          # run what is due, then exit",
          "fizz work --drain --wait   # everything waiting, even later, then exit",
          "fizz work --metrics-port 9108   # Prometheus metrics of this worker",
          "fizz work --retain 7d           # and purge tasks completed a week ago")
def work(
    concurrency: Annotated[int, typer.Option(
        "--concurrency", "-c", metavar="N",
        parser=_whole_number("--concurrency", 1, config.MAX_CONCURRENCY),
        help="Tasks in flight at most (sleeping Fizz and Buzz tasks included).")]
    = WorkerSettings.concurrency,
    lease: Annotated[float, typer.Option(
        metavar="SECONDS", parser=_seconds("--lease", 1, config.MAX_LEASE),
        help="How long a claim lasts unless renewed; a dead worker's tasks run elsewhere "
             "about this long after it died.")] = WorkerSettings.lease,
    grace: Annotated[float, typer.Option(
        metavar="SECONDS", parser=_seconds("--grace", 0, config.MAX_GRACE),
        help="On Ctrl-C / SIGTERM, how long running tasks get to finish before they are "
             "handed back.")] = WorkerSettings.grace,
    ahead: Annotated[float, typer.Option(
        metavar="SECONDS", parser=_seconds("--ahead", 0, config.MAX_LEASE / 2),
        help="Claim tasks this long before they are due (at most half the lease).")]
    = WorkerSettings.ahead,
    drain: Annotated[bool, typer.Option(
        "--drain", help="Exit 0 once no task is due or in flight.")] = False,
    wait: Annotated[bool, typer.Option(
        "--wait", help="With --drain: also wait for tasks due later; exit once none is "
        "waiting at all.")] = False,
    metrics_port: Annotated[Optional[int], typer.Option(
        "--metrics-port", metavar="PORT", parser=_whole_number("--metrics-port", 0, 65535),
        help="Serve this worker's Prometheus metrics on http://HOST:PORT/metrics (0: any "
             "free port).")] = None,
    metrics_host: Annotated[str, typer.Option(
        "--metrics-host", metavar="HOST", help="Address for --metrics-port.")] = "127.0.0.1",
    retain: Retain = None,
    database_url: DatabaseUrl = None,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Run due tasks at their time, until Ctrl-C or SIGTERM.

    On Ctrl-C or SIGTERM it takes no new task, lets running ones finish (--grace), hands back
    the rest and exits 0. Prints one line per task on stdout (Fizz <id>, Buzz <id>, FizzBuzz
    <time>); logs go to stderr. Run as many workers as you like, on as many machines: each
    task runs once.
    """
    if ahead > lease / 2:
        raise BadInput(f"--ahead {ahead:g} is more than half the lease ({lease:g} s)")
    from fizzbuzz_cli import database, db
    from fizzbuzz_cli.worker import Worker

    if wait and not drain:
        raise BadInput("--wait goes with --drain (fizz work --drain --wait)")
    settings = WorkerSettings(concurrency=concurrency, lease=lease, grace=grace, ahead=ahead,
                              drain=drain, drain_wait=wait, metrics_port=metrics_port,
                              metrics_host=metrics_host, retain=retain)
    url = database.prepared_url(database_url)
    with db.translate_errors():
        worker = Worker(url, settings)
        if worker.run() != 0:
            raise FizzError(worker.failure or "the worker failed")


@_command(app, "serve", "fizz serve", "fizz serve --port 8080",
          "FIZZ_API_TOKEN=secret fizz serve --host 0.0.0.0",
          "curl -X POST -H 'content-type: application/json' "
          "-d '{\"type\": \"Fizz\", \"time\": \"2023-03-28T11:59:59Z\"}' localhost:8000/tasks",
          "curl -X POST -H 'content-type: application/json' -d @tasks.json localhost:8000/tasks"
          "   # a JSON array: many at once")
def serve(
    host: Annotated[str, typer.Option(
        metavar="HOST", help="Address to listen on (0.0.0.0 for every interface).")]
    = ServerSettings.host,
    port: Annotated[int, typer.Option(
        metavar="PORT", parser=_whole_number("--port", 0, 65535),
        help="Port (0: any free port).")] = ServerSettings.port,
    token: Annotated[Optional[str], typer.Option(
        metavar="TOKEN", envvar=config.API_TOKEN_ENV, show_envvar=True,
        help="Require 'Authorization: Bearer TOKEN' on every route but /healthz.")] = None,
    pool_size: Annotated[int, typer.Option(
        metavar="N", parser=_whole_number("--pool-size", 1, 200),
        help="Database connections at most.")] = ServerSettings.pool_size,
    max_connections: Annotated[int, typer.Option(
        metavar="N", parser=_whole_number("--max-connections", 1, 1_000_000),
        help="Client connections at once. Beyond, the one that has idled longest makes room; "
             "if none idles, the newcomer gets a 503 and a close.")]
    = ServerSettings.max_connections,
    idle_timeout: Annotated[float, typer.Option(
        metavar="SECONDS", parser=_seconds("--idle-timeout", 0.1, 86400),
        help="How long a connection may wait for its next request before it is closed.")]
    = ServerSettings.idle_timeout,
    head_timeout: Annotated[float, typer.Option(
        metavar="SECONDS", parser=_seconds("--head-timeout", 0.1, 3600),
        help="How long a client has, from a request's first byte, to send its request line "
             "and headers.")] = ServerSettings.head_timeout,
    retain: Retain = None,
    database_url: DatabaseUrl = None,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Serve the original project's HTTP API (and /healthz, /metrics, /openapi.json).

    POST /tasks also takes a JSON array of tasks (all or none). Runs until Ctrl-C /
    SIGTERM, then finishes the requests in flight and exits 0. Logs one line per request
    on stderr (-q hides them).
    """
    from fizzbuzz_cli import database, db
    from fizzbuzz_cli.server import serve as run_server

    settings = ServerSettings(host=host, port=port, token=token or None, pool_size=pool_size,
                              max_connections=max_connections, idle_timeout=idle_timeout,
                              head_timeout=head_timeout, retain=retain)
    url = database.prepared_url(database_url)
    with db.translate_errors():
        run_server(url, settings)


# ---------------------------------------------------------------------------- operations


@_command(app, "stats", "fizz stats", "fizz stats --json", "fizz stats --window 1h")
def stats_command(
    window: Window = 900.0,
    as_json: AsJson = False,
    database_url: DatabaseUrl = None,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Show how fizz is doing: tasks by status and type, the queue, workers, how late tasks
    start and how fast they complete. One snapshot; --json for scripts (the same object as
    GET /stats).
    """
    from fizzbuzz_cli import database, stats

    with database.opened(database_url) as conn:
        snapshot = stats.snapshot(conn, window)
    if as_json:
        print(json.dumps(snapshot))
        return
    from rich.console import Console

    from fizzbuzz_cli import top

    Console(highlight=False).print(top.stats_panel(snapshot))


@_command(app, "workers", "fizz workers", "fizz workers --json", "fizz workers --all")
def workers_command(
    everyone: Annotated[bool, typer.Option(
        "--all", help="Also workers not seen within their lease (silent, not yet removed).")]
    = False,
    as_json: AsJson = False,
    database_url: DatabaseUrl = None,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """List the live workers, one per row: host, pid, version, when they started and were
    last seen, tasks in flight and run. --json for scripts (as GET /workers)."""
    from fizzbuzz_cli import database, stats

    with database.opened(database_url) as conn:
        rows = stats.workers(conn, include_gone=everyone)
    if as_json:
        print(json.dumps(rows))
        return
    if not rows:
        print("No workers." if not everyone else "No workers, alive or silent.")
        return
    from rich.console import Console

    from fizzbuzz_cli import top

    Console(highlight=False).print(top.workers_table(rows))


@_command(app, "top", "fizz top", "fizz top --window 1h --interval 2")
def top_command(
    window: Window = 900.0,
    interval: Annotated[float, typer.Option(
        "--interval", metavar="SECONDS", parser=_seconds("--interval", 0.2, 60),
        help="Seconds between two updates.")] = 1.0,
    database_url: DatabaseUrl = None,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """A live view, redrawn every second: the counts, the workers, throughput over time and
    a lateness histogram. q or Ctrl-C leaves."""
    from fizzbuzz_cli import database, top

    if not sys.stdout.isatty():
        raise BadInput("fizz top draws on a terminal: use fizz stats (or fizz stats --json) "
                       "for a snapshot")
    url = database.prepared_url(database_url)
    top.run(top.database_fetch(url, window), interval=interval)


@_command(app, "purge", "fizz purge --before 7d", "fizz purge --before 12h --dry-run",
          "fizz purge --before 2026-01-01T00:00:00Z --json")
def purge_command(
    before: Annotated[Any, typer.Option(
        "--before", metavar="AGE", parser=_age,
        help="Delete tasks completed before this: an age back from now (7d, 12h, 30m, "
             "1d12h) or an RFC 3339 time.")],
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Count what would be deleted; delete nothing.")] = False,
    as_json: AsJson = False,
    database_url: DatabaseUrl = None,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Delete Complete tasks completed before AGE and print how many. Waiting and Claimed
    tasks are never touched. In batches, so claims are never blocked for long; a progress
    bar on a terminal.
    """
    from fizzbuzz_cli import database, purge

    with database.opened(database_url) as conn:
        cutoff = purge.cutoff(conn, before)
        if dry_run:
            done = purge.purge(conn, purge.Age(moment=cutoff), dry_run=True)
        else:
            total = purge.count_purgeable(conn, cutoff) if sys.stderr.isatty() else None
            with _progress_bar(total, "purging") as progress:
                done = purge.purge(conn, purge.Age(moment=cutoff), progress=progress)
    if as_json:
        print(json.dumps(done.to_json()))
    else:
        print(done.deleted)
    what = "would be deleted" if dry_run else "deleted"
    log.info("%s tasks completed before %s %s", f"{done.deleted:,}",
             format_time(done.before), what)


@contextlib.contextmanager
def _progress_bar(total: int | None, what: str) -> Iterator[Callable[[int], None] | None]:
    """A rich progress bar on stderr while something is counted up to `total` (None: no
    bar, off a terminal)."""
    if not total:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    bar = Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(),
                   console=Console(stderr=True), transient=True)
    job = bar.add_task(what, total=total)
    with bar:
        yield lambda done: bar.update(job, completed=done)


# ---------------------------------------------------------------------------- db


@_command(db_app, "start", "fizz db start")
def db_start(verbose: Verbose = 0, quiet: Quiet = False) -> None:
    """Start the embedded PostgreSQL (it also starts on first use)."""
    from fizzbuzz_cli.embedded import EmbeddedServer

    server = EmbeddedServer()
    server.ensure_database()
    _write_server_status(server.status(), as_json=False)


@_command(db_app, "stop", "fizz db stop")
def db_stop(verbose: Verbose = 0, quiet: Quiet = False) -> None:
    """Stop the embedded PostgreSQL; its data stays for the next start."""
    from fizzbuzz_cli.embedded import EmbeddedServer

    if EmbeddedServer().stop():
        print("Stopped the embedded PostgreSQL.")
    else:
        print("The embedded PostgreSQL was not running.")


@_command(db_app, "status", "fizz db status", "fizz db status --json")
def db_status(as_json: AsJson = False, verbose: Verbose = 0, quiet: Quiet = False) -> None:
    """Show whether the embedded PostgreSQL runs, and where.

    Also says when fizz commands do not use it (while FIZZ_DATABASE_URL is set).
    """
    from fizzbuzz_cli.embedded import EmbeddedServer

    _write_server_status(EmbeddedServer().status(), as_json)


@_command(db_app, "url", 'psql "$(fizz db url)"', "fizz db url --tcp")
def db_url(
    tcp: Annotated[bool, typer.Option("--tcp", help="A 127.0.0.1 URL with the password, "
                                      "instead of the Unix socket.")] = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Print a URL of the embedded database for psql and psycopg.

    Starts the server if it is not running.
    """
    from fizzbuzz_cli.embedded import EmbeddedServer

    server = EmbeddedServer()
    server.ensure_database()
    print(server.url(tcp=tcp))


def _write_server_status(status: Any, as_json: bool) -> None:
    in_use = config.database_choice(None).embedded
    if as_json:
        print(json.dumps({**status.to_json(), "in_use": in_use}))
        return
    if status.running:
        print(f"running: PostgreSQL {status.version}, pid {status.pid}, port {status.port}, "
              f"data {status.data_dir}")
    else:
        print(f"stopped: data {status.data_dir}")
    if not in_use:
        print(f"not in use: {config.DATABASE_URL_ENV} is set, so fizz commands use that "
              "database instead")


# ---------------------------------------------------------------------------- schedule
#
# Recurring tasks (fizzbuzz_cli.schedules). The rule, zone, times and policy are taken as
# text and read, together, by recurrence.parse_schedule_spec (the HTTP API's reader too)
# when the command runs: cronsim and zoneinfo are loaded only by these commands.

schedule_app = typer.Typer(
    cls=FizzGroup,
    help="Recurring tasks: every so often, or cron in any time zone.",
    epilog=_examples("fizz schedule add Fizz --every 5m",
                     "fizz schedule add Buzz --cron '30 2 * * *' --tz Europe/Paris",
                     "fizz schedule list", "fizz schedule show 1 --next 10",
                     "fizz schedule pause 1"),
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(schedule_app, name="schedule")

NEXT_MAX = 1000  # fizz schedule show --next N at most


def _schedule_id(text: str) -> int:
    from fizzbuzz_cli.recurrence import parse_schedule_id

    return parse_schedule_id(text)


ScheduleId = Annotated[int, typer.Argument(parser=_schedule_id, metavar="ID",
                                           show_default=False, help="The schedule id.")]


@_command(schedule_app, "add", "fizz schedule add Fizz --every 5m",
          "fizz schedule add Buzz --cron '30 2 * * *' --tz Europe/Paris",
          "fizz schedule add FizzBuzz --cron '*/15 9-17 * * MON-FRI' --tz America/New_York",
          "fizz schedule add Fizz --every 1h30m --start 2030-01-01T00:00:00Z --end +52w",
          "fizz schedule add Buzz --cron @daily --catch-up all --max-catch-up 7",
          "fizz schedule add Fizz --every 10s --catch-up none --json")
def schedule_add(
    task_type: Annotated[TaskType, typer.Argument(
        metavar="TYPE", parser=TaskType.parse, show_default=False,
        help="Fizz, Buzz or FizzBuzz (any case): the task each occurrence adds.")],
    every: Annotated[Optional[str], typer.Option(
        "--every", metavar="DURATION",
        help="Real time from --start: 90s, 5m, 1h30m, 1d, 2w (units w, d, h, m, s; from 1s "
             "to 3650d). Time zones and daylight saving never move it.")] = None,
    cron: Annotated[Optional[str], typer.Option(
        "--cron", metavar="EXPR",
        help="5 fields (minute hour day-of-month month day-of-week) with names (JAN, MON), "
             "ranges, lists and steps, or @hourly, @daily, @weekly, @monthly, @yearly; read "
             "on the --tz wall clock, daylight saving as Debian's cron does it.")] = None,
    tz: Annotated[Optional[str], typer.Option(
        "--tz", metavar="ZONE",
        help="IANA time zone such as Europe/Paris or America/New_York. [default: UTC]")]
    = None,
    start: Annotated[Optional[str], typer.Option(
        "--start", metavar="TIME",
        help=f"No occurrence before; anchors --every. Default: now. {TIME_HELP}.")] = None,
    end: Annotated[Optional[str], typer.Option(
        "--end", metavar="TIME", help="No occurrence after (the same forms as --start).")]
    = None,
    catch_up: Annotated[Optional[str], typer.Option(
        "--catch-up", metavar="POLICY",
        help="The occurrences missed while no worker ran: latest (the most recent runs "
             "once), all (every one, in order, at most --max-catch-up) or none. "
             "[default: latest]")] = None,
    max_catch_up: Annotated[Optional[str], typer.Option(
        "--max-catch-up", metavar="N",
        help="With --catch-up all: the most recent N missed occurrences run, from 1 to "
             "10000. [default: 100]")] = None,
    as_json: AsJson = False,
    database_url: DatabaseUrl = None,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Add a schedule and print its id (with --json, the schedule).

    Give one rule: --every or --cron. Each occurrence becomes an ordinary task (fizz list
    shows its schedule), which workers run on time and once; every fizz work and fizz serve
    keeps the next occurrence in the table ahead of its time.
    """
    from fizzbuzz_cli.recurrence import CatchUp, parse_schedule_spec

    if (every is None) == (cron is None):
        raise BadInput("give one rule: --every DURATION (such as 5m) or --cron EXPR (such as "
                       "'30 2 * * *'), not both")
    spec = parse_schedule_spec(task_type.value, every=every, cron=cron, tz=tz, start=start,
                               end=end, catch_up=catch_up, max_catch_up=max_catch_up)
    if max_catch_up is not None and spec.catch_up is not CatchUp.ALL:
        raise BadInput("--max-catch-up goes with --catch-up all")
    from fizzbuzz_cli import database, schedules

    with database.opened(database_url) as conn:
        created = schedules.create_schedule(conn, spec)
    print(json.dumps(created.to_json(_now())) if as_json else created.id)


@_command(schedule_app, "list", "fizz schedule list", "fizz schedule list --json")
def schedule_list(as_json: AsJson = False, database_url: DatabaseUrl = None,
                  verbose: Verbose = 0, quiet: Quiet = False) -> None:
    """List the schedules and their next occurrence.

    In id order; deleted schedules are not listed.
    """
    from fizzbuzz_cli import database, schedules

    with database.opened(database_url) as conn:
        found = schedules.list_schedules(conn)
    now = _now()
    rows = [schedule.to_json(now) for schedule in found]
    if as_json:
        _write_json_array(rows)
        return
    if not rows:
        print("No schedules.")
        return
    table = [("ID", "TYPE", "RULE", "TZ", "CATCH-UP", "STATE", "NEXT")]
    for schedule, row in zip(found, rows, strict=True):
        policy = row["catch_up"] + (f" {row['max_catch_up']}" if row["catch_up"] == "all"
                                    else "")
        table.append((str(row["id"]), row["type"], schedule.rule.describe(), row["tz"], policy,
                      row["state"], row["next"] or "-"))
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    lines = ["  ".join([line[0].rjust(widths[0]),
                        *(cell.ljust(width) for cell, width in zip(line[1:-1], widths[1:-1],
                                                                    strict=True)),
                        line[-1]])
             for line in table]
    console = _stdout_console()
    if console:
        console.print(f"[bold]{_escape(lines[0])}[/]\n" + _escape("\n".join(lines[1:])))
    else:
        print("\n".join(lines))


@_command(schedule_app, "show", "fizz schedule show 1", "fizz schedule show 1 --next 20",
          "fizz schedule show 1 --json")
def schedule_show(
    schedule_id: ScheduleId,
    count: Annotated[int, typer.Option(
        "--next", "-n", metavar="N", parser=_whole_number("--next", 0, NEXT_MAX),
        help="How many of the next occurrences to show, in UTC and on the zone's wall "
             "clock.")] = 5,
    as_json: AsJson = False,
    database_url: DatabaseUrl = None,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Show one schedule and its next occurrences.

    The times are in UTC and on the zone's wall clock, so that a rule can be checked across
    a daylight-saving change before it matters. A paused schedule shows the occurrences it
    would have if resumed now.
    """
    from fizzbuzz_cli import database, schedules

    with database.opened(database_url) as conn:
        schedule = schedules.get_schedule(conn, schedule_id)
    now = _now()
    times = schedule.upcoming(count, now)
    if as_json:
        upcoming = [schedules.occurrence_json(when, schedule.zone) for when in times]
        print(json.dumps({**schedule.to_json(now), "upcoming": upcoming}))
        return
    from fizzbuzz_cli.recurrence import format_local

    notes = []
    if count:
        title = "next occurrences" if schedule.state != "paused" else (
            "next occurrences if resumed now")
        notes = ["", f"{title} (UTC, then {schedule.zone.key}):" if times else
                 f"{title}: none (the schedule has ended)"]
        notes += [f"  {format_time(when)}  {format_local(when, schedule.zone)}"
                  for when in times]
    _write_schedule(schedule.to_json(now), notes)


@_command(schedule_app, "pause", "fizz schedule pause 1", "fizz schedule pause 1 --json")
def schedule_pause(schedule_id: ScheduleId, as_json: AsJson = False,
                   database_url: DatabaseUrl = None, verbose: Verbose = 0,
                   quiet: Quiet = False) -> None:
    """Pause a schedule and print it.

    No more occurrences until it is resumed. Its occurrences that have not started are
    removed (a worker holding one drops it); a task already running finishes.
    """
    _change_schedule("pause_schedule", schedule_id, as_json, database_url)


@_command(schedule_app, "resume", "fizz schedule resume 1")
def schedule_resume(schedule_id: ScheduleId, as_json: AsJson = False,
                    database_url: DatabaseUrl = None, verbose: Verbose = 0,
                    quiet: Quiet = False) -> None:
    """Resume a paused schedule and print it.

    It carries on from its first occurrence at or after now; what fell in the pause is not
    caught up.
    """
    _change_schedule("resume_schedule", schedule_id, as_json, database_url)


@_command(schedule_app, "delete", "fizz schedule delete 1", "fizz schedule delete 1 --json")
def schedule_delete(schedule_id: ScheduleId, as_json: AsJson = False,
                    database_url: DatabaseUrl = None, verbose: Verbose = 0,
                    quiet: Quiet = False) -> None:
    """Delete a schedule and print it.

    Its occurrences that have not started are removed; its history stays: the tasks that
    ran keep their schedule id (fizz show says which schedule they came from).
    """
    _change_schedule("delete_schedule", schedule_id, as_json, database_url)


def _change_schedule(operation: str, schedule_id: int, as_json: bool,
                     database_url: str | None) -> None:
    from fizzbuzz_cli import database, schedules

    with database.opened(database_url) as conn:
        schedule = getattr(schedules, operation)(conn, schedule_id)
    data = schedule.to_json(_now())
    if as_json:
        print(json.dumps(data))
    else:
        _write_schedule(data)


def _write_schedule(data: dict[str, Any], notes: list[str] | None = None) -> None:
    """A schedule as `field  value` lines (the rule it does not have left out), then the
    notes' lines; field names in bold on a terminal."""
    fields = [(f"{key:<12}", "-" if value is None else str(value))
              for key, value in data.items()
              if not (key in ("every", "cron") and value is None)]
    console = _stdout_console()
    if console is None:
        print("\n".join([f"{key}  {value}" for key, value in fields] + (notes or [])))
        return
    console.print("\n".join([f"[bold]{key}[/]  {_escape(value)}" for key, value in fields]
                            + [_escape(line) for line in notes or []]))


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _now() -> Any:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)


def main() -> None:
    """The `fizz` console script and `python -m fizzbuzz_cli`.

    Once a command is done and its output flushed, the process ends without the
    interpreter's teardown (freeing some 400 modules, psycopg's among them: ~25 ms, as long
    as `fizz add` itself). Nothing of fizz's waits on atexit: connections and files are
    closed by the commands, log lines are flushed as they are written. With a thread still
    running (there is none once `work` or `serve` return), the exit is the ordinary one.
    """
    try:
        app()
        code: Any = 0
    except SystemExit as exc:
        code = exc.code
    if not isinstance(code, int):
        if code is not None:
            print(code, file=sys.stderr)
        code = 0 if code is None else 1
    import threading

    if threading.active_count() > 1:
        sys.exit(code)
    logging.shutdown()
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except OSError:  # stdout closed early (`fizz list | head -1`): as Typer answers it
        code = code or 1
    os._exit(code)
