"""Data-pipeline CLI.

  python -m ser_models.data summary ravdess ROOT       parse a corpus and print its folds
  python -m ser_models.data extract ravdess ROOT --features fbank40 mfcc39
"""
from __future__ import annotations

import argparse
import sys
import time

from .cache import DEFAULT_CACHE, extract
from .corpus import load_corpus
from .features import EXTRACTORS
from .folds import fold_summary


def _corpus(args):
    return load_corpus(args.corpus, args.root, args.classes)


def cmd_summary(args) -> int:
    corpus = _corpus(args)
    task = corpus.task
    print(f"{corpus.name}: {len(corpus.table)} utterances, {len(task)} in the task {corpus.classes}, "
          f"{task['speaker'].nunique()} speakers")
    print(task["label"].value_counts().sort_index().to_string())
    folds = corpus.folds(args.folds)
    print(f"\n{len(folds)} speaker-disjoint folds ({args.folds or 'default'}), checked for leaks:")
    print(fold_summary(task, folds).to_string(index=False))
    return 0


def cmd_extract(args) -> int:
    corpus = _corpus(args)
    for name in args.features:
        started = time.perf_counter()
        report = extract(corpus.task, [name], args.cache, workers=args.workers)
        store = report.stores[name]
        state = "computed" if report.computed else "loaded from cache"
        print(f"{name:15s} {state:18s} {time.perf_counter() - started:7.2f} s  {len(store)} utterances, dims {store.dims}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ser_models.data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", default=str(DEFAULT_CACHE), help="feature cache directory")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("summary", "extract"):
        p = sub.add_parser(name)
        p.add_argument("corpus", choices=["iemocap", "ravdess", "synthetic", "manifest"])
        p.add_argument("root", nargs="?")
        p.add_argument("--classes", default=None)
        p.add_argument("--folds", default=None)
        if name == "extract":
            p.add_argument("--features", nargs="+", default=sorted(EXTRACTORS))
            p.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        return {"summary": cmd_summary, "extract": cmd_extract}[args.command](args)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
