"""Run a sweep: python orchestration/sweep.py [SWEEP.yaml] [--storage URI] [--restart-errored]

With no sweep file it runs the embedded demo (configs/demo.yaml) on a local
Ray instance. Every (model, ablation, fold, seed) is one trial of ONE Tune
experiment at <storage>/<name>/experiment. Running the same command again
continues an interrupted sweep: finished trials are kept, interrupted ones
resume from their last checkpoint, errored ones are retried. At the end the
Parquet tables are written to <storage>/<name>/tables/.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python orchestration/sweep.py` from a checkout
    sys.path.insert(0, str(REPO))

from orchestration.config import SweepError, load_sweep, validate  # noqa: E402

DEMO = REPO / "configs" / "demo.yaml"
os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# snapshots forced by per-epoch checkpoints are what make resume exact; the warning about them is noise here
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def storage_root(storage: str) -> str:
    return storage if "://" in storage else str(Path(storage).expanduser().resolve())


EMBEDDED_RESOURCES = {"TRAIN_DRIVER": 64}  # the embedded instance's: DDP trial drivers hold this, never a CPU


def start_ray(address: str | None, verbose: bool):
    """Join the cluster Ray finds (--address, RAY_ADDRESS, a `ray start` on this machine), else start one.

    `ray.init()` does the finding; nothing local-only is passed, because passing
    resources while joining is an error. A node that Ray starts itself reads
    RAY_OVERRIDE_RESOURCES (the autoscaler's own mechanism), which is how the
    embedded instance gets TRAIN_DRIVER; a joined cluster ignores it.
    """
    import ray

    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS")
    ours = "RAY_OVERRIDE_RESOURCES" not in os.environ
    if ours:
        os.environ["RAY_OVERRIDE_RESOURCES"] = json.dumps(EMBEDDED_RESOURCES)
    try:
        ray.init(address=address, log_to_driver=verbose, configure_logging=verbose)
    except Exception as err:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError, auth errors
        raise SweepError(
            f"cannot connect to the Ray cluster at {address or 'this machine'}: {type(err).__name__}: {err}. "
            "Fix: check the address (ray status shows it on the head), that the cluster runs the same Ray "
            "version as this environment, and, for a cluster with token authentication, export "
            "RAY_AUTH_MODE=token with the cluster's ~/.ray/auth_token; or unset RAY_ADDRESS to run locally"
        ) from None
    finally:
        if ours:
            del os.environ["RAY_OVERRIDE_RESOURCES"]
    resources = ray.cluster_resources()
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    print(f"[sweep] Ray {ray.get_runtime_context().gcs_address}: {len(nodes)} node(s), "
          f"{resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs"
          + (f", TRAIN_DRIVER {resources['TRAIN_DRIVER']:g}" if "TRAIN_DRIVER" in resources else ""), flush=True)
    return ray


def base_config(sweep, root: str) -> dict:
    """Constants merged into every trial's config."""
    return {"sweep": sweep.name, "corpus": sweep.corpus, "folds": sweep.folds, "train": sweep.train,
            "resources": sweep.resources, "cache": sweep.cache, "vectors": sweep.vectors,
            "storage_path": f"{root}/{sweep.name}", "predictions_dir": f"{root}/{sweep.name}/experiment/predictions",
            "git_commit": git_commit()}


def git_commit() -> str | None:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def prepare_features(sweep, corpus) -> int:
    """Fill the feature cache once, in the driver, before any trial starts."""
    from orchestration.task import prepare_task
    from ser_models.registry import model_inputs

    inputs = sorted({i for model, ablation in sweep.cells for i in model_inputs(model, ablation)})
    task = prepare_task(sweep.corpus, sweep.folds, inputs, sweep.cache, sweep.vectors, progress=True)
    print(f"[sweep] corpus {corpus.name}: {len(task.table)} usable utterances in {len(task.folds)} speaker-disjoint "
          f"folds, classes {task.classes}; features {sorted(task.report.stores)} ready"
          + (f", {task.oov_words} words without vectors" if task.vocab else ""))
    return len(task.folds)


def check_unchanged(sweep, experiment_marker: Path | None, uri: str) -> None:
    digest = hashlib.sha256(json.dumps(sweep.raw, sort_keys=True, default=str).encode()).hexdigest()
    if experiment_marker is None:
        return
    if experiment_marker.exists():
        stored = json.loads(experiment_marker.read_text())
        if stored["digest"] != digest:
            raise SweepError(f"{sweep.source}: the sweep file changed since {uri} was started. Fix: give the sweep a "
                             f"new name, or delete {uri} to start it over")
    else:
        experiment_marker.parent.mkdir(parents=True, exist_ok=True)
        experiment_marker.write_text(json.dumps({"digest": digest, "sweep": sweep.raw, "corpus": sweep.corpus,
                                                 "folds": sweep.folds}, indent=2, default=str))


def clear_errored_train_runs(experiment: Path) -> int:
    """--restart-errored: a restarted trial must not find its old Train snapshot."""
    from orchestration.aggregate import read_experiment

    folds = read_experiment(str(experiment), "", with_predictions=False)["folds"]
    errored = folds.loc[folds["status"] == "error", "trial_id"]
    for trial_id in errored:
        shutil.rmtree(experiment / "train" / trial_id, ignore_errors=True)
    return len(errored)


class Phases:
    """Wall time of each phase of a sweep, printed at the end (bench/orchestration.py reads the line)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._started = time.perf_counter()

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._started
        self._started = now

    def line(self) -> str:
        return "[sweep] timing: " + ", ".join(f"{name} {value:.2f} s" for name, value in self.seconds.items())


def run(sweep, restart_errored: bool = False, address: str | None = None, verbose: bool = False) -> int:
    from orchestration.task import corpus_from_config

    phases = Phases()
    validate(sweep)
    try:
        corpus = corpus_from_config(sweep.corpus)
    except (FileNotFoundError, ValueError) as err:
        raise SweepError(f"{sweep.source}: cannot load corpus: {err}") from None
    validate(sweep, corpus)
    n_folds = prepare_features(sweep, corpus)
    folds = sweep.fold_indices if sweep.fold_indices is not None else list(range(n_folds))
    if any(not 0 <= f < n_folds for f in folds):
        raise SweepError(f"{sweep.source}: fold_indices {folds} outside 0..{n_folds - 1}. Fix: correct fold_indices")
    phases.done("data")
    ray = start_ray(address, verbose)
    validate(sweep, corpus, cluster_resources=ray.cluster_resources())
    phases.done("ray_start")
    root = storage_root(sweep.storage)
    experiment = f"{root}/{sweep.name}/experiment"
    local = None if "://" in root else Path(experiment)
    check_unchanged(sweep, local.parent / "sweep.json" if local else None, experiment)
    results = fit(sweep, folds, root, experiment, local, restart_errored)
    phases.done("trials")
    # tables and report need only storage: Ray stops beside them instead of after them
    stopping = threading.Thread(target=ray.shutdown)
    stopping.start()
    try:
        return finish(sweep, root, experiment, results, phases)
    finally:
        stopping.join()
        phases.done("ray_stop")
        print(phases.line(), flush=True)


def fit(sweep, folds, root, experiment, local, restart_errored):
    from ray import tune

    from orchestration.progress import SweepProgress
    from orchestration.search import SweepSearcher
    from orchestration.trial import run_trial

    resources = sweep.resources
    if resources["mode"] == "inprocess":
        trial_resources = {"CPU": float(resources["cpus_per_worker"]), "GPU": float(resources["gpus_per_worker"])}
    else:
        trial_resources = {"TRAIN_DRIVER": 0.01}  # drivers hold no CPU: the workers need every core
    trainable = tune.with_resources(run_trial, trial_resources)
    searcher = SweepSearcher(sweep.cells, folds, sweep.seeds, sweep.search, metric="objective",
                             mode="min" if sweep.train["select_on"] == "val_loss" else "max",
                             model_options=sweep.model_options)
    progress = SweepProgress(searcher.total_trials, int(sweep.train["epochs"]))
    print(f"[sweep] {sweep.name}: {len(sweep.cells)} model/ablation cells x {searcher.samples} setting(s) x "
          f"{len(folds)} folds x {len(sweep.seeds)} seed(s) = {searcher.total_trials} trials -> {experiment}")
    if tune.Tuner.can_restore(experiment):
        if restart_errored and local is not None:
            print(f"[sweep] --restart-errored: cleared {clear_errored_train_runs(local)} errored trial(s)")
        from orchestration.aggregate import read_experiment
        finished = read_experiment(experiment, sweep.name, with_predictions=False)["folds"]["status"] == "finished"
        progress.resume(int(finished.sum()))
        print(f"[sweep] resuming: {progress.done} trials already finished")
        tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_unfinished=True,
                                   resume_errored=not restart_errored, restart_errored=restart_errored)
        attach_progress(tuner, progress)
    else:
        concurrency = resources["max_concurrent_trials"]
        tuner = tune.Tuner(
            trainable, param_space=base_config(sweep, root),
            # reuse_actors: one trial process per slot runs trial after trial (imports, data and
            # torch's lazy initialisation paid once per slot, not once per trial)
            tune_config=tune.TuneConfig(search_alg=searcher, num_samples=searcher.total_trials,
                                        max_concurrent_trials=concurrency, reuse_actors=True),
            run_config=tune.RunConfig(
                name="experiment", storage_path=f"{root}/{sweep.name}", verbose=0, callbacks=[progress],
                failure_config=tune.FailureConfig(max_failures=int(sweep.train["retries"])),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2)))
    started = time.monotonic()
    results = tuner.fit()
    print(f"[sweep] fit finished in {time.monotonic() - started:.0f} s")
    return results


def attach_progress(tuner, progress) -> None:
    """Tuner.restore takes no run config, so the progress callback goes onto the restored one (Ray 2.60 layout)."""
    try:
        tuner._local_tuner._run_config.callbacks = [progress]
    except AttributeError:
        print("[sweep] (this Ray version hides the restored run config: no progress lines while resuming)")


def finish(sweep, root, experiment, results, phases: Phases) -> int:
    from orchestration.aggregate import aggregate

    sweep_dir = f"{root}/{sweep.name}"
    tables = aggregate(sweep_dir)
    phases.done("tables")
    folds = tables["folds"]
    counts = folds.loc[~folds["model"].str.endswith("+ded"), "status"].value_counts().to_dict()
    print(f"[sweep] {sum(counts.values())} trials: {counts}; tables: {sweep_dir}/tables/"
          f"{{folds,epochs,predictions,trials,summary}}")
    summary = tables["summary"]
    if not summary.empty:
        print("[sweep] test metrics, mean +- std over folds and seeds (epoch chosen on validation):")
        for row in summary.itertuples():
            print(f"  {row.model:20s} {row.ablation:20s} UA {row.test_ua_mean:.3f} +- {row.test_ua_std:.3f}  "
                  f"WA {row.test_wa_mean:.3f} +- {row.test_wa_std:.3f}  (n={row.n})")
        write_report_safely(sweep_dir)
        phases.done("report")
    return 0 if counts.get("finished", 0) else 1


def write_report_safely(sweep_dir: str) -> None:
    """The report is a convenience: a plotting problem must never fail a finished sweep."""
    from orchestration.report import write_report

    try:
        print(f"[sweep] report: {write_report(sweep_dir)}")
    except Exception as err:  # noqa: BLE001
        print(f"[sweep] report not written ({err}); run python orchestration/report.py {sweep_dir}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", nargs="?", default=str(DEMO), help="sweep YAML (default: the embedded demo)")
    parser.add_argument("--storage", help="override the sweep's storage (path, NFS path or s3://...)")
    parser.add_argument("--restart-errored", action="store_true", help="start errored trials from scratch")
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local instance)")
    parser.add_argument("--verbose", action="store_true", help="show Ray's own logs")
    args = parser.parse_args(argv)
    try:
        sweep = load_sweep(args.sweep)
        if args.storage:
            sweep.storage = args.storage
        return run(sweep, args.restart_errored, args.address, args.verbose)
    except (SweepError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
