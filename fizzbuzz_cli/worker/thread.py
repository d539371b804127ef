"""The worker's threads never die silently: an unexpected error stops the worker, which
then exits 1 with one line saying what went wrong (no traceback on stderr; it is logged at
debug level)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from fizzbuzz_cli import db
from fizzbuzz_cli.errors import FizzError, brief

log = logging.getLogger("fizz.worker")


class WorkerThread(threading.Thread):
    def __init__(self, name: str, on_crash: Callable[[str], None]) -> None:
        super().__init__(name=name, daemon=True)
        self.on_crash = on_crash

    def run(self) -> None:
        try:
            with db.translate_errors():
                self.work()
        except FizzError as exc:
            log.debug("%s stopped", self.name, exc_info=True)
            self.on_crash(str(exc))
        except Exception as exc:  # a bug: say so in one line, keep the traceback for -vv
            log.debug("%s crashed", self.name, exc_info=True)
            self.on_crash(f"{self.name} failed: {type(exc).__name__}: {brief(exc)}")

    def work(self) -> None:
        raise NotImplementedError
