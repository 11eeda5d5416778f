"""emosweep: one command for everything a sweep needs.

  emosweep run [SWEEP.yaml]        run (or resume) a sweep; no file: the embedded demo
  emosweep check [SWEEP.yaml]      validate it and print the plan: corpus, classes, folds, cells, trials
  emosweep doctor [SWEEP.yaml]     preflight on the Ray cluster it would join: nodes, storage, versions
  emosweep models                  the model registry (ablations, inputs, parameters) and DED
  emosweep data ...                corpora, summaries and the feature cache (python -m ser_models.data)
  emosweep results ...             query a sweep's tables (aggregate, verify, show, compare, published)
  emosweep report SWEEP_DIR        write the report with its figures

`python orchestration/sweep.py` stays what `emosweep run` is. Exit codes: 0
done, 2 a problem found before any work (with its fix), 3 interrupted and
resumable, 4 finished with failed trials.
"""
from __future__ import annotations

import sys

from ser_models.cli import Parser, leave

EXIT_PROBLEM = 2


def check(argv: list[str], name: str = "check") -> int:
    """The resolved plan, from the sweep file and the corpus alone (no Ray): what `run` would do."""
    from orchestration.config import SweepError, load_sweep, train_for
    from orchestration.sweep import DEMO, preflight
    from ser_models.registry import get_spec
    from ser_models.data.folds import fold_summary, fold_warnings

    parser = Parser(prog="emosweep check", description=check.__doc__)
    parser.add_argument("sweep", nargs="?", default=str(DEMO), help="sweep YAML (default: the embedded demo)")
    parser.add_argument("--storage", help="override the sweep's storage, as run's --storage does")
    args = parser.parse_args(argv)
    try:
        sweep = load_sweep(args.sweep)
        if args.storage:
            sweep.storage = args.storage
        corpus, _, change = preflight(sweep, probe=False)   # the checks run makes before work, all of them
    except (SweepError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_PROBLEM
    folds = corpus.folds(sweep.folds)
    chosen = [folds[i] for i in (sweep.fold_indices if sweep.fold_indices is not None else range(len(folds)))]
    samples = int(sweep.search["samples"]) if sweep.search else 1
    trials = len(sweep.cells) * samples * len(chosen) * len(sweep.seeds)
    res = sweep.resources
    print(f"sweep {sweep.name} ({sweep.source}) -> {sweep.storage}/{sweep.name}")
    print(f"corpus {corpus.name}: {len(corpus.task)} utterances in the task, classes {corpus.classes}"
          + (f"; left out: {corpus.outside}" if corpus.outside else ""))
    print(f"folds: {sweep.folds or corpus.default_folds}, {len(chosen)} of {len(folds)} (speaker-disjoint, checked)")
    print(fold_summary(corpus.task, chosen).fillna(0).to_string(index=False))
    for line in fold_warnings(corpus.task, chosen):
        print(f"warning: {line}")
    print(f"cells: {', '.join(f'{m}/{a}' for m, a in sweep.cells)}")
    print(f"trials: {len(sweep.cells)} cells x {samples} setting(s) x {len(chosen)} folds x {len(sweep.seeds)} "
          f"seed(s) = {trials}")
    print(f"resources: {res['mode']}, {res['workers_per_trial']} worker(s) per trial x "
          f"{res['cpus_per_worker']} CPU + {res['gpus_per_worker']} GPU; at most "
          f"{res['max_concurrent_trials'] or 'as many as fit'} at once")
    for model in dict.fromkeys(model for model, _ in sweep.cells):
        recipe = get_spec(model).recipe
        settings = train_for(model, sweep.train_explicit)
        shown = {k: settings[k] for k in ("optimizer", "lr", "batch_size", "epochs", "schedule", "clip_norm",
                                          "early_stop_patience", "class_weights", "select_on")}
        mine = sorted(set(sweep.train_explicit) & set(recipe))
        print(f"train {model}: {shown}" + (f" (the sweep file overrides its recipe's {mine})" if mine else ""))
    if change:
        print(f"note: {change}")
    print(f"ok: run it with: emosweep run{' ' + ' '.join(argv) if argv else ''}")
    return 0


def doctor(argv: list[str], name: str = "doctor") -> int:
    """Preflight on the Ray cluster the sweep would join: nodes, resources, autoscaler maxima, versions per node,
    storage and object store reachable from every node; exit 2 on any problem (each with its fix)."""
    from orchestration.sweep import DEMO
    from orchestration.sweep import main as sweep_main

    parser = Parser(prog="emosweep doctor", description=doctor.__doc__)
    parser.add_argument("sweep", nargs="?", default=str(DEMO), help="sweep YAML (default: the embedded demo)")
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else this machine)")
    parser.add_argument("--storage", help="override the sweep's storage (path, NFS path or s3://...)")
    parser.add_argument("--verbose", action="store_true", help="show Ray's own logs")
    args = parser.parse_args(argv)
    return sweep_main(["--check", args.sweep, *(["--address", args.address] if args.address else []),
                       *(["--storage", args.storage] if args.storage else []), *(["--verbose"] if args.verbose else [])])


def delegate(module: str, prefix: list[str] | None = None):
    def run(argv: list[str], name: str) -> int:
        import importlib

        sys.argv[0] = f"emosweep {name}"   # argparse names the program from it: usage and fixes say `emosweep run`
        return importlib.import_module(module).main([*(prefix or []), *argv])
    return run


COMMANDS = {
    "run": ("run (or resume) a sweep", delegate("orchestration.sweep")),
    "check": ("validate a sweep file and print its plan", check),
    "doctor": ("preflight on the Ray cluster the sweep would join", doctor),
    "models": ("the model registry and DED", delegate("ser_models.__main__", ["list"])),
    "data": ("corpora, summaries and the feature cache", delegate("ser_models.data.__main__")),
    "results": ("query a sweep's tables", delegate("orchestration.results")),
    "report": ("write a sweep's report and figures", delegate("orchestration.report")),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = Parser(prog="emosweep", description=__doc__)
    parser.add_argument("command", choices=sorted(COMMANDS), help="; ".join(f"{name}: {text}" for name, (text, _)
                                                                          in COMMANDS.items()))
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else EXIT_PROBLEM
    args = parser.parse_args(argv[:1])
    return COMMANDS[args.command][1](argv[1:], args.command)


def console() -> None:
    """The installed `emosweep` command."""
    leave(main())


if __name__ == "__main__":
    console()
