"""emosweep: one command for everything a sweep needs.

  emosweep run [SWEEP] [KEY=VALUE ...]   run (or resume) a sweep; no file: the embedded demo
  emosweep check [SWEEP] [KEY=VALUE ...] validate it and print the plan: corpus, classes, folds, cells, trials
  emosweep doctor [SWEEP]          preflight on the Ray cluster it would join: nodes, storage, versions
  emosweep configs                 the shipped sweep files; SWEEP may be one's name (emosweep run ravdess)
  emosweep copy NAME [DEST]        write a shipped sweep file here to edit it
  emosweep models                  the model registry (ablations, inputs, parameters) and DED
  emosweep data ...                corpora, summaries and the feature cache (python -m ser_models.data)
  emosweep results ...             query a sweep's tables (aggregate, verify, show, compare, published)
  emosweep report SWEEP_DIR        write the report with its figures

KEY=VALUE overrides set sweep keys as a file edit would (dotted key, YAML
value: train.epochs=2 seeds=[0,1] models.fg_cme=[full]); the schema checks
them, and one that changes results changes the sweep as an edit would.
`python orchestration/sweep.py` stays what `emosweep run` is. Exit codes: 0
done, 2 a problem found before any work (with its fix), 3 interrupted and
resumable, 4 finished with failed trials.
"""
from __future__ import annotations

import sys

from ser_models.cli import Parser, leave

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # annotations only
    from pathlib import Path

    from orchestration.run.task import FeaturePlan

EXIT_PROBLEM = 2


def check(argv: list[str], name: str = "check") -> int:
    """The resolved plan, from the sweep file and the corpus alone (no Ray): what `run` would do."""
    from orchestration.config.checks import cost_warnings
    from orchestration.config.sweep_file import (OVERRIDES_HELP, SWEEP_HELP, SweepError, load_sweep, split_overrides)
    from orchestration.run.preflight import preflight
    from ser_models.registry import get_spec
    from ser_models.data.folds import fold_summary, fold_warnings

    parser = Parser(prog="emosweep check", description=check.__doc__)
    parser.add_argument("sweep", nargs="?", help=SWEEP_HELP)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP)
    parser.add_argument("--storage", help="override the sweep's storage, as run's --storage does")
    args = parser.parse_args(argv)
    try:
        sweep = load_sweep(*split_overrides(args.sweep, args.overrides))
        if args.storage:
            sweep.storage = args.storage
        corpus, _, change, plan = preflight(sweep, probe=False)   # the checks run makes before work, all of them
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
    for line in fold_warnings(corpus.task, chosen) + cost_warnings(sweep):
        print(f"warning: {line}")
    print(f"cells: {', '.join(f'{m}/{a}' for m, a in sweep.cells)}")
    print(f"trials: {len(sweep.cells)} cells x {samples} setting(s) x {len(chosen)} folds x {len(sweep.seeds)} "
          f"seed(s) = {trials}")
    print(f"resources: {res['mode']}, {res['workers_per_trial']} worker(s) per trial x "
          f"{res['cpus_per_worker']} CPU + {res['gpus_per_worker']} GPU; at most "
          f"{res['max_concurrent_trials'] or 'as many as fit'} at once")
    for model in dict.fromkeys(model for model, _ in sweep.cells):
        recipe = get_spec(model).recipe
        settings = sweep.train_of(model)
        shown = {k: settings[k] for k in ("optimizer", "lr", "batch_size", "epochs", "schedule", "clip_norm",
                                          "early_stop_patience", "class_weights", "select_on")}
        mine = sorted(set(sweep.train_explicit) & set(recipe))
        print(f"train {model}: {shown}" + (f" (the sweep file overrides its recipe's {mine})" if mine else ""))
    print(feature_line(plan))
    if change:
        print(f"note: {change}")
    print(f"ok: run it with: emosweep run{' ' + ' '.join(argv) if argv else ''}")
    return 0


def feature_line(plan: FeaturePlan) -> str:
    """What the plan's features weigh, in the cache and on each node."""
    from ser_models.data.location import is_remote
    from ser_models.data.shards import NODE_CACHE
    from ser_models.data.sizing import human

    if not plan.sizes:
        return "features: none (text only)"
    each = ", ".join(f"{name} {human(size)}" + (" (cached)" if name in plan.cached else "")
                     for name, size in plan.sizes.items())
    total = human(sum(plan.sizes.values()))
    per_node = (f"each node copies the shards once to {NODE_CACHE} ({total} of disk per node)" if
                is_remote(plan.cache_dir) else f"nodes that see {plan.cache_dir} read the shards in place (0 B per "
                f"node), any other node copies them once to {NODE_CACHE} ({total} of disk)")
    return (f"features: {each}; {total} in all, {human(plan.to_extract)} to extract into {plan.cache_dir}. Trials "
            f"read an utterance at a time, so their memory does not grow with the corpus; {per_node}")


def doctor(argv: list[str], name: str = "doctor") -> int:
    """Preflight on the Ray cluster the sweep would join: nodes, resources, autoscaler maxima, versions per node,
    storage and object store reachable from every node; exit 2 on any problem (each with its fix)."""
    from orchestration.config.sweep_file import OVERRIDES_HELP, SWEEP_HELP, split_overrides
    from orchestration.sweep import main as sweep_main

    parser = Parser(prog="emosweep doctor", description=doctor.__doc__)
    parser.add_argument("sweep", nargs="?", help=SWEEP_HELP)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP)
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else this machine)")
    parser.add_argument("--storage", help="override the sweep's storage (path, NFS path or s3://...)")
    parser.add_argument("--verbose", action="store_true", help="show Ray's own logs")
    args = parser.parse_args(argv)
    path, overrides = split_overrides(args.sweep, args.overrides)
    return sweep_main(["--check", path, *overrides, *(["--address", args.address] if args.address else []),
                       *(["--storage", args.storage] if args.storage else []),
                       *(["--verbose"] if args.verbose else [])])


def configs(argv: list[str], name: str = "configs") -> int:
    """The sweep files that ship with emosweep: run one by name (emosweep run NAME), or copy it to edit."""
    from orchestration.config.sweep_file import describe, shipped_configs

    Parser(prog="emosweep configs", description=configs.__doc__).parse_args(argv)
    shipped = shipped_configs()
    width = max(map(len, shipped))
    for config, path in shipped.items():
        print(f"{config:{width}s}  {describe(path)}")
    print("\nrun one: emosweep run NAME [KEY=VALUE ...]; edit one: emosweep copy NAME [DEST]")
    return 0


def copy(argv: list[str], name: str = "copy") -> int:
    """Write a shipped sweep file into a folder (default: here) to edit it; an existing file is kept."""
    from pathlib import Path

    from orchestration.config.sweep_file import shipped_configs
    from ser_models.cli import did_you_mean

    parser = Parser(prog="emosweep copy", description=copy.__doc__)
    parser.add_argument("config", help="a shipped sweep file's name (emosweep configs)")
    parser.add_argument("dest", nargs="?", default=".", help="a folder, or the new file's path (default: here)")
    parser.add_argument("--force", action="store_true", help="replace an existing file")
    args = parser.parse_args(argv)
    shipped, wanted = shipped_configs(), Path(args.config).stem
    if wanted not in shipped:
        print(f"error: {args.config}: no shipped sweep file of that name{did_you_mean(wanted, shipped)}. Fix: one of "
              f"{', '.join(shipped)} (emosweep configs)", file=sys.stderr)
        return EXIT_PROBLEM
    source = shipped[wanted]
    dest = Path(args.dest)
    target = dest / source.name if dest.is_dir() or args.dest.endswith(("/", "\\")) else dest
    if target.exists() and not args.force:
        print(f"error: {target} exists. Fix: give another DEST, or add --force to replace it", file=sys.stderr)
        return EXIT_PROBLEM
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(rebased(source.read_text(encoding="utf-8"), Path.cwd(), target.parent.resolve()),
                      encoding="utf-8")
    print(f"wrote {target}. Next: edit it (corpus.root, storage), then: emosweep check {target}")
    return 0


def rebased(text: str, here: Path, folder: Path) -> str:
    """A shipped file's relative paths (its corpus root, storage, cache: relative to the working folder) made
    relative to the copy's folder, where a sweep file's own paths are read from: they keep pointing where they
    did. A copy into the working folder is the file as shipped."""
    import os
    import re

    def move(match: re.Match) -> str:
        value = match.group(2)
        if "://" in value or value.startswith(("/", "~")):
            return match.group(0)
        return match.group(1) + os.path.relpath(here / value, folder)

    return re.sub(r"(\broot:\s*|^storage:\s*|^cache:\s*)([^,}\s#]+)", move, text, flags=re.M)


def delegate(module: str, prefix: list[str] | None = None) -> Callable[[list[str], str], int]:
    def run(argv: list[str], name: str) -> int:
        import importlib

        sys.argv[0] = f"emosweep {name}"   # argparse names the program from it: usage and fixes say `emosweep run`
        return importlib.import_module(module).main([*(prefix or []), *argv])
    return run


COMMANDS = {
    "run": ("run (or resume) a sweep", delegate("orchestration.sweep")),
    "check": ("validate a sweep file and print its plan", check),
    "doctor": ("preflight on the Ray cluster the sweep would join", doctor),
    "configs": ("list the shipped sweep files", configs),
    "copy": ("copy a shipped sweep file here to edit it", copy),
    "models": ("the model registry and DED", delegate("ser_models.__main__", ["list"])),
    "data": ("corpora, summaries and the feature cache", delegate("ser_models.data.__main__")),
    "results": ("query a sweep's tables", delegate("orchestration.results.show")),
    "report": ("write a sweep's report and figures", delegate("orchestration.results.report")),
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
