"""Features computed once, cached by content, read by every trial from shards (shards.py).

Cache key = hash(extractor configuration, CODE_VERSION, corpus fingerprint),
where the fingerprint covers each utterance's id, path, file size and mtime
(and its alignment). Each feature lives in `<cache>/<feature>/<key>/`, a folder
or a bucket prefix (`cache: s3://...`): its shards and, once complete, its
`meta.json`. An extraction that is stopped keeps the shards it published and
the rerun extracts only the rest. Utterances whose audio cannot be used are
listed in `<cache>/quarantine/<fingerprint>.csv` and left out, so one bad file
never stops a run.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ser_models.interrupt import stop_point

from .location import exists, join, probe_file, read_bytes, write_bytes
from .shards import SHARD_BYTES, FeatureStore, ShardWriter

CODE_VERSION = "2"   # bump when any extractor's numbers or the cache's layout change (2: sharded)
WORD_SPANS = "word_spans"  # [words, 2] start/end seconds: given alignment or the fallback
DEFAULT_CACHE = Path(os.environ.get("EMOSWEEP_CACHE", Path.home() / ".cache" / "emosweep" / "features"))


def feature_location(cache_dir: str | Path, name: str, key: str) -> str:
    return join(str(cache_dir), name, key)


def is_complete(location: str) -> bool:
    return exists(join(location, "meta.json"))


def corpus_fingerprint(table: pd.DataFrame) -> str:
    digest = hashlib.sha256()
    for row in table.sort_values("utt_id").itertuples(index=False):
        try:
            stat = os.stat(row.path)
            stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        digest.update(f"{row.utt_id}\t{row.path}\t{stamp}\t{row.align_words}\t{row.align_start}\t{row.text}\n".encode())
    return digest.hexdigest()


def feature_key(name: str, fingerprint: str, configured: dict | None = None) -> str:
    from .features import describe

    config = {"code": CODE_VERSION, "fingerprint": fingerprint,
              "extractor": {"name": WORD_SPANS} if name == WORD_SPANS else describe(name, configured)}
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:20]


QUARANTINE_SHOWN = 10  # the rest are in the list file


@dataclass
class ExtractionReport:
    stores: dict[str, FeatureStore]
    computed: list[str] = field(default_factory=list)     # features extracted in this call
    nodes: set[str] = field(default_factory=set)          # Ray nodes that extracted them (engine "ray")
    gpus: set[str] = field(default_factory=set)           # node:GPU its actors held (an encoder, GPUs present)
    loaded: list[str] = field(default_factory=list)       # features found in the cache
    resumed: dict[str, int] = field(default_factory=dict)  # feature -> utterances in shards of an earlier run
    quarantine: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["utt_id", "path", "reason"]))
    quarantine_path: str | None = None
    seconds: float = 0.0

    @property
    def usable(self) -> set[str]:
        """Utterances present in every requested feature."""
        stores = list(self.stores.values())
        return set.intersection(*(set(s.utt_ids) for s in stores)) if stores else set()


DECODED_ROWS = 64   # waveforms held at once by a worker (about 20 MB of 5-s utterances)


def _extract_chunk(rows: list[dict], extractors: dict) -> list[tuple[str, dict | str]]:
    """Worker: decode each file once and run every requested extractor (name -> extractor; None for the word
    spans) on it, DECODED_ROWS files at a time."""
    return [out for start in range(0, len(rows), DECODED_ROWS)
            for out in _extract_decoded(rows[start: start + DECODED_ROWS], extractors)]


def _extract_decoded(rows: list[dict], extractors: dict) -> list[tuple[str, dict | str]]:
    """An extractor with `many` (an encoder's layers) gets the rows' waveforms at once, to batch them by length;
    one that fails on them is run again one utterance at a time, so only a bad file fails."""
    from .audio import AudioError, load_audio

    out: dict[str, dict | str] = {}
    waves = {}
    for row in rows:
        try:
            waves[row["utt_id"]] = load_audio(row["path"])
            out[row["utt_id"]] = {}
        except AudioError as err:
            out[row["utt_id"]] = f"{err.reason}. Fix: {err.fix}"
    decoded = [row for row in rows if row["utt_id"] in waves]
    for name, extractor in extractors.items():
        for row, result in zip(decoded, _feature_arrays(name, extractor, decoded, waves)):
            if isinstance(out[row["utt_id"]], str):
                continue
            if isinstance(result, Exception):
                out[row["utt_id"]] = (f"{name} extraction failed ({type(result).__name__}: {str(result)[:160]}). "
                                      "Fix: check the file (length, channels), or drop it from the corpus")
            else:
                out[row["utt_id"]][name] = result
    return [(row["utt_id"], out[row["utt_id"]]) for row in rows]


def _feature_arrays(name: str, extractor, rows: list[dict], waves: dict) -> list:
    """Each row's array of one feature, or the exception its extraction raised (one odd file is quarantined,
    never fatal)."""
    if name == WORD_SPANS:
        return [_word_spans(row, waves[row["utt_id"]]) for row in rows]
    if hasattr(extractor, "many") and len(rows) > 1:
        try:
            return [array.numpy() for array in extractor.many([waves[row["utt_id"]] for row in rows])]
        except Exception:  # noqa: BLE001 - find the file that failed: one at a time below
            pass
    results = []
    for row in rows:
        try:
            results.append(extractor(waves[row["utt_id"]]).numpy())
        except Exception as err:  # noqa: BLE001 - one odd file is quarantined, never fatal
            results.append(err)
    return results


def _word_spans(row: dict, wave) -> np.ndarray:
    from .alignment import fallback_alignment
    from .text import utterance_words

    if row.get("align_start") is not None:
        spans = np.stack([row["align_start"], row["align_end"]], axis=1) if row["align_start"] else None
    else:
        _, starts, ends = fallback_alignment(utterance_words(row), wave)
        spans = np.stack([starts, ends], axis=1) if starts else None
    return np.zeros((0, 2), np.float32) if spans is None else spans.astype(np.float32)


def extract(table: pd.DataFrame, names: list[str], cache_dir: str | Path = DEFAULT_CACHE,
            workers: int | None = None, progress: bool = True, chunk: int = 16,
            engine: str = "threads", configured: dict | None = None,
            shard_bytes: int = SHARD_BYTES) -> ExtractionReport:
    """Return stores for `names`, computing only what is not cached yet.

    cache_dir: a folder or a bucket URI (s3://...). engine: "threads" on this machine, or "ray": Ray Data tasks
    on the connected cluster's CPUs (distributed.py); both write the same cache, so the stores are the same
    either way. configured: the extractors a sweep file sets up (features.CONFIGURED: its encoder), by name."""
    started = time.perf_counter()
    cache_dir = str(cache_dir)
    fingerprint = corpus_fingerprint(table)
    finals = {name: feature_location(cache_dir, name, feature_key(name, fingerprint, configured)) for name in names}
    report = ExtractionReport(stores={})
    todo = []
    for name, final in finals.items():
        if is_complete(final):
            report.stores[name] = FeatureStore(final)
            report.loaded.append(name)
        else:
            todo.append(name)
    quarantine_path = join(cache_dir, "quarantine", f"{fingerprint[:20]}.csv")
    if todo:
        from .features import resolve

        todo = {name: None if name == WORD_SPANS else resolve(name, configured) for name in todo}
        _compute(table, todo, finals, report, workers, progress, chunk, quarantine_path, engine, shard_bytes)
    listed = read_bytes(quarantine_path)
    if listed is not None:
        report.quarantine = pd.read_csv(io.BytesIO(listed))
        report.quarantine_path = quarantine_path
        if len(report.quarantine):
            for row in report.quarantine.head(QUARANTINE_SHOWN).itertuples():
                print(f"[emosweep] quarantined {row.path}: {row.reason}", file=sys.stderr)
            more = len(report.quarantine) - QUARANTINE_SHOWN
            print(f"[emosweep] {len(report.quarantine)} utterance(s) skipped (bad audio)"
                  f"{f', {more} not shown' if more > 0 else ''}; the sweep goes on without them; list: "
                  f"{quarantine_path}", file=sys.stderr)
    warn_cropped(table, names)
    warn_low_rate(table)
    report.seconds = time.perf_counter() - started
    return report


def warn_low_rate(table: pd.DataFrame) -> None:
    """Files recorded below 16 kHz are upsampled: their top band is empty, which a model can learn as a cue."""
    from .audio import TARGET_SR

    rates = table["sample_rate"].astype("Int64") if "sample_rate" in table else pd.Series(dtype="Int64")
    low = table[(rates > 0) & (rates < TARGET_SR)]
    if len(low):
        print(f"[emosweep] {len(low)} utterance(s) are recorded below {TARGET_SR} Hz (lowest "
              f"{int(low['sample_rate'].min())} Hz, e.g. {low['path'].iloc[0]}) and were upsampled: above half "
              "their rate they hold no signal, a cue a model can learn. Fix: use recordings of one rate >= 16 kHz, "
              "or drop those files", file=sys.stderr)


def warn_cropped(table: pd.DataFrame, names: list[str]) -> None:
    """Say when a feature keeps only the start of long utterances (nothing is cut without a word)."""
    from .features import kept_seconds

    if "duration" not in table:
        return
    for name in names:
        limit = kept_seconds(name)
        long = table[table["duration"].astype(float) > limit] if limit else table.iloc[:0]
        if len(long):
            longest = long.loc[long["duration"].astype(float).idxmax()]
            print(f"[emosweep] {name} keeps the first {limit:g} s: {len(long)} utterance(s) are longer (longest "
                  f"{float(longest['duration']):.0f} s, {longest['path']}). Fix: split long recordings into "
                  "utterances (one manifest row each) if their end matters", file=sys.stderr)


def _compute(table, todo, finals, report, workers, progress, chunk, quarantine_path, engine, shard_bytes):
    writers = {name: ShardWriter(finals[name], name, shard_bytes) for name in todo}
    # an earlier, stopped run's shards hold some utterances already: extract the others (bad audio, which is in
    # no shard, is tried again: it fails fast and lands in the quarantine list again)
    done = set.intersection(*(writer.done for writer in writers.values()))
    report.resumed = {name: writer.resumed for name, writer in writers.items() if writer.resumed}
    rows = table.loc[~table["utt_id"].isin(done),
                     ["utt_id", "path", "text", "align_words", "align_start", "align_end"]].to_dict("records")
    paths = dict(zip(table["utt_id"], table["path"]))
    bad = []
    workers = workers if workers is not None else (os.cpu_count() or 1)
    resumed = f" ({len(done)} in shards of an earlier run)" if done else ""
    bar = tqdm(total=len(rows), desc=f"features {','.join(todo)}{resumed}", unit="utt", disable=not progress,
               file=sys.stderr)

    def consume(results):
        for utt_id, outcome in results:
            if isinstance(outcome, str):
                bad.append({"utt_id": utt_id, "path": paths[utt_id], "reason": outcome})
            else:
                for name, array in outcome.items():
                    writers[name].add(utt_id, array)
        bar.update(len(results))
        stop_point()   # a Ctrl-C of a sweep's driver stops extraction here: published shards stay for the rerun

    try:
        _run(rows, chunk, todo, consume, workers, engine, report, finals, shard_bytes)
        for name in todo:
            report.stores[name] = writers[name].finish({"feature": name, "code_version": CODE_VERSION})
            report.computed.append(name)
    except BaseException:   # stopped or failed: no unpublished frames are left behind
        for writer in writers.values():
            writer.discard()
        raise
    finally:
        bar.close()
    text = io.StringIO()
    pd.DataFrame(bad, columns=["utt_id", "path", "reason"]).to_csv(text, index=False)
    write_bytes(quarantine_path, text.getvalue().encode())


def _run(rows, chunk, todo, consume, workers, engine, report, finals, shard_bytes) -> None:
    """Extract chunks of `chunk` rows with the engine asked for, handing each one's results to `consume`."""
    if engine == "ray":
        from .distributed import extract_on_ray

        absent = [row for row in rows if not os.path.exists(row["path"])]
        if absent:   # missing on the driver too: quarantined as the threads would, never sent out
            consume(_extract_chunk(absent, todo))
        present = [row for row in rows if os.path.exists(row["path"])]
        locations = {name: finals[name] for name in todo}
        # an actor that finds this file sees the cache, and writes its shards there itself
        with probe_file(next(iter(locations.values()))) as probe:
            report.nodes, report.gpus = extract_on_ray(present, todo, consume, locations, probe, shard_bytes)
        return
    chunks = [rows[i: i + chunk] for i in range(0, len(rows), chunk)]
    if workers <= 1:
        for part in chunks:
            consume(_extract_chunk(part, todo))
    else:
        # Threads, not processes: decoding, resampling and torch ops release the GIL
        # (2.1x on 2 cores), and a process pool would re-import the caller's __main__.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        pool = ThreadPoolExecutor(workers)
        try:
            for future in as_completed([pool.submit(_extract_chunk, part, todo) for part in chunks]):
                consume(future.result())
        finally:
            pool.shutdown(cancel_futures=True)   # stopped early: the chunks not started are dropped, not run
            torch.set_num_threads(threads)
