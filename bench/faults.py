"""Randomised fault rounds: exactly once, whatever fails.

Each round starts a fresh database on the fault harness's own PostgreSQL, three workers on
three hosts (network namespaces), `fizz serve` with a client of the original worker
protocol, and ~300 Fizz, Buzz and FizzBuzz tasks spread over 15 s; then it inflicts one
fault at a random moment (a link down for 1-30 s, one host or all; SIGSTOP of a worker or
of PostgreSQL for 1-20 s; a PostgreSQL restart or kill -9 of its postmaster; kill -9 or
SIGTERM of a worker), waits for every task, and judges the history (tests/harness/history):
doubled, early, stuck, lost outside a kill -9 window, and lateness beyond the fault's
length plus a lease plus 5 s. Root only (namespaces).

    python bench/faults.py --rounds 50 --seed 7          # the README's figure
    python bench/faults.py --rounds 5 --only freeze_pg   # one kind of fault

Prints a line per round and a table per fault type; exits 1 if any round failed.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from harness import netns  # noqa: E402
from harness.cluster import Cluster  # noqa: E402
from harness.pgserver import FaultServer  # noqa: E402

LEASE = 10.0
FAULTS = ["link_one", "link_all", "freeze_worker", "freeze_pg", "restart_pg", "kill_pg",
          "kill_worker", "sigterm_worker"]


@dataclass
class Outcome:
    fault: str
    detail: str
    seconds: float  # how long the fault lasted (0 for instant ones)
    tasks: int = 0
    printed: int = 0
    doubled: int = 0
    early: int = 0
    stuck: int = 0
    lost: int = 0
    excused: int = 0
    late: float = 0.0  # the worst lateness, seconds
    too_late: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.doubled or self.early or self.stuck or self.lost or self.too_late
                    or self.errors)


def one_round(server: FaultServer, network: netns.Network, rng: random.Random,
              fault: str) -> Outcome:
    with Cluster.on(server, network, lease=LEASE) as run:
        hosts = list(network.hosts)
        run.original_worker(run.serve(), holding=rng.randint(0, 1))  # before the workers
        crew = [run.worker(f"w{i}", host=host) for i, host in enumerate(hosts, 1)]
        for kind, count in (("Fizz", 100), ("Buzz", 60), ("FizzBuzz", 140)):
            run.add(kind, delay=1, n=count, spread=15)
        time.sleep(rng.uniform(1.5, 8))
        outcome = inflict(fault, run, server, network, hosts, crew, rng)
        try:
            verdict = run.finish(timeout=120, window=0.5)
        finally:
            for host in hosts:
                network.restore(host)
            server.thaw(server.processes())
        bound = outcome.seconds + LEASE + 5
        outcome.tasks, outcome.printed = verdict.tasks, verdict.printed
        outcome.doubled, outcome.early = len(verdict.doubled), len(verdict.early)
        outcome.stuck, outcome.lost = len(verdict.stuck), len(verdict.lost)
        outcome.excused, outcome.late = len(verdict.excused), verdict.late()
        outcome.too_late = sum(1 for late in verdict.lateness if late > bound)
        for process in run.processes:
            if "Traceback" in process.log():
                outcome.errors.append(f"traceback in {process.name}")
        if not outcome.ok:
            outcome.errors.append(verdict.summary())
        return outcome


def inflict(fault: str, run: Cluster, server: FaultServer, network: netns.Network,
            hosts: list[netns.Host], crew: list, rng: random.Random) -> Outcome:  # type: ignore[type-arg]
    victim = rng.randrange(len(crew))
    if fault in ("link_one", "link_all"):
        seconds = rng.uniform(1, 30)
        cut = hosts if fault == "link_all" else [hosts[victim]]
        for host in cut:
            network.cut(host)
        time.sleep(seconds)
        for host in cut:
            network.restore(host)
        return Outcome(fault, f"{len(cut)} host(s) for {seconds:.1f} s", seconds)
    if fault == "freeze_worker":
        seconds = rng.uniform(1, 20)
        crew[victim].freeze()
        time.sleep(seconds)
        crew[victim].thaw()
        return Outcome(fault, f"w{victim + 1} for {seconds:.1f} s", seconds)
    if fault == "freeze_pg":
        seconds = rng.uniform(1, 20)
        frozen = server.freeze()
        time.sleep(seconds)
        server.thaw(frozen)
        return Outcome(fault, f"{seconds:.1f} s", seconds)
    if fault == "restart_pg":
        started = time.monotonic()
        server.restart()
        return Outcome(fault, "pg_ctl restart -m fast", time.monotonic() - started)
    if fault == "kill_pg":
        started = time.monotonic()
        server.kill_postmaster()
        return Outcome(fault, "kill -9 of the postmaster, crash recovery",
                       time.monotonic() - started)
    if fault == "kill_worker":
        crew[victim].kill()
        return Outcome(fault, f"kill -9 of w{victim + 1}", 0.0)
    if fault == "sigterm_worker":
        crew[victim].terminate()
        code = crew[victim].wait(timeout=60)
        outcome = Outcome(fault, f"SIGTERM of w{victim + 1} (exit {code})", 0.0)
        if code != 0:
            outcome.errors.append(f"w{victim + 1} exited {code} after SIGTERM")
        return outcome
    raise ValueError(fault)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=len(FAULTS))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", choices=FAULTS, action="append")
    parser.add_argument("--json", type=Path, help="also write the rounds to this file")
    args = parser.parse_args()
    why_not = netns.available()
    if why_not:
        print(f"cannot run: {why_not}", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    kinds = args.only or FAULTS
    network = netns.Network()
    home = Path(tempfile.mkdtemp(prefix="fizz-faultbench-", dir="/tmp"))
    server = FaultServer(home, gateway=network.gateway)
    outcomes: list[Outcome] = []
    try:
        for _ in range(3):
            network.add_host()
        server.start()
        for number in range(1, args.rounds + 1):
            # Every kind in turn, in a seeded order, so that 50 rounds cover each ~6 times.
            fault = kinds[(number - 1) % len(kinds)] if number <= len(kinds) else rng.choice(kinds)
            started = time.monotonic()
            outcome = one_round(server, network, rng, fault)
            outcomes.append(outcome)
            print(f"round {number:3d} {fault:15s} {outcome.detail:40s} "
                  f"{'ok ' if outcome.ok else 'FAIL'} {outcome.printed}/{outcome.tasks} lines, "
                  f"late max {outcome.late:5.1f} s, excused {outcome.excused} "
                  f"({time.monotonic() - started:.0f} s)", flush=True)
            for error in outcome.errors:
                print(f"    {error}", flush=True)
    finally:
        server.thaw(server.processes())
        server.stop()
        network.close()
        shutil.rmtree(home, ignore_errors=True)
    print_table(outcomes, args.seed)
    if args.json:
        args.json.write_text(json.dumps([o.__dict__ for o in outcomes], indent=1))
    return 0 if all(o.ok for o in outcomes) else 1


def print_table(outcomes: list[Outcome], seed: int) -> None:
    groups: dict[str, list[Outcome]] = defaultdict(list)
    for outcome in outcomes:
        groups[outcome.fault].append(outcome)
    print(f"\n{len(outcomes)} rounds, seed {seed}, lease {LEASE:g} s\n")
    print("| fault | rounds | tasks | doubled | stuck | early | lost | lost in a kill -9 "
          "window | worst lateness |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for fault in FAULTS:
        group = groups.get(fault)
        if not group:
            continue
        print(f"| {fault} | {len(group)} | {sum(o.tasks for o in group)} | "
              f"{sum(o.doubled for o in group)} | {sum(o.stuck for o in group)} | "
              f"{sum(o.early for o in group)} | {sum(o.lost for o in group)} | "
              f"{sum(o.excused for o in group)} | {max(o.late for o in group):.1f} s |")


if __name__ == "__main__":
    sys.exit(main())
