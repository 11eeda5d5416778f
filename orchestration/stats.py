"""Paired comparison of two systems over the same folds and seeds."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

MIN_BOOTSTRAP_PAIRS = 10  # with fewer pairs the bootstrap is optimistic (5 pairs: 3,125 resamples)


def paired_comparison(folds: pd.DataFrame, a: tuple[str, str], b: tuple[str, str], metric: str = "test_ua",
                      bootstrap: int = 10_000, seed: int = 0) -> dict:
    """a - b on `metric` over the (fold, seed) pairs both finished: mean, 95% t interval, paired t-test p,
    and a bootstrap 95% interval and p-value."""
    def pick(cell):
        rows = folds[(folds["model"] == cell[0]) & (folds["ablation"] == cell[1]) & (folds["status"] == "finished")]
        return rows.set_index(["fold", "seed"])[metric]

    left, right = pick(a), pick(b)
    shared = left.index.intersection(right.index)
    diffs = (left.loc[shared] - right.loc[shared]).to_numpy(dtype=float)
    n = len(diffs)
    result = {"a": "/".join(a), "b": "/".join(b), "metric": metric, "n_pairs": n,
              "mean_a": float(left.loc[shared].mean()) if n else float("nan"),
              "mean_b": float(right.loc[shared].mean()) if n else float("nan"),
              "mean_diff": float(diffs.mean()) if n else float("nan")}
    if n < 2:
        return {**result, "ci_low": float("nan"), "ci_high": float("nan"), "p_ttest": float("nan"),
                "boot_low": float("nan"), "boot_high": float("nan"), "p_bootstrap": float("nan")}
    sem = diffs.std(ddof=1) / np.sqrt(n)
    half = stats.t.ppf(0.975, n - 1) * sem
    p_t = float(stats.ttest_rel(left.loc[shared], right.loc[shared]).pvalue) if sem > 0 else (
        0.0 if diffs.mean() != 0 else 1.0)
    result.update({"ci_low": float(diffs.mean() - half), "ci_high": float(diffs.mean() + half), "p_ttest": p_t})
    if n < MIN_BOOTSTRAP_PAIRS:
        return {**result, "boot_low": float("nan"), "boot_high": float("nan"), "p_bootstrap": float("nan")}
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, n, (bootstrap, n))].mean(1)
    centred = means - diffs.mean()
    # Monte-Carlo p-value of the shifted bootstrap; +1 so it is never reported as exactly 0
    p_boot = float((np.sum(np.abs(centred) >= abs(diffs.mean())) + 1) / (bootstrap + 1))
    return {**result, "boot_low": float(np.quantile(means, 0.025)), "boot_high": float(np.quantile(means, 0.975)),
            "p_bootstrap": p_boot}


def fold_interval(rows: pd.DataFrame, metric: str = "test_ua") -> tuple[float, float, int]:
    """95% t interval of `metric` over the folds' means (seeds averaged within a fold: the fold is the unit,
    its seeds share test speakers and training data); (nan, nan, folds) with fewer than two folds."""
    per_fold = rows.groupby("fold")[metric].mean().dropna().to_numpy(dtype=float)
    if len(per_fold) < 2:
        return float("nan"), float("nan"), len(per_fold)
    half = stats.t.ppf(0.975, len(per_fold) - 1) * per_fold.std(ddof=1) / np.sqrt(len(per_fold))
    return float(per_fold.mean() - half), float(per_fold.mean() + half), len(per_fold)
