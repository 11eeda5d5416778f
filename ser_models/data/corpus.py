"""One entry point for every corpus: load_corpus(name, root, classes) -> Corpus."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from . import iemocap, manifest, ravdess, synthetic
from .folds import Fold, make_folds

# class order is fixed per task so logits mean the same thing everywhere (DED uses ang, hap, neu, sad)
DEFAULT_FOLDS = {"iemocap": "sessions", "ravdess": "actors-5", "synthetic": "sessions"}


@dataclass
class Corpus:
    name: str
    table: pd.DataFrame           # every utterance, including those outside the task (label <NA>)
    classes: list[str]            # task classes, in logit order

    @property
    def task(self) -> pd.DataFrame:
        """Utterances inside the task's classes."""
        return self.table[self.table["label"].notna()].reset_index(drop=True)

    @property
    def has_text(self) -> bool:
        return bool((self.task["text"].str.len() > 0).all())

    @property
    def has_alignment(self) -> bool:
        return bool(self.task["align_source"].notna().any())

    @property
    def has_dialogs(self) -> bool:
        return bool(self.table["dialog"].notna().all())

    def folds(self, strategy: str | None = None) -> list[Fold]:
        return make_folds(self.task, strategy or DEFAULT_FOLDS.get(self.name, "speakers-5"))


def load_corpus(name: str, root: str | Path | None = None, classes: str | list[str] | None = None,
                **options) -> Corpus:
    """`iemocap` / `ravdess` (root = corpus folder), `synthetic` (root = output folder),
    or `manifest` (root = a .csv/.parquet manifest)."""
    if name == "iemocap":
        table = iemocap.load(_require(root, name), classes or "4")
    elif name == "ravdess":
        table = ravdess.load(_require(root, name), classes or "4")
    elif name == "synthetic":
        config = synthetic.SyntheticConfig(**options)
        table = manifest.load(synthetic.generate(root or _default_synthetic_root(config), config), corpus="synthetic")
    elif name == "manifest":
        table = manifest.load(_require(root, name), classes if isinstance(classes, list) else None)
        name = table["corpus"].iloc[0] if len(table) else name
    else:
        raise ValueError(f"unknown corpus {name!r}; use iemocap, ravdess, synthetic or manifest")
    ordered = sorted(table["label"].dropna().unique())
    if isinstance(classes, list):
        ordered = [c for c in (str(c).lower() for c in classes) if c in set(ordered)] or ordered
    return Corpus(name, table, ordered)


def _require(root, name) -> Path:
    if root is None:
        raise ValueError(f"corpus {name!r} needs a root path")
    if not Path(root).exists():
        raise FileNotFoundError(f"{root}: corpus root for {name!r} does not exist. Fix: correct the path")
    return Path(root)


def _default_synthetic_root(config) -> Path:
    from .cache import DEFAULT_CACHE

    return DEFAULT_CACHE.parent / "synthetic" / config.digest()
