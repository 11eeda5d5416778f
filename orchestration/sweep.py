"""Run a sweep: python orchestration/sweep.py [SWEEP.yaml] [--storage URI] [--restart-errored]

With no sweep file it runs the embedded demo (configs/demo.yaml) on a local
Ray instance. Every (model, ablation, fold, seed) is one trial of ONE Tune
experiment at <storage>/<name>/experiment. Running the same command again
continues an interrupted sweep: finished trials are kept, interrupted ones
resume from their last checkpoint, errored ones are retried. At the end the
Parquet tables are written to <storage>/<name>/tables/.
"""
from __future__ import annotations

if __name__ == "__main__":   # first: a Ctrl-C during the imports below must not leave a module half made
    from ser_models.interrupt import defer

    defer()

import gc
import json
import os
import shlex
import sys
import threading
import time
from pathlib import Path


from orchestration import storage
from orchestration.cluster import check_listening, cluster_shapes, report_autoscaler, start_ray
from orchestration.record import STORAGE_ACCESS, git_commit, record_sweep, recorded_change, settings_digest
from orchestration.config import (OVERRIDES_HELP, SWEEP_HELP, SweepError, load_sweep, split_overrides, train_for,
                                  validate)
from orchestration.selection import CHOSEN, setting_label
from ser_models.cli import Parser, leave
from ser_models.interrupt import defer, deferred, stop_point

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


def base_config(sweep, root: str) -> dict:
    """Constants merged into every trial's config."""
    return {"sweep": sweep.name, "corpus": sweep.corpus, "test_corpora": sweep.test_corpora, "folds": sweep.folds,
            "train": sweep.train,
            "train_explicit": sweep.train_explicit, "settings": settings_digest(sweep.raw)[:12],
            "resources": sweep.resources, "cache": sweep.cache, "vectors": sweep.vectors, "encoder": sweep.encoder,
            "git_commit": git_commit()}


def prepare_features(sweep, corpus):
    """Fill the feature cache once, in the driver, before any trial starts; the Task goes to every node."""
    from orchestration.task import prepare_task
    from ser_models.data.folds import fold_warnings
    from ser_models.registry import model_inputs

    inputs = sorted({i for model, ablation in sweep.cells for i in model_inputs(model, ablation)})
    engine = "ray" if sweep.resources["extract"] == "cluster" else "threads"
    task = prepare_task(sweep.corpus, sweep.folds, inputs, sweep.cache, sweep.vectors, progress=True,
                        test_corpora=sweep.test_corpora, engine=engine, encoder=sweep.encoder)
    if task.report.nodes:
        print(f"[sweep] features extracted on {len(task.report.nodes)} node(s) with Ray Data")
    print(f"[sweep] corpus {corpus.name}: {len(task.table)} usable utterances in {len(task.folds)} speaker-disjoint "
          f"folds, classes {task.classes}; features {sorted(task.report.stores)} ready"
          + (f", {task.oov_words} words without vectors" if task.vocab else ""))
    if corpus.outside:
        print(f"[sweep] left out of the task's classes: {corpus.outside}")
    for name, frame in task.cross.items():
        print(f"[sweep] cross-corpus test set {name}: {len(frame)} utterances, {frame['speaker'].nunique()} "
              f"speakers, classes {dict(sorted(frame['label'].value_counts().items()))}")
    for line in fold_warnings(task.table, task.folds):
        print(f"[sweep] warning: {line}")
    return task


def check_storage(sweep, root: str, probe: bool = True) -> None:
    """probe: write and delete a file there (run); else only look (check, which must leave nothing behind)."""
    try:
        (storage.check_writable if probe else storage.check_could_write)(root)
    except OSError as err:
        raise SweepError(f"{sweep.source}: storage {root} is not writable: {err}. Fix: point storage (or --storage) "
                         f"at a folder you can write, or an existing bucket; {STORAGE_ACCESS}") from None


def earlier_trials(experiment: str, select_on: str, settings: str) -> tuple[dict, set]:
    """What earlier runs of the sweep left under the current settings: finished identities (with their
    objective) and errored ones. Rows of other settings are `superseded` in the tables, and not counted."""
    from orchestration.aggregate import read_experiment
    from orchestration.identity import identity_key

    found = read_experiment(experiment, "", with_predictions=False)
    redo = {gap.identity for gap in found["gaps"] if gap.identity}
    done, errored = {}, set()
    for row in found["folds"].to_dict("records"):
        key = identity_key({**row, "hparams": json.loads(row["hparams"] or "{}"), "settings": settings})
        if row["status"] == "finished" and key not in redo:
            done[key] = row.get(select_on)
        elif row["status"] == "error":
            errored.add(key)
    if redo:   # counted unfinished: their trials write the outputs again (verify.py)
        print("[sweep] finished trials whose outputs are incomplete are redone:\n"
              + "\n".join(f"  {gap.line()}" for gap in found["gaps"] if gap.identity), flush=True)
    return done, errored


def restore_searcher(searcher, experiment: str) -> None:
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


EXIT_DONE, EXIT_PROBLEM, EXIT_RESUMABLE, EXIT_FAILED_TRIALS = 0, 2, 3, 4


def preflight(sweep, probe: bool = True):
    """Every problem `run` can find before any work, for `run` and for `emosweep check` (probe=False: it only
    looks at storage). Returns the corpus, the storage root, what changed since the last run (if anything) and
    the features' plan (their bytes, which are cached)."""
    from orchestration.task import corpus_from_config, cross_tables, feature_plan
    from ser_models.data.corpus import CorpusError
    from ser_models.registry import model_inputs

    validate(sweep)
    root = storage.normalize(sweep.storage)
    check_storage(sweep, root, probe)
    try:
        corpus = corpus_from_config(sweep.corpus)
    except (FileNotFoundError, ValueError) as err:
        raise SweepError(f"{sweep.source}: cannot load corpus: {err}") from None
    validate(sweep, corpus)
    try:
        cross = cross_tables(corpus, sweep.test_corpora)
    except (FileNotFoundError, CorpusError) as err:   # a test corpus that cannot be read or mapped
        raise SweepError(f"{sweep.source}: {err}") from None
    plan = feature_plan(corpus, cross, {i for cell in sweep.cells for i in model_inputs(*cell)}, sweep.cache,
                        sweep.encoder)
    check_cache_room(sweep, plan)
    return corpus, root, recorded_change(sweep, storage.join(root, sweep.name)), plan


def check_cache_room(sweep, plan) -> None:
    """Refuse before extraction starts when the cache's disk cannot hold what extraction will write, or (a cache
    in a bucket) this node's disk cannot hold its copy of the shards."""
    from ser_models.data.shards import NODE_CACHE
    from ser_models.data.sizing import free_bytes, human

    if storage.is_remote(plan.cache_dir):
        need, folder, what = sum(plan.sizes.values()), str(NODE_CACHE), "this node's copy of the shards"
        where = f"{folder} (EMOSWEEP_NODE_CACHE)"
        fix = f"set EMOSWEEP_NODE_CACHE to a folder on a disk with {human(need * 1.1)} free on every node"
    else:
        need, folder, what = plan.to_extract, plan.cache_dir, "the features to extract"
        where = f"the cache {folder}"
        fix = f"point cache: (or EMOSWEEP_CACHE) at a disk with {human(need * 1.1)} free"
    free = free_bytes(folder)
    if need > 0.95 * free:
        each = ", ".join(f"{name} {human(size)}" for name, size in plan.sizes.items() if name not in plan.cached)
        raise SweepError(f"{sweep.source}: {what} ({each}; {human(need)} in all) do not fit in {where}: "
                         f"{human(free)} free there. Fix: {fix}")


def run(sweep, restart_errored: bool = False, address: str | None = None, verbose: bool = False) -> int:
    from orchestration.lock import DriverLock, SweepLocked

    corpus, root, change, _ = preflight(sweep)
    check_listening(address or os.environ.get("RAY_ADDRESS"))   # before anything is written to the sweep
    lock = DriverLock(storage.join(root, sweep.name))
    try:
        lock.acquire()
    except SweepLocked as err:
        raise SweepError(f"{sweep.source}: {err}") from None
    try:
        if change:
            print(f"[sweep] {change}", flush=True)
        record_sweep(sweep, storage.join(root, sweep.name))
        return run_locked(sweep, corpus, root, restart_errored, address, verbose)
    finally:
        lock.release()


def run_locked(sweep, corpus, root: str, restart_errored: bool, address: str | None, verbose: bool) -> int:
    from orchestration.aggregate import store_corpus_facts
    from orchestration.tracking import trackers
    from ser_models.data.corpus import CorpusError

    import ray

    phases = Phases()
    try:
        # the cluster extracts: Ray first (it is started once, for extraction and trials)
        if sweep.resources["extract"] == "cluster":
            start_ray(address, verbose, sweep.resources["dashboard"])
            defer()
        try:
            task = prepare_features(sweep, corpus)
        except (FileNotFoundError, CorpusError) as err:   # an audio folder that vanished since the check
            raise SweepError(f"{sweep.source}: {err}") from None
        store_corpus_facts(storage.join(root, sweep.name), corpus.table, task.folds)
        folds = sweep.fold_indices if sweep.fold_indices is not None else list(range(len(task.folds)))
        phases.done("data")
        stop_point()
        start_ray(address, verbose, sweep.resources["dashboard"])   # joins or starts it, once
        defer()
        stop_point()
        shapes = cluster_shapes(ray)
        report_autoscaler(shapes)
        validate(sweep, corpus, cluster=shapes)
        task_ref = ray.put(task)  # trials on every node read features from here: no corpus or cache needed there
        phases.done("ray_start")
        experiment = storage.join(root, sweep.name, "experiment")
        tracking = trackers(sweep.tracking, storage.join(root, sweep.name), sweep.name,
                            settings_digest(sweep.raw)[:12])
        stop_point()
        gc.freeze()   # what exists before the fit is not Tune's: the collection after it skips it (0.27 -> 0.10 s)
        limit, total = fit(sweep, folds, root, experiment, restart_errored, task_ref, shapes, tracking)
    except BaseException:
        # Ctrl-C or an error at any point once Ray may be starting: Ray must not stay attached to a process that
        # exits (it can die of a segmentation fault at interpreter teardown) or that runs main() again
        gc.unfreeze()
        ray.shutdown()
        raise
    phases.done("trials")
    defer()   # Tune's handler outlives its fit: a Ctrl-C from here on is ours, honoured once the tables are written
    # Tune's objects (actor and placement-group handles of trials that never started) are freed while Ray
    # still runs: freed after shutdown, their handles abort the process (exit 1 instead of 3, seen once)
    gc.collect()
    gc.unfreeze()
    # tables and report need only storage: Ray stops beside them instead of after them
    stopping = threading.Thread(target=ray.shutdown)
    stopping.start()
    try:
        counts, tables_written = finish(sweep, root, phases, tracking)
    finally:
        stopping.join()
        phases.done("ray_stop")
        print(phases.line(), flush=True)
    if limit.reached:
        print(f"[sweep] stopped after waiting {limit.timeout_s:g} s: {limit.progress.waiting}. Fix: add nodes "
              "or free resources, or raise resources.wait_timeout_s", flush=True)
    return outcome(sweep, root, counts, total, tables_written)


def resume_command(arguments: list[str]) -> str:
    """The command that ran this sweep, overrides included: `emosweep run ...` or `python .../sweep.py ...`."""
    program = ["python", sys.argv[0]] if sys.argv and sys.argv[0].endswith(".py") else ["emosweep", "run"]
    return shlex.join([*program, *arguments])


def outcome(sweep, root: str, counts: dict, total: int, tables_written: bool) -> int:
    """The exit code, and a last line that says what to run next."""
    command = resume_command(sweep.arguments)
    finished, failed = counts.get("finished", 0), counts.get("error", 0)
    unfinished = total - finished - failed
    sweep_dir = storage.join(root, sweep.name)
    if unfinished > 0:
        print(f"[sweep] interrupted: {finished}/{total} trials finished, {unfinished} not yet. Next: run the same "
              f"command to resume: {command}", flush=True)
        return EXIT_RESUMABLE
    if failed:
        print(f"[sweep] finished with {failed} failed trial(s) of {total}. Next: read their errors with "
              f"emosweep results show {sweep_dir} --table trials --where status=error, fix the "
              f"cause, then run: {command} --restart-errored", flush=True)
        return EXIT_FAILED_TRIALS
    if not tables_written:
        print(f"[sweep] {finished}/{total} trials finished, but their tables are not written. Next: fix what the "
              f"tables line above says, then run the same command (it trains nothing): {command}", flush=True)
        return EXIT_RESUMABLE
    print(f"[sweep] done: {finished}/{total} trials finished. Next: emosweep results show "
          f"{sweep_dir}", flush=True)
    return EXIT_DONE


def fit(sweep, folds, root, experiment, restart_errored, task_ref, shapes, tracking: list):
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    from orchestration.progress import ReportPreload, SweepProgress, WaitLimit
    from orchestration.search import SweepSearcher
    from orchestration.trial import run_trial

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
                             mode="min" if sweep.train["select_on"] == "val_loss" else "max",
                             model_options=sweep.model_options, settings=settings_digest(sweep.raw)[:12],
                             publish_to=storage.join(root, sweep.name, "optuna.journal"))
    epochs = [int(train_for(model, sweep.train_explicit)["epochs"]) for model, _ in sweep.cells]
    progress = SweepProgress(searcher.total_trials, round(sum(epochs) / len(epochs)), resources=resources,
                             shapes=shapes)
    limit = WaitLimit(progress, float(resources["wait_timeout_s"]))
    print(f"[sweep] {sweep.name}: {len(sweep.cells)} model/ablation cells x {searcher.samples} setting(s) x "
          f"{len(folds)} folds x {len(sweep.seeds)} seed(s) = {searcher.total_trials} trials -> {experiment}")
    # every run is a fresh Tune experiment in the same folder: Tune's pickled state is never loaded back.
    # Earlier runs are read from the trials' own JSON results and weights-only checkpoints instead.
    done, errored = earlier_trials(experiment, sweep.train["select_on"], settings_digest(sweep.raw)[:12])
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
            callbacks=[progress, ReportPreload(), JsonLoggerCallback(), *tracking],
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


def in_sweep(folds, sweep):
    """Rows of the sweep file's current cells (a file that dropped cells keeps their rows in the tables)."""
    cells = folds[["model", "ablation"]].apply(tuple, axis=1).isin(set(sweep.cells))
    chosen = folds["fold"].isin(sweep.fold_indices) if sweep.fold_indices is not None else True
    return cells & folds["seed"].isin(sweep.seeds) & chosen


def finish(sweep, root, phases: Phases, tracking: list) -> tuple[dict, bool]:
    """Tables and report; returns the count of trials per status and whether the tables were written."""
    from orchestration.aggregate import collect, write_tables
    from orchestration.verify import report

    sweep_dir = storage.join(root, sweep.name)
    tables = collect(sweep_dir)
    gaps = tables.pop("gaps")
    folds = tables["folds"]
    counts = folds.loc[in_sweep(folds, sweep), "status"].value_counts().to_dict()
    if gaps:
        print(f"[sweep] tables NOT written: {report(gaps)}", flush=True)
        return counts, False
    try:
        write_tables(tables, sweep_dir)
    except OSError as err:  # a full disk or lost permissions: the results stay in the experiment's files
        print(f"[sweep] {sum(counts.values())} trials: {counts}; tables NOT written ({err}). Fix: free space or "
              f"restore access to {sweep_dir}, then: emosweep results aggregate {sweep_dir}",
              flush=True)
        return counts, False
    phases.done("tables")
    print(f"[sweep] {sum(counts.values())} trials: {counts}; tables: {sweep_dir}/tables/"
          f"{{folds,epochs,predictions,trials,summary,cross}}")
    summary = tables["summary"]
    if not summary.empty:
        print("[sweep] test metrics, mean +- std over folds and seeds (epoch chosen on validation):")
        for row in summary.itertuples():
            setting = setting_label(row.hparams)
            print(f"  {row.model:20s} {row.ablation:20s} UA {row.test_ua_mean:.3f} +- {row.test_ua_std:.3f}  "
                  f"WA {row.test_wa_mean:.3f} +- {row.test_wa_std:.3f}  (n={row.n})"
                  + (f"  {setting}" if row.hparams == CHOSEN else
                     f"  {setting}; kept in {row.val_chosen_folds}/{row.n_folds} folds" if setting else ""))
        stop_point()   # the tables are written: a stop asked for meanwhile skips only the report and tracking
        write_report_safely(sweep_dir)
        phases.done("report")
    for tracker in tracking:
        stop_point()
        publish_safely(tracker, tables, sweep_dir, sweep_facts(sweep, folds))
        for line in tracker.where():
            print(f"[sweep] tracking: {line}")
    return counts, True


def sweep_facts(sweep, folds) -> dict:
    """What a tracker's sweep-level run records about the sweep: enough to tell sweeps apart when comparing."""
    classes = next((list(c) for c in folds["classes"] if c is not None), [])
    return {"sweep_file": str(sweep.source), "corpus": sweep.corpus["name"],
            "corpus_root": str(sweep.corpus.get("root") or ""), "folds": sweep.folds or "the corpus's own",
            "classes": ",".join(classes), "cells": ",".join(f"{m}/{a}" for m, a in sweep.cells),
            "seeds": ",".join(map(str, sweep.seeds)), "git_commit": git_commit() or "unknown"}


def publish_safely(tracker, tables: dict, sweep_dir: str, facts: dict) -> None:
    """Final metrics and figures to the trackers; like the report, a tracker's problem never fails the sweep."""
    figures = None if storage.is_remote(sweep_dir) else Path(sweep_dir) / "figures"
    try:
        tracker.publish(tables, figures, facts)
    except Exception as err:  # noqa: BLE001 - a tracking server down or full must not lose the sweep's result
        print(f"[sweep] tracking: final metrics not logged ({type(err).__name__}: {str(err)[:300]}). Fix: check "
              "the tracking section, then run the same command again: it logs them without training", flush=True)


def write_report_safely(sweep_dir: str) -> None:
    """The report is a convenience: a plotting problem must never fail a finished sweep."""
    from orchestration.report import write_report

    try:
        print(f"[sweep] report: {write_report(sweep_dir)}")
    except Exception as err:  # noqa: BLE001
        print(f"[sweep] report not written ({err}); run emosweep report {sweep_dir}")


def main(argv=None) -> int:
    parser = Parser(description=__doc__)
    parser.add_argument("sweep", nargs="?", help=SWEEP_HELP)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP)
    parser.add_argument("--storage", help="override the sweep's storage (path, NFS path or s3://...)")
    parser.add_argument("--restart-errored", action="store_true", help="start errored trials from scratch")
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local instance)")
    parser.add_argument("--verbose", action="store_true", help="show Ray's own logs")
    parser.add_argument("--check", action="store_true",
                        help="preflight only: nodes, resources, autoscaler maxima, versions per node, storage and "
                             "object store reachable from every node; exit 2 on any problem")
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(arguments)
    with deferred():
        try:
            path, overrides = split_overrides(args.sweep, args.overrides)
            sweep = load_sweep(path, overrides)
            sweep.arguments = [arg for arg in arguments if arg != "--restart-errored"]
            if args.storage:
                sweep.storage = args.storage
            if args.check:
                from orchestration.doctor import check

                return check(sweep, args.address, args.verbose)
            stop_point()
            return run(sweep, args.restart_errored, args.address, args.verbose)
        except (SweepError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            return EXIT_PROBLEM
        except KeyboardInterrupt:   # a stop point honoured a Ctrl-C or SIGTERM outside the trials
            print(f"[sweep] interrupted before the sweep's end; nothing finished is lost. Next: run the same "
                  f"command to resume: {resume_command(arguments)}", flush=True)
            return EXIT_RESUMABLE

if __name__ == "__main__":
    leave(main())
