"""What a trial needs to train: the corpus table, its folds, cached features, vocabulary, embeddings.

Every trial calls `prepare_task` itself (no large objects travel through Ray):
parsing is cheap, features come from the content-keyed cache (the driver
fills it before the sweep starts), and results are memoised per process.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ser_models.data.cache import DEFAULT_CACHE, ExtractionReport, extract
from ser_models.data.corpus import Corpus, load_corpus
from ser_models.data.folds import Fold
from ser_models.data.text import Vocabulary, cached_embedding_matrix, utterance_words

FEATURE_INPUTS = {"waveform", "fbank40", "mfcc39", "mel512_fixed", "mel1024_fixed", "spec257", "word_spans"}


@dataclass
class Task:
    corpus: Corpus
    table: pd.DataFrame          # task utterances whose audio is usable
    folds: list[Fold]
    report: ExtractionReport
    vocab: Vocabulary | None
    embeddings: np.ndarray | None
    oov_words: int = 0

    @property
    def classes(self) -> list[str]:
        return self.corpus.classes


def corpus_from_config(corpus_cfg: dict) -> Corpus:
    options = {k: v for k, v in corpus_cfg.items() if k not in ("name", "root", "classes")}
    return load_corpus(corpus_cfg["name"], corpus_cfg.get("root"), corpus_cfg.get("classes"), **options)


def features_for(inputs) -> list[str]:
    names = sorted(set(inputs) & FEATURE_INPUTS)
    if "word_spans" in names and "fbank40" not in names:
        names.append("fbank40")  # alignments live on the fbank frame grid
    return names


def prepare_task(corpus_cfg: dict, folds: str | None, inputs, cache_dir: str | None = None,
                 vectors: str = "glove-6b-50d", progress: bool = False) -> Task:
    key = json.dumps([corpus_cfg, folds, sorted(inputs), cache_dir, vectors, progress], sort_keys=True, default=str)
    return _prepare(key)


@functools.lru_cache(maxsize=4)
def _prepare(key: str) -> Task:
    corpus_cfg, folds, inputs, cache_dir, vectors, progress = json.loads(key)
    corpus = corpus_from_config(corpus_cfg)
    task_table = corpus.task
    report = extract(task_table, features_for(inputs), cache_dir or DEFAULT_CACHE, progress=progress)
    usable = report.usable if report.stores else set(task_table["utt_id"])
    # folds are built on the full task so a quarantined file never moves a speaker between folds
    fold_list = corpus.folds(folds)
    table = task_table[task_table["utt_id"].isin(usable)].reset_index(drop=True)
    vocab = embeddings = None
    oov = 0
    if "words" in inputs:
        vocab = Vocabulary.build(utterance_words(row) for row in task_table.to_dict("records"))
        embeddings, oov = cached_embedding_matrix(vocab, vectors, cache_dir or DEFAULT_CACHE)
    return Task(corpus, table, fold_list, report, vocab, embeddings, oov)
