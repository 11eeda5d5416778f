"""What a trial needs to train: the corpus table, its folds, cached features, vocabulary, embeddings.

The sweep driver calls `prepare_task` once (it fills the feature cache) and
puts the Task into Ray's object store; trials on any node read it from there
(`shared_task`). The Task holds tables and references to the cache's shards,
never feature frames: a trial reads the utterances its batches need from the
shards (in place on a shared disk, else from its node's one copy; shards.py),
so worker nodes need no corpus audio and their memory does not grow with it. Unit tests and
tools without Ray call `prepare_task` directly (memoised per process).
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ser_models.data.cache import DEFAULT_CACHE, ExtractionReport, extract
from ser_models.data.corpus import Corpus, CorpusError, load_corpus
from ser_models.data.folds import Fold
from ser_models.data.location import is_remote
from ser_models.data.text import Vocabulary, cached_embedding_matrix, utterance_words
from ser_models.registry import INPUTS

from collections.abc import Iterable
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # annotations only
    from ray import ObjectRef

FEATURE_INPUTS = set(INPUTS) - {"words"}   # every model input but word ids comes from the feature cache


@dataclass
class Task:
    corpus: Corpus
    table: pd.DataFrame          # task utterances whose audio is usable
    folds: list[Fold]
    report: ExtractionReport
    vocab: Vocabulary | None
    embeddings: np.ndarray | None
    oov_words: int = 0
    # cross-corpus test sets: corpus name -> its usable utterances, labelled with this task's classes
    cross: dict[str, pd.DataFrame] = field(default_factory=dict)
    # dialog turns outside the task's classes (IEMOCAP's frustrated, other, xxx): scored only so that DED
    # decodes whole dialogs, as the reference does; never trained on, never in a metric
    context: pd.DataFrame | None = None

    @property
    def classes(self) -> list[str]:
        return self.corpus.classes


def corpus_from_config(corpus_cfg: dict) -> Corpus:
    options = {k: v for k, v in corpus_cfg.items() if k not in ("name", "root", "classes")}
    return load_corpus(corpus_cfg["name"], corpus_cfg.get("root"), corpus_cfg.get("classes"), **options)


def features_for(inputs: Iterable[str]) -> list[str]:
    names = sorted(set(inputs) & FEATURE_INPUTS)
    if "word_spans" in names and "fbank40" not in names:
        names.append("fbank40")  # alignments live on the fbank frame grid
    return names


@dataclass
class FeaturePlan:
    sizes: dict[str, int]        # feature -> bytes for every utterance extraction reads
    cached: set[str]             # features already in the cache (nothing to extract)
    cache_dir: str

    @property
    def to_extract(self) -> int:
        return sum(size for name, size in self.sizes.items() if name not in self.cached)


def feature_plan(corpus: Corpus, cross: dict[str, pd.DataFrame], inputs: Iterable[str], cache_dir: str | None,
                 encoder: dict | None = None) -> FeaturePlan:
    """What extraction will read and write, from file headers and the cache's keys, before any audio is decoded."""
    from ser_models.data.cache import corpus_fingerprint, feature_key, feature_location, is_complete
    from ser_models.data.sizing import feature_bytes

    every = extraction_table(corpus, cross)
    names = features_for(inputs)
    configured = configured_features(encoder)
    folder = str(cache_dir or DEFAULT_CACHE)
    fingerprint = corpus_fingerprint(every) if names else ""
    cached = {name for name in names
              if is_complete(feature_location(folder, name, feature_key(name, fingerprint, configured)))}
    return FeaturePlan(feature_bytes(every, names, configured), cached, folder)


def configured_features(encoder: dict | None) -> dict:
    """The extractors a sweep file sets up: its encoder: section's checkpoint as the ssl_layers feature, and as
    ssl_frames when it names frame_layers."""
    if not encoder:
        return {}
    from ser_models.data.encoders import encoder_features

    return encoder_features(**encoder)


def extraction_table(corpus: Corpus, cross: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Every utterance whose features a sweep needs: the task's, the test corpora's, and the dialog turns DED
    decodes around them."""
    context = corpus.table[corpus.table["label"].isna()] if corpus.has_dialogs else corpus.table.iloc[:0]
    return pd.concat([corpus.task, *cross.values(), context], ignore_index=True)


def prepare_task(corpus_cfg: dict, folds: str | None, inputs: Iterable[str], cache_dir: str | None = None,
                 vectors: str = "glove-6b-50d", progress: bool = False, test_corpora: Sequence[dict] = (),
                 engine: str = "threads", encoder: dict | None = None) -> Task:
    key = json.dumps([corpus_cfg, folds, sorted(inputs), cache_dir, vectors, progress, list(test_corpora), engine,
                      encoder], sort_keys=True, default=str)
    return _prepare(key)


def cross_tables(corpus: Corpus, test_corpora: list[dict]) -> dict[str, pd.DataFrame]:
    """Each test corpus's task utterances on the training corpus's classes; ids prefixed by the corpus name.

    Speakers are disjoint by construction (other recordings); the same audio file in both is refused."""
    tables, paths = {}, set(corpus.task["path"])
    for i, cfg in enumerate(test_corpora):
        other = corpus_from_config(cfg)
        where = f"test_corpora[{i}] ({cfg['name']})"
        extra = sorted(set(other.classes) - set(corpus.classes))
        if extra:
            raise CorpusError(f"{where}: classes {extra} are not classes of the training corpus {corpus.classes}. "
                              f"Fix: map its emotions onto them, e.g. classes: {{{extra[0]}: <one of "
                              f"{corpus.classes}>, ...}}, or leave them out with a class list")
        shared = set(other.task["path"]) & paths
        if shared:
            raise CorpusError(f"{where}: {len(shared)} audio file(s) are also in the training corpus, e.g. "
                              f"{sorted(shared)[:2]}. Fix: test on another corpus (a cross-corpus test must not "
                              "see training audio)")
        name = other.name if other.name not in tables and other.name != corpus.name else f"{other.name}-{i}"
        tables[name] = other.task.assign(utt_id=lambda t, n=name: n + "/" + t["utt_id"].astype(str))
    return tables


_SHARED: dict[str, Task] = {}


def shared_task(ref: ObjectRef) -> Task:
    """The driver's Task from the object store, fetched once per process (reused trial processes keep it)."""
    import ray

    key = ref.hex()
    if key not in _SHARED:
        _SHARED.clear()  # one sweep per process at a time
        _SHARED[key] = ray.get(ref)
    return _SHARED[key]


def task_for(config: dict, inputs: Iterable[str]) -> Task:
    """A trial's Task: the shipped one when the sweep provides it, else prepared here."""
    if config.get("task_ref") is not None:
        return shared_task(config["task_ref"])
    return prepare_task(config["corpus"], config.get("folds"), inputs, config.get("cache"), config.get("vectors"),
                        test_corpora=config.get("test_corpora") or (), encoder=config.get("encoder"))


@functools.lru_cache(maxsize=4)
def _prepare(key: str) -> Task:
    corpus_cfg, folds, inputs, cache_dir, vectors, progress, test_corpora, engine, encoder = json.loads(key)
    corpus = corpus_from_config(corpus_cfg)
    task_table = corpus.task
    cross = cross_tables(corpus, test_corpora)
    context = corpus.table[corpus.table["label"].isna()] if corpus.has_dialogs else corpus.table.iloc[:0]
    every = extraction_table(corpus, cross)
    report = extract(every, features_for(inputs), cache_dir or DEFAULT_CACHE, progress=progress, engine=engine,
                     configured=configured_features(encoder))
    usable = report.usable if report.stores else set(every["utt_id"])
    cross = {name: frame[frame["utt_id"].isin(usable)].reset_index(drop=True) for name, frame in cross.items()}
    # folds are built on the full task so a quarantined file never moves a speaker between folds
    fold_list = corpus.folds(folds)
    table = task_table[task_table["utt_id"].isin(usable)].reset_index(drop=True)
    vocab = embeddings = None
    oov = 0
    if "words" in inputs:
        vocab = Vocabulary.build(utterance_words(row) for row in task_table.to_dict("records"))
        # a small matrix made here and shipped with the task: a bucket cache keeps it on this machine's disk
        local = cache_dir if cache_dir and not is_remote(cache_dir) else DEFAULT_CACHE
        embeddings, oov = cached_embedding_matrix(vocab, vectors, local)
    context = context[context["utt_id"].isin(usable)].reset_index(drop=True)
    return Task(corpus, table, fold_list, report, vocab, embeddings, oov, cross, context)
