"""The fault harness's own PostgreSQL: the embedded server, also listening on the address
of a Network's bridge, that tests may freeze, restart and kill without disturbing the test
session's shared server.

Hosts (network namespaces) connect over TCP with the server's generated password; pg_hba
admits the harness's private subnet only. Test data only: fsync is off.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from fizzbuzz_cli import db
from fizzbuzz_cli.embedded import EmbeddedServer

TEMPLATE = "fizz_fault_template"


class FaultServer(EmbeddedServer):
    def __init__(self, home: Path, gateway: str | None = None) -> None:
        super().__init__(home, throwaway=True)
        self.gateway = gateway
        self._count = 0

    # ------------------------------------------------------------------ set-up

    def _server_options(self, port: int, socket_dir: Path) -> str:  # type: ignore[override]
        options = super()._server_options(port, socket_dir)
        if self.gateway:
            options = re.sub(r"listen_addresses=\S+", f"listen_addresses=127.0.0.1,{self.gateway}",
                             options)
        return options

    def _initdb(self, binaries, account):  # type: ignore[no-untyped-def,override]
        super()._initdb(binaries, account)
        with open(self.data_dir / "pg_hba.conf", "a") as hba:
            hba.write("host all all 10.77.0.0/16 scram-sha-256\n")

    def start(self) -> None:
        self.ensure_running()
        with psycopg.connect(self.url(dbname="postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [TEMPLATE])
            if exists.fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
                with psycopg.connect(self.url(dbname=TEMPLATE), autocommit=True) as tconn:
                    db.migrate(tconn)

    def new_database(self) -> tuple[str, str]:
        """A fresh migrated database: (URL for this machine, URL for the namespaces)."""
        self._count += 1
        name = f"fizz_fault_{os.getpid()}_{self._count}"
        with psycopg.connect(self.url(dbname="postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(TEMPLATE)))
        local = self.url(dbname=name)
        remote = local
        if self.gateway:
            remote = make_conninfo(self.url(tcp=True, dbname=name), host=self.gateway)
        return local, remote

    # ------------------------------------------------------------------ faults

    def processes(self) -> list[int]:
        """The postmaster and its children (backends, background workers)."""
        status = self.status()
        if not status.running or status.pid is None:
            return []
        return [status.pid, *_children(status.pid)]

    def freeze(self) -> list[int]:
        """SIGSTOP the whole server (as a VM pause would); returns what was stopped."""
        pids = self.processes()
        for pid in pids:
            _signal(pid, signal.SIGSTOP)
        return pids

    def thaw(self, pids: list[int]) -> None:
        for pid in reversed(pids):
            _signal(pid, signal.SIGCONT)

    def kill_postmaster(self) -> None:
        """kill -9 the postmaster, wait for its orphans to notice and exit, start again
        (crash recovery)."""
        pids = self.processes()
        if not pids:
            return
        _signal(pids[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while any(Path(f"/proc/{pid}").exists() and not _zombie(pid) for pid in pids):
            if time.monotonic() > deadline:
                raise RuntimeError("PostgreSQL's processes did not exit after kill -9")
            time.sleep(0.05)
        self.ensure_running()


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == parent:
            found.append(int(entry.name))
    return found


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2:].split()[0] == "Z"
