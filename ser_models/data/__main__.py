"""Data-pipeline CLI.

  python -m ser_models.data corpora                    the registered corpora, their presets and options
  python -m ser_models.data summary ravdess ROOT       parse a corpus and print its folds
  python -m ser_models.data summary manifest emodb.csv --classes angry happy neutral sad \
      --option labels='{W: angry, F: happy, N: neutral, T: sad}'
  python -m ser_models.data extract ravdess ROOT --features fbank40 mfcc39
"""
from __future__ import annotations

import sys
import time

from ..cli import Parser, leave
from .cache import DEFAULT_CACHE, extract
from .corpus import corpora, load_corpus
from .features import EXTRACTORS
from .folds import fold_summary, fold_warnings


def _corpus(args):
    classes = [c for value in args.classes for c in value.split(",") if c] if args.classes else None
    if classes and len(classes) == 1:
        classes = classes[0]  # a preset ("4") or one class
    return load_corpus(args.corpus, args.root, classes, **corpus_options(args.option))


def corpus_options(pairs: list[str]) -> dict:
    """--option KEY=VALUE, each a corpus option as a sweep file's corpus.KEY (VALUE is YAML: a mapping too)."""
    import yaml

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--option {pair!r} has no value. Fix: write KEY=VALUE, e.g. --option encoding=latin-1 or "
                             "--option labels='{W: angry, F: happy}'")
        try:
            options[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ValueError(f"--option {pair!r}: the value is not valid YAML ({err}). Fix: quote the mapping, "
                             "e.g. --option labels='{W: angry, F: happy}'") from None
    return options


def cmd_corpora(args) -> int:
    for name, kind in sorted(corpora().items()):
        presets = ", ".join(sorted(kind.presets)) or "none (give class names)"
        print(f"{name}: {kind.help}\n  classes: presets {presets}; default "
              f"{kind.default_classes or 'every label'}; folds: {kind.default_folds}")
        for option, help_text in kind.options.items():
            print(f"  corpus.{option}: {help_text}")
    return 0


def cmd_summary(args) -> int:
    corpus = _corpus(args)
    task = corpus.task
    print(f"{corpus.name}: {len(corpus.table)} utterances, {len(task)} in the task {corpus.classes}, "
          f"{task['speaker'].nunique()} speakers")
    print(task["label"].value_counts().sort_index().to_string())
    if corpus.outside:
        print(f"outside the task: {corpus.outside}")
    folds = corpus.folds(args.folds)
    print(f"\n{len(folds)} speaker-disjoint folds ({args.folds or corpus.default_folds}), checked for leaks:")
    print(fold_summary(task, folds).to_string(index=False))
    for line in fold_warnings(task, folds):
        print(f"warning: {line}")
    return 0


def cmd_extract(args) -> int:
    corpus = _corpus(args)
    for name in args.features:
        started = time.perf_counter()
        report = extract(corpus.task, [name], args.cache, workers=args.workers)
        store = report.stores[name]
        state = "computed" if report.computed else "loaded from cache"
        print(f"{name:15s} {state:18s} {time.perf_counter() - started:7.2f} s  {len(store)} utterances, "
              f"dims {store.dims}")
    return 0


def main(argv=None) -> int:
    parser = Parser(prog=sys.argv[0] if sys.argv[0].startswith("emosweep") else "python -m ser_models.data",
                    description=__doc__)
    parser.add_argument("--cache", default=str(DEFAULT_CACHE), help="feature cache directory")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("corpora", help="list the registered corpora")
    for name in ("summary", "extract"):
        p = sub.add_parser(name)
        p.add_argument("corpus", choices=sorted(corpora()))
        p.add_argument("root", nargs="?")
        p.add_argument("--classes", nargs="+", default=None,
                       help="a preset (4), class names (angry happy), or a comma list (angry,happy)")
        p.add_argument("--folds", default=None)
        p.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                       help="a corpus option, as corpus.KEY in a sweep file (python -m ser_models.data corpora "
                            "lists them): e.g. -o encoding=latin-1 -o labels='{W: angry}'")
        if name == "extract":
            p.add_argument("--features", nargs="+", default=sorted(EXTRACTORS))
            p.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        return {"corpora": cmd_corpora, "summary": cmd_summary, "extract": cmd_extract}[args.command](args)
    except (FileNotFoundError, ValueError) as err:
        where = f"{args.corpus} {args.root}" if getattr(args, "root", None) else getattr(args, "corpus", "")
        message = str(err)
        if "corpus." in message:   # a sweep file's words for an option: say how this command sets it
            message += " (on this command: --classes sets corpus.classes, --option KEY=VALUE any other corpus.KEY)"
        print(f"error: {where}: {message}" if where and where not in message else f"error: {message}",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    leave(main())
