"""bench/http_bench.py still runs and reports every figure (a short run: the figures
themselves come from full runs, recorded in README.md and bench/results/)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("wrk") is None, reason="the HTTP benchmark needs wrk "
                                                         "(apt-get install wrk)")
def test_the_http_benchmark_runs_and_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "http_bench.py"), "-r", "1",
                           "-d", "1", "--idle", "300", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    run = results["runs"][0]
    for name in ("http_post", "http_get", "direct_post", "direct_get", "http_post_idle",
                 "http_get_idle", "http_bulk"):
        assert run[name]["rps"] > 0, name
    assert run["idle"] == {"held": 300, "still_open": 300}
    assert run["http_bulk"]["tasks_per_s"] == run["http_bulk"]["rps"] * 10_000
    assert run["ratio_get"]["ratio"] > 0
