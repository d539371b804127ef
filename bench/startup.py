"""fizz start-up benchmark: how long `fizz --help` and `fizz add` take, whole process.

Each command runs as a fresh process, one uncounted warm-up run then --repeat counted runs
(default 20), the commands taking turns (one run of each per round, so that a shared
machine's drift weighs on all alike); wall time is measured around the process, CPU time
(user + sys) from the kernel's accounting of the finished child. Reports min, median and
max as a table and as JSON. A throwaway embedded PostgreSQL (default settings, fsync on)
serves the `add` runs.

    python bench/startup.py                   # everything, 20 runs each
    python bench/startup.py -r 50 --json out.json

Rows:
  python        `python -c pass`: the interpreter's own start-up, for scale
  psycopg       a 3-line psycopg script that connects and inserts one task: the floor of
                any Python command that adds a task through psycopg [for scale]
  help          `fizz --help` [target: under 100 ms]
  add           `fizz add Fizz`, FIZZ_DATABASE_URL set [target: under 160 ms]
  add_embedded  `fizz add Fizz` on the embedded default (already running)

The package's bytecode is compiled first (pip does it on install; an editable install does
it on first import, unless PYTHONDONTWRITEBYTECODE is set).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fizzbuzz_cli import db  # noqa: E402
from fizzbuzz_cli.embedded import EmbeddedServer  # noqa: E402

FLOOR = """\
import sys, psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    print(conn.execute("INSERT INTO tasks (tasktype, status, time) "
                       "VALUES ('Fizz', 'Waiting', now()) RETURNING id").fetchone()[0])
"""


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall, cpu) seconds of one run of command as a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.decode().strip()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def measure(rows: dict[str, tuple[list[str], dict[str, str]]],
            repeat: int) -> dict[str, dict[str, object]]:
    """Every row once per round, round after round, so that a machine that slows down or
    speeds up (a shared one) weighs on every row alike."""
    for command, env in rows.values():
        timed(command, env)  # warm-up: page cache, PostgreSQL's catalog caches
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in rows}
    for _ in range(repeat):
        for name, (command, env) in rows.items():
            runs[name].append(timed(command, env))
    results: dict[str, dict[str, object]] = {}
    for name, pairs in runs.items():
        walls = [1000 * wall for wall, _ in pairs]
        cpus = [1000 * cpu for _, cpu in pairs]
        results[name] = {"wall_ms": summary(walls), "cpu_ms": summary(cpus),
                         "runs_wall_ms": walls}
    return results


def summary(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-r", "--repeat", type=int, default=20)
    parser.add_argument("--json", metavar="PATH", help="also write the results here")
    args = parser.parse_args()

    fizz = shutil.which("fizz", path=str(Path(sys.executable).parent)) or shutil.which("fizz")
    if fizz is None:
        parser.error("no fizz command found: pip install -e . first")
    compileall.compile_dir(str(ROOT / "fizzbuzz_cli"), quiet=1)
    home = Path(tempfile.mkdtemp(prefix="fizz-startup-", dir="/tmp"))
    server = EmbeddedServer(home)  # default settings: fsync on, as users run it
    results: dict[str, object] = {"repeat": args.repeat}
    try:
        server.ensure_database()
        url = server.url()
        with psycopg.connect(url, autocommit=True) as conn:
            db.migrate(conn)
            version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        base = {k: v for k, v in os.environ.items() if not k.startswith("FIZZ_")}
        named = {**base, "FIZZ_DATABASE_URL": url, "FIZZ_HOME": str(home)}
        embedded = {**base, "FIZZ_HOME": str(home)}
        rows = {
            "python": ([sys.executable, "-c", "pass"], base),
            "psycopg": ([sys.executable, "-c", FLOOR, url], base),
            "help": ([fizz, "--help"], base),
            "add": ([fizz, "add", "Fizz"], named),
            "add_embedded": ([fizz, "add", "Fizz"], embedded),
        }
        results.update(measure(rows, args.repeat))
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    results["machine"] = {
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "platform": platform.platform(), "processor": _cpu_model(), "postgresql": version,
    }
    print(f"{'':14} {'wall ms (min / median / max)':>30} {'cpu ms (median)':>16}")
    for name in rows:
        wall, cpu = results[name]["wall_ms"], results[name]["cpu_ms"]  # type: ignore[index]
        print(f"{name:14} {wall['min']:9.1f} / {wall['median']:6.1f} / {wall['max']:6.1f}"
              f" {cpu['median']:16.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
