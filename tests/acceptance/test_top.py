"""`fizz top` under a real pseudo-terminal, against a real database: what it draws, that it
follows the database, and that `q` and Ctrl-C leave cleanly with the terminal restored.

Driven through the real command, `fizz top` (as `python -m fizzbuzz_cli top`)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import sys
import termios
import time
from collections.abc import Iterator

import psycopg
import pytest
from helpers import TEMPLATE, PgServer

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[=>()][0-9A-Za-z]?")


class Terminal:
    """A child process on a pseudo-terminal of 120 x 50, its output collected."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: the pty is its controlling terminal
            os.execvpe(sys.executable, [sys.executable, *args],
                       {**os.environ, "TERM": "xterm-256color", **(env or {})})
        self.pid, self.fd = pid, fd
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 120, 0, 0))
        self.raw = b""
        self.code: int | None = None

    def pump(self, timeout: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if ready:
            try:
                self.raw += os.read(self.fd, 65536)
            except OSError:  # the child closed the terminal
                time.sleep(timeout)

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw.decode(errors="replace"))

    def wait_for(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = list(re.finditer(pattern, self.text))
            if found:
                return found[-1]
            self.pump(0.1)
        raise AssertionError(f"{pattern!r} never drawn; the screen:\n{self.text[-3000:]}")

    def type(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def wait_exit(self, timeout: float = 10) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.code = os.waitstatus_to_exitcode(status)
                self.pump(0.1)
                return self.code
            self.pump(0.05)
        raise AssertionError(f"still running after {timeout} s; the screen:\n{self.text[-3000:]}")

    def close(self) -> None:
        if self.code is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except ProcessLookupError:
                pass
        os.close(self.fd)


@pytest.fixture
def terminal() -> Iterator[type[Terminal]]:
    opened: list[Terminal] = []

    class Tracked(Terminal):
        def __init__(self, *args: str, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            opened.append(self)

    yield Tracked
    for term in opened:
        term.close()


def seed(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("""INSERT INTO tasks (tasktype, status, time) SELECT 'Fizz', 'Waiting',
                        now() + interval '1 hour' FROM generate_series(1, 3)""")
        conn.execute("""INSERT INTO tasks (tasktype, status, time, completed_at, started_at)
                        SELECT 'Buzz', 'Complete', now() - interval '10 s' - g * interval '1 ms',
                               now() - interval '5 s', now() - interval '10 s'
                        FROM generate_series(1, 7) AS g""")
        conn.execute("""INSERT INTO fizz_workers (id, host, pid, version, started_at, last_seen,
                        lease, concurrency, in_flight, ran)
                        VALUES ('testhost:4242:abcdef', 'testhost', 4242, '9.9', now(), now(),
                                3600, 100, 2, 31)""")


def test_top_draws_the_figures_follows_the_database_and_q_leaves(
        database: str, terminal: type[Terminal]) -> None:
    seed(database)
    term = terminal("-m", "fizzbuzz_cli", "top", "--database-url", database)
    term.wait_for(r"fizz top")
    before = termios.tcgetattr(term.fd)
    assert not before[3] & termios.ICANON  # single keys, no Enter: cbreak mode
    term.wait_for(r"Fizz\s+3\s+0\s+0\s+3")
    term.wait_for(r"Buzz\s+0\s+0\s+7\s+7")
    term.wait_for(r"all\s+3\s+0\s+7\s+10")
    term.wait_for(r"workers alive\s+1")
    term.wait_for(r"testhost:4242:abcdef\s+9\.9")
    term.wait_for(r"started\s+7 in 15 min")
    term.wait_for(r"p99 late\s+7\.000 ms")
    term.wait_for(r"< 2 ms\s+█+\s+1\s")  # 1 ms late
    term.wait_for(r"< 5 ms\s+█+\s+3\s")  # 2, 3 and 4 ms
    term.wait_for(r"< 10 ms\s+█+\s+3\s")  # 5, 6 and 7 ms
    term.wait_for(r"done/s \(1-min average\)")
    # The view follows the database.
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("INSERT INTO tasks (tasktype, status, time) VALUES ('FizzBuzz', 'Waiting', "
                     "now() - interval '1 minute')")
    term.wait_for(r"FizzBuzz\s+1\s+0\s+0\s+1", timeout=10)
    term.wait_for(r"overdue\s+1", timeout=10)
    term.type(b"q")
    assert term.wait_exit() == 0
    raw = term.raw.decode(errors="replace")
    assert raw.rstrip().endswith(("\x1b[?1049l", "\x1b[?25h")) or "\x1b[?1049l" in raw[-200:]
    assert "Traceback" not in term.text
    after = termios.tcgetattr(term.fd)
    assert after[3] & termios.ICANON and after[3] & termios.ECHO  # the terminal restored


def test_ctrl_c_leaves_cleanly(database: str, terminal: type[Terminal]) -> None:
    term = terminal("-m", "fizzbuzz_cli", "top", "--database-url", database)
    term.wait_for(r"all\s+0\s+0\s+0\s+0")
    term.type(b"\x03")  # the terminal turns it into SIGINT
    assert term.wait_exit() == 0
    assert "Traceback" not in term.text and "KeyboardInterrupt" not in term.text
    assert termios.tcgetattr(term.fd)[3] & termios.ICANON


def test_a_database_that_goes_away_is_shown_and_q_still_leaves(
        pg_server: PgServer, terminal: type[Terminal]) -> None:
    """At start, an unreachable database is one line and exit 1, as for every command
    (tests/acceptance/test_database_errors.py); once running, an outage is shown in the
    view, which keeps answering its keys."""
    name = f"fizz_test_top_{os.getpid()}_{time.monotonic_ns()}"
    url = pg_server.create_database(name, template=TEMPLATE)
    try:
        term = terminal("-m", "fizzbuzz_cli", "top", "--database-url", url)
        term.wait_for(r"Waiting")
        pg_server.drop_database(name)
        term.wait_for(r"cannot read the figures: .*retrying")
        term.type(b"q")
        assert term.wait_exit() == 0
        assert "Traceback" not in term.text
    finally:
        pg_server.drop_database(name)
