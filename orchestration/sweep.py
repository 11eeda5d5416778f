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

import os
import shlex
import sys
import threading


from orchestration.store import storage
from orchestration.run.cluster import check_listening, cluster_shapes, report_autoscaler, start_ray
from orchestration.config.record import record_sweep, settings_digest
from orchestration.config.sweep_file import OVERRIDES_HELP, SWEEP_HELP, SweepError, load_sweep, split_overrides
from orchestration.config.checks import validate
from orchestration.run.experiment import quiet_tune
from orchestration.run.preflight import preflight
from ser_models.cli import Parser, leave
from ser_models.interrupt import defer, deferred, stop_point

from typing import TYPE_CHECKING

if TYPE_CHECKING:   # annotations only
    from orchestration.config.sweep_file import Sweep
    from ser_models.data.corpus import Corpus



EXIT_DONE, EXIT_PROBLEM, EXIT_RESUMABLE, EXIT_FAILED_TRIALS = 0, 2, 3, 4


def run(sweep: Sweep, restart_errored: bool = False, address: str | None = None, verbose: bool = False) -> int:
    from orchestration.store.lock import DriverLock, SweepLocked

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


def run_locked(sweep: Sweep, corpus: Corpus, root: str, restart_errored: bool, address: str | None,
               verbose: bool) -> int:
    from orchestration.results.finish import ReportPreload, earlier_trials, finish
    from orchestration.results.tracking import trackers
    from orchestration.run.experiment import fit
    from orchestration.run.preflight import prepare_features
    from orchestration.store.corpus_facts import store_corpus_facts
    from ser_models.data.corpus import CorpusError

    import ray

    from orchestration.run.progress import Phases

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
        settings = settings_digest(sweep.raw)[:12]
        limit, total = fit(sweep, folds, root, experiment, restart_errored, task_ref, shapes,
                           [ReportPreload(), *tracking],
                           lambda: earlier_trials(experiment, sweep.select_on(), settings))
    except BaseException:
        # Ctrl-C or an error at any point once Ray may be starting: Ray must not stay attached to a process that
        # exits (it can die of a segmentation fault at interpreter teardown) or that runs main() again
        ray.shutdown()
        raise
    phases.done("trials")
    # tables and report need only storage: Ray stops beside them instead of after them
    stopping = threading.Thread(target=ray.shutdown)
    stopping.start()
    try:
        counts, tables_written = finish(sweep, root, phases.done, tracking)
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


def outcome(sweep: Sweep, root: str, counts: dict, total: int, tables_written: bool) -> int:
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


def main(argv: list[str] | None = None) -> int:
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
    quiet_tune()
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
