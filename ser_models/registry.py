"""One registry: model name -> builder, declared inputs, ablations and defaults.

Orchestration asks the registry which features a (model, ablation) consumes,
checks that the corpus can provide them, and builds the module.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data.features import MEANINGS

# The one list of model inputs: what each name means and what a corpus must have to provide it. The features'
# come from ser_models/data/features.py; the transcript's two (words, and the cache's word_spans) are here.
INPUTS = {
    **MEANINGS,
    "words": "word ids of the transcript (needs transcripts)",
    "word_spans": "word start/end times (needs transcripts; .wdseg/TextGrid or the fallback)",
}
NEEDS_TEXT = {"words", "word_spans"}


class SERModel(nn.Module):
    """Base class: forward(batch) -> logits [B, classes]; training_loss may add auxiliary terms."""

    class_weight: torch.Tensor | None = None   # set by the trainer for a class-balanced loss

    def classification_loss(self, logits, labels):
        return F.cross_entropy(logits, labels, weight=self.class_weight)

    def fit_to_training(self, batches) -> None:
        """Statistics taken from the fold's training split before the first step (e.g. standardisation).
        `batches` is a lazy iterable of unshuffled training batches without labels; the default takes none."""

    def parameter_groups(self, lr: float):
        """What the optimiser trains, at train.lr; a model that trains a part at another rate returns param
        groups, a scaled one with its `lr_scale` (a refit replays each epoch's lr times it)."""
        return self.parameters()

    def training_loss(self, batch: dict, labels):
        logits = self(batch)
        return self.classification_loss(logits, labels), logits


class IncompatibleInputs(ValueError):
    pass


@dataclass(frozen=True)
class ModelSpec:
    name: str
    paper: str
    description: str
    builder: Callable[..., nn.Module]
    inputs: Callable[[dict], tuple[str, ...]]
    defaults: dict = field(default_factory=dict)
    ablations: dict[str, dict] = field(default_factory=lambda: {"full": {}})
    # the paper's training recipe (train: keys of a sweep file); a sweep's own train: keys override it
    recipe: dict = field(default_factory=dict)
    recipe_source: str = ""
    # options the registry's listing builds it with, where a sweep supplies sizes (an encoder's layers)
    listing: dict = field(default_factory=dict)
    # options that numbered ablations set: ("layer",) makes layer_0, layer_1, ... set the option layer to 0, 1,
    # ... (one cell per encoder layer, however many layers the sweep's encoder has)
    numbered: tuple[str, ...] = ()

    @property
    def ablation_names(self) -> list[str]:
        """The fixed ablations, then each numbered series as `<prefix>_<k>`."""
        return [*self.ablations, *(f"{option}_<k>" for option in self.numbered)]

    def ablation(self, name: str) -> dict | None:
        """The options an ablation sets, or None when there is no such ablation."""
        if name in self.ablations:
            return self.ablations[name]
        option, _, number = name.rpartition("_")
        if option in self.numbered and number.isdigit():
            return {option: int(number)}
        return None

    def config(self, ablation: str = "full", **overrides) -> dict:
        options = self.ablation(ablation)
        if options is None:
            raise KeyError(f"model {self.name!r} has no ablation {ablation!r}; choose one of {self.ablation_names}")
        unknown = set(overrides) - set(self.defaults) - {"num_classes", "vocab_size", "embeddings"}
        if unknown:
            raise KeyError(f"model {self.name!r} has no option(s) {sorted(unknown)}; options: {sorted(self.defaults)}")
        return {"num_classes": 4, **self.defaults, **options, **overrides}


REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    REGISTRY[spec.name] = spec
    return spec


def get_spec(name: str) -> ModelSpec:
    _load_models()
    if name not in REGISTRY:
        raise KeyError(f"unknown model {name!r}; registered: {sorted(REGISTRY)}")
    return REGISTRY[name]


def build_model(name: str, ablation: str = "full", **overrides) -> SERModel:
    spec = get_spec(name)
    return spec.builder(spec.config(ablation, **overrides))


def model_inputs(name: str, ablation: str = "full", **overrides) -> tuple[str, ...]:
    spec = get_spec(name)
    return spec.inputs(spec.config(ablation, **overrides))


def check_corpus_supports(name: str, ablation: str, corpus) -> tuple[str, ...]:
    """The inputs a (model, ablation) needs, or IncompatibleInputs naming what the corpus lacks."""
    inputs = model_inputs(name, ablation)
    if NEEDS_TEXT & set(inputs) and not corpus.has_text:
        silent = corpus.task.loc[corpus.task["text"].str.len() == 0, "path"]
        raise IncompatibleInputs(f"{name}/{ablation} needs transcripts ({sorted(NEEDS_TEXT & set(inputs))}) but "
                                 f"corpus {corpus.name!r} has {len(silent)} utterance(s) without text (e.g. "
                                 f"{list(silent[:3])}). Fix: fill in their text (a manifest's text column), or "
                                 f"pick an audio-only model or ablation")
    return inputs


def all_models() -> dict[str, ModelSpec]:
    _load_models()
    return dict(REGISTRY)


def _load_models() -> None:
    """Import every module of ser_models/models/: each registers its models, so a new model is one new file."""
    import importlib
    import pkgutil

    from . import models

    for module in pkgutil.iter_modules(models.__path__):
        importlib.import_module(f"{models.__name__}.{module.name}")
