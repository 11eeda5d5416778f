"""The summary as a LaTeX table a paper can take as is (booktabs): `emosweep report SWEEP_DIR --latex`.

One row per cell (a searched cell's validation-chosen row), UA and WA in percent
as mean ± std over every fold and seed, the 95% t interval of UA over the folds'
means, the best value of each column in bold, and the protocol in the caption.
"""
from __future__ import annotations

import pandas as pd

from orchestration.results.aggregate import read_table
from orchestration.config.record import sweep_record
from orchestration.results.figures import ablation_name
from orchestration.results.selection import cell_rows, headline
from orchestration.results.stats import fold_interval

SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
           "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def escape(text: str) -> str:
    return "".join(SPECIAL.get(char, char) for char in str(text))


def percent(mean: float, std: float | None, bold: bool) -> str:
    if pd.isna(mean):
        return "--"
    text = f"{100 * mean:.1f}" + (f" $\\pm$ {100 * std:.1f}" if std is not None and pd.notna(std) else "")
    return f"\\textbf{{{text}}}" if bold else text


def latex_summary(sweep_dir: str) -> str:
    folds, summary = read_table(sweep_dir, "folds"), headline(read_table(sweep_dir, "summary"))
    groups = cell_rows(folds)
    done = folds[folds["status"] == "finished"]
    record = sweep_record(sweep_dir) or {}
    corpus = (record.get("corpus") or {}).get("name") or next(iter(done.get("train_corpus", pd.Series()).dropna()),
                                                              "the corpus")
    classes = len(done["classes"].iloc[0]) if len(done) else 0
    n_folds, n_seeds = done["fold"].nunique(), done["seed"].nunique()
    best = {column: summary[column].max() for column in ("test_ua_mean", "test_wa_mean", "test_macro_f1_mean")}
    lines = []
    for row in summary.itertuples():
        low, high, _ = fold_interval(groups[(row.model, row.ablation, row.hparams)]) \
            if (row.model, row.ablation, row.hparams) in groups else (float("nan"), float("nan"), 0)
        ci = "--" if pd.isna(low) else f"[{100 * low:.1f}, {100 * high:.1f}]"
        lines.append(" & ".join([
            escape(row.model), escape(ablation_name(row.ablation)), str(row.n),
            percent(row.test_ua_mean, row.test_ua_std, row.test_ua_mean == best["test_ua_mean"]), ci,
            percent(row.test_wa_mean, row.test_wa_std, row.test_wa_mean == best["test_wa_mean"]),
            percent(row.test_macro_f1_mean, row.test_macro_f1_std,
                    row.test_macro_f1_mean == best["test_macro_f1_mean"])]) + r" \\")
    caption = (f"{escape(corpus)}, {classes} classes: test UA, WA and macro-F1 (\\%) as mean $\\pm$ std over "
               f"{n_folds} speaker-disjoint folds $\\times$ {n_seeds} seed{'s' if n_seeds != 1 else ''}; 95\\% CI: "
               f"t interval of UA over the {n_folds} folds' means (df = {n_folds - 1}). The epoch is chosen on "
               "validation speakers of the training folds; each test fold is scored once. Best in bold.")
    name = str(sweep_dir).rstrip("/").rsplit("/", 1)[-1]    # letters, digits, - and _: a valid label as it is
    return "\n".join([
        f"% emosweep: {escape(name)}, from tables/summary and tables/folds; needs \\usepackage{{booktabs}}",
        r"\begin{table}[t]", r"\centering", f"\\caption{{{caption}}}", f"\\label{{tab:{name}}}",
        r"\begin{tabular}{llrcccc}", r"\toprule",
        r"Model & Ablation & $n$ & UA & 95\% CI (UA) & WA & Macro-F1 \\", r"\midrule", *lines,
        r"\bottomrule", r"\end{tabular}", r"\end{table}", ""])
