"""Small trials packed onto one GPU: throughput with k trials per GPU against one trial alone.

    python bench/packing.py --per-gpu 1 2 4 8        # on a GPU machine: gpus_per_worker = 1/k
    python bench/packing.py --cpu --per-gpu 1 2      # anywhere: k one-CPU slots instead

The work is fg_cme/full on the synthetic corpus, 5 session folds x --seeds
seeds, --epochs per trial (override with a sweep file). Throughput is trials
per minute of the sweep's trial phase (its `[sweep] timing:` line), so Ray's
start and the report do not count. The last line is
`trials_per_gpu_at_3x=<largest k whose throughput is >= 3x one trial alone>`.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

import yaml

# bench/orchestration.py by path: its name is the package's too
_spec = importlib.util.spec_from_file_location("bench_orchestration", Path(__file__).with_name("orchestration.py"))
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", nargs="?", help="a sweep file (default: fg_cme/full on the synthetic corpus)")
    parser.add_argument("--per-gpu", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--cpu", action="store_true", help="k one-CPU slots instead of k trials per GPU")
    parser.add_argument("--workdir")
    args = parser.parse_args()
    base = yaml.safe_load(Path(args.sweep).read_text()) if args.sweep else dict(bench.DEFAULT_WORK)
    base["seeds"] = list(range(args.seeds))
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="emosweep-packing-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"{'k':>3s} {'trials':>6s} {'trial phase s':>14s} {'trials/min':>11s} {'vs k=1':>7s}")
    baseline, best_k = None, 0
    for k in args.per_gpu:
        # one CPU thread per trial at every k: the ratio then measures the GPU's packing, not more threads
        resources = {"cpus_per_worker": 1} | ({} if args.cpu else {"gpus_per_worker": round(1.0 / k, 4)})
        path = bench.sweep_file(base, workdir, args.epochs, k, f"k{k}", **resources)
        _, out = bench.timed([sys.executable, str(bench.REPO / "orchestration" / "sweep.py"), str(path)],
                       {"PYTHONUNBUFFERED": "1"})
        trials = bench.trial_costs(workdir / "results" / f"bench-k{k}")["n_trials"]
        seconds = bench.phases(out)["trials"]
        throughput = trials / seconds * 60
        baseline = baseline or throughput
        if throughput >= 3 * baseline:
            best_k = k
        print(f"{k:3d} {trials:6d} {seconds:14.1f} {throughput:11.2f} {throughput / baseline:7.2f}", flush=True)
    print(f"trials_per_gpu_at_3x={best_k if not args.cpu else 'n/a (--cpu)'}")


if __name__ == "__main__":
    main()
