"""Feature extraction on the cluster (`resources.extract: cluster`, Ray Data) against the driver's threads.

    .venv/bin/python bench/extract_cluster.py [--features fbank40 spec257] [--corpus ravdess|synthetic]
    .venv/bin/python bench/extract_cluster.py --features ssl_layers --encoder FOLDER   # an SSL encoder's layers

On a real `ray start` cluster on this machine (tests/local_cluster.py), with a fresh cache each time:
  1. the driver path (threads) limited to 1 CPU: the baseline;
  2. Ray Data on one node of 1 CPU;
  3. Ray Data on two nodes of 1 CPU each (a head and a second `ray start` node).
RAVDESS from ../shared/data when present (672 4-class files), else a larger synthetic corpus. The last line
is `extract_speedup_2nodes=<1-node Ray Data time / 2-node time>`. On one machine both nodes share its disk
and memory bus, so this measures whether the work spreads, not what separate machines gain.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import shared_data_dir  # noqa: E402
from tests.local_cluster import local_cluster  # noqa: E402

TIMED = """
import sys, time, json
from orchestration.run.task import corpus_from_config
from orchestration.run.task import configured_features
from ser_models.data.cache import extract
import ray
corpus = corpus_from_config(json.loads(sys.argv[1]))
engine, cache, names = sys.argv[2], sys.argv[3], sys.argv[4].split(",")
configured = configured_features(json.loads(sys.argv[5]))
table = corpus.task.head(int(sys.argv[6])) if int(sys.argv[6]) else corpus.task
if engine == "ray":
    ray.init(logging_level="ERROR", log_to_driver=False)
started = time.perf_counter()
report = extract(table, names, cache, progress=False, engine=engine, workers=1, configured=configured)
print("SECONDS", time.perf_counter() - started, len(report.nodes), len(table))
"""


def timed(corpus: dict, engine: str, cache: Path, names: list[str], env: dict | None = None,
          encoder: dict | None = None, limit: int = 0) -> tuple[float, int, int]:
    import json

    done = subprocess.run([sys.executable, "-c", TIMED, json.dumps(corpus), engine, str(cache), ",".join(names),
                           json.dumps(encoder), str(limit)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    line = next((text for text in done.stdout.splitlines() if text.startswith("SECONDS")), None)
    if line is None:
        sys.exit(done.stdout[-3000:] + done.stderr[-3000:])
    _, seconds, nodes, utterances = line.split()
    return float(seconds), int(nodes), int(utterances)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", nargs="+", default=["fbank40", "spec257"])
    parser.add_argument("--corpus", choices=["ravdess", "synthetic"], default=None)
    parser.add_argument("--encoder", help="a checkpoint folder for the ssl_layers feature")
    parser.add_argument("--utterances", type=int, default=0, help="only the first N of the task (0: all)")
    args = parser.parse_args()
    encoder = {"model": args.encoder} if args.encoder else None
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        data = shared_data_dir()
        if (args.corpus or ("ravdess" if data else "synthetic")) == "ravdess":
            corpus = {"name": "ravdess", "root": str(data / "ravdess16k"), "classes": "4"}
        else:
            from ser_models.data.corpora.synthetic import SyntheticConfig, generate

            config = SyntheticConfig(sessions=10, dialogs_per_session=4, turns_per_dialog=12, seed=3)
            generate(scratch / "synthetic", config)
            corpus = {"name": "synthetic", "root": str(scratch / "synthetic"), **config.__dict__}
        rows = []
        threads, _, utterances = timed(corpus, "threads", scratch / "cache-threads", args.features,
                                       encoder=encoder, limit=args.utterances)
        rows.append(("driver, 1 worker", threads, 1))
        for label, workers in (("Ray Data, 1 node x 1 CPU", []), ("Ray Data, 2 nodes x 1 CPU", [1])):
            with local_cluster(None, head_cpus=1, worker_cpus=workers) as cluster:
                seconds, nodes, _ = timed(corpus, "ray", scratch / f"cache-{len(workers)}", args.features,
                                          cluster.env, encoder, args.utterances)
            rows.append((label, seconds, nodes))
    print(f"{corpus['name']}: {utterances} utterances, features {', '.join(args.features)}")
    print(f"{'path':28s} {'seconds':>8s} {'nodes':>6s} {'utt/s':>7s} {'vs threads':>11s}")
    for label, seconds, nodes in rows:
        print(f"{label:28s} {seconds:8.1f} {nodes:6d} {utterances / seconds:7.1f} {threads / seconds:11.2f}")
    print(f"extract_speedup_2nodes={rows[1][1] / rows[2][1]:.2f}")


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"(bench took {time.perf_counter() - started:.0f} s)")
