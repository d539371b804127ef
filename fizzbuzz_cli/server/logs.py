"""How `fizz serve` logs: through fizz's own log handlers (set up by the CLI), in batches.

A log line per request is part of the server's contract. Formatting and writing each line
as it happens cost more than answering a simple request (a formatter and a write per
line, with cold caches between requests), so while serving, the handlers of the `fizz`
logger are wrapped: records are kept as they come and handed over a few times a second,
formatted one after the other and written with one write. Lines keep their own time
stamps and their order; at most `INTERVAL` seconds pass before a line is out.

psycopg's and asyncio's warnings go through the same handlers (so they are timestamped
too); asyncio's own complaints become one line each, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

INTERVAL = 0.05  # seconds between two batches (a batch holds up the event loop)
LIBRARIES = ("psycopg", "asyncio")


class DeferredHandler(logging.Handler):
    """Keeps records for `target`, which gets them in `drain` (from any thread)."""

    def __init__(self, target: logging.Handler) -> None:
        super().__init__(target.level)
        self.target = target
        self._records: list[logging.LogRecord] = []
        self._lock = threading.Lock()

    def handle(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        with self._lock:
            self._records.append(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.handle(record)

    def drain(self) -> None:
        with self._lock:
            records, self._records = self._records, []
            if records:
                _hand_over(self.target, records)


def _hand_over(target: logging.Handler, records: list[logging.LogRecord]) -> None:
    """Format the records one after the other; a stream handler gets them in one write."""
    wanted = [r for r in records if r.levelno >= target.level and target.filter(r)]
    stream = getattr(target, "stream", None)
    if not isinstance(target, logging.StreamHandler) or stream is None:
        for record in wanted:
            target.handle(record)
        return
    try:
        text = "".join(target.format(r) + target.terminator for r in wanted)
        target.acquire()
        try:
            stream.write(text)
            stream.flush()
        finally:
            target.release()
    except Exception:  # a closed stream: as logging does, never let a log line kill us
        for record in wanted:
            target.handleError(record)


class Batches:
    """The `fizz` logger's handlers, deferred, for the time of `with Batches() as logs`;
    `logs.keep_writing()` is the task that drains them."""

    def __init__(self) -> None:
        self.logger = logging.getLogger("fizz")
        self.deferred = [DeferredHandler(h) for h in self.logger.handlers]
        self._saved: list[tuple[logging.Logger, list[logging.Handler], bool, int]] = []

    def __enter__(self) -> Batches:
        for logger in (self.logger, *map(logging.getLogger, LIBRARIES)):
            self._saved.append((logger, logger.handlers[:], logger.propagate, logger.level))
        self.logger.handlers = list(self.deferred)
        if self.deferred:
            for name in LIBRARIES:
                library = logging.getLogger(name)
                library.handlers = list(self.deferred)
                library.propagate = False
                library.setLevel(logging.WARNING)
        return self

    def __exit__(self, *exc: object) -> None:
        self.drain()
        for logger, handlers, propagate, level in self._saved:
            logger.handlers, logger.propagate = handlers, propagate
            logger.setLevel(level)

    def drain(self) -> None:
        for handler in self.deferred:
            handler.drain()

    async def keep_writing(self) -> None:
        try:
            while True:
                await asyncio.sleep(INTERVAL)
                self.drain()
        finally:
            self.drain()


def log_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """asyncio's own complaints (accept() out of descriptors, a callback's failure) as one
    log line, never a traceback."""
    error = context.get("exception")
    logging.getLogger("fizz.server").warning(
        "%s%s", context.get("message", "event loop error"),
        f": {error!r}" if error is not None else "")

