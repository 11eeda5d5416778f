"""What a sweep costs beyond the training itself: the same work as a plain loop, a 1-slot and a k-slot sweep.

    python bench/orchestration.py                     # fg_cme/full, synthetic corpus, 5 session folds, 8 epochs
    python bench/orchestration.py --epochs 2 --joined --repeat 3   # also joined to a running Ray; medians of 3
    python bench/orchestration.py configs/ravdess.yaml --epochs 3

Every run is a separate command, timed from the shell's point of view
(interpreter start, imports, data, training, tables, report, exit):
- plain: `train_loop` called once per trial in one process, with a local
  session and no Ray (what a researcher's own script would do);
- sweep, 1 slot: `python orchestration/sweep.py` with max_concurrent_trials 1;
- sweep, k slots: the same with k trials at a time (k = cores by default);
- with --joined, the 1- and 2-slot sweeps again, joined to a `ray start --head`
  already running on this machine (how a researcher who runs sweep after
  sweep keeps Ray up): no Ray start or stop inside the sweep's wall time.
All use one torch thread per trial and the same warm feature cache. The sweep's
own `[sweep] timing:` line and its tables give the breakdown of the fixed cost.
The last two lines are `overhead_ratio=<sweep 1 slot / plain>` and
`speedup_k2=<plain / sweep at 2 slots>`.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the orchestration package, not this file of the same name
DEFAULT_WORK = {
    "name": "bench", "corpus": {"name": "synthetic"}, "folds": "sessions", "models": {"fg_cme": ["full"]},
    "seeds": [0], "train": {"batch_size": 16, "lr": 2.0e-3}, "resources": {"mode": "inprocess", "cpus_per_worker": 1},
}


def sweep_file(base: dict, workdir: Path, epochs: int, slots: int, label: str, **resources) -> Path:
    sweep = copy.deepcopy(base)
    sweep["name"] = f"bench-{label}"
    sweep["train"] = {**(sweep.get("train") or {}), "epochs": epochs}
    sweep["resources"] = {**(sweep.get("resources") or {}), "mode": "inprocess", "cpus_per_worker": 1,
                          "max_concurrent_trials": slots, **resources}
    sweep["storage"] = str(workdir / "results")
    sweep["cache"] = str(workdir / "cache")
    path = workdir / f"{label}.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def timed(command: list[str], env: dict | None = None) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return wall, done.stdout


def prepared(path: str):
    """The sweep file, its base trial config and folds, with the feature cache filled."""
    from orchestration.config.sweep_file import load_sweep
    from orchestration.run.experiment import base_config
    from orchestration.run.preflight import prepare_features
    from orchestration.run.task import corpus_from_config

    sweep = load_sweep(path)
    n_folds = len(prepare_features(sweep, corpus_from_config(sweep.corpus)).folds)
    folds = sweep.fold_indices if sweep.fold_indices is not None else range(n_folds)
    return sweep, base_config(sweep, sweep.storage), folds


def plain_loop(path: str) -> None:
    """The baseline, run as its own process: every trial of the sweep file through train_loop, no Ray."""
    import torch

    from orchestration.run.training import train_loop
    from orchestration.run.session import LocalSession

    torch.set_num_threads(1)
    started = time.perf_counter()
    sweep, config, folds = prepared(path)
    with tempfile.TemporaryDirectory() as scratch:
        for model, ablation in sweep.cells:
            for fold in folds:
                for seed in sweep.seeds:
                    trial = {**config, "model": model, "ablation": ablation, "fold": fold, "seed": seed,
                             "hparams": {}, "model_options": sweep.model_options.get(model, {}),
                             "train": sweep.train_of(model),
                             "predictions_dir": f"{scratch}/predictions"}
                    train_loop(trial, LocalSession(f"{scratch}/{model}-{ablation}-{fold}-{seed}"))
    print(json.dumps({"loop_seconds": time.perf_counter() - started}))


PHASES = ("data", "ray_start", "trials", "tables", "report", "ray_stop")


def phases(stdout: str) -> dict[str, float]:
    line = next((text for text in stdout.splitlines() if text.startswith("[sweep] timing:")), "")
    return {name: float(value) for name, value in re.findall(r"(\w+) ([\d.]+) s", line)}


def trial_costs(sweep_dir: Path) -> dict[str, float]:
    """Trial count, epoch and trial seconds, and the wall inside the first and later trials beyond their epochs."""
    from orchestration.results.aggregate import read_table

    trials = read_table(str(sweep_dir), "trials").set_index("trial_id")
    epochs = read_table(str(sweep_dir), "epochs").groupby("trial_id")["epoch_seconds"].sum()
    inside = trials["time_total_s"] - epochs.reindex(trials.index)
    return {"n_trials": len(trials), "epoch_seconds": float(epochs.sum()),
            "trial_seconds": float(trials["time_total_s"].sum()),
            "in_trial_fixed_first": float(inside.iloc[0]) if len(inside) else float("nan"),
            "in_trial_fixed_rest_mean": float(inside.iloc[1:].mean()) if len(inside) > 1 else float("nan")}


def sweep_wall(path: Path, label: str, python: str, env: dict, repeat: int) -> tuple[float, float, str]:
    """Median wall time of `repeat` runs of one sweep, each from an empty sweep folder; the last run's wall and
    output."""
    walls = []
    for _ in range(repeat):
        shutil.rmtree(path.parent / "results" / f"bench-{label}", ignore_errors=True)
        wall, out = timed([python, str(REPO / "orchestration" / "sweep.py"), str(path)], env)
        walls.append(wall)
    return statistics.median(walls), wall, out


def joined_walls(runs: dict[str, Path], python: str, env: dict, repeat: int) -> dict[str, float]:
    """The 1- and 2-slot sweeps against a head started by `ray start` (its own ports and temp dir), then stopped."""
    from tests.local_cluster import auth_env, local_cluster

    with local_cluster(json.dumps({"TRAIN_DRIVER": 64}), head_cpus=os.cpu_count() or 2, worker_cpus=[]) as cluster:
        return {f"joined-{label}": sweep_wall(runs[label], label, python, {**auth_env(cluster.env), **env}, repeat)[0]
                for label in ("slots1", "slots2")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", nargs="?", help="a sweep file (default: fg_cme/full on the synthetic corpus)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--slots", type=int, default=os.cpu_count() or 2, help="k for the k-slot sweep")
    parser.add_argument("--joined", action="store_true",
                        help="also time the sweeps joined to a `ray start --head` started once beforehand")
    parser.add_argument("--repeat", type=int, default=1, help="run each command this many times; report medians")
    parser.add_argument("--workdir", help="keep cache and results here (default: a temporary folder)")
    parser.add_argument("--plain-loop", help=argparse.SUPPRESS)  # internal: the baseline's own process
    parser.add_argument("--warm-cache", help=argparse.SUPPRESS)  # internal: fill the feature cache only
    args = parser.parse_args()
    if args.plain_loop:
        return plain_loop(args.plain_loop)
    if args.warm_cache:
        prepared(args.warm_cache)
        return None
    base = yaml.safe_load(Path(args.sweep).read_text()) if args.sweep else DEFAULT_WORK
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="emosweep-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    python, env = sys.executable, {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    runs = {label: sweep_file(base, workdir, args.epochs, slots, label)
            for label, slots in (("plain", 1), ("slots1", 1), (f"slots{args.slots}", args.slots), ("slots2", 2))}
    print(f"work: {base['models']} on {base['corpus']['name']}, {args.epochs} epochs per trial, one thread per trial; "
          f"{os.cpu_count()} cores; workdir {workdir}; medians of {args.repeat} run(s), breakdown from the last")
    timed([python, str(REPO / "bench" / "orchestration.py"), "--warm-cache", str(runs["plain"])], env)
    plain = [timed([python, str(REPO / "bench" / "orchestration.py"), "--plain-loop", str(runs["plain"])], env)
             for _ in range(args.repeat)]
    plain_wall = statistics.median(wall for wall, _ in plain)
    loop = statistics.median(json.loads(out.strip().splitlines()[-1])["loop_seconds"] for _, out in plain)
    walls, breakdown = {}, {}
    for label in dict.fromkeys(["slots1", f"slots{args.slots}", "slots2"]):
        walls[label], last_wall, out = sweep_wall(runs[label], label, python, env, args.repeat)
        breakdown[label] = phases(out) | trial_costs(workdir / "results" / f"bench-{label}") | {"wall": last_wall}
    if args.joined:
        walls |= joined_walls(runs, python, env, args.repeat)
    print(f"\n{'run':30s} {'wall s':>8s} {'vs plain':>9s}")
    print(f"{'plain loop':30s} {plain_wall:8.1f} {1.0:9.2f}   (loop alone {loop:.1f} s; rest is start-up and imports)")
    for label, wall in walls.items():
        name = f"sweep, {label.removeprefix('joined-').replace('slots', '')} slot(s)"
        name += ", joined" if label.startswith("joined-") else ""
        print(f"{name:30s} {wall:8.1f} {wall / plain_wall:9.2f}")
    one, n = breakdown["slots1"], breakdown["slots1"]["n_trials"]
    phase_total = sum(one.get(name, 0.0) for name in PHASES)
    print("\nfixed cost of the 1-slot sweep (s):")
    print(f"  {'interpreter start, imports, exit':44s} {one['wall'] - phase_total:6.2f}")
    for name in PHASES:
        if name != "trials":
            print(f"  {name:44s} {one.get(name, float('nan')):6.2f}")
    print(f"  {'trial runner: processes, scheduling, reports':44s} {one['trials'] - one['trial_seconds']:6.2f}")
    print(f"  {'inside the first trial, beyond its epochs':44s} {one['in_trial_fixed_first']:6.2f}")
    print(f"  {'inside each later trial, beyond its epochs':44s} {one['in_trial_fixed_rest_mean']:6.2f}")
    per_trial = (one["wall"] - one["ray_start"] - one["epoch_seconds"]) / n
    print(f"  fixed cost per trial (everything but epochs and the one Ray start, / {n} trials): {per_trial:.2f}")
    print(f"  epochs: {one['epoch_seconds']:.1f} s in the 1-slot sweep, {loop:.1f} s for the whole plain loop")
    if args.joined:
        print(f"overhead_ratio_joined={walls['joined-slots1'] / plain_wall:.2f}")
        print(f"speedup_k2_joined={plain_wall / walls['joined-slots2']:.2f}")
    print(f"overhead_ratio={walls['slots1'] / plain_wall:.2f}")
    print(f"speedup_k2={plain_wall / walls['slots2']:.2f}")


if __name__ == "__main__":
    main()
