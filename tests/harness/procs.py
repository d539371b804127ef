"""Real `fizz work` and `fizz serve` processes for the fault harness, on this machine or on
a host (network namespace), with every line they write kept with its arrival time."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from harness.netns import Host

FIZZ = [sys.executable, "-m", "fizzbuzz_cli"]


class FizzProcess:
    """One fizz process. stdout and stderr lines are kept as (wall time, text)."""

    def __init__(self, name: str, argv: list[str], host: Host | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.host = host
        command = [*FIZZ, *argv]
        if host is not None:
            command = host.command(command)
        self.out: list[tuple[float, str]] = []
        self.err: list[tuple[float, str]] = []
        self.events: list[tuple[float, str]] = []  # what was done to it: kill -9, SIGSTOP...
        self._changed = threading.Condition()
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, bufsize=1, env={**os.environ, **(env or {})},
                                     start_new_session=True)
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stdout, self.out),
                                          daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stderr, self.err),
                                          daemon=True)]
        for reader in self._readers:
            reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self, stream, into: list[tuple[float, str]]) -> None:  # type: ignore[no-untyped-def]
        for line in stream:
            with self._changed:
                into.append((time.time(), line.rstrip("\n")))
                self._changed.notify_all()

    # ------------------------------------------------------------------ watching

    def lines(self) -> list[str]:
        return [text for _, text in self.out]

    def log(self) -> str:
        return "\n".join(text for _, text in self.err)

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.name}: timed out waiting for {what}\n"
                                         f"{self.log()[-3000:]}")
                self._changed.wait(min(left, 0.1))

    def wait_log(self, pattern: str, timeout: float = 30, after: float = 0.0) -> float:
        """Wait for a stderr line matching `pattern` written after `after` (wall time);
        returns when it came."""
        regex = re.compile(pattern)
        found: list[float] = []

        def seen() -> bool:
            found[:] = [at for at, text in self.err if at >= after and regex.search(text)]
            return bool(found)

        self.wait_for(seen, timeout, f"a log line matching {pattern!r}")
        return found[0]

    def ready(self, timeout: float = 30) -> FizzProcess:
        self.wait_log(r" ready: |serving the fizz API on ", timeout)
        return self

    # ------------------------------------------------------------------ faults

    def _note(self, what: str) -> float:
        at = time.time()
        self.events.append((at, what))
        return at

    def kill(self) -> float:
        """kill -9; returns when."""
        at = self._note("kill -9")
        self.proc.send_signal(signal.SIGKILL)
        self.wait()
        return at

    def terminate(self) -> float:
        at = self._note("SIGTERM")
        self.proc.send_signal(signal.SIGTERM)
        return at

    def freeze(self) -> float:
        at = self._note("SIGSTOP")
        self.proc.send_signal(signal.SIGSTOP)
        return at

    def thaw(self) -> float:
        at = self._note("SIGCONT")
        self.proc.send_signal(signal.SIGCONT)
        return at

    def wait(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout)
        for reader in self._readers:
            reader.join(timeout=5)
        return code

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM (thawing first) and wait; kill -9 if it does not stop in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.wait()

    def killed_at(self) -> float | None:
        return next((at for at, what in self.events if what == "kill -9"), None)


def worker(name: str, url: str, *args: str, host: Host | None = None,
           verbose: bool = False) -> FizzProcess:
    return FizzProcess(name, [*(["-vv"] if verbose else []), "work", "--database-url", url,
                              *args], host=host)


def server(name: str, url: str, port: int, *args: str, host: Host | None = None) -> FizzProcess:
    return FizzProcess(name, ["serve", "--database-url", url, "--port", str(port), *args],
                       host=host)
