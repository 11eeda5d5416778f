"""A trial's data loaders: the training split (sharded over DDP ranks), validation and test kept on the
device while they fit a budget, cross-corpus test sets, the test dialogs' context turns, and the skewed test
mix of train.skewed_test_class."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from torch.utils.data import DataLoader, DistributedSampler

from ser_models.data.dataset import (SPOKEN_ORDER, UtteranceDataset, collate, online_statistics,
                                     speaker_statistics)

from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # annotations only
    from orchestration.run.session import LocalSession
    from orchestration.run.task import Task
    from ser_models.data.folds import Fold


@dataclass
class Loaders:
    train: DataLoader
    evaluate: dict             # validation and test: batches kept on the device, or a loader (evaluation_batches)
    sampler: DistributedSampler
    sizes: dict
    unlabelled: object         # lazy: the training split in order, for Model.fit_to_training
    cross: dict                # cross-corpus test sets: name -> DataLoader, read once at the end
    context: DataLoader | None  # turns outside the task in the test dialogs, scored for DED only
    skewed: dict                # train.skewed_test_class: {removed, reference, skewed}, or {}


def make_loaders(task: Task, fold: Fold, inputs: tuple[str, ...], config: dict, session: LocalSession, seed: int,
                 device: torch.device) -> Loaders:
    """train.batch_size is the global batch: each of W DDP ranks takes batch_size / W of it.

    Every setting draws the epoch's order from one DistributedSampler (1 replica in-process), so
    rank r's i-th batch is the i-th global batch's elements r, r+W, ...: with gradients averaged
    over ranks, a DDP step sees the same examples as the in-process step.
    """
    split = {name: task.table[task.table["utt_id"].isin(set(getattr(fold, name)))]
             for name in ("train", "validation", "test")}
    stats = normalisation(task, split["train"], inputs, config["train"])
    datasets = {name: UtteranceDataset(part, task.report.stores, inputs, task.classes, task.vocab, stats)
                for name, part in split.items()}
    batch_size = int(config["train"]["batch_size"])
    sampler = DistributedSampler(datasets["train"], session.world_size, session.rank, shuffle=True, seed=seed)
    train = DataLoader(datasets["train"], batch_size=max(1, batch_size // session.world_size), sampler=sampler,
                       collate_fn=collate, generator=torch.Generator().manual_seed(seed),
                       num_workers=int(config["train"]["num_workers"]),
                       pin_memory=device.type == "cuda")
    evaluate = {name: evaluation_batches(datasets[name], batch_size, device) for name in ("validation", "test")}
    cross = {name: scoring_loader(task, frame, inputs, stats, batch_size) for name, frame in task.cross.items()}
    return Loaders(train, evaluate, sampler, {name: len(d) for name, d in datasets.items()},
                   unlabelled(datasets["train"], batch_size, device), cross,
                   context_loader(task, split["test"], inputs, stats, batch_size),
                   skewed_loaders(task, split, inputs, config["train"], stats))


def normalisation(task: Task, train: pd.DataFrame, inputs: tuple[str, ...], settings: dict,
                  left_out: frozenset = frozenset()) -> dict | None:
    """train.speaker_norm's statistics for every utterance a trial reads (the task's, test corpora's, context
    turns'), as speaker_norm_stats says; `left_out` utterances are treated as never recorded."""
    if not settings["speaker_norm"]:
        return None
    mode = settings.get("speaker_norm_stats")
    if mode == "training_speakers":      # reads no other audio: nothing else is built
        return speaker_statistics(train, task.report.stores, inputs, pooled=True)
    everyone = pd.concat([task.table, *task.cross.values(), task.context], ignore_index=True)
    everyone = everyone[~everyone["utt_id"].isin(left_out)]
    if mode != "online":                 # all_audio
        return speaker_statistics(everyone, task.report.stores, inputs)
    stats = speaker_statistics(train, task.report.stores, inputs, pooled=True)
    unseen = everyone[~everyone["utt_id"].isin(set(train["utt_id"]))]   # by the speaker's earlier audio
    return stats | online_statistics(unseen, task.report.stores, inputs)


def skewed_loaders(task: Task, split: dict, inputs: tuple[str, ...], settings: dict, stats: dict | None) -> dict:
    """train.skewed_test_class: the test split without every other one of each speaker's utterances of that
    class (in spoken order), normalised by the trial's own statistics (reference) and by statistics that never
    saw the removed ones (skewed): what speaker_norm does when a new speaker's mix is not the corpus's."""
    chosen = settings.get("skewed_test_class")
    if not chosen:
        return {}
    test = split["test"]
    order = [column for column in SPOKEN_ORDER if column in test]
    removed = frozenset(utt_id for _, utterances in test[test["label"] == chosen].sort_values(order, kind="stable")
                        .groupby("speaker")["utt_id"] for utt_id in list(utterances)[1::2])
    kept = test[~test["utt_id"].isin(removed)]
    skewed = normalisation(task, split["train"], inputs, settings, removed)
    return {"removed": len(removed),
            **{name: scoring_loader(task, kept, inputs, which, int(settings["batch_size"]))
               for name, which in (("reference", stats), ("skewed", skewed))}}


def scoring_loader(task: Task, frame: pd.DataFrame, inputs: tuple[str, ...], stats: dict | None,
                   batch_size: int) -> DataLoader:
    """Utterances scored once at a trial's end, in order. Their own generator: reading them draws nothing from
    the training streams."""
    dataset = UtteranceDataset(frame, task.report.stores, inputs, task.classes, task.vocab, stats)
    return DataLoader(dataset, batch_size=batch_size, collate_fn=collate, generator=torch.Generator())


EVALUATION_KEPT_BYTES = 256 * 2**20


def evaluation_batches(dataset: UtteranceDataset, batch_size: int, device: torch.device) -> list[dict] | DataLoader:
    """A split's batches are the same every epoch: collated once and kept on the device while its frames fit in
    EVALUATION_KEPT_BYTES; a larger split is read from the shards again each epoch, so that a trial's memory
    stays bounded whatever the corpus's size (bench/data_plane.py)."""
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate)
    if dataset.frame_bytes() > EVALUATION_KEPT_BYTES:
        return loader
    return [to_device(batch, device) for batch in loader]


def context_loader(task: Task, test: pd.DataFrame, inputs: tuple[str, ...], stats: dict | None,
                   batch_size: int) -> DataLoader | None:
    """The test dialogs' turns outside the task's classes (a placeholder label: their loss is never used)."""
    if task.context is None or task.context.empty:
        return None
    turns = task.context[task.context["dialog"].isin(set(test["dialog"].dropna()))]
    if turns.empty:
        return None
    return scoring_loader(task, turns.assign(label=task.classes[0]), inputs, stats, batch_size)


def unlabelled(dataset: UtteranceDataset, batch_size: int, device: torch.device) -> Iterator[dict]:
    """The whole training split in order, for statistics a model takes before training (every DDP rank
    alike). A generator: nothing is read, and no random state is drawn, unless a model asks."""
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate, generator=torch.Generator())
    for batch in loader:
        yield to_device({k: v for k, v in batch.items() if k != "labels"}, device)


def to_device(batch: dict, device: torch.device) -> dict:
    """Every tensor, lengths too: models build masks from lengths and apply them to the features (lengths left
    on the CPU failed every such model on an H200 with "mask on cpu and self on cuda:0"); the one consumer that
    needs them on the CPU, pack_padded_sequence, moves its own copy (blocks.PackedLSTM)."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
