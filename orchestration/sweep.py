"""Run a sweep: python orchestration/sweep.py [SWEEP.yaml] [--storage URI] [--restart-errored]

With no sweep file it runs the embedded demo (configs/demo.yaml) on a local
Ray instance. Every (model, ablation, fold, seed) is one trial of ONE Tune
experiment at <storage>/<name>/experiment. Running the same command again
continues an interrupted sweep: finished trials are kept, interrupted ones
resume from their last checkpoint, errored ones are retried. At the end the
Parquet tables are written to <storage>/<name>/tables/.
"""
from __future__ import annotations

import gc
import hashlib
import json
import os
import shlex
import sys
import threading
import time
from pathlib import Path

import yaml

from orchestration import storage
from orchestration.config import (OVERRIDES_HELP, SWEEP_HELP, SweepError, load_sweep, split_overrides, train_for,
                                  validate)
from orchestration.selection import CHOSEN, setting_label
from ser_models.cli import Parser, leave

REPO = Path(__file__).resolve().parents[1]     # a checkout's root: its git commit is recorded with each sweep
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


EMBEDDED_RESOURCES = {"TRAIN_DRIVER": 64}  # the embedded instance's: DDP trial drivers hold this, never a CPU


def init_ray(ray, address: str | None, **options):
    """ray.init; through Ray Client, retried twice when the head fails to spawn this client's server process.

    The proxier forks that process from a threaded gRPC server; under load the child at times dies at birth
    ("Starting Ray client server failed", or an "Initialization failure from server" naming a zombie
    process, ray-project/ray#63408). The next attempt gets a fresh one.
    """
    for attempt in range(3):
        try:
            return ray.init(address=address, **options)
        except ConnectionError as err:
            if not str(address or "").startswith("ray://") or not spawn_failure(err) or attempt == 2:
                raise
            print(f"[sweep] the cluster's Ray Client server did not start (attempt {attempt + 1}); trying again",
                  flush=True)
            time.sleep(3)


def spawn_failure(err: ConnectionError) -> bool:
    return any(sign in str(err) for sign in ("client server failed", "Initialization failure from server"))


def start_ray(address: str | None, verbose: bool, dashboard: bool = False):
    """Join the cluster Ray finds (--address, RAY_ADDRESS, a `ray start` on this machine), else start one.

    `ray.init()` does the finding; nothing local-only is passed, because passing
    resources while joining is an error. A node that Ray starts itself reads
    RAY_OVERRIDE_RESOURCES (the autoscaler's own mechanism), which is how the
    embedded instance gets TRAIN_DRIVER; a joined cluster ignores it, and include_dashboard too.
    """
    import ray

    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS")
    check_listening(address)
    ours = "RAY_OVERRIDE_RESOURCES" not in os.environ
    if ours:
        os.environ["RAY_OVERRIDE_RESOURCES"] = json.dumps(EMBEDDED_RESOURCES)
    try:
        # through Ray Client the Tune loop and its progress lines run on the head: their output must come back
        client = str(address or "").startswith("ray://")
        local = {} if client else {"include_dashboard": dashboard}   # Ray Client accepts no node options
        context = init_ray(ray, address, log_to_driver=verbose or client, configure_logging=verbose, **local)
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
          + (f", TRAIN_DRIVER {resources['TRAIN_DRIVER']:g}" if "TRAIN_DRIVER" in resources else "")
          + (f"; dashboard http://{context.dashboard_url}" if getattr(context, "dashboard_url", None) else ""),
          flush=True)
    return ray


def stop_on_sigterm() -> None:
    """SIGTERM (what Slurm, Kubernetes, systemd and `timeout` send) stops the sweep as Ctrl-C does: resumably,
    exit 3, with the Ray it started stopped. Installed again once Ray runs: ray.init installs a handler of its
    own that aborts the process with a native stack dump and leaves Ray's processes behind."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        return

    def as_ctrl_c(signum, frame):
        handler = signal.getsignal(signal.SIGINT)    # Tune's own while trials run: they stop resumably
        if not callable(handler):
            raise KeyboardInterrupt
        handler(signal.SIGINT, frame)

    signal.signal(signal.SIGTERM, as_ctrl_c)


def check_listening(address: str | None) -> None:
    """Fail in seconds, not after Ray's minutes of reconnecting, when nothing listens at a host:port address."""
    import socket

    if not address or address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not port.isdigit():
        return
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=10).close()
    except OSError as err:
        raise SweepError(f"nothing answers at the Ray address {address} ({err}). Fix: start the cluster (ray up, or "
                         f"ray start --head), check the address (`ray status` on the head prints it), or unset "
                         f"RAY_ADDRESS / drop --address to run on this machine") from None


def cluster_shapes(ray) -> list:
    """Live nodes plus the worker node types the autoscaler may add (orchestration/capacity.py)."""
    from orchestration.capacity import autoscaler_shapes, live_shapes

    return live_shapes(ray.nodes()) + autoscaler_shapes()


def report_autoscaler(shapes) -> None:
    from orchestration.capacity import format_resources

    addable = [shape for shape in shapes if not shape.live]
    if addable:
        print("[sweep] the autoscaler can add: " + ", ".join(
            f"{shape.name} up to {shape.count} x {format_resources(shape.resources)}" for shape in addable), flush=True)


def base_config(sweep, root: str) -> dict:
    """Constants merged into every trial's config."""
    return {"sweep": sweep.name, "corpus": sweep.corpus, "test_corpora": sweep.test_corpora, "folds": sweep.folds,
            "train": sweep.train,
            "train_explicit": sweep.train_explicit, "settings": settings_digest(sweep.raw)[:12],
            "resources": sweep.resources, "cache": sweep.cache, "vectors": sweep.vectors,
            "git_commit": git_commit()}


def git_commit() -> str | None:
    """The checkout's commit: git if it runs here, else read from .git (cluster images may lack git,
    or refuse a checkout owned by another user)."""
    import subprocess

    try:
        found = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                               timeout=10).stdout.strip()
        if found:
            return found
    except (OSError, subprocess.SubprocessError):
        pass
    return read_git_head(REPO / ".git")


def read_git_head(git_dir: Path) -> str | None:
    try:
        head = (git_dir / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head or None
        ref = head[5:]
        if (git_dir / ref).exists():
            return (git_dir / ref).read_text().strip()
        for line in (git_dir / "packed-refs").read_text().splitlines():
            if line.endswith(f" {ref}"):
                return line.split()[0]
    except OSError:
        pass
    return None


def prepare_features(sweep, corpus):
    """Fill the feature cache once, in the driver, before any trial starts; the Task goes to every node."""
    from orchestration.task import prepare_task
    from ser_models.data.folds import fold_warnings
    from ser_models.registry import model_inputs

    inputs = sorted({i for model, ablation in sweep.cells for i in model_inputs(model, ablation)})
    task = prepare_task(sweep.corpus, sweep.folds, inputs, sweep.cache, sweep.vectors, progress=True,
                        test_corpora=sweep.test_corpora)
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


STORAGE_ACCESS = ("for S3 give credentials (AWS_* variables or an instance profile) and, for MinIO or moto, "
                  "AWS_ENDPOINT_URL")


def check_storage(sweep, root: str, probe: bool = True) -> None:
    """probe: write and delete a file there (run); else only look (check, which must leave nothing behind)."""
    try:
        (storage.check_writable if probe else storage.check_could_write)(root)
    except OSError as err:
        raise SweepError(f"{sweep.source}: storage {root} is not writable: {err}. Fix: point storage (or --storage) "
                         f"at a folder you can write, or an existing bucket; {STORAGE_ACCESS}") from None


def settings_digest(raw: dict) -> str:
    """What decides a trial's numbers, without the list of cells: models may gain or lose ablations, and
    seeds and fold_indices may change, between runs of one sweep (only the new cells then run)."""
    models = {name: entry["options"] for name, entry in (raw.get("models") or {}).items()
              if isinstance(entry, dict) and entry.get("options")}
    settings = {k: v for k, v in raw.items() if k not in ("models", "seeds", "fold_indices", "name", "storage",
                                                          "cache", "resources", "train", "tracking",
                                                          "ensembles")}
    # of resources and train, what changes no number: how many trials run at once, how long to wait, retries,
    # the dashboard
    settings["resources"] = {k: v for k, v in (raw.get("resources") or {}).items()
                             if k not in ("max_concurrent_trials", "wait_timeout_s", "dashboard")}
    settings["train"] = {k: v for k, v in (raw.get("train") or {}).items() if k not in ("retries", "num_workers")}
    return hashlib.sha256(json.dumps({**settings, "model_options": models}, sort_keys=True,
                                     default=str).encode()).hexdigest()


def recorded_change(sweep, sweep_dir: str) -> str | None:
    """What changed since <sweep_dir>/sweep.json recorded the sweep file (None: nothing, or a new sweep);
    a change the finished trials cannot be told apart under is refused."""
    marker = storage.join(sweep_dir, "sweep.json")
    try:
        text = storage.read_text(marker)
    except OSError as err:
        raise SweepError(f"cannot read {marker}: {err}. Fix: check the storage location; {STORAGE_ACCESS}") from None
    if text is None:
        return None
    stored = stored_record(text, marker)
    if "settings_digest" not in stored and stored.get("digest") != full_digest(sweep.raw):
        raise SweepError(f"{sweep.source}: the sweep file changed since {sweep_dir} was started, and its "
                         "sweep.json predates per-trial settings, so the finished trials cannot be told apart. "
                         f"Fix: give the sweep a new name, or delete {sweep_dir} to start it over")
    digest = settings_digest(sweep.raw)
    if stored.get("settings_digest", digest) != digest:
        return (f"settings that decide the numbers changed since the last run ({changed_keys(stored, sweep)}): "
                "every trial runs anew; the earlier rows stay in the tables with status superseded")
    if stored.get("sweep") != sweep.raw:
        return "the sweep file's cells changed since the last run: finished trials are kept, new ones run"
    return None


def record_sweep(sweep, sweep_dir: str) -> None:
    record = {"settings_digest": settings_digest(sweep.raw), "sweep": sweep.raw, "corpus": sweep.corpus,
              "folds": sweep.folds, "git_commit": git_commit()}
    storage.write_text(storage.join(sweep_dir, "sweep.json"), json.dumps(record, indent=2, default=str))
    # the file with the command line's overrides applied: what ran, readable, and runnable as it stands
    effective = f"# the sweep as run: {sweep.source}\n# emosweep run on this file runs (or resumes) the same sweep\n"
    storage.write_text(storage.join(sweep_dir, "sweep.yaml"), effective + yaml.safe_dump(sweep.raw, sort_keys=False))


def full_digest(raw: dict) -> str:
    """The digest that sweep.json records written before cells could change hold."""
    return hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()


def changed_keys(stored: dict, sweep) -> str:
    before, now = stored.get("sweep") or {}, sweep.raw
    keys = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k)
                  and k not in ("models", "seeds", "fold_indices", "name", "storage"))
    return ", ".join(keys) or "model options"


def stored_record(text: str, marker: str) -> dict:
    try:
        record = json.loads(text)
        if "settings_digest" not in record and "digest" not in record:
            raise KeyError("digest")
        return record
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise SweepError(f"{marker} is damaged (not the JSON record of a sweep file). Fix: delete it; the next run "
                         "records the current sweep file there (check first that it is the one the sweep started "
                         "with)") from None


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
    looks at storage). Returns the corpus, the storage root and what changed since the last run, if anything."""
    from orchestration.task import corpus_from_config, cross_tables
    from ser_models.data.corpus import CorpusError

    validate(sweep)
    root = storage.normalize(sweep.storage)
    check_storage(sweep, root, probe)
    try:
        corpus = corpus_from_config(sweep.corpus)
    except (FileNotFoundError, ValueError) as err:
        raise SweepError(f"{sweep.source}: cannot load corpus: {err}") from None
    validate(sweep, corpus)
    try:
        cross_tables(corpus, sweep.test_corpora)
    except (FileNotFoundError, CorpusError) as err:   # a test corpus that cannot be read or mapped
        raise SweepError(f"{sweep.source}: {err}") from None
    return corpus, root, recorded_change(sweep, storage.join(root, sweep.name))


def run(sweep, restart_errored: bool = False, address: str | None = None, verbose: bool = False) -> int:
    from orchestration.lock import DriverLock, SweepLocked

    corpus, root, change = preflight(sweep)
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

    phases = Phases()
    try:
        task = prepare_features(sweep, corpus)
    except (FileNotFoundError, CorpusError) as err:   # an audio folder that vanished since the check
        raise SweepError(f"{sweep.source}: {err}") from None
    store_corpus_facts(storage.join(root, sweep.name), corpus.table, task.folds)
    folds = sweep.fold_indices if sweep.fold_indices is not None else list(range(len(task.folds)))
    phases.done("data")
    ray = start_ray(address, verbose, sweep.resources["dashboard"])
    stop_on_sigterm()
    try:
        shapes = cluster_shapes(ray)
        report_autoscaler(shapes)
        validate(sweep, corpus, cluster=shapes)
        task_ref = ray.put(task)  # trials on every node read features from here: no corpus or cache needed there
        phases.done("ray_start")
        experiment = storage.join(root, sweep.name, "experiment")
        tracking = trackers(sweep.tracking, storage.join(root, sweep.name), sweep.name,
                            settings_digest(sweep.raw)[:12])
        gc.freeze()   # what exists before the fit is not Tune's: the collection after it skips it (0.27 -> 0.10 s)
        limit, total = fit(sweep, folds, root, experiment, restart_errored, task_ref, shapes, tracking)
    except BaseException:
        gc.unfreeze()
        ray.shutdown()   # a caller that runs main() again must not find this instance still attached
        raise
    phases.done("trials")
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
        write_report_safely(sweep_dir)
        phases.done("report")
    for tracker in tracking:
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
    stop_on_sigterm()
    try:
        path, overrides = split_overrides(args.sweep, args.overrides)
        sweep = load_sweep(path, overrides)
        sweep.arguments = [arg for arg in arguments if arg != "--restart-errored"]
        if args.storage:
            sweep.storage = args.storage
        if args.check:
            from orchestration.doctor import check

            return check(sweep, args.address, args.verbose)
        return run(sweep, args.restart_errored, args.address, args.verbose)
    except (SweepError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_PROBLEM
    except KeyboardInterrupt:   # Ctrl-C or SIGTERM outside the trials (extracting features, writing tables)
        print(f"[sweep] interrupted before the sweep's end; nothing finished is lost. Next: run the same command "
              f"to resume: {resume_command(arguments)}", flush=True)
        return EXIT_RESUMABLE


if __name__ == "__main__":
    leave(main())
