"""Planted bugs: each is a small deliberate break of one of fizz's promises, and the tests
named for it must fail. A bug that survives its tests is a promise the suite does not
really check.

For each mutant the script copies the package to a temporary folder, applies the break
(exact text replacements, each of which must match once), and runs the named tests with
the copy first on PYTHONPATH (worker and server processes the tests start inherit it), as
the suite runs: against a real PostgreSQL the session starts itself. It prints a line per
mutant and exits 1 if any survived.

    python tests/mutants/run.py                 # every mutant
    python tests/mutants/run.py -k fence -v     # the mutants whose name contains "fence"
    python tests/mutants/run.py --list

The catalogue is in tests/mutants/catalogue.py; CI runs all of it (it takes a few minutes).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from catalogue import MUTANTS, Mutant  # noqa: E402


def apply(mutant: Mutant, package: Path) -> None:
    """Apply every replacement of the mutant to the copied package; each must match once."""
    for relative, old, new in mutant.edits:
        path = package / relative
        text = path.read_text()
        found = text.count(old)
        if found != 1:
            raise SystemExit(f"mutant {mutant.name!r}: {old!r} occurs {found} times in "
                             f"{relative}; the catalogue is out of date")
        path.write_text(text.replace(old, new))


def run(mutant: Mutant, verbose: bool) -> tuple[bool, float]:
    """(killed, seconds)."""
    folder = Path(tempfile.mkdtemp(prefix="fizz-mutant-"))
    try:
        shutil.copytree(ROOT / "fizzbuzz_cli", folder / "fizzbuzz_cli",
                        ignore=shutil.ignore_patterns("__pycache__"))
        apply(mutant, folder / "fizzbuzz_cli")
        env = {**os.environ, "PYTHONPATH": f"{folder}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               "PYTHONDONTWRITEBYTECODE": "1"}
        started = time.monotonic()
        # Run from the copy's folder: `python -m` puts the current folder first on the path,
        # for pytest and for every fizz process the tests start, so all of them import the
        # mutated package (not the one in the repository, nor an installed one).
        tests = [str(ROOT / arg) if arg.startswith("tests/") else arg for arg in mutant.tests]
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
             f"--rootdir={ROOT}", "-c", str(ROOT / "pyproject.toml"), *tests],
            cwd=folder, env=env, capture_output=True, text=True, timeout=mutant.timeout)
        seconds = time.monotonic() - started
        output = (done.stdout + done.stderr).strip().splitlines()
        if verbose:
            print("\n".join(output[-15:]))
        # Killed: some test failed (exit 1). An error collecting or running the tests (exit
        # 2-5) means the catalogue is wrong, not that the bug was caught.
        if done.returncode not in (0, 1):
            raise SystemExit(f"mutant {mutant.name!r}: the tests could not run "
                             f"(exit {done.returncode}):\n" + "\n".join(output[-20:]))
        return done.returncode == 1, seconds
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", dest="match", help="only mutants whose name contains this")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the tests' output")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if not args.match or args.match in m.name]
    if args.list:
        for mutant in chosen:
            print(f"{mutant.name:40s} {mutant.promise}")
        return 0
    survivors = []
    total = time.monotonic()
    for mutant in chosen:
        killed, seconds = run(mutant, args.verbose)
        verdict = "killed  " if killed else "SURVIVED"
        print(f"{verdict} {mutant.name:40s} {seconds:5.1f} s  {mutant.promise}", flush=True)
        if not killed:
            survivors.append(mutant.name)
    print(f"\n{len(chosen) - len(survivors)} of {len(chosen)} planted bugs caught in "
          f"{time.monotonic() - total:.0f} s" + (f"; survived: {', '.join(survivors)}"
                                                 if survivors else ""))
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
