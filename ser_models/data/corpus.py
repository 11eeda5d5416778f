"""One registry of corpora, one entry point: load_corpus(name, root, classes, **options) -> Corpus.

A corpus is one module in `ser_models/data/corpora/` with one `CorpusKind`
subclass, decorated with `@register`. Code outside this package's own
modules can add corpora through the `emosweep.corpora` entry-point group
(the value names the module to import). Nothing else in the project knows
corpus names: folds, features, sweeps and the CLI ask the registry.
"""
from __future__ import annotations

import functools
import importlib
import pkgutil
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path

import pandas as pd

from ..cli import did_you_mean
from .folds import Fold, make_folds
from .schema import canonical_emotion


class CorpusError(ValueError):
    """A corpus cannot be loaded as asked; the message names the file or option and the fix."""


class CorpusKind:
    """What a corpus is: how to read it, its class presets, its default folds and its options."""
    name: str = ""
    help: str = ""
    needs_root: bool = True             # False: the corpus makes itself (synthetic)
    default_folds: str = "speakers-5"
    fold_aliases: dict[str, str] = {}   # a corpus's own names for a fold strategy (RAVDESS: actors-5)
    presets: dict[str, dict[str, str]] = {}   # classes: "4" -> {emotion: class}; emotions outside -> <NA>
    default_classes: str | None = None  # a preset, or None: every label is a class
    options: dict[str, str] = {}        # corpus-specific sweep keys -> help

    def read(self, root: Path | None, classes: list[str] | None, **options) -> pd.DataFrame:
        """Every utterance, `emotion` named from this corpus's own label codes.

        `classes` (explicit class names, or None) lets a corpus tell a typo from a label meant to be left out.
        """
        raise NotImplementedError


CORPORA: dict[str, CorpusKind] = {}


def register(kind: type[CorpusKind]) -> type[CorpusKind]:
    CORPORA[kind.name] = kind()
    return kind


@functools.cache
def discover() -> None:
    """Import this package's corpus modules, then installed plugins; each registers itself."""
    from . import corpora as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
    for plugin in entry_points(group="emosweep.corpora"):
        importlib.import_module(plugin.value)


def corpora() -> dict[str, CorpusKind]:
    """Every registered corpus."""
    discover()
    return CORPORA


def get_kind(name: str) -> CorpusKind:
    known = corpora()
    if name not in known:
        raise CorpusError(f"unknown corpus {name!r}{did_you_mean(name, known)}. Fix: use one of {sorted(known)}, "
                          "or add a module to ser_models/data/corpora/ (docs/corpora.md)")
    return known[name]


@dataclass
class Corpus:
    name: str
    table: pd.DataFrame           # every utterance, including those outside the task (label <NA>)
    classes: list[str]            # task classes, in logit order
    default_folds: str = "speakers-5"
    fold_aliases: dict[str, str] = field(default_factory=dict)

    @property
    def task(self) -> pd.DataFrame:
        """Utterances inside the task's classes."""
        return self.table[self.table["label"].notna()].reset_index(drop=True)

    @property
    def outside(self) -> dict[str, int]:
        """Utterances left out of the task, counted per emotion."""
        left = self.table.loc[self.table["label"].isna(), "emotion"].fillna("<none>")
        return {str(k): int(v) for k, v in left.value_counts().sort_index().items()}

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
        strategy = strategy or self.default_folds
        return make_folds(self.task, self.fold_aliases.get(strategy, strategy))


def load_corpus(name: str, root: str | Path | None = None, classes: str | int | list[str] | None = None,
                **options) -> Corpus:
    kind = get_kind(name)
    unknown = sorted(set(options) - set(kind.options))
    if unknown:
        raise CorpusError(f"corpus.{unknown[0]} is not an option of corpus {name!r}"
                          f"{did_you_mean(unknown[0], kind.options)}. Fix: remove or correct it "
                          f"(options of {name!r}: {sorted(kind.options) or 'none'}; docs/corpora.md)")
    if kind.needs_root:
        root = _require(root, name)
    class_map, wanted = parse_classes(kind, classes)
    declared = wanted or (sorted(set(classes) | set(class_map.values())) if isinstance(classes, dict) else None)
    table = kind.read(Path(root) if root else None, declared, **options)
    return Corpus(table["corpus"].iloc[0] if len(table) else name, *label_task(table, class_map, wanted, name),
                  default_folds=kind.default_folds, fold_aliases=dict(kind.fold_aliases))


def parse_classes(kind: CorpusKind, classes) -> tuple[dict | None, list[str] | None]:
    """(emotion -> class map, None) from a preset or a declared mapping, or (None, [class names]), or the
    corpus's default; never silently ignored. A mapping is how two corpora are put on shared classes
    (cross-corpus tests): {anger: angry, excited: happy, ...}; emotions it does not name are left out."""
    if classes is None:
        return (kind.presets[kind.default_classes] if kind.default_classes else None), None
    if isinstance(classes, (int, str)) and str(classes).strip() in kind.presets:
        return kind.presets[str(classes).strip()], None
    if isinstance(classes, dict) and classes and all(isinstance(k, str) and isinstance(v, str) and v.strip()
                                                     for k, v in classes.items()):
        mapping = {canonical_emotion(k): v.strip().lower() for k, v in classes.items()}
        if len(set(mapping.values())) >= 2:
            return mapping, None
    if isinstance(classes, str) and "," in classes:
        classes = classes.split(",")
    if isinstance(classes, (list, tuple)) and len(classes) >= 2 and \
            all(isinstance(c, str) and c.strip() for c in classes):
        names = [c.strip().lower() for c in classes]
        if len(set(names)) != len(names):
            raise CorpusError(f"corpus.classes {list(classes)} names a class twice. Fix: list each class once")
        return None, names
    presets = f"a preset of {kind.name!r} ({', '.join(sorted(kind.presets))}), " if kind.presets else ""
    raise CorpusError(f"corpus.classes {classes!r} is not {presets}a list of two or more class names, a comma "
                      f"string, nor a mapping of emotions onto two or more classes. Fix: e.g. classes: [angry, happy, "
                      f"neutral, sad], classes: angry,happy,neutral,sad or classes: {{anger: angry, joy: happy, "
                      f"neutral: neutral, sadness: sad}}")


def label_task(table: pd.DataFrame, class_map: dict | None, wanted: list[str] | None,
               name: str = "") -> tuple[pd.DataFrame, list[str]]:
    """Set `label` (class of the task, <NA> outside it) and the class order."""
    table = table.copy()
    present = sorted(table["emotion"].dropna().unique())
    if class_map is not None:
        unused = sorted(set(class_map) - set(present))
        table["label"] = table["emotion"].map(class_map).astype("string")
        classes = sorted(table["label"].dropna().unique())
        if len(classes) < 2:
            raise CorpusError(f"corpus {name!r}: the class mapping leaves {classes} (emotions present: {present}; "
                              f"mapped but absent: {unused}). Fix: map the corpus's own emotions onto the classes")
        return table, classes
    wanted = wanted or present
    missing = [c for c in wanted if c not in present]
    if missing:
        raise CorpusError(f"corpus {name!r}: classes {missing} do not occur; labels present: {present}. "
                          f"Fix: choose classes among them")
    table["label"] = table["emotion"].where(table["emotion"].isin(wanted)).astype("string")
    return table, list(wanted)


def _require(root, name) -> Path:
    if root is None:
        raise CorpusError(f"corpus {name!r} needs a root path. Fix: add corpus.root: /path/to/{name}")
    if not Path(root).expanduser().exists():
        raise FileNotFoundError(f"{root}: corpus root for {name!r} does not exist. Fix: correct the path")
    return Path(root).expanduser()
