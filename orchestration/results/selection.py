"""Which searched setting a fold keeps: the one its own validation split prefers, never its test split.

A searched cell (model, ablation) runs every setting on every fold and seed.
Each fold then keeps the setting with the best mean of its `select_on` metric
over seeds on that fold's validation speakers. Choosing per fold (nested
selection) keeps the choice off every test speaker: a choice pooled over folds
would read validation splits whose speakers are other folds' test speakers.
A grid cell has one setting, always kept.
"""
from __future__ import annotations

import json

import pandas as pd

CHOSEN = "chosen on validation, per fold"   # the summary row of a searched cell
CELL = ["model", "ablation"]


def mark_chosen(folds: pd.DataFrame) -> pd.Series:
    """True for the rows of the setting each (model, ablation, fold) keeps; unfinished rows are never kept."""
    done = folds[folds["status"] == "finished"]
    kept = pd.Series(False, index=folds.index)
    for _, rows in done.groupby([*CELL, "fold"], sort=False):
        metric = rows["select_on"].iloc[0] or "val_ua"
        means = rows.groupby("hparams")[metric].mean()
        if len(means) == 1 or means.isna().all():   # a grid cell; fused rows, which have no validation scores
            best = means.index[0]
        else:   # ties: the first setting in order
            best = means.idxmin() if metric == "val_loss" else means.idxmax()
        kept[rows.index[rows["hparams"] == best]] = True
    return kept


def kept(folds: pd.DataFrame) -> pd.DataFrame:
    """The rows the results report and compare: one setting per fold and seed of every cell."""
    return folds[folds["val_chosen"]] if "val_chosen" in folds else folds


def searched_cells(folds: pd.DataFrame) -> set[tuple[str, str]]:
    counts = folds.groupby(CELL)["hparams"].nunique()
    return {cell for cell, n in counts.items() if n > 1}


def headline(summary: pd.DataFrame) -> pd.DataFrame:
    """One summary row per cell: a searched cell's chosen row, a grid cell's only row."""
    searched = summary.groupby(CELL)["hparams"].transform(lambda h: (h == CHOSEN).any())
    return summary[~searched | (summary["hparams"] == CHOSEN)].reset_index(drop=True)


def setting_label(hparams: str) -> str:
    """A setting as a person reads it: '' for a grid cell's, 'lr=0.00123, dropout=0.3' for a searched one."""
    if hparams == CHOSEN or not hparams:
        return hparams
    values = json.loads(hparams)
    return ", ".join(f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}"
                     for name, value in sorted(values.items()))


def cell_rows(folds: pd.DataFrame) -> dict[tuple[str, str, str], pd.DataFrame]:
    """(model, ablation, hparams) -> its finished fold rows, as the summary's rows are keyed; a searched cell's
    kept settings also under CHOSEN."""
    done = folds[folds["status"] == "finished"]
    groups = dict(iter(done.groupby(["model", "ablation", "hparams"])))
    groups |= dict(iter(kept(done).assign(hparams=CHOSEN).groupby(["model", "ablation", "hparams"])))
    return groups
