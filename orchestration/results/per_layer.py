"""One cell per encoder layer (ssl_probe/layer_<k>, ssl_svm/layer_<k>): the per-layer curve and the best layer.

The best layer is chosen per fold and seed on validation UA alone (ties: the lower layer), and that fold's test
UA is read at the chosen layer: the layer is a hyperparameter, so test never takes part in choosing it.
"""
from __future__ import annotations

import pandas as pd

from ser_models.registry import get_spec


def layer_of(model: str, ablation: str) -> int | None:
    """k for a numbered layer ablation (layer_<k>), else None (fixed ablations such as last_layer included)."""
    try:
        spec = get_spec(model)
    except KeyError:        # an ensemble's or DED's row: no registry entry of its own
        return None
    if ablation in spec.ablations:
        return None
    return (spec.ablation(ablation) or {}).get("layer")


def layer_rows(folds: pd.DataFrame) -> pd.DataFrame:
    """The finished rows of numbered layer cells, with their layer."""
    done = folds[folds["status"] == "finished"]
    layers = [layer_of(model, ablation) for model, ablation in zip(done["model"], done["ablation"])]
    rows = done.assign(layer=pd.array(layers, dtype="Int64"))
    return rows[rows["layer"].notna()].astype({"layer": int})


def curves(rows: pd.DataFrame) -> pd.DataFrame:
    """Per model and layer: validation and test UA, mean and std over folds and seeds."""
    return (rows.groupby(["model", "layer"]).agg(val_ua=("val_ua", "mean"), val_sd=("val_ua", "std"),
                                                 test_ua=("test_ua", "mean"), runs=("val_ua", "size"))
            .reset_index())


def best_layers(rows: pd.DataFrame) -> pd.DataFrame:
    """Per model, fold and seed: the layer with the best validation UA and that layer's test UA."""
    ordered = rows.sort_values(["model", "fold", "seed", "val_ua", "layer"], ascending=[True, True, True, False, True])
    return ordered.groupby(["model", "fold", "seed"], as_index=False).first()[
        ["model", "fold", "seed", "layer", "val_ua", "test_ua"]]


def best_layer_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per model: the test UA of each fold's validation-chosen layer, and which layers were chosen how often."""
    chosen = best_layers(rows)
    summary = []
    for model, group in chosen.groupby("model"):
        counts = group["layer"].value_counts().sort_index()
        summary.append({"model": model, "folds": group["fold"].nunique(), "runs": len(group),
                        "layers chosen": ", ".join(f"{layer} ({count}x)" for layer, count in counts.items()),
                        "test UA": f"{group['test_ua'].mean():.3f} ± {group['test_ua'].std(ddof=0):.3f}"})
    return pd.DataFrame(summary)
