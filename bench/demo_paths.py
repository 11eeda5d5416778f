"""The embedded demo sweep (`python orchestration/sweep.py`) with this checkout against a baseline commit.

    .venv/bin/python bench/demo_paths.py                  # 2 rounds, about 8 min on 2 cores
    .venv/bin/python bench/demo_paths.py --baseline HEAD~3 --rounds 3

Each run is a fresh start as a new user's first demo: its own feature cache (EMOSWEEP_CACHE, so the synthetic
corpus is generated and its features extracted) and its own storage. The two checkouts alternate, the
baseline first in odd rounds, so that a machine growing warmer favours neither. The baseline runs from a git
worktree with PYTHONPATH set to it. Prints each run's wall time, the medians, and whether the fold tables are
equal; the last lines are `demo_ratio=<this checkout / baseline>` and `tables_equal=<True|False>`.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BASELINE = "e9630e0"   # the last commit before the sharded feature cache
COLUMNS = ["fold", "model", "seed", "selected_epoch", "val_ua", "test_ua", "test_wa", "test_loss"]


def run_demo(checkout: Path, scratch: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(checkout), "EMOSWEEP_CACHE": str(scratch / "cache")}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(checkout / "orchestration" / "sweep.py"), "--storage",
                           str(scratch / "results")], cwd=checkout, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"the demo with {checkout} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds


def fold_table(scratch: Path):
    from orchestration.results.aggregate import read_table

    frame = read_table(str(scratch / "results" / "demo"), "folds")
    return frame[COLUMNS].sort_values(["fold", "model", "seed"]).reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default=BASELINE, help="the commit to compare with")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="emosweep-demo-paths-"))
    worktree = scratch / "baseline"
    subprocess.run(["git", "worktree", "add", "--detach", str(worktree), args.baseline], cwd=REPO, check=True,
                   capture_output=True)
    checkouts = {"this": REPO, "baseline": worktree}
    seconds: dict[str, list[float]] = {label: [] for label in checkouts}
    equal = True
    try:
        for round_ in range(args.rounds):
            order = ["baseline", "this"] if round_ % 2 == 0 else ["this", "baseline"]
            tables = {}
            for label in order:
                folder = scratch / f"{label}-{round_}"
                seconds[label].append(run_demo(checkouts[label], folder))
                tables[label] = fold_table(folder)
                print(f"round {round_}: {label:8s} {seconds[label][-1]:6.1f} s", flush=True)
                shutil.rmtree(folder, ignore_errors=True)
            equal = equal and tables["this"].equals(tables["baseline"])
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=REPO, capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)
    this, base = statistics.median(seconds["this"]), statistics.median(seconds["baseline"])
    print(f"median: this checkout {this:.1f} s, baseline {args.baseline} {base:.1f} s")
    print(f"demo_ratio={this / base:.3f}")
    print(f"tables_equal={equal}")


if __name__ == "__main__":
    main()
