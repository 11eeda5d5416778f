"""Feature extraction and cache-load times per extractor.

    python bench/features.py ravdess ../shared/data/ravdess16k --classes 8
    python bench/features.py synthetic

Each extractor is computed alone into a fresh cache (so its time includes
decoding and resampling), then loaded from the cache: opening the store and
reading every utterance's array once.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from ser_models.data.cache import WORD_SPANS, FeatureStore, extract
from ser_models.data.corpus import load_corpus
from ser_models.data.features import EXTRACTORS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus")
    parser.add_argument("root", nargs="?")
    parser.add_argument("--classes", default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--features", nargs="+", default=sorted(EXTRACTORS) + [WORD_SPANS])
    args = parser.parse_args()
    table = load_corpus(args.corpus, args.root, args.classes).task
    audio_hours = table["duration"].sum() / 3600
    print(f"{args.corpus}: {len(table)} utterances, {audio_hours:.2f} h of audio, "
          f"workers={args.workers or 'all cores'}")
    print(f"{'feature':15s} {'extract s':>10s} {'x realtime':>10s} {'cache MB':>9s} {'load s':>8s} {'dims':>12s}")
    with tempfile.TemporaryDirectory() as cache:
        for name in args.features:
            started = time.perf_counter()
            report = extract(table, [name], cache, workers=args.workers, progress=False)
            extract_s = time.perf_counter() - started
            started = time.perf_counter()
            store = FeatureStore(report.stores[name].location)
            total = sum(float(np.asarray(store[u]).sum()) for u in store.utt_ids)  # touch every array
            load_s = time.perf_counter() - started
            size_mb = store.nbytes / 2**20
            assert np.isfinite(total)
            print(f"{name:15s} {extract_s:10.2f} {audio_hours * 3600 / extract_s:10.0f} {size_mb:9.1f} "
                  f"{load_s:8.3f} {str(store.dims):>12s}")


if __name__ == "__main__":
    main()
