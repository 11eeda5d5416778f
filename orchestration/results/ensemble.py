"""Late fusion of a sweep's cells, scored when the tables are built: the `ensembles:` key.

An ensemble is declared in the sweep file before any number exists: a name and two or more of the sweep's
cells (`model/ablation`). Per fold and seed, the members' test probabilities are averaged with equal weights
and scored like any trial. Each member chose its epoch on validation and the members and weights are fixed in
the file, so nothing is picked on the test speakers. Ensembles train nothing: adding one to a finished sweep
reruns no trial.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from orchestration.config.sweep_file import parse_member
from collections.abc import Iterator


def fusions(folds: pd.DataFrame, predictions: pd.DataFrame, name: str,
            members: list[str]) -> Iterator[tuple[dict, pd.DataFrame]]:
    """(first member's fold row, fused prediction rows) for every (fold, seed) all of the members finished."""
    cells = [parse_member(m) for m in members]
    label = "+".join(f"{model}/{ablation}" for model, ablation in cells)
    done = folds[folds["status"] == "finished"]
    per_cell = [done[(done["model"] == model) & (done["ablation"] == ablation)].set_index(["fold", "seed"])
                for model, ablation in cells]
    for fold, seed in sorted(set.intersection(*(set(frame.index) for frame in per_cell))):
        rows = [frame.loc[(fold, seed)] for frame in per_cell]
        if any(isinstance(row, pd.DataFrame) for row in rows):
            continue                    # a searched cell has several settings per (fold, seed): nothing to fuse
        scored = [predictions[predictions["trial_id"] == row["trial_id"]].set_index("utt_id") for row in rows]
        utterances = scored[0].index
        if not len(utterances) or any(len(s) != len(utterances) or not s.index.isin(utterances).all()
                                      for s in scored[1:]):
            continue                    # a member's predictions are missing or damaged for this fold
        probabilities = np.mean([np.stack(s.loc[utterances, "probabilities"].to_numpy()) for s in scored], axis=0)
        classes = list(rows[0]["classes"])
        trial_id = f"{name}:{fold}:{seed}"
        fused = scored[0].loc[utterances].reset_index()
        fused["trial_id"], fused["model"], fused["ablation"] = trial_id, name, label
        fused["predicted"] = [classes[i] for i in probabilities.argmax(1)]
        fused["probabilities"] = list(probabilities.astype(np.float32))
        base = rows[0].to_dict() | {"fold": fold, "seed": seed, "trial_id": trial_id, "model": name, "ablation": label}
        yield base, fused
