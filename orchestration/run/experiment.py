"""One Tune experiment per run of a sweep: the trainable, the searcher restored from its saved state, the
trials earlier runs finished, and Tune's run configuration. Every run is a fresh experiment in the same
folder: Tune's pickled state is never loaded back."""
from __future__ import annotations

import gc
import json
import os
import time

from orchestration.config.record import git_commit, settings_digest
from orchestration.config.sweep_file import SweepError
from orchestration.store import storage
from ser_models.interrupt import defer

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # annotations only
    from orchestration.config.capacity import NodeShape
    from orchestration.config.sweep_file import Sweep
    from orchestration.run.progress import WaitLimit
    from orchestration.run.search import SweepSearcher
    from ray import ObjectRef


def quiet_tune() -> None:
    """Ray's and Tune's settings for a sweep's driver, set before Ray starts (its processes inherit them)."""
    os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # snapshots forced by per-epoch checkpoints are what make resume exact; the warning about them is noise here
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Tune's own TensorBoard and CSV loggers write beside the trials and print a TensorBoard hint of their own;
    # the tables read result.json (its JSON logger, passed explicitly), and tracking: is where TensorBoard is ours
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # the [sweep] lines say what happens to each trial (progress.py): Tune's own boxes and a failed attempt's
    # traceback (a lost node's ActorUnavailableError) repeat it as noise; error.txt keeps the traceback
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")


def base_config(sweep: Sweep, root: str) -> dict:
    """Constants merged into every trial's config."""
    return {"sweep": sweep.name, "corpus": sweep.corpus, "test_corpora": sweep.test_corpora, "folds": sweep.folds,
            "settings": settings_digest(sweep.raw)[:12],
            "resources": sweep.resources, "cache": sweep.cache, "vectors": sweep.vectors, "encoder": sweep.encoder,
            "git_commit": git_commit()}


def restore_searcher(searcher: SweepSearcher, experiment: str) -> None:
    """The searcher's newest saved state (its own JSON, under Tune's file name), from local disk or a bucket."""
    import tempfile

    from pyarrow import fs

    filesystem, path = storage.resolve(experiment)
    try:
        infos = filesystem.get_file_info(fs.FileSelector(path))
    except (FileNotFoundError, OSError):
        return
    saved = sorted(i.path for i in infos if i.base_name.startswith("searcher-state-") and i.type == fs.FileType.File)
    if not saved:
        return
    with tempfile.TemporaryDirectory() as scratch:
        local = f"{scratch}/searcher-state.json"
        with filesystem.open_input_stream(saved[-1]) as stream, open(local, "wb") as out:
            out.write(stream.read())
        try:
            searcher.restore(local)
        except (ValueError, KeyError) as err:
            # not JSON: a write cut short (Tune's copy into a full disk, a kill). A grid needs no saved state:
            # its finished trials say what is left. A search would lose what Optuna learnt: the user decides
            if isinstance(err, json.JSONDecodeError) and searcher.space is None:
                print(f"[sweep] warning: {saved[-1]} was cut short (was the disk full?); the grid resumes from its "
                      f"finished trials", flush=True)
                return
            raise SweepError(f"{saved[-1]}: the searcher's saved state is unreadable ({str(err)[:160]}; a full disk "
                             "or a kill can cut it short). Fix: delete it; finished trials are kept, and the search "
                             "asks Optuna afresh") from None


def clear_train_runs(experiment: str, keys: set) -> None:
    """--restart-errored: a restarted DDP trial must not find its old Train snapshot."""
    for key in keys:
        storage.delete_dir(storage.join(experiment, "train", key))


def fit(sweep: Sweep, folds: list[int], root: str, experiment: str, restart_errored: bool, task_ref: ObjectRef,
        shapes: list[NodeShape], callbacks: list,
        read_earlier: Callable[[], tuple[dict, set]]) -> tuple[WaitLimit, int]:
    """Run the sweep's pending trials; returns (the wait limit, the number of trials).

    callbacks: Tune callbacks besides progress and the JSON logger (trackers, the report's preload).
    read_earlier: () -> (finished identities with their objective, errored identities) of earlier runs."""
    gc.freeze()   # what exists before the fit is not Tune's: the collection after it skips it (0.27 -> 0.10 s)
    try:
        return tune_experiment(sweep, folds, root, experiment, restart_errored, task_ref, shapes, callbacks,
                               read_earlier)
    finally:
        defer()   # Tune's handler outlives its fit: a Ctrl-C from here on is the sweep's, honoured at its stop points
        # Tune's objects (actor and placement-group handles of trials that never started) sit in reference
        # cycles: collected here, while Ray still runs. Collected after shutdown, their handles abort the
        # process (exit 1 instead of 3, seen once)
        gc.collect()
        gc.unfreeze()


def tune_experiment(sweep: Sweep, folds: list[int], root: str, experiment: str, restart_errored: bool,
                    task_ref: ObjectRef, shapes: list[NodeShape], callbacks: list,
                    read_earlier: Callable[[], tuple[dict, set]]) -> tuple[WaitLimit, int]:
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    from orchestration.run.progress import SweepProgress, WaitLimit
    from orchestration.run.search import SweepSearcher
    from orchestration.run.trial import run_trial

    resources = sweep.resources
    if resources["mode"] == "inprocess":
        trial_resources = {"CPU": float(resources["cpus_per_worker"]), "GPU": float(resources["gpus_per_worker"])}
    else:
        trial_resources = {"TRAIN_DRIVER": 0.01}  # drivers hold no CPU: the workers need every core
    # a list: with_parameters stores it once, and the reference inside reaches DDP workers unresolved.
    # Storage paths travel the same way, given anew by every run: a moved sweep folder resumes in place
    places = {"storage_path": storage.join(root, sweep.name),
              "predictions_dir": storage.join(experiment, "predictions")}
    trainable = tune.with_resources(tune.with_parameters(run_trial, shipped=[task_ref], places=places),
                                    trial_resources)
    searcher = SweepSearcher(sweep.cells, folds, sweep.seeds, sweep.search, metric="objective",
                             mode="min" if sweep.select_on() == "val_loss" else "max", train_of=sweep.train_of,
                             model_options=sweep.model_options, settings=settings_digest(sweep.raw)[:12],
                             publish_to=storage.join(root, sweep.name, "optuna.journal"))
    epochs = [int(sweep.train_of(model)["epochs"]) for model, _ in sweep.cells]
    progress = SweepProgress(searcher.total_trials, round(sum(epochs) / len(epochs)), resources=resources,
                             shapes=shapes)
    limit = WaitLimit(progress, float(resources["wait_timeout_s"]))
    print(f"[sweep] {sweep.name}: {len(sweep.cells)} model/ablation cells x {searcher.samples} setting(s) x "
          f"{len(folds)} folds x {len(sweep.seeds)} seed(s) = {searcher.total_trials} trials -> {experiment}")
    # every run is a fresh Tune experiment in the same folder: Tune's pickled state is never loaded back.
    # Earlier runs are read from the trials' own JSON results and weights-only checkpoints instead.
    done, errored = read_earlier()
    restore_searcher(searcher, experiment)
    searcher.resume(done, fresh=errored if restart_errored else set())
    if restart_errored and errored:
        clear_train_runs(experiment, errored)
        print(f"[sweep] --restart-errored: {len(errored)} errored trial(s) start from scratch")
    if done:
        progress.resume(min(len(done), searcher.total_trials))
        print(f"[sweep] resuming: {len(done)} trials already finished")
    if not searcher.pending():
        return limit, searcher.total_trials
    concurrency = resources["max_concurrent_trials"]
    tuner = tune.Tuner(
        trainable, param_space=base_config(sweep, root),
        # reuse_actors: one trial process per slot runs trial after trial (imports, data and
        # torch's lazy initialisation paid once per slot, not once per trial)
        # an upper bound: the searcher says when it has nothing left
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=searcher.total_trials,
                                    max_concurrent_trials=concurrency, reuse_actors=True),
        run_config=tune.RunConfig(
            name="experiment", storage_path=f"{root}/{sweep.name}", verbose=0, stop=limit,
            callbacks=[progress, JsonLoggerCallback(), *callbacks],
            failure_config=tune.FailureConfig(max_failures=int(sweep.train["retries"])),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2)))
    started = time.monotonic()
    try:
        tuner.fit()
    except Exception as err:  # noqa: BLE001 - e.g. Tune reading its own file cut short by a full disk
        # the trials' files are what the tables come from; the exit code then says what is missing
        print(f"[sweep] Ray Tune stopped with {type(err).__name__}: {str(err)[:300]}", flush=True)
    print(f"[sweep] fit finished in {time.monotonic() - started:.0f} s")
    return limit, searcher.total_trials
