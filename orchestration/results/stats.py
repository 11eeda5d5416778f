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
    def pick(cell: tuple[str, str]) -> pd.Series:
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


EXACT_SIGN_FLIP_FOLDS = 16   # 2^16 patterns; more folds: a Monte-Carlo sample of them


def fold_comparison(folds: pd.DataFrame, a: tuple[str, str], b: tuple[str, str], metric: str = "test_ua",
                    samples: int = 100_000, seed: int = 0) -> dict:
    """a - b with the fold as the unit: per fold, the difference over the seeds both finished, averaged; then a
    95% t interval and paired t-test over the folds (df = folds - 1) and the sign-flip test over the folds.

    The seeds of a fold share its test speakers and training data, so fold x seed runs are not independent;
    `seed_sd` (the spread of the seeds' mean difference over folds) is reported apart. With F folds the smallest
    sign-flip p is 2 / 2^F (0.0625 with 5 folds): five folds alone cannot reach p < 0.05 by that test."""
    def pick(cell: tuple[str, str]) -> pd.Series:
        rows = folds[(folds["model"] == cell[0]) & (folds["ablation"] == cell[1]) & (folds["status"] == "finished")]
        return rows.set_index(["fold", "seed"])[metric]

    left, right = pick(a), pick(b)
    shared = left.index.intersection(right.index)
    runs = (left.loc[shared] - right.loc[shared]).dropna()
    per_fold = runs.groupby(level="fold").mean().to_numpy(dtype=float)
    per_seed = runs.groupby(level="seed").mean()
    n = len(per_fold)
    result = {"a": "/".join(a), "b": "/".join(b), "metric": metric, "n_folds": n,
              "n_seeds": int(runs.index.get_level_values("seed").nunique()) if len(runs) else 0,
              "mean_diff": float(per_fold.mean()) if n else float("nan"),
              "seed_sd": float(per_seed.std(ddof=1)) if len(per_seed) > 1 else float("nan"),
              "ci_low": float("nan"), "ci_high": float("nan"), "p_ttest": float("nan"), "p_sign_flip": float("nan")}
    if n < 2:
        return result
    sem = per_fold.std(ddof=1) / np.sqrt(n)
    half = stats.t.ppf(0.975, n - 1) * sem
    p_t = float(stats.ttest_1samp(per_fold, 0.0).pvalue) if sem > 0 else (0.0 if per_fold.mean() != 0 else 1.0)
    return {**result, "ci_low": float(per_fold.mean() - half), "ci_high": float(per_fold.mean() + half),
            "p_ttest": p_t, "p_sign_flip": sign_flip_p(per_fold, samples, seed)}


def sign_flip_p(differences: np.ndarray, samples: int = 100_000, seed: int = 0) -> float:
    """Two-sided: the share of sign patterns whose mean is at least as far from 0 as the observed one (every
    pattern up to EXACT_SIGN_FLIP_FOLDS differences, else a sample that counts the observed pattern once)."""
    n = len(differences)
    if n <= EXACT_SIGN_FLIP_FOLDS:
        signs = 1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)
        means = np.abs((signs * differences).mean(1))
        return float(np.mean(means >= abs(differences.mean()) - 1e-12))
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(samples, n))
    means = np.abs((signs * differences).mean(1))
    return float((np.sum(means >= abs(differences.mean()) - 1e-12) + 1) / (samples + 1))
