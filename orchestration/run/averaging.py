"""Checkpoint averaging (train.average_epochs, train.average_over): the weights of the k best validation epochs,
or of the last k, averaged into one model, kept only where validation prefers it to the best single epoch.

Both choices read validation alone: which epochs enter (their select_on, or their place at the end) and
whether the average replaces the single epoch (its own select_on on validation against the epoch's). Floating
tensors are averaged, batch-norm running statistics included (an approximation SWA would refresh with a pass
over the training data); integer buffers (batch counts) are the best epoch's.
"""
from __future__ import annotations

import torch

Pool = list[dict]   # [{"epoch", "score", "model"}]: the states that may enter the average, at most k


def kept(pool: Pool, epoch: int, score: float, state: dict, settings: dict) -> Pool:
    """The pool after an epoch: its state added, then the k best (by select_on's direction) or the last k."""
    k = int(settings["average_epochs"])
    entry = {"epoch": epoch, "score": score, "model": {name: value.detach().cpu().clone()
                                                       for name, value in state.items()}}
    pool = [*pool, entry]
    if settings["average_over"] == "last":
        return pool[-k:]
    lower_is_better = settings["select_on"] == "val_loss"
    # ties to the earlier epoch, as the single-epoch choice breaks them
    return sorted(pool, key=lambda e: (e["score"] if lower_is_better else -e["score"], e["epoch"]))[:k]


def averaged(pool: Pool, best: dict) -> dict:
    """The mean of the pool's floating tensors; every other entry as the best epoch's state has it."""
    return {name: (torch.stack([entry["model"][name].float() for entry in pool]).mean(0).to(value.dtype)
                   if value.is_floating_point() else value)
            for name, value in best.items()}
