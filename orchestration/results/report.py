"""Write a sweep's report: python orchestration/results/report.py results/<sweep>

Produces <sweep>/report.md with <sweep>/figures/*.png, and the same report as
one self-contained <sweep>/report.html (figures embedded) for sharing: the summary table,
the comparison with published numbers, paired comparisons, per-fold bars,
confusion matrices, learning curves and per-speaker accuracy.
"""
from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from orchestration.results import figures as draw
from orchestration.store import storage
from orchestration.results.aggregate import read_table
from orchestration.results.document import Figure, Heading, Table, Text, markdown, self_contained_html
from orchestration.results.figures import ablation_name, cell_name, cells_of
from orchestration.results.published import OURS
from orchestration.results.show import published_table
from orchestration.results.selection import CHOSEN, cell_rows, kept, searched_cells, setting_label
from orchestration.results.stats import fold_comparison, fold_interval
from ser_models.cli import Parser, leave

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # annotations only
    from matplotlib.figure import Figure as MplFigure

PM = "\u00a0±\u00a0"   # non-breaking: a mean and its spread never wrap apart


def seed_sd(rows: pd.DataFrame) -> float:
    """The spread of the seeds' mean test UA over folds (NaN with one seed)."""
    return float(rows.groupby("seed")["test_ua"].mean().std(ddof=1)) if rows["seed"].nunique() > 1 else float("nan")


def pm(mean: float, std: float) -> str:
    return "–" if pd.isna(mean) else (f"{mean:.3f}{PM}{std:.3f}" if pd.notna(std) else f"{mean:.3f}")


def interval(rows: pd.DataFrame | None) -> str:
    low, high, n = fold_interval(rows) if rows is not None else (float("nan"), float("nan"), 0)
    return "–" if np.isnan(low) else f"{low:.3f}\u2013{high:.3f} ({n})"


def summary_frame(summary: pd.DataFrame, folds: pd.DataFrame) -> pd.DataFrame:
    groups = cell_rows(folds)
    searched = (summary["hparams"] != "{}").any()
    rows = []
    for r in summary.itertuples():
        mine = groups.get((r.model, r.ablation, r.hparams))
        rows.append({"model": r.model, "ablation": ablation_name(r.ablation),
                     **({"setting": setting_cell(r.hparams, r.val_chosen_folds, r.n_folds)} if searched else {}),
                     "n": r.n, "test UA": pm(r.test_ua_mean, r.test_ua_std), "95% CI (folds)": interval(mine),
                     "seed sd": seed_sd(mine) if mine is not None else float("nan"),
                     "test WA": pm(r.test_wa_mean, r.test_wa_std),
                     "macro-F1": pm(r.test_macro_f1_mean, r.test_macro_f1_std),
                     "val UA": pm(r.val_ua_mean, r.val_ua_std), "pooled UA": pm(r.pooled_test_ua, None),
                     "oracle UA*": pm(r.test_oracle_ua_mean, r.test_oracle_ua_std)})
    return pd.DataFrame(rows)


def setting_cell(hparams: str, chosen_folds: int, n_folds: int) -> str:
    if hparams == CHOSEN:
        return f"**{CHOSEN}** (compared below)"
    label = setting_label(hparams) or "fixed"
    return f"{label} (kept in {chosen_folds}/{n_folds} folds)" if hparams != "{}" else label


def searched_note(folds: pd.DataFrame) -> str:
    if not searched_cells(folds):
        return ""
    return (f" A searched cell has a row per setting and the row '{CHOSEN}': each fold keeps the setting its own "
            "validation split prefers (its test split never takes part), and that row, not the best setting's, is "
            "the cell's result; the figures and comparisons use it.")


def p_value(p: float) -> str:
    return "–" if np.isnan(p) else ("<0.0001" if p < 1e-4 else f"{p:.4f}")


def comparisons_blocks(folds: pd.DataFrame) -> list:
    """Every pair of cells, the fold as the unit (stats.fold_comparison); nothing when no pair shares 2 folds."""
    rows = []
    for a, b in itertools.combinations(cells_of(folds), 2):
        result = fold_comparison(folds, a, b, "test_ua")
        if result["n_folds"] >= 2:
            rows.append({"A": cell_name(*a), "B": cell_name(*b), "folds": result["n_folds"],
                         "seeds": result["n_seeds"], "mean A-B (UA)": f"{result['mean_diff']:+.3f}",
                         "95% CI (folds)": f"{result['ci_low']:+.3f} .. {result['ci_high']:+.3f}",
                         "t p": p_value(result["p_ttest"]), "sign-flip p": p_value(result["p_sign_flip"]),
                         "seed sd": result["seed_sd"]})
    if not rows:
        return []
    folds_n = max(row["folds"] for row in rows)
    return [Heading("Paired comparisons (test UA, the fold as the unit)"),
            Text(f"Per fold, A - B averaged over the seeds both finished; the interval and the paired t test are "
                 f"over the folds' differences (df = folds - 1), the sign-flip test over their 2^folds sign patterns "
                 f"(with {folds_n} folds its smallest p is {2 / 2 ** folds_n:.4g}); seed sd: the spread of the "
                 "seeds' mean difference. A fold's seeds share its test speakers: they are not independent "
                 "samples, so no test here counts them as such."),
            Table(pd.DataFrame(rows))]


def write_report(sweep_dir: str) -> str:
    """report.md and figures/ in the sweep directory (drawn in a local folder first when storage is remote)."""
    import tempfile

    sweep_dir = storage.normalize(sweep_dir)
    if not storage.is_remote(sweep_dir):
        return str(draw_report(sweep_dir, Path(sweep_dir)))
    with tempfile.TemporaryDirectory() as local:
        draw_report(sweep_dir, Path(local))
        storage.upload_dir(Path(local), sweep_dir)
    return storage.join(sweep_dir, "report.md")


def draw_report(sweep_dir: str, root: Path) -> Path:
    """Figures as PNG and SVG, report.md and report.html; a section with nothing to show is left out."""
    (root / "figures").mkdir(parents=True, exist_ok=True)
    every_setting, epochs = read_table(sweep_dir, "folds"), read_table(sweep_dir, "epochs")
    folds = kept(every_setting)   # figures and comparisons: one setting per fold and seed (selection.py)
    summary, trials = read_table(sweep_dir, "summary"), read_table(sweep_dir, "trials")
    predictions = optional_table(sweep_dir, "predictions")   # a published folder keeps only the small tables
    predictions = predictions[predictions["trial_id"].isin(folds["trial_id"])]
    comparison = published_table(sweep_dir)
    problems: list[str] = []

    def figure(name: str, drawn: MplFigure, alt: str) -> Figure:
        problems.extend(draw.save(drawn, root / "figures" / name))
        return Figure(alt, f"figures/{name}.png")

    status = ", ".join(f"{count} {name}" for name, count in trials["status"].value_counts().items())
    blocks = [Heading(f"Sweep `{sweep_dir.rstrip('/').rsplit('/', 1)[-1]}`", 1),
              Text(f"Protocol: {OURS}. WA = accuracy, UA = mean per-class recall; mean ± std over folds and seeds. "
                   "The test-oracle column picks, per trial, the best test value over epochs (what released code of "
                   "the DS-LSTM and FG_CME papers reports); it is shown only to compare with published figures and "
                   "is never a result."),
              Text(f"Trials: {status}."), Heading("Summary"),
              Text("test UA: mean ± std over every fold and seed; 95% CI (folds): a t interval of UA over the "
                   "folds' means, with the number of folds (the fold is the unit: its seeds share test speakers); "
                   "seed sd: the spread of the seeds' mean UA over folds (– with one seed); macro-F1 on test; "
                   "*oracle UA: the test-oracle epoch, never a result." + searched_note(every_setting)),
              Table(summary_frame(summary, every_setting)), *transductive_blocks(folds), *skew_blocks(folds),
              *ensemble_blocks(folds),
              figure("intervals", draw.interval_bars(folds), "test UA per model with 95% intervals over folds")]
    if comparison["paper_UA"].notna().any():
        blocks += [Heading("Beside the published numbers"), *published_blocks(comparison),
                   figure("published", draw.published_bars(comparison), "published")]
    blocks += [*comparisons_blocks(folds),
               Heading("Per fold"), figure("fold_bars", draw.fold_bars(folds), "per-fold test UA"),
               Heading("Confusion matrices"), figure("confusion", draw.confusion_matrices(folds), "confusion matrices"),
               Heading("Learning curves"),
               figure("learning_curves", draw.learning_curves(folds, epochs), "learning curves")]
    blocks += layer_blocks(folds, figure)
    if not predictions.empty:
        blocks += [Heading("Per speaker"), figure("speakers", draw.speaker_accuracy(predictions),
                                                  "per-speaker accuracy")]
    cross = optional_table(sweep_dir, "cross")
    if not cross.empty:
        blocks += cross_corpus_blocks(folds, cross, figure)
    blocks += unfinished_blocks(trials) + reproducibility_blocks(trials)
    for problem in problems:
        print(f"[report] warning: figures/{problem}", file=sys.stderr)
    (root / "report.html").write_text(self_contained_html(blocks, root))
    report = root / "report.md"
    report.write_text(markdown(blocks))
    return report


def layer_blocks(folds: pd.DataFrame, figure: Callable[[str, MplFigure, str], Figure]) -> list:
    """The per-layer curve of cells probing one encoder layer each, and each fold's validation-chosen layer."""
    from orchestration.results import per_layer

    rows = per_layer.layer_rows(folds)
    if rows.empty:
        return []
    return [Heading("Per encoder layer"),
            Text("Validation UA of the probes of one layer each (ssl_probe/layer_<k>, ssl_svm/layer_<k>). Below, "
                 "per fold and seed the layer with the best validation UA is chosen and that fold's test UA read "
                 "there: the layer is chosen on validation alone."),
            figure("per_layer", draw.per_layer(per_layer.curves(rows), draw.chance_of(folds)),
                   "validation UA per encoder layer"),
            Table(per_layer.best_layer_summary(rows))]


def published_blocks(comparison: pd.DataFrame) -> list:
    """The comparison with each paper's protocol as a numbered note under the table, so no cell wraps."""
    notes = list(dict.fromkeys(comparison["paper_protocol"].fillna("")))
    table = comparison.drop(columns=["ours_UA_std", "paper_protocol"]).assign(
        ablation=comparison["ablation"].map(ablation_name),
        protocol=[f"[{notes.index(p) + 1}]" for p in comparison["paper_protocol"].fillna("")])
    return [Table(table), *(Text(f"[{i}] {note}") for i, note in enumerate(notes, 1) if note),
            Text("test_oracle_UA: per trial, the best test UA over epochs (UA and WA each at its own best epoch); "
                 "test_oracle_rule_UA: per trial, the one epoch FG_CME's released code keeps, the one that "
                 "maximises 0.9·WA + 0.1·UA on test. Both look at the test fold: neither is a result.")]


def cross_corpus_blocks(folds: pd.DataFrame, cross: pd.DataFrame,
                        figure: Callable[[str, MplFigure, str], Figure]) -> list:
    matrix = corpus_matrix(folds, cross)
    table = matrix.assign(UA=[pm(m, s) for m, s in zip(matrix["mean"], matrix["std"])]).rename(columns={"count": "n"})
    return [Heading("Cross-corpus"),
            Text("Every trial's checkpoint, chosen on its own corpus's validation split, is tested once on its "
                 "fold's test speakers (train corpus = test corpus) and once on each other corpus, mapped onto the "
                 "same classes."),
            Table(table[["model", "ablation", "train_corpus", "test_corpus", "n", "UA"]]),
            figure("cross_corpus", draw.cross_corpus(matrix), "cross-corpus UA")]


def corpus_matrix(folds: pd.DataFrame, cross: pd.DataFrame) -> pd.DataFrame:
    """Test UA per (model, ablation, train corpus, test corpus): in-corpus from folds, the rest from cross."""
    own = folds[(folds["status"] == "finished") & ~folds["model"].str.endswith("+ded")]
    rows = pd.concat([own, cross[cross["status"] == "finished"]], ignore_index=True)
    return (rows.groupby(["model", "ablation", "train_corpus", "test_corpus"])["test_ua"]
            .agg(["mean", "std", "count"]).reset_index())


def transductive_cells(folds: pd.DataFrame) -> list[str]:
    """Cells whose features were normalised with statistics of the test speakers' own audio."""
    import json

    cells = []
    for (model, ablation), group in folds[folds["status"] == "finished"].groupby(["model", "ablation"]):
        recipes = [json.loads(text) for text in group["recipe"].dropna()]
        if any(r.get("speaker_norm") and r.get("speaker_norm_stats", "all_audio") == "all_audio" for r in recipes):
            cells.append(cell_name(model, ablation))
    return cells


def transductive_blocks(folds: pd.DataFrame) -> list:
    cells = transductive_cells(folds)
    if not cells:
        return []
    return [Text(f"Transductive rows: {', '.join(cells)} normalise each speaker, test speakers included, by that "
                 "speaker's own audio (train.speaker_norm with speaker_norm_stats: all_audio): no test label is "
                 "read, but the test audio shapes the features. speaker_norm_stats: training_speakers reads none, and "
                 "online only a speaker's utterances before the one scored.")]


def skew_blocks(folds: pd.DataFrame) -> list:
    """train.skewed_test_class: how much UA a speaker normalisation loses when a test speaker's mix is skewed."""
    import json

    if "skewed_test_ua" not in folds or folds["skewed_test_ua"].isna().all():
        return []
    rows = []
    for (model, ablation), group in folds.dropna(subset=["skewed_test_ua", "recipe"]).groupby(["model", "ablation"]):
        recipe = json.loads(group["recipe"].iloc[0])
        drop = group["skewed_reference_ua"] - group["skewed_test_ua"]
        rows.append({"cell": cell_name(model, ablation), "statistics": recipe.get("speaker_norm_stats"),
                     "removed": f"half the {recipe.get('skewed_test_class')} ({int(group['skewed_removed'].mean())} "
                                "per fold)",
                     "UA, full-set statistics": f"{group['skewed_reference_ua'].mean():.3f}",
                     "UA, skewed-set statistics": f"{group['skewed_test_ua'].mean():.3f}",
                     "drop": f"{drop.mean():+.3f} ± {drop.std(ddof=1) if len(drop) > 1 else 0:.3f}"})
    return [Heading("Speaker normalisation on a skewed test mix"),
            Text("Each trial scored its test speakers again with every other one of their utterances of one class "
                 "removed (train.skewed_test_class), once normalised by the statistics the trial used and once by "
                 "statistics of the skewed set itself, as a new speaker with that mix would be. The drop (mean ± sd "
                 "over folds and seeds) is what the normalisation's gain owes to the corpus's balanced mix; "
                 "training_speakers statistics never read test audio, so their drop is 0 by construction."),
            Table(pd.DataFrame(rows))]


def ensemble_blocks(folds: pd.DataFrame) -> list:
    selection = folds["selection"].fillna("")
    fused, auto = folds[selection.str.startswith("late fusion")], folds[selection.str.startswith("automatic")]
    blocks = []
    if len(fused):
        names = ", ".join(f"{model} = {ablation.replace('+', ' + ')}" for model, ablation
                          in fused[["model", "ablation"]].drop_duplicates().itertuples(index=False))
        blocks.append(Text(f"Ensembles declared in the sweep file ({names}): per fold and seed, the mean of the "
                           "members' test probabilities, each member at its validation-chosen epoch; no validation "
                           "or test-oracle column."))
    if len(auto):
        chosen = auto.assign(members=auto["selection"].str.partition("): ")[2])
        blocks += [Text("Automatic ensembles (model `auto`): per fold and seed, members and weights chosen on the "
                        "candidates' validation predictions alone, then that fold's test speakers scored once. "
                        "Their validation columns are the ensemble's own validation scores."),
                   Table(chosen[["ablation", "fold", "seed", "members", "val_ua", "test_ua"]].rename(
                       columns={"ablation": "ensemble"}))]
    return blocks


def optional_table(sweep_dir: str, name: str) -> pd.DataFrame:
    """A table that sweeps aggregated before it existed lack: empty, with its columns."""
    from orchestration.results.schemas import SCHEMAS

    try:
        return read_table(sweep_dir, name)
    except (FileNotFoundError, OSError):
        return SCHEMAS[name].empty_table().to_pandas()


def unfinished_blocks(trials: pd.DataFrame) -> list:
    errors = trials[trials["status"].isin(["error", "incomplete"])]
    if not len(errors):
        return []
    return [Heading("Trials that did not finish"),
            Table(errors[["model", "ablation", "fold", "seed", "status", "attempts"]])]


def reproducibility_blocks(trials: pd.DataFrame) -> list:
    versions = trials.dropna(subset=["torch"]).head(1)
    if not len(versions):
        return []
    v = versions.iloc[0]
    return [Heading("Reproducibility"),
            Text(f"emosweep {v['emosweep']}, torch {v['torch']}, torchaudio {v['torchaudio']}, ray {v['ray']}, "
                 f"optuna {v['optuna']}, Python {v['python']}; git commit `{v['git_commit']}`.")]


def publish(sweep_dir: str, destination: Path,
            tables: tuple[str, ...] = ("summary", "folds", "epochs", "trials")) -> None:
    """Copy the report, its figures and the small tables (dereferenced) to a folder meant for git."""
    import shutil

    source = Path(storage.normalize(sweep_dir))
    destination.mkdir(parents=True, exist_ok=True)
    for name in ("report.md", "report.html", "summary.tex", "sweep.json"):   # sweep.json: the corpus, to re-render
        if (source / name).exists():
            shutil.copy2(source / name, destination / name)
    shutil.copytree(source / "figures", destination / "figures", dirs_exist_ok=True)
    for name in tables:
        target = destination / "tables" / name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree((source / "tables" / name).resolve(), target)


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__)
    parser.add_argument("sweep_dir")
    parser.add_argument("--publish", type=Path, default=None,
                        help="also copy report, figures and small tables here (e.g. results/reports/<sweep>)")
    parser.add_argument("--latex", action="store_true",
                        help="also write the summary as a booktabs LaTeX table, summary.tex, and print it")
    args = parser.parse_args(argv)
    try:
        print(f"wrote {write_report(args.sweep_dir)}")
        if args.latex:
            from orchestration.results.latex import latex_summary

            table = latex_summary(args.sweep_dir)
            target = storage.join(storage.normalize(args.sweep_dir), "summary.tex")
            storage.write_text(target, table)
            print(f"wrote {target}:\n{table}")
        if args.publish:
            publish(args.sweep_dir, args.publish)
            print(f"published to {args.publish}")
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    leave(main())
