"""A trial's identity across runs of a sweep: what it trains, never which Tune trial id ran it.

Every run of a sweep starts a fresh Tune experiment in the same folder (Tune's own state is never loaded
back: it is pickled). A trial is found again by its identity: model, ablation, suggestion group, fold, seed
and searched hyperparameters. Finished identities are skipped, unfinished ones continue from the newest
checkpoint any earlier run left for them.
"""
from __future__ import annotations

import hashlib
import json


def identity(config: dict) -> tuple:
    """`settings` is the digest of the sweep file's settings that decide a trial's numbers (sweep.py)."""
    hparams = json.dumps(config.get("hparams") or {}, sort_keys=True, default=str)
    return (config["model"], config["ablation"], config.get("group"), int(config["fold"]), int(config["seed"]),
            hparams, config.get("settings"))


def identity_key(config: dict) -> str:
    """A folder-safe name for the identity (DDP trials' Ray Train runs live under it)."""
    model, ablation, group, fold, seed, hparams, settings = identity(config)
    digest = hashlib.sha256(f"{hparams}{settings}".encode()).hexdigest()[:8]
    return f"{model}-{ablation}-{str(group).replace('/', '_')}-f{fold}-s{seed}-{digest}"
