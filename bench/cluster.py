"""Cluster figures on a real multi-node Ray cluster started with `ray start` on this machine.

    .venv/bin/python bench/cluster.py [--epochs 3]

1. cluster start -> first trial running: `ray start` of a head shaped like
   cluster.yaml's (TRAIN_DRIVER) and one worker node, then the sweep command,
   until the first trial has started;
2. per-trial start-up on the worker node vs the head: a trial's first
   iteration minus its first epoch (process, imports, features from the
   object store, model build), for the first trial on each node;
3. one DDP trial with 2 workers x 1 CPU on 2 nodes (1 CPU each) vs on 1 node
   (2 CPUs), same fold, seed and work; ratio = 2 nodes / 1 node.
On one machine both "nodes" share the cores and the disk: (3) measures the
cost of the cross-node path (object transfer, gloo over TCP between raylets),
not the gain of more hardware.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import SMALL_SYNTHETIC  # noqa: E402
from tests.local_cluster import local_cluster  # noqa: E402
from tests.sweeps import sweep_command, table, write_sweep  # noqa: E402


def head_node_id(cluster) -> str:
    code = ("import ray; ray.init(log_to_driver=False); "
            "print(next(n['NodeID'] for n in ray.nodes() if n['Alive'] and 'TRAIN_DRIVER' in n['Resources']))")
    return subprocess.run([sys.executable, "-c", code], env=cluster.env, capture_output=True, text=True,
                          timeout=120).stdout.strip().splitlines()[-1]


def first_results(experiment: Path) -> dict[str, dict]:
    found = {}
    for result in experiment.glob("*/result.json"):
        lines = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        if lines:
            found[lines[0]["trial_id"]] = lines[0]
    return found


def start_to_first_trial(scratch: Path, synthetic: Path) -> dict:
    started = time.perf_counter()
    with local_cluster('{"TRAIN_DRIVER": 64}', head_cpus=1, worker_cpus=[1]) as cluster:
        cluster_up = time.perf_counter() - started
        # trials of a few seconds: short enough to be quick, long enough that both nodes get one
        path = write_sweep(scratch, synthetic, name="startup", fold_indices=[0, 1, 2, 3],
                           train={"epochs": 30, "batch_size": 2, "lr": 1e-3})
        experiment = scratch / "results" / "startup" / "experiment"
        driver = subprocess.Popen(sweep_command(path), cwd=REPO, env=cluster.env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        while not list(experiment.glob("*/params.json")):
            time.sleep(0.05)
        first_trial = time.perf_counter() - started
        driver.wait(timeout=900)
        head = head_node_id(cluster)
    trials = table(scratch, "startup", "trials").set_index("trial_id")
    startup = {"head": [], "worker": []}
    for trial_id, result in first_results(experiment).items():
        node = trials.loc[trial_id, "worker_nodes"][0]
        startup["head" if node == head else "worker"].append(result["time_this_iter_s"] - result["epoch_seconds"])
    return {"cluster_up_s": cluster_up, "start_to_first_trial_s": first_trial, "startup_s": startup}


def ddp_trial_seconds(scratch: Path, synthetic: Path, epochs: int, nodes: int) -> float:
    workers = [1] if nodes == 2 else []
    with local_cluster('{"TRAIN_DRIVER": 64}', head_cpus=3 - nodes, worker_cpus=workers) as cluster:
        name = f"ddp{nodes}"
        path = write_sweep(scratch, synthetic, name=name, fold_indices=[0],
                           train={"epochs": epochs, "batch_size": 8, "lr": 3e-3},
                           resources={"mode": "ddp", "workers_per_trial": 2, "cpus_per_worker": 1})
        done = subprocess.run(sweep_command(path), cwd=REPO, env=cluster.env, capture_output=True, text=True,
                              timeout=900)
        if done.returncode != 0:
            sys.exit(done.stdout[-3000:] + done.stderr[-3000:])
    trials = table(scratch, name, "trials")
    assert len(set(trials.loc[0, "worker_nodes"])) == nodes, trials.loc[0, "worker_nodes"]
    return float(trials.loc[0, "time_total_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    from ser_models.data.corpora.synthetic import generate

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        synthetic = scratch / "synthetic"
        generate(synthetic, SMALL_SYNTHETIC)
        startup = start_to_first_trial(scratch, synthetic)
        one, two = (ddp_trial_seconds(scratch, synthetic, args.epochs, nodes) for nodes in (1, 2))
    print(f"ray start, head + 1 worker node:            {startup['cluster_up_s']:.1f} s")
    print(f"cluster start -> first trial running:       {startup['start_to_first_trial_s']:.1f} s")
    for where, values in startup["startup_s"].items():
        print(f"trial start-up on the {where:6s} (first iteration - epoch): "
              + ", ".join(f"{v:.2f} s" for v in sorted(values)))
    print(f"DDP trial, 2 workers x 1 CPU, {args.epochs} epochs: 1 node {one:.1f} s, 2 nodes {two:.1f} s")
    print(f"ddp_two_nodes_ratio={two / one:.2f}")


if __name__ == "__main__":
    main()
