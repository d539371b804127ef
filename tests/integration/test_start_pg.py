"""start-pg.sh: without a Docker engine it falls back to the embedded server."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
from helpers import new_home

from fizzbuzz_cli.embedded import EmbeddedServer


def test_start_pg_prints_an_export_line_for_a_ready_database() -> None:
    home = new_home("fizz-test-startpg-")
    script = Path(__file__).parents[2] / "start-pg.sh"
    bindir = Path(sys.executable).parent  # so `fizz` or `python3 -m fizzbuzz_cli` is this one
    env = {**os.environ, "FIZZ_HOME": str(home),
           "PATH": f"{bindir}:/nonexistent-docker:{os.environ['PATH']}",
           "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    try:
        done = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env,
                              timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        match = re.fullmatch(r"export FIZZ_DATABASE_URL='(postgresql://[^']+)'\n", done.stdout)
        assert match, done.stdout
        with psycopg.connect(match.group(1)) as conn:
            assert conn.execute("SELECT count(*) FROM tasks").fetchone() == (0,)
    finally:
        EmbeddedServer(home).stop()
        shutil.rmtree(home, ignore_errors=True)
