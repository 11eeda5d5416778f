"""The data plane at 1x, 10x and 50x RAVDESS: memory of the driver and of a trial, the object store, extraction
on one node against two, a kill during extraction, each side by side with the path before the sharded cache.

    .venv/bin/python bench/data_plane.py                      # about 11 min on 2 cores
    .venv/bin/python bench/data_plane.py --nodes-scale 50     # about 15.5 min: extraction timed at 50x
    .venv/bin/python bench/data_plane.py --scales 1 10 --baseline none

Corpus: RAVDESS's 672 4-class files from ../shared/data (else a synthetic corpus of the same size), written
once and linked N times under new speaker ids (N x 24 speakers), as a manifest corpus. At each scale the same
sweep file (fbank40, lstm_attn_audio with 16 hidden units, fold 0 of 5, one epoch) runs with this checkout and
with the baseline commit (a git worktree; `--baseline none` skips it), each with its own cache; the bench
reads the peak RSS (VmHWM) of the driver and of the trial process, and the peak use of /dev/shm, where Ray's
object store lives, while it runs. Then, at the largest scale, it kills the driver (SIGKILL) once some shards
are published and counts what the rerun extracts; and it times extraction on a real `ray start` cluster of one
node of 1 CPU against two such nodes (tests/local_cluster.py) at 10x (--nodes-scale). Its last lines are
`memory_growth_50x=<trial peak RSS at 50x / at 1x>` and `extract_speedup_2nodes=<1 node / 2 nodes>`.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import shared_data_dir  # noqa: E402
from tests.local_cluster import descendants, local_cluster  # noqa: E402

BASELINE = "e9630e0"   # the last commit before the sharded cache: every frame travels in the object store
BASE_UTTERANCES = 672


def base_table(scratch: Path) -> pd.DataFrame:
    from ser_models.data.corpus import load_corpus

    data = shared_data_dir()
    if data:
        return load_corpus("ravdess", str(data / "ravdess16k"), "4").task
    from ser_models.data.corpora.synthetic import SyntheticConfig, generate

    config = SyntheticConfig(sessions=14, dialogs_per_session=4, turns_per_dialog=12, seed=5)
    generate(scratch / "synthetic", config)
    return load_corpus("synthetic", str(scratch / "synthetic"), None, **config.__dict__).task.head(BASE_UTTERANCES)


def write_manifests(base: pd.DataFrame, scratch: Path, scales: list[int]) -> dict[int, Path]:
    """Replica r of every file is a hard link under audio/r<r>/ (its own path, so its own cache entry) spoken by
    speakers '<speaker>-r<r>'; the manifest of scale N lists replicas 0..N-1."""
    rows = []
    for replica in range(max(scales)):
        folder = scratch / "audio" / f"r{replica}"
        folder.mkdir(parents=True, exist_ok=True)
        for row in base.itertuples():
            target = folder / f"{row.utt_id.replace('/', '_')}{Path(row.path).suffix}"
            if not target.exists():
                try:
                    os.link(row.path, target)
                except OSError:       # another filesystem: a copy
                    shutil.copyfile(row.path, target)
            rows.append({"replica": replica, "utt_id": f"r{replica}/{row.utt_id}", "path": str(target),
                         "label": row.label, "speaker": f"{row.speaker}-r{replica}"})
    every = pd.DataFrame(rows)
    manifests = {}
    for scale in scales:
        manifests[scale] = scratch / f"manifest-{scale}x.csv"
        every[every["replica"] < scale].drop(columns="replica").to_csv(manifests[scale], index=False)
    return manifests


def sweep_file(scratch: Path, manifest: Path, label: str) -> Path:
    sweep = {"name": "dp", "corpus": {"name": "manifest", "root": str(manifest)}, "fold_indices": [0],
             "models": {"lstm_attn_audio": {"ablations": ["full"], "options": {"hidden": 16}}}, "seeds": [0],
             "train": {"epochs": 1, "batch_size": 64}, "resources": {"mode": "inprocess"},
             "storage": str(scratch / f"results-{label}"), "cache": str(scratch / f"cache-{label}")}
    path = scratch / f"{label}.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def peak_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def is_trial(pid: int) -> bool:
    try:
        return b"ImplicitFunc" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def shm_used() -> int:
    return shutil.disk_usage("/dev/shm").used


def run_measured(checkout: Path, sweep: Path, kill_when=None) -> dict:
    """Run the sweep with `checkout`'s code; peaks of the driver, the trial processes and /dev/shm."""
    env = {**os.environ, "PYTHONPATH": str(checkout), "PYTHONUNBUFFERED": "1"}
    before = shm_used()
    started = time.perf_counter()
    driver = subprocess.Popen([sys.executable, str(checkout / "orchestration" / "sweep.py"), str(sweep)],
                              cwd=checkout, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    output: list[str] = []
    import threading

    reader = threading.Thread(target=lambda: output.extend(driver.stdout), daemon=True)
    reader.start()
    peaks = {"driver": 0, "trial": 0, "shm": 0}
    while driver.poll() is None:
        peaks["driver"] = max(peaks["driver"], peak_kb(driver.pid))
        for pid in descendants({driver.pid}):
            if is_trial(pid):
                peaks["trial"] = max(peaks["trial"], peak_kb(pid))
        peaks["shm"] = max(peaks["shm"], shm_used() - before)
        if kill_when is not None and kill_when():
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
            break
        time.sleep(0.2)
    reader.join(timeout=10)
    peaks["seconds"] = time.perf_counter() - started
    peaks["code"] = driver.returncode
    peaks["output"] = "".join(output)
    if kill_when is None and driver.returncode != 0:
        sys.exit(f"{sweep} with {checkout} failed:\n{peaks['output'][-4000:]}")
    return peaks


def fold_table(sweep: Path) -> pd.DataFrame:
    from orchestration.results.aggregate import read_table

    storage = yaml.safe_load(sweep.read_text())["storage"]
    frame = read_table(f"{storage}/dp", "folds")
    columns = ["fold", "model", "selected_epoch", "val_ua", "test_ua", "test_wa", "test_loss"]
    return frame[columns].sort_values(["fold", "model"]).reset_index(drop=True)


def shard_manifests(sweep: Path) -> list[Path]:
    cache = Path(yaml.safe_load(sweep.read_text())["cache"])
    return sorted(cache.glob("fbank40/*/shards/*.parquet"))


def kill_and_resume(scratch: Path, manifest: Path, clean: pd.DataFrame) -> tuple[int, int, int, bool]:
    """SIGKILL the driver once 2 shards of fbank40 are out; the rerun's new shards are what it extracted."""
    sweep = sweep_file(scratch, manifest, "killed")
    killed = run_measured(REPO, sweep, kill_when=lambda: len(shard_manifests(sweep)) >= 2)
    kept = len(shard_manifests(sweep))
    assert killed["code"] != 0, "the sweep finished before it could be killed"
    run_measured(REPO, sweep)
    total = len(shard_manifests(sweep))
    return kept, total - kept, total, fold_table(sweep).equals(clean)


TIMED = """
import sys, time
import ray
from ser_models.data.cache import extract
from ser_models.data.corpus import load_corpus
table = load_corpus("manifest", sys.argv[1], None).task
ray.init(logging_level="ERROR", log_to_driver=False)
started = time.perf_counter()
report = extract(table, ["fbank40"], sys.argv[2], progress=False, engine="ray")
print("SECONDS", time.perf_counter() - started, len(report.nodes))
"""


def extraction_on_nodes(scratch: Path, manifest: Path) -> tuple[float, float]:
    seconds = []
    for workers in ([], [1]):
        with local_cluster(None, head_cpus=1, worker_cpus=workers) as cluster:
            done = subprocess.run([sys.executable, "-c", TIMED, str(manifest), str(scratch / f"nodes-{len(workers)}")],
                                  cwd=REPO, env=cluster.env, capture_output=True, text=True, timeout=1800)
        line = next((text for text in done.stdout.splitlines() if text.startswith("SECONDS")), None)
        if line is None:
            sys.exit(done.stdout[-3000:] + done.stderr[-3000:])
        _, elapsed, nodes = line.split()
        assert int(nodes) == len(workers) + 1, f"{nodes} node(s) extracted, expected {len(workers) + 1}"
        seconds.append(float(elapsed))
    return seconds[0], seconds[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--baseline", default=BASELINE, help="commit of the path to compare with, or none")
    parser.add_argument("--nodes-scale", type=int, default=10, help="the scale extraction is timed on nodes at "
                        "(50: about 4 min more)")
    parser.add_argument("--workdir", help="keep the corpora and caches here (default: a temporary folder)")
    args = parser.parse_args()
    scratch = Path(args.workdir or tempfile.mkdtemp(prefix="emosweep-dataplane-"))
    scratch.mkdir(parents=True, exist_ok=True)
    scales = sorted(set(args.scales) | {args.nodes_scale})
    manifests = write_manifests(base_table(scratch), scratch, scales)
    checkouts = {"sharded": REPO}
    if args.baseline != "none":
        worktree = scratch / "baseline"
        if not worktree.exists():
            subprocess.run(["git", "worktree", "add", "--detach", str(worktree), args.baseline], cwd=REPO, check=True,
                           capture_output=True)
        checkouts["baseline"] = worktree
    try:
        rows, tables = [], {}
        for scale in args.scales:
            for label, checkout in checkouts.items():
                sweep = sweep_file(scratch, manifests[scale], f"{label}-{scale}x")
                peaks = run_measured(checkout, sweep)
                tables[label, scale] = fold_table(sweep)
                rows.append((scale, label, peaks))
                print(f"{scale:3d}x {label:9s} {peaks['seconds']:6.0f} s  driver {peaks['driver'] / 1024:6.0f} MB  "
                      f"trial {peaks['trial'] / 1024:6.0f} MB  /dev/shm {peaks['shm'] / 2**20:6.0f} MB", flush=True)
        largest = max(args.scales)
        kept, rerun, total, equal = kill_and_resume(scratch, manifests[largest], tables["sharded", largest])
        one, two = extraction_on_nodes(scratch, manifests[args.nodes_scale])
    finally:
        if "baseline" in checkouts:
            subprocess.run(["git", "worktree", "remove", "--force", str(checkouts["baseline"])], cwd=REPO,
                           capture_output=True)
        if not args.workdir:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"\n{'scale':>5s} {'utterances':>10s} {'path':9s} {'seconds':>7s} {'driver MB':>9s} {'trial MB':>8s} "
          f"{'shm MB':>7s}")
    for scale, label, peaks in rows:
        print(f"{scale:4d}x {scale * BASE_UTTERANCES:10d} {label:9s} {peaks['seconds']:7.0f} "
              f"{peaks['driver'] / 1024:9.0f} {peaks['trial'] / 1024:8.0f} {peaks['shm'] / 2**20:7.0f}")
    for scale in args.scales:
        if ("baseline", scale) in tables:
            print(f"tables_equal_{scale}x={tables['sharded', scale].equals(tables['baseline', scale])}")
    print(f"killed at {largest}x after {kept} of {total} fbank40 shards: the rerun extracted {rerun} shard(s); "
          f"tables equal to a clean run: {equal}")
    print(f"extraction at {args.nodes_scale}x: 1 node x 1 CPU {one:.1f} s, 2 nodes x 1 CPU {two:.1f} s")
    peak = {(scale, label): peaks for scale, label, peaks in rows}
    smallest = min(args.scales)
    driver_growth = (peak[largest, "sharded"]["driver"] - peak[smallest, "sharded"]["driver"]) / 1024
    print(f"driver_growth_mb={driver_growth:.0f}")
    if ("baseline", largest) in tables:
        print(f"baseline_memory_growth_{largest}x="
              f"{peak[largest, 'baseline']['trial'] / peak[smallest, 'baseline']['trial']:.2f}")
    print(f"memory_growth_{largest}x={peak[largest, 'sharded']['trial'] / peak[smallest, 'sharded']['trial']:.2f}")
    print(f"extract_speedup_2nodes={one / two:.2f}")


if __name__ == "__main__":
    main()
