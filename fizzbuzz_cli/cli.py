"""The `fizz` command line: parse, call one function, render. Nothing else lives here."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from typer.core import TyperGroup

from fizzbuzz_cli import __version__, config, db
from fizzbuzz_cli.bulk import FileFormat, TaskReader
from fizzbuzz_cli.config import ServerSettings, WorkerSettings
from fizzbuzz_cli.errors import BadInput, FizzError
from fizzbuzz_cli.tasks import (
    TIME_HELP,
    Status,
    Task,
    TaskType,
    format_time,
    parse_task_id,
    parse_time,
)


class FizzGroup(TyperGroup):
    """Reports every error as one line on stderr (no traceback, no box) with its exit code:
    2 for bad usage or input (Click's convention), 1 for failures at run time."""

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, False, **extra)
        except typer.TyperException as exc:  # Click-style usage errors: exit 2
            ctx = getattr(exc, "ctx", None)
            message = exc.format_message().rstrip(".")
            if ctx is not None and exc.exit_code == 2:
                message += f". Try '{ctx.command_path} --help'"
            _fail(message, exc.exit_code)
        except FizzError as exc:
            _fail(str(exc), exc.exit_code)
        except (typer.Abort, KeyboardInterrupt):
            _fail("interrupted", 130)
        sys.exit(result if isinstance(result, int) else 0)


def _fail(message: str, code: int) -> None:
    sys.stdout.flush()
    print(f"Error: {message}", file=sys.stderr)
    sys.exit(code)


app = typer.Typer(
    cls=FizzGroup,
    help="fizz: schedule Fizz, Buzz and FizzBuzz tasks in PostgreSQL and run them on time.",
    epilog="Run 'fizz COMMAND --help' for examples.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
db_app = typer.Typer(
    cls=FizzGroup,
    help="Manage the embedded local PostgreSQL (the default database).",
    no_args_is_help=True,
)
app.add_typer(db_app, name="db")

DatabaseUrl = Annotated[
    Optional[str],
    typer.Option(
        "--database-url",
        metavar="URL",
        envvar=config.DATABASE_URL_ENV,
        show_envvar=True,
        help="PostgreSQL URL. Default: the embedded local server, started on first use.",
    ),
]


def _checked(parse: Callable[[str], Any]) -> Callable[[Any], Any]:
    """A Typer parser from one of ours: its BadInput becomes a usage error (exit 2)."""

    def parser(value: Any) -> Any:
        if not isinstance(value, str):
            return value  # a default, already parsed
        try:
            return parse(value)
        except BadInput as exc:
            raise typer.BadParameter(str(exc)) from None

    return parser


TaskId = Annotated[int, typer.Argument(parser=_checked(parse_task_id), metavar="ID",
                                       show_default=False, help="The task id.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]

def _examples(*lines: str) -> str:
    return "Examples:\n" + "\n".join(f"  {line}" for line in lines)


_STATUS_STYLE = {Status.WAITING: "yellow", Status.CLAIMED: "cyan", Status.COMPLETE: "green"}


def _version(value: bool) -> None:
    if value:
        print(f"fizz {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[Optional[bool], typer.Option(
        "--version", callback=_version, is_eager=True, help="Show the version and exit.")] = None,
    verbose: Annotated[int, typer.Option(
        "--verbose", "-v", count=True, help="More log detail on stderr (-vv for debug).")] = 0,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="Only warnings and errors on stderr.")] = False,
) -> None:
    """fizz: schedule Fizz, Buzz and FizzBuzz tasks in PostgreSQL and run them on time."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    _setup_logging(level)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is when a record is logged (not when it was set up)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _setup_logging(level: int) -> None:
    """Logs go to stderr: rich on a terminal, plain timestamped lines otherwise."""
    logger = logging.getLogger("fizz")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    console = Console(stderr=True)
    if console.is_terminal:
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=console, show_path=False, markup=False,
                                               log_time_format="[%X]")
    else:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


# ---------------------------------------------------------------------------- commands


@app.command("init-db", epilog=_examples(
    'fizz init-db',
    'fizz init-db --database-url postgresql://localhost/tasks',
))
def init_db(database_url: DatabaseUrl = None) -> None:
    """Create or upgrade the schema; safe to run any number of times.

    A tasks table made by the original project is upgraded in place, keeping its rows.
    """
    url, _ = config.database_url(database_url)
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


@app.command(epilog=_examples(
    'fizz add Fizz 2023-03-28T11:59:59Z',
    'fizz add buzz +30s',
    "fizz add FizzBuzz 'in 10 minutes'",
    'fizz add --file tasks.jsonl',
    'cat tasks.csv | fizz add --file -',
))
def add(
    task_type: Annotated[Optional[TaskType], typer.Argument(
        metavar="TYPE", parser=_checked(TaskType.parse), show_default=False,
        help="Fizz, Buzz or FizzBuzz (any case).")] = None,
    when: Annotated[str, typer.Argument(metavar="[TIME]",
                                        help=f"When to run it: {TIME_HELP}.")] = "now",
    file: Annotated[Optional[str], typer.Option(
        "--file", "-f", metavar="PATH",
        help='Add many tasks from JSON lines ({"type": "Fizz", "time": "..."}) or CSV '
             "(type,time); '-' reads stdin. All or nothing.")] = None,
    file_format: Annotated[FileFormat, typer.Option(
        "--format", case_sensitive=False,
        help="Format of --file (auto: by name, else by content).")] = FileFormat.AUTO,
    as_json: AsJson = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Schedule a task and print its id (with --file: schedule many and print how many)."""
    if file is not None:
        if task_type is not None:
            raise BadInput("give either TYPE [TIME] or --file PATH, not both")
        _add_file(file, file_format, as_json, database_url)
        return
    if task_type is None:
        raise BadInput("missing TYPE (Fizz, Buzz or FizzBuzz), or --file PATH")
    moment = parse_time(when)  # before connecting: bad input changes nothing
    with config.open_database(database_url) as conn:
        task = db.add_task(conn, task_type, moment)
    print(json.dumps(task.to_json()) if as_json else task.id)


def _add_file(path: str, file_format: FileFormat, as_json: bool, database_url: str | None) -> None:
    stream = typer.get_binary_stream("stdin") if path == "-" else _open(path)
    total = None if path == "-" else Path(path).stat().st_size
    reader = TaskReader(stream, file_format, name=path)
    started = time.perf_counter()
    with config.open_database(database_url) as conn, _progress(total, reader) as progress:
        count = db.add_tasks(conn, reader, progress)
    elapsed = time.perf_counter() - started
    print(json.dumps({"added": count}) if as_json else count)
    rate = f" ({count / elapsed:,.0f} tasks/s)" if elapsed > 0 and count else ""
    logging.getLogger("fizz").info("added %s tasks in %.2f s%s", f"{count:,}", elapsed, rate)


def _open(path: str) -> Any:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror}") from None


class _progress:
    """A rich progress bar on stderr while a bulk file loads, only when stderr is a terminal."""

    def __init__(self, total: int | None, reader: TaskReader) -> None:
        self.total, self.reader, self.bar = total, reader, None

    def __enter__(self) -> Any:
        console = Console(stderr=True)
        if not console.is_terminal:
            return None
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
        self.bar = Progress(*columns, console=console, transient=True)
        self.bar.start()
        job = self.bar.add_task("add", total=self.total, rows=0)

        def update(rows: int) -> None:
            completed = self.reader.bytes_read if self.total else rows
            self.bar.update(job, completed=completed, rows=rows)  # type: ignore[union-attr]

        return update

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


@app.command("list", epilog=_examples(
    'fizz list',
    'fizz list --type fizz --status waiting',
    'fizz list --status complete --limit 20 --json',
))
def list_tasks(
    task_type: Annotated[Optional[TaskType], typer.Option(
        "--type", "-t", metavar="TYPE", parser=_checked(TaskType.parse),
        help="Only tasks of this type: fizz, buzz or fizzbuzz (any case).")] = None,
    status: Annotated[Optional[Status], typer.Option(
        "--status", "-s", metavar="STATUS", parser=_checked(Status.parse),
        help="Only tasks in this state: waiting, claimed or complete (any case).")] = None,
    limit: Annotated[Optional[int], typer.Option(
        "--limit", "-n", min=0, help="At most this many tasks.")] = None,
    as_json: AsJson = False,
    database_url: DatabaseUrl = None,
) -> None:
    """List tasks in id order: a table for people, a JSON array with --json. Streams."""
    with config.open_database(database_url) as conn:
        tasks = db.iter_tasks(conn, task_type, status, limit)
        if as_json:
            _write_json_array(tasks)
        else:
            _write_table(tasks)


def _write_json_array(tasks: Iterable[Task]) -> None:
    out = sys.stdout
    out.write("[")
    separator = "\n"
    for task in tasks:
        out.write(separator + json.dumps(task.to_json()))
        separator = ",\n"
    out.write("\n]\n" if separator != "\n" else "]\n")


def _write_table(tasks: Iterable[Task], chunk: int = 1000) -> None:
    """Aligned columns, written chunk by chunk so a million rows keep memory flat."""
    console = _stdout_console()
    color = console.is_terminal
    written = False
    for rows in _chunks(tasks, chunk):
        width = max(len(str(rows[-1].id)), 2)
        lines = []
        if not written:
            header = f"{'ID':>{width}}  {'TYPE':<8}  {'STATUS':<8}  TIME"
            lines.append(f"[bold]{header}[/]" if color else header)
        for task in rows:
            status = f"{task.status.value:<8}"
            if color:
                status = f"[{_STATUS_STYLE[task.status]}]{status}[/]"
            lines.append(f"{task.id:>{width}}  {task.type.value:<8}  {status}  "
                         f"{format_time(task.time)}")
        if color:
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


@app.command(epilog=_examples('fizz show 42', 'fizz show 42 --json'))
def show(task_id: TaskId, as_json: AsJson = False, database_url: DatabaseUrl = None) -> None:
    """Show one task."""
    with config.open_database(database_url) as conn:
        task = db.get_task(conn, task_id)
    _write_task(task, as_json)


@app.command(epilog=_examples('fizz delete 42', 'fizz delete 42 --json'))
def delete(task_id: TaskId, as_json: AsJson = False, database_url: DatabaseUrl = None) -> None:
    """Delete one task and print it (a worker running it drops it)."""
    with config.open_database(database_url) as conn:
        task = db.delete_task(conn, task_id)
    _write_task(task, as_json)


def _write_task(task: Task, as_json: bool) -> None:
    if as_json:
        print(json.dumps(task.to_json()))
        return
    lines = []
    for key, value in task.to_json().items():
        if key == "typ":
            continue
        text = "-" if value is None else str(value)
        if key == "status":
            text = f"[{_STATUS_STYLE[task.status]}]{text}[/]"
        lines.append(f"[bold]{key:<12}[/]  {text}")
    _stdout_console().print("\n".join(lines))


def _stdout_console() -> Console:
    return Console(highlight=False, soft_wrap=True)


@app.command(epilog=_examples(
    "fizz work",
    "fizz work --concurrency 100 --lease 30",
    "fizz work --drain        # run what is due, then exit",
))
def work(
    concurrency: Annotated[int, typer.Option(
        "--concurrency", "-c", min=1, help="Tasks in flight at most (sleeping Fizz and Buzz "
        "tasks included).")] = WorkerSettings.concurrency,
    lease: Annotated[float, typer.Option(
        min=1.0, help="Seconds a claim lasts unless renewed; a dead worker's tasks run "
        "elsewhere about this long after it died.")] = WorkerSettings.lease,
    grace: Annotated[float, typer.Option(
        min=0.0, help="On Ctrl-C / SIGTERM, seconds running tasks get to finish before "
        "they are handed back.")] = WorkerSettings.grace,
    ahead: Annotated[float, typer.Option(
        min=0.0, help="Claim tasks this many seconds before they are due (at most half "
        "the lease).")] = WorkerSettings.ahead,
    drain: Annotated[bool, typer.Option(
        "--drain", help="Exit 0 once no task is due or in flight.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Run due tasks at their time until stopped (Ctrl-C / SIGTERM: finish, hand back, exit 0).

    Prints one line per task on stdout (Fizz <id>, Buzz <id>, FizzBuzz <time>); logs go to
    stderr. Run as many workers as you like, on as many machines: each task runs once.
    """
    if ahead > lease / 2:
        raise BadInput(f"--ahead {ahead:g} is more than half the lease ({lease:g} s)")
    from fizzbuzz_cli.worker import Worker

    settings = WorkerSettings(concurrency=concurrency, lease=lease, grace=grace, ahead=ahead,
                              drain=drain)
    url = config.prepared_database_url(database_url)
    with db.translate_errors():
        worker = Worker(url, settings)
        if worker.run() != 0:
            raise FizzError(worker.failure or "the worker failed")


@app.command(epilog=_examples(
    "fizz serve",
    "fizz serve --port 8080",
    "FIZZ_API_TOKEN=secret fizz serve --host 0.0.0.0",
    "curl -X POST -H 'content-type: application/json' "
    "-d '{\"type\": \"Fizz\", \"time\": \"2023-03-28T11:59:59Z\"}' localhost:8000/tasks",
    "curl -X POST -H 'content-type: application/json' -d @tasks.json localhost:8000/tasks"
    "   # a JSON array: many at once",
))
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for every "
                                      "interface).")] = ServerSettings.host,
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free port).")]
    = ServerSettings.port,
    token: Annotated[Optional[str], typer.Option(
        envvar=config.API_TOKEN_ENV, show_envvar=True,
        help="Require 'Authorization: Bearer TOKEN' on every route but /healthz.")] = None,
    pool_size: Annotated[int, typer.Option(min=1, max=200, help="Database connections at "
                                           "most.")] = ServerSettings.pool_size,
    max_connections: Annotated[int, typer.Option(
        min=1, max=1_000_000, help="Client connections at once. Beyond, the one that has "
        "idled longest makes room; if none idles, the newcomer gets a 503 and a close.")]
    = ServerSettings.max_connections,
    idle_timeout: Annotated[float, typer.Option(
        min=0.1, help="Seconds a connection may wait for its next request before it is "
        "closed.")] = ServerSettings.idle_timeout,
    head_timeout: Annotated[float, typer.Option(
        min=0.1, help="Seconds a client has, from a request's first byte, to send its request "
        "line and headers.")] = ServerSettings.head_timeout,
    database_url: DatabaseUrl = None,
) -> None:
    """Serve the HTTP API of the original project (and /healthz, /metrics, /openapi.json).

    POST /tasks also takes a JSON array of tasks (all or none). Runs until Ctrl-C /
    SIGTERM, then finishes the requests in flight and exits 0. Logs one line per request
    on stderr (-q hides them).
    """
    from fizzbuzz_cli.server import serve as run_server

    settings = ServerSettings(host=host, port=port, token=token or None, pool_size=pool_size,
                              max_connections=max_connections, idle_timeout=idle_timeout,
                              head_timeout=head_timeout)
    url = config.prepared_database_url(database_url)
    with db.translate_errors():
        run_server(url, settings)


# ---------------------------------------------------------------------------- db


@db_app.command("start", epilog=_examples('fizz db start'))
def db_start() -> None:
    """Start the embedded PostgreSQL (it also starts by itself on first use)."""
    from fizzbuzz_cli.embedded import EmbeddedServer

    server = EmbeddedServer()
    server.ensure_database()
    _write_server_status(server.status(), as_json=False)


@db_app.command("stop", epilog=_examples('fizz db stop'))
def db_stop() -> None:
    """Stop the embedded PostgreSQL; its data stays for the next start."""
    from fizzbuzz_cli.embedded import EmbeddedServer

    stopped = EmbeddedServer().stop()
    if stopped:
        print("Stopped the embedded PostgreSQL.")
    else:
        print("The embedded PostgreSQL was not running.")


@db_app.command("status", epilog=_examples('fizz db status', 'fizz db status --json'))
def db_status(as_json: AsJson = False) -> None:
    """Show whether the embedded PostgreSQL runs, where, and on which port."""
    from fizzbuzz_cli.embedded import EmbeddedServer

    _write_server_status(EmbeddedServer().status(), as_json)


@db_app.command("url", epilog=_examples('psql "$(fizz db url)"', 'fizz db url --tcp'))
def db_url(
    tcp: Annotated[bool, typer.Option("--tcp", help="A 127.0.0.1 URL with the password, "
                                      "instead of the Unix socket.")] = False,
) -> None:
    """Print a URL of the embedded database that psql and psycopg accept (starts it if needed)."""
    from fizzbuzz_cli.embedded import EmbeddedServer

    server = EmbeddedServer()
    server.ensure_database()
    print(server.url(tcp=tcp))


def _write_server_status(status: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(status.to_json()))
    elif status.running:
        print(f"running: PostgreSQL {status.version}, pid {status.pid}, port {status.port}, "
              f"data {status.data_dir}")
    else:
        print(f"stopped: data {status.data_dir}")


def main() -> None:
    app()
