"""Late fusion of a sweep's cells, scored when the tables are built: the `ensembles:` key.

A declared ensemble is named in the sweep file before any number exists: a name and two or more of the sweep's
cells (`model/ablation`). Per fold and seed, the members' test probabilities are averaged with equal weights
and scored like any trial. Each member chose its epoch on validation and the members and weights are fixed in
the file, so nothing is picked on the test speakers.

An automatic ensemble ({method: greedy | top_k, size, from}) picks its members and weights per fold and seed
from the candidates' VALIDATION predictions alone (each trial writes them for the model it chose), then scores
that fold's test split once with them: nested, like the epoch choice. Its rows carry `auto` in the model column
and the ensemble's name as the ablation. Ensembles train nothing: adding one to a finished sweep reruns no
trial (sweeps run before validation predictions were written have none to choose by).
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
        found = aligned(predictions, pd.Series([row["trial_id"] for row in rows]))
        if found is None:
            continue                    # a member's predictions are missing or damaged for this fold
        fused, stacked = found
        probabilities = stacked.mean(axis=0)
        classes = list(rows[0]["classes"])
        trial_id = f"{name}:{fold}:{seed}"
        fused["trial_id"], fused["model"], fused["ablation"] = trial_id, name, label
        fused["predicted"] = [classes[i] for i in probabilities.argmax(1)]
        fused["probabilities"] = list(probabilities.astype(np.float32))
        base = rows[0].to_dict() | {"fold": fold, "seed": seed, "trial_id": trial_id, "model": name, "ablation": label}
        yield base, fused


def choose_weights(probabilities: np.ndarray, labels: np.ndarray, method: str, size: int) -> np.ndarray:
    """Each candidate's weight from VALIDATION predictions alone ([candidates, utterances, classes] and the
    labels): the argument never holds a test number, so nothing about the test speakers can pick a member.

    top_k: the `size` candidates of best validation UA, equal weights (ties: the earlier candidate).
    greedy: forward selection with replacement (Caruana et al., ICML 2004): from nothing, `size` rounds each add
    the candidate whose addition gives the best validation UA of the mean (ties: the earlier); the weights are
    the counts at the best round, so a member added after the peak is dropped again."""
    from ser_models.metrics import classification_metrics

    classes = probabilities.shape[2]

    def ua(weights: np.ndarray) -> float:
        fused = np.tensordot(weights / weights.sum(), probabilities, axes=1)
        return classification_metrics(labels, fused.argmax(1), classes)["ua"]

    single = np.eye(len(probabilities))
    if method == "top_k":
        scores = [ua(row) for row in single]
        weights = np.zeros(len(probabilities))
        weights[sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:size]] = 1
        return weights
    counts, best, best_score = np.zeros(len(probabilities)), None, -np.inf
    for _ in range(size):
        scores = [ua(counts + row) for row in single]
        chosen = int(np.argmax(scores))        # the first of equals
        counts[chosen] += 1
        if scores[chosen] > best_score:
            best, best_score = counts.copy(), scores[chosen]
    return best


def auto_fusions(folds: pd.DataFrame, predictions: pd.DataFrame, validation: pd.DataFrame, name: str,
                 spec: dict) -> Iterator[tuple[dict, pd.DataFrame, pd.DataFrame, str]]:
    """(first candidate's fold row, fused test rows, fused validation rows, members) per (fold, seed) where two
    or more of spec["from"]'s cells finished with validation predictions (refit cells have none)."""
    done = folds[(folds["status"] == "finished") & folds["trial_id"].isin(set(validation["trial_id"]))]
    done = done[(done["model"] + "/" + done["ablation"]).isin(spec["from"])]
    for (fold, seed), rows in done.groupby(["fold", "seed"], sort=True):
        rows = rows.assign(cell=rows["model"] + "/" + rows["ablation"]).sort_values("cell")
        if rows["cell"].nunique() < 2 or rows["cell"].duplicated().any():
            continue                    # fewer than two candidates, or searched settings: nothing to choose from
        per_split = [aligned(source, rows["trial_id"]) for source in (validation, predictions)]
        if any(part is None for part in per_split):
            continue                    # a member's predictions are missing or damaged for this fold
        (val_frame, val_probs), (test_frame, test_probs) = per_split
        classes = list(rows.iloc[0]["classes"])
        labels = val_frame["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
        weights = choose_weights(val_probs, labels, spec["method"], spec["size"])
        members = ", ".join(f"{cell} x{int(w)}" if spec["method"] == "greedy" else cell
                            for cell, w in zip(rows["cell"], weights) if w)
        fused = [frame.assign(trial_id=f"auto:{name}:{fold}:{seed}", model="auto", ablation=name,
                              predicted=[classes[i] for i in mean.argmax(1)], probabilities=list(mean))
                 for frame, probs in ((test_frame, test_probs), (val_frame, val_probs))
                 for mean in [np.tensordot(weights / weights.sum(), probs, axes=1).astype(np.float32)]]
        base = rows.iloc[0].drop("cell").to_dict() | {"fold": fold, "seed": seed,
                                                      "trial_id": f"auto:{name}:{fold}:{seed}"}
        yield base, fused[0], fused[1], members


def aligned(source: pd.DataFrame, trial_ids: pd.Series) -> tuple[pd.DataFrame, np.ndarray] | None:
    """The first trial's rows and every trial's probabilities on its utterances, [trials, utterances, classes];
    None when a trial's utterances differ from the first's."""
    scored = [source[source["trial_id"] == trial].set_index("utt_id") for trial in trial_ids]
    utterances = scored[0].index
    if not len(utterances) or any(len(s) != len(utterances) or not s.index.isin(utterances).all()
                                  for s in scored[1:]):
        return None
    stacked = np.stack([np.stack(s.loc[utterances, "probabilities"].to_numpy()) for s in scored])
    return scored[0].loc[utterances].reset_index(), stacked
