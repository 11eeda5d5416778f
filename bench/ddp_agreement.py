"""How far a 2-worker DDP trial lands from the in-process trial of the same fold, seed and global batch.

    .venv/bin/python bench/ddp_agreement.py [--epochs 4] [--settings NAME ...]

For each setting (model, batch size, lr) it runs every fold of the synthetic
corpus three times on the embedded Ray: in-process at seeds 0 and 1, and DDP
(2 workers x 1 CPU, gloo) at seed 0. The DDP trial is the same algorithm, not
the same arithmetic: the all-reduce sums in another order, each rank draws its
own dropout masks for its half of the batch, BatchNorm sees half the batch,
and a class-weighted loss is averaged per rank. So the figure that matters is
the DDP difference side by side with the difference two seeds make (the ratio):

    first-epoch train loss |DDP - in-process|, max over folds
    test UA |DDP - in-process| per fold (mean, max) and of the fold mean
    test UA |seed 0 - seed 1|, in-process, the same way
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import SMALL_SYNTHETIC  # noqa: E402
from tests.sweeps import run_sweep, table, write_sweep  # noqa: E402

SETTINGS = {   # name: (model, batch_size, lr)
    "lstm_attn_text-b8": ("lstm_attn_text", 8, 3e-3),    # the setting tests/test_cluster_join.py runs
    "fg_cme-b16": ("fg_cme", 16, 2e-3),                  # the outside audit's counterexample
    "lstm_attn_audio-b16": ("lstm_attn_audio", 16, 1e-3),
}
FOLDS = list(range(SMALL_SYNTHETIC.sessions))
DDP = {"mode": "ddp", "workers_per_trial": 2, "cpus_per_worker": 1}


def run(scratch: Path, synthetic: Path, name: str, model: str, batch: int, lr: float, epochs: int, seeds: list[int],
        resources: dict) -> None:
    path = write_sweep(scratch, synthetic, name=name, models={model: ["full"]}, fold_indices=FOLDS, seeds=seeds,
                       train={"epochs": epochs, "batch_size": batch, "lr": lr}, resources=resources)
    done = run_sweep(path, timeout=3600)
    if done.returncode != 0:
        sys.exit(f"{name} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")


def agreement(scratch: Path, setting: str) -> dict:
    folds = {name: table(scratch, name).set_index(["seed", "fold"]).sort_index()
             for name in (f"{setting}-inproc", f"{setting}-ddp")}
    single, spread = folds[f"{setting}-inproc"], folds[f"{setting}-ddp"]
    epochs = {name: table(scratch, name, "epochs").query("seed == 0").set_index(["fold", "epoch"]).sort_index()
              for name in (f"{setting}-inproc", f"{setting}-ddp")}
    first = [abs(epochs[f"{setting}-ddp"].loc[(f, 0), "train_loss"] - epochs[f"{setting}-inproc"].loc[(f, 0),
                                                                                                      "train_loss"])
             for f in FOLDS]
    ddp = np.array([spread.loc[(0, f), "test_ua"] - single.loc[(0, f), "test_ua"] for f in FOLDS])
    seeds = np.array([single.loc[(1, f), "test_ua"] - single.loc[(0, f), "test_ua"] for f in FOLDS])
    assert (spread["world_size"] == 2).all()
    return {"first_loss": max(first), "ddp": ddp, "seeds": seeds,
            "mean_ua": float(single.loc[0, "test_ua"].mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--inprocess-cpus", type=int, default=1,
                        help="torch threads of the in-process trials (DDP ranks keep 1 each): a thread count "
                             "changes how reductions round")
    args = parser.parse_args()
    from ser_models.data.corpora.synthetic import generate

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        synthetic = scratch / "synthetic"
        generate(synthetic, SMALL_SYNTHETIC)
        print(f"{len(FOLDS)} folds, {args.epochs} epochs, in-process trials with {args.inprocess_cpus} thread(s); "
              "test UA differences in UA points (0-1)")
        print(f"{'setting':22s} {'UA':>6s} {'1st loss':>9s} {'DDP |d| mean':>13s} {'max':>6s} {'of mean':>8s} "
              f"{'seeds |d| mean':>15s} {'max':>6s} {'of mean':>8s} {'DDP/seeds':>10s}", flush=True)
        for setting in args.settings:
            model, batch, lr = SETTINGS[setting]
            run(scratch, synthetic, f"{setting}-inproc", model, batch, lr, args.epochs, [0, 1],
                {"mode": "inprocess", "cpus_per_worker": args.inprocess_cpus})
            run(scratch, synthetic, f"{setting}-ddp", model, batch, lr, args.epochs, [0], DDP)
            found = agreement(scratch, setting)
            ddp, seeds = np.abs(found["ddp"]), np.abs(found["seeds"])
            print(f"{setting:22s} {found['mean_ua']:6.3f} {found['first_loss']:9.1e} {ddp.mean():13.4f} "
                  f"{ddp.max():6.4f} {abs(found['ddp'].mean()):8.4f} {seeds.mean():15.4f} {seeds.max():6.4f} "
                  f"{abs(found['seeds'].mean()):8.4f} {ddp.mean() / max(seeds.mean(), 1e-9):10.2f}", flush=True)


if __name__ == "__main__":
    main()
