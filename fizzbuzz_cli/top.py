"""`fizz top`: a live terminal view of the figures of fizzbuzz_cli.stats, and the rich
renderings that `fizz stats` and `fizz workers` print (``stats_panel``, ``workers_table``).

``run(fetch)`` shows a full-screen rich Live view, redrawn every second: the task counts by
type and status, the queue (overdue, next due), throughput now and over the last minutes (a
sparkline), the lateness percentiles and histogram, and the workers. `q` or Ctrl-C leaves,
restoring the terminal. ``fetch`` returns (snapshot, workers); it is called on a thread of
its own, so a slow or unreachable database never makes the view or its keys unresponsive:
the view says what failed and keeps the last figures.

Threading: the calling thread draws and reads keys (and, on the main thread, takes Ctrl-C
as a key); one fetcher thread calls ``fetch`` and hands each result over through a lock.
Nothing else is shared.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import sys
import termios
import threading
import time
import tty
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from fizzbuzz_cli.errors import FizzError, brief
from fizzbuzz_cli.link import LinkDown
from fizzbuzz_cli.stats import STATUSES, TYPES

Snapshot = dict[str, Any]
Workers = list[dict[str, Any]]
Fetch = Callable[[], tuple[Snapshot, Workers]]

SPARKS = " ▁▂▃▄▅▆▇█"
HISTORY = 120  # throughput samples kept for the sparkline (one per refresh)
QUIT_KEYS = {b"q", b"Q", b"\x03"}  # \x03: Ctrl-C where the terminal does not send SIGINT
FETCH_ERRORS = (LinkDown, FizzError, psycopg.Error)  # shown in the view, then tried again

# ------------------------------------------------------------------------------ pieces


def tasks_table(snapshot: Snapshot) -> Table:
    """Counts by type (rows) and status (columns), with totals."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title="tasks", title_justify="left")
    table.add_column("type")
    for status in STATUSES:
        table.add_column(status, justify="right")
    table.add_column("all", justify="right")
    counts = snapshot["tasks"]
    for kind in TYPES:
        row = counts["by_type"][kind]
        table.add_row(kind, *(f"{row[s]:,}" for s in STATUSES), f"{sum(row.values()):,}")
    table.add_row(Text("all", style="bold"), *(Text(f"{counts[s]:,}", style="bold")
                                               for s in STATUSES),
                  Text(f"{sum(counts[s] for s in STATUSES):,}", style="bold"))
    return table


def queue_table(snapshot: Snapshot) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim")
    table.add_column(justify="right")
    overdue = snapshot["overdue"]
    table.add_row("overdue", Text(f"{overdue:,}", style="bold red" if overdue else ""))
    table.add_row("next due", Text(snapshot["next_due"] or "-"))
    table.add_row("workers alive", f"{snapshot['workers']:,}")
    return table


def throughput_table(snapshot: Snapshot) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim")
    table.add_column(justify="right")
    for name, rate in snapshot["throughput"].items():
        table.add_row(f"done/s over {name}", f"{rate:,.2f}")
    return table


def lateness_table(snapshot: Snapshot) -> Table:
    late = snapshot["lateness_ms"]
    window = _seconds(snapshot["window_s"])
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim")
    table.add_column(justify="right")
    table.add_row("started", f"{late['n']:,} in {window}")
    for key in ("p50", "p99", "max"):
        table.add_row(f"{key} late", "-" if late[key] is None else f"{late[key]:,.3f} ms")
    return table


def histogram(snapshot: Snapshot, width: int = 30) -> Table:
    """One bar per lateness bucket, up to the last one with any (or < 10 ms)."""
    hist = snapshot["lateness_histogram"]
    counts, bounds = hist["counts"], hist["below_ms"]
    shown = max([i + 1 for i, n in enumerate(counts) if n] + [bounds.index(10.0) + 1])
    counts, bounds = counts[:shown], bounds[:shown]
    top = max(counts) or 1
    table = Table.grid(padding=(0, 1))
    table.add_column(justify="right", style="dim")
    table.add_column()
    table.add_column(justify="right")
    previous = None
    for bound, n in zip(bounds, counts, strict=True):
        label = f"< {_ms(bound)}" if bound is not None else f">= {_ms(previous)}"
        previous = bound
        bar = "█" * max(round(n / top * width), 1) if n else ""
        table.add_row(label, Text(bar, style="cyan"), f"{n:,}")
    return table


def workers_table(workers: Workers) -> Table:
    """The workers, one per row (`fizz workers` prints this)."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title=f"workers ({len(workers)})",
                  title_justify="left")
    for name, justify in (("id", "left"), ("version", "left"), ("up", "right"),
                          ("last seen", "right"), ("in flight", "right"), ("ran", "right"),
                          ("concurrency", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    now = time.time()
    for w in workers:
        name = Text(w["id"]) if w.get("alive", True) else Text(f"{w['id']} (gone)", style="dim")
        table.add_row(name, Text(w["version"]), _seconds(now - _epoch(w["started_at"])),
                      f"{max(now - _epoch(w['last_seen']), 0):.0f} s ago",
                      f"{w['in_flight']:,}", f"{w['ran']:,}", f"{w['concurrency']:,}")
    if not workers:
        table.add_row(Text("no worker is running", style="dim"), "", "", "", "", "", "")
    return table


def stats_panel(snapshot: Snapshot) -> Panel:
    """One snapshot as a panel (`fizz stats` prints this). The queue, throughput and
    lateness sit side by side, or wrap under each other on a narrow screen."""
    from rich.columns import Columns

    side = Columns([queue_table(snapshot), throughput_table(snapshot),
                    lateness_table(snapshot)], padding=(0, 4))
    return Panel(Group(tasks_table(snapshot), side), title="fizz stats",
                 subtitle=Text(snapshot["at"]), box=box.ROUNDED, expand=False)


def sparkline(values: list[float], width: int) -> str:
    values = values[-width:]
    top = max(values, default=0.0)
    if top <= 0:
        return SPARKS[1] * len(values) if values else ""
    return "".join(SPARKS[max(1, round(v / top * (len(SPARKS) - 1)))] if v > 0 else SPARKS[1]
                   for v in values)


# ------------------------------------------------------------------------------ the view


class TopView:
    """What `fizz top` shows: the latest figures and the throughput seen so far."""

    def __init__(self, title: str = "fizz top", history: int = HISTORY) -> None:
        self.title = title
        self.snapshot: Snapshot | None = None
        self.workers: Workers = []
        self.error: str | None = None
        self.rates: deque[float] = deque(maxlen=history)

    def update(self, snapshot: Snapshot, workers: Workers) -> None:
        self.snapshot, self.workers, self.error = snapshot, workers, None
        self.rates.append(snapshot["throughput"]["1m"])

    def failed(self, message: str) -> None:
        self.error = message

    def render(self, width: int = 100) -> RenderableType:
        head = Text.assemble((self.title, "bold"), "  ",
                             (self.snapshot["at"] if self.snapshot else "connecting...", "dim"),
                             "  ", ("q", "bold"), " quit")
        parts: list[RenderableType] = [head]
        if self.error:
            parts.append(Text(f"cannot read the figures: {self.error}; retrying" + (
                " (showing the last ones)" if self.snapshot else ""), style="bold red"))
        if self.snapshot is None:
            return Group(*parts)
        snap = self.snapshot
        spark_width = max(10, min(HISTORY, width - 8))
        done = Text.assemble(("done/s (1-min average), one sample a second\n", "dim"),
                             (sparkline(list(self.rates), spark_width), "green"),
                             f"\nnow {snap['throughput']['1m']:,.2f}/s  "
                             f"5m {snap['throughput']['5m']:,.2f}/s  "
                             f"15m {snap['throughput']['15m']:,.2f}/s")
        top_row = Table.grid(padding=(0, 4))
        top_row.add_row(tasks_table(snap), queue_table(snap))
        late_row = Table.grid(padding=(0, 4))
        late_row.add_row(lateness_table(snap), histogram(snap, width=max(10, width // 4)))
        parts += [
            Panel(top_row, title="queue", title_align="left", box=box.ROUNDED),
            Panel(done, title="throughput", title_align="left", box=box.ROUNDED),
            Panel(late_row, title=f"lateness (started in the last {_seconds(snap['window_s'])})",
                  title_align="left", box=box.ROUNDED),
            workers_table(self.workers),
        ]
        return Group(*parts)


class Fetcher(threading.Thread):
    """Calls `fetch` every `interval` seconds and keeps the latest answer or failure."""

    def __init__(self, fetch: Fetch, interval: float) -> None:
        super().__init__(name="fizz-top-fetch", daemon=True)
        self.fetch, self.interval = fetch, interval
        self.halt = threading.Event()
        self.fresh = threading.Event()  # a new result to draw
        self._lock = threading.Lock()
        self._result: tuple[Snapshot, Workers] | None = None
        self._error: str | None = None

    def run(self) -> None:
        while not self.halt.is_set():
            began = time.monotonic()
            try:
                result = self.fetch()
            except FETCH_ERRORS as exc:  # shown in the view; the next fetch tries again
                with self._lock:
                    self._error = brief(exc)
            else:
                with self._lock:
                    self._result, self._error = result, None
            self.fresh.set()
            self.halt.wait(max(self.interval - (time.monotonic() - began), 0.05))

    def take(self) -> tuple[tuple[Snapshot, Workers] | None, str | None]:
        with self._lock:
            result, self._result = self._result, None
            return result, self._error


def run(fetch: Fetch, *, interval: float = 1.0, console: Console | None = None,
        title: str = "fizz top") -> int:
    """The live view until `q` or Ctrl-C; returns the exit status (0)."""
    console = console or Console()
    view = TopView(title)
    fetcher = Fetcher(fetch, interval)
    fetcher.start()
    try:
        with _keys() as read_key, Live(view.render(console.width), console=console,
                                       screen=True, auto_refresh=False) as live:
            while True:
                result, error = fetcher.take()
                if result is not None:
                    view.update(*result)
                if error is not None:
                    view.failed(error)
                live.update(view.render(console.width), refresh=True)
                deadline = time.monotonic() + interval
                while (left := deadline - time.monotonic()) > 0:
                    if read_key(left) in QUIT_KEYS:
                        return 0
                    if fetcher.fresh.is_set() and view.snapshot is None:
                        break  # the first figures: show them at once
                fetcher.fresh.clear()
    except KeyboardInterrupt:
        return 0
    finally:
        fetcher.halt.set()


@contextlib.contextmanager
def _keys() -> Iterator[Callable[[float], bytes | None]]:
    """A reader of single key presses (no Enter needed) for the duration of the block;
    the terminal's settings are restored after. Off a terminal, it only waits.

    Ctrl-C (SIGINT) reads as the key \x03: the signal's handler writes it to a pipe that
    the reader watches beside the terminal, so the view leaves through its own loop at once,
    instead of by an exception raised wherever the main thread happens to be (inside rich,
    a lock or the terminal's settings)."""
    fd = sys.stdin.fileno() if sys.stdin is not None and sys.stdin.isatty() else None
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    watched = [wake_r] if fd is None else [fd, wake_r]

    def read(timeout: float) -> bytes | None:
        ready, _, _ = select.select(watched, [], [], timeout)
        if wake_r in ready:
            return b"\x03"
        if not ready:
            return None
        data = os.read(fd, 64)  # type: ignore[arg-type]
        if not data:  # the terminal went away: leave
            return b"q"
        return next((bytes([b]) for b in data if bytes([b]) in QUIT_KEYS), data[:1])

    def on_interrupt(signum: int, frame: object) -> None:
        with contextlib.suppress(OSError):  # a full pipe already says it
            os.write(wake_w, b"\x03")

    main = threading.current_thread() is threading.main_thread()  # only it takes signals
    previous = signal.signal(signal.SIGINT, on_interrupt) if main else None
    saved = termios.tcgetattr(fd) if fd is not None else None
    try:
        if fd is not None:
            tty.setcbreak(fd)
        yield read
    finally:
        if fd is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        if main:
            signal.signal(signal.SIGINT, previous)
        os.close(wake_r)
        os.close(wake_w)


# ------------------------------------------------------------------------------ helpers


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:g} s" if value >= 1000 else f"{value:g} ms"


def _seconds(value: float) -> str:
    value = max(float(value), 0.0)
    if value < 60:
        return f"{value:.0f} s"
    if value < 3600:
        return f"{value / 60:.0f} min"
    if value < 86400:
        return f"{value / 3600:.1f} h"
    return f"{value / 86400:.1f} d"


def _epoch(text: str) -> float:
    from fizzbuzz_cli.tasks import parse_absolute

    return parse_absolute(text).timestamp()


# ------------------------------------------------------------------------------ entry point


def database_fetch(url: str, window: float) -> Fetch:
    """The fetch of `fizz top`: a snapshot and the live workers, on one long-lived
    connection of its own (a Link: reconnects with backoff; its outages are shown in the
    view, not logged over it). Call it from one thread only (run's fetcher)."""
    from fizzbuzz_cli import db, stats
    from fizzbuzz_cli.link import Link, Outage, Timeouts

    quiet = logging.getLogger("fizz.top.link")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    link = Link(url, "top", Timeouts.for_lease(10.0), Outage(quiet), application="fizz top")

    def fetch() -> tuple[Snapshot, Workers]:
        with db.translate_errors():  # a missing schema says "run 'fizz init-db'"
            return link.run(lambda conn: (stats.snapshot(conn, window), stats.workers(conn)))

    return fetch
