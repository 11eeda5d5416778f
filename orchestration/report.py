"""Write a sweep's report: python orchestration/report.py results/<sweep>

Produces <sweep>/report.md with <sweep>/figures/*.png, and the same report as
one self-contained <sweep>/report.html (figures embedded) for sharing: the summary table,
the comparison with published numbers, paired comparisons, per-fold bars,
confusion matrices, learning curves and per-speaker accuracy.
"""
from __future__ import annotations

import itertools
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")   # before pyplot: reports are written on machines without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from orchestration import storage  # noqa: E402
from orchestration.aggregate import read_table  # noqa: E402
from orchestration.document import Figure, Heading, Table, Text, markdown, self_contained_html  # noqa: E402
from orchestration.published import OURS  # noqa: E402
from orchestration.results import published_table  # noqa: E402
from orchestration.selection import CHOSEN, kept, searched_cells, setting_label  # noqa: E402
from orchestration.stats import paired_comparison  # noqa: E402
from ser_models.cli import Parser, leave  # noqa: E402

plt.rcParams.update({"figure.dpi": 110, "font.size": 10, "axes.spines.top": False, "axes.spines.right": False})


def cell_name(model: str, ablation: str) -> str:
    return model if ablation in ("full", "raw") else f"{model} / {ablation}"


def cells_of(folds: pd.DataFrame) -> list[tuple[str, str]]:
    done = folds[folds["status"] == "finished"]
    return sorted(set(zip(done["model"], done["ablation"])))


def grouped_bars(frame: pd.DataFrame, path: Path, ylabel: str, title: str, chance: float | None = None,
                 rotation: int = 0) -> None:
    """One group of bars per index value, one bar per column, values in [0, 1]."""
    width = 0.8 / max(1, len(frame.columns))
    fig, ax = plt.subplots(figsize=(min(14, max(7, 0.3 * len(frame) * len(frame.columns) + 2)), 4.2))
    for i, column in enumerate(frame.columns):
        ax.bar(np.arange(len(frame)) + (i - (len(frame.columns) - 1) / 2) * width, frame[column], width, label=column)
    if chance is not None:
        ax.axhline(chance, color="grey", lw=0.8, ls="--", label="chance")
    ax.set_xticks(range(len(frame)), frame.index, rotation=rotation, fontsize=8 if rotation else 10)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14 if not rotation else -0.25), ncol=3,
              frameon=False)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def interval_bars(folds: pd.DataFrame, path: Path) -> None:
    """Test UA per cell: the mean over folds x seeds with its 95% t interval, best on top."""
    from scipy import stats

    done = folds[folds["status"] == "finished"]
    rows = []
    for (model, ablation), group in done.groupby(["model", "ablation"]):
        values = group["test_ua"].dropna().to_numpy()
        half = (stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
                if len(values) > 1 else 0.0)
        rows.append((cell_name(model, ablation), values.mean(), half, len(values)))
    rows.sort(key=lambda row: row[1])
    longest = max((len(r[0]) for r in rows), default=0)     # room for the labels beside a 5-inch plot
    fig, ax = plt.subplots(figsize=(5 + 0.075 * longest, 0.45 * len(rows) + 1.4))
    ax.errorbar([r[1] for r in rows], range(len(rows)), xerr=[r[2] for r in rows], fmt="o", capsize=4)
    ax.set_yticks(range(len(rows)), [f"{r[0]} (n={r[3]})" for r in rows])
    ax.axvline(1 / len(done["classes"].iloc[0]), color="grey", linestyle=":", label="chance")
    ax.set_xlabel("test UA: mean and 95% interval over folds x seeds")
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def fold_bars(folds: pd.DataFrame, path: Path) -> None:
    done = folds[folds["status"] == "finished"]
    table = done.assign(cell=[cell_name(m, a) for m, a in zip(done["model"], done["ablation"])]) \
        .groupby(["fold", "cell"])["test_ua"].mean().unstack("cell")
    table.columns = [f"{cell} (mean {table[cell].mean():.3f})" for cell in table.columns]
    table.index = [f"fold {f}" for f in table.index]
    grouped_bars(table, path, "test UA (epoch chosen on validation)", "Test UA per fold",
                 chance=1 / len(done["classes"].iloc[0]))


def corpus_matrix(folds: pd.DataFrame, cross: pd.DataFrame) -> pd.DataFrame:
    """Test UA per (model, ablation, train corpus, test corpus): in-corpus from folds, the rest from cross."""
    own = folds[(folds["status"] == "finished") & ~folds["model"].str.endswith("+ded")]
    rows = pd.concat([own, cross[cross["status"] == "finished"]], ignore_index=True)
    return (rows.groupby(["model", "ablation", "train_corpus", "test_corpus"])["test_ua"]
            .agg(["mean", "std", "count"]).reset_index())


def cross_corpus_figure(matrix: pd.DataFrame, path: Path) -> None:
    """One train x test heatmap of UA per model cell; the diagonal is the in-corpus speaker-disjoint test."""
    cells = sorted(set(zip(matrix["model"], matrix["ablation"])))
    fig, axes = plt.subplots(1, len(cells), figsize=(max(6.0, 4.2 * len(cells)), 3.6), squeeze=False)
    for ax, (model, ablation) in zip(axes[0], cells):
        part = matrix[(matrix["model"] == model) & (matrix["ablation"] == ablation)]
        grid = part.pivot(index="train_corpus", columns="test_corpus", values="mean")
        ax.imshow(grid.to_numpy(dtype=float), vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(grid.columns)), grid.columns, rotation=30, ha="right")
        ax.set_yticks(range(len(grid.index)), grid.index)
        for (i, j), value in np.ndenumerate(grid.to_numpy(dtype=float)):
            if not np.isnan(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.6 else "black")
        ax.set_title(cell_name(model, ablation))
        ax.set_xlabel("test corpus")
        ax.set_ylabel("train corpus")
    fig.suptitle("Test UA: train x test corpus (mean over folds, seeds)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def cross_corpus_blocks(folds: pd.DataFrame, cross: pd.DataFrame, figures: Path) -> list:
    if cross.empty:
        return []
    matrix = corpus_matrix(folds, cross)
    cross_corpus_figure(matrix, figures / "cross_corpus.png")
    table = matrix.assign(UA=[f"{m:.3f} ± {s:.3f}" if pd.notna(s) else f"{m:.3f}"
                              for m, s in zip(matrix["mean"], matrix["std"])]).rename(columns={"count": "n"})
    return [Heading("Cross-corpus"),
            Text("Every trial's checkpoint, chosen on its own corpus's validation split, is tested once on its "
                 "fold's test speakers (train corpus = test corpus) and once on each other corpus, mapped onto the "
                 "same classes."),
            Table(table[["model", "ablation", "train_corpus", "test_corpus", "n", "UA"]]),
            Figure("cross-corpus UA", "figures/cross_corpus.png")]


def confusion_matrices(folds: pd.DataFrame, path: Path) -> None:
    cells = cells_of(folds)
    columns = min(3, len(cells))
    rows_n = int(np.ceil(len(cells) / columns))
    fig, axes = plt.subplots(rows_n, columns, figsize=(4.2 * columns, 3.9 * rows_n), squeeze=False)
    for ax, (model, ablation) in zip(axes.flat, cells):
        rows = folds[(folds["model"] == model) & (folds["ablation"] == ablation) & (folds["status"] == "finished")]
        classes = list(rows["classes"].iloc[0])
        counts = sum(np.array([list(r) for r in m]) for m in rows["test_confusion"])
        share = counts / counts.sum(1, keepdims=True).clip(min=1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for (i, j), value in np.ndenumerate(counts):
            ax.text(j, i, f"{share[i, j]:.2f}\n({value})", ha="center", va="center", fontsize=8,
                    color="white" if share[i, j] > 0.55 else "black")
        ax.set_xticks(range(len(classes)), classes, rotation=30)
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{cell_name(model, ablation)}\n(summed over {len(rows)} test folds)", fontsize=9)
    for ax in list(axes.flat)[len(cells):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def learning_curves(folds: pd.DataFrame, epochs: pd.DataFrame, path: Path) -> None:
    trained = set(zip(epochs["model"], epochs["ablation"]))      # not DED or fusion rows: they train nothing
    cells = [c for c in cells_of(folds) if c in trained] or cells_of(folds)[:1]
    fig, axes = plt.subplots(2, len(cells), figsize=(4.2 * len(cells), 6), squeeze=False, sharex="col")
    for column, (model, ablation) in enumerate(cells):
        curves = epochs[(epochs["model"] == model) & (epochs["ablation"] == ablation)]
        chosen = folds[(folds["model"] == model) & (folds["ablation"] == ablation)].set_index("trial_id")
        labelled = set()
        for trial_id, curve in sorted(curves.groupby("trial_id"), key=lambda item: int(item[1]["fold"].iloc[0])):
            fold = int(curve["fold"].iloc[0])
            color = plt.cm.tab10(fold % 10)     # one colour per fold; its seeds share it
            axes[0, column].plot(curve["epoch"], curve["val_ua"], lw=1.0, color=color, alpha=0.8,
                                 label=None if fold in labelled else f"fold {fold}")
            labelled.add(fold)
            axes[1, column].plot(curve["epoch"], curve["train_loss"], lw=1.0, color=color, alpha=0.8)
            if trial_id in chosen.index and pd.notna(chosen.loc[trial_id, "selected_epoch"]):
                epoch = int(chosen.loc[trial_id, "selected_epoch"])
                point = curve[curve["epoch"] == epoch]
                axes[0, column].plot(point["epoch"], point["val_ua"], "o", color=color, ms=5)
        mean = curves.groupby("epoch")["val_ua"].mean()
        axes[0, column].plot(mean.index, mean.to_numpy(), color="black", lw=2.2, label="mean")
        axes[0, column].set_title(cell_name(model, ablation), fontsize=10)
        axes[0, column].set_ylabel("validation UA")
        axes[0, column].set_ylim(0, 1)
        axes[1, column].set_ylabel("train loss")
        axes[1, column].set_xlabel("epoch")
        axes[0, column].legend(fontsize=7, frameon=False)
    fig.suptitle("Learning curves (dots: the epoch chosen on validation)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def speaker_accuracy(predictions: pd.DataFrame, path: Path) -> None:
    """A heatmap: one row per model/ablation, one column per speaker, test accuracy in each cell."""
    if predictions.empty:
        return
    cells = [cell_name(m, a) for m, a in zip(predictions["model"], predictions["ablation"])]
    table = predictions.assign(correct=predictions["label"] == predictions["predicted"], cell=cells) \
        .groupby(["cell", "speaker"])["correct"].mean().unstack("speaker")
    fig, ax = plt.subplots(figsize=(min(18, 1.2 + 0.55 * table.shape[1]), 1.2 + 0.55 * table.shape[0]))
    image = ax.imshow(table.to_numpy(), cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    for (i, j), value in np.ndenumerate(table.to_numpy()):
        if not np.isnan(value):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(table.shape[1]), table.columns, rotation=60, fontsize=8)
    ax.set_yticks(range(table.shape[0]), table.index, fontsize=9)
    ax.set_title("Per-speaker test accuracy (WA); each speaker is in exactly one test fold", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.02, pad=0.01)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def published_bars(comparison: pd.DataFrame, path: Path) -> bool:
    rows = comparison[comparison["paper_UA"].notna()]
    if rows.empty:
        return False
    fig, ax = plt.subplots(figsize=(max(4, 1.6 * len(rows) + 1) + 3.5, 4))
    x = np.arange(len(rows))
    ax.bar(x - 0.27, rows["ours_UA"], 0.27, yerr=rows["ours_UA_std"], capsize=3, label="ours: epoch chosen on validation")
    ax.bar(x, rows["test_oracle_UA"], 0.27, color="#bbbbbb", label="ours: test-oracle epoch (NOT a result)")
    ax.bar(x + 0.27, rows["paper_UA"], 0.27, color="#e39b54", label="published (their protocol)")
    ax.set_xticks(x, [cell_name(m, a) for m, a in zip(rows["model"], rows["ablation"])], fontsize=9)
    ax.set_ylabel("UA")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title("Ours beside the published numbers (UA)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def seed_spread(folds: pd.DataFrame) -> dict:
    """(model, ablation, hparams) -> std over seeds of the seed's mean test UA over folds (NaN with one seed);
    a searched cell's kept settings under CHOSEN."""
    done = folds[folds["status"] == "finished"]
    kept_rows = kept(done).assign(hparams=CHOSEN)
    spread = {}
    for rows in (done, kept_rows):
        per_seed = rows.groupby(["model", "ablation", "hparams", "seed"])["test_ua"].mean()
        spread |= per_seed.groupby(level=[0, 1, 2]).std(ddof=1).to_dict()
    return spread


def summary_frame(summary: pd.DataFrame, folds: pd.DataFrame) -> pd.DataFrame:
    def pm(mean, std):
        return "–" if pd.isna(mean) else (f"{mean:.3f} ± {std:.3f}" if pd.notna(std) else f"{mean:.3f}")
    spread = seed_spread(folds)
    searched = (summary["hparams"] != "{}").any()
    rows = [{"model": r.model, "ablation": r.ablation,
             **({"setting": setting_cell(r.hparams, r.val_chosen_folds, r.n_folds)} if searched else {}),
             "n": r.n, "test UA": pm(r.test_ua_mean, r.test_ua_std),
             "seed sd (UA)": spread.get((r.model, r.ablation, r.hparams), float("nan")),
             "test WA": pm(r.test_wa_mean, r.test_wa_std),
             "test macro-F1": pm(r.test_macro_f1_mean, r.test_macro_f1_std),
             "val UA": pm(r.val_ua_mean, r.val_ua_std), "pooled UA": pm(r.pooled_test_ua, None),
             "test-oracle UA (not a result)": pm(r.test_oracle_ua_mean, r.test_oracle_ua_std)}
            for r in summary.itertuples()]
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


def comparisons_block(folds: pd.DataFrame) -> Table | Text:
    cells = cells_of(folds)
    rows = []
    for a, b in itertools.combinations(cells, 2):
        result = paired_comparison(folds, a, b, "test_ua")
        if result["n_pairs"] >= 2:
            rows.append({"A": cell_name(*a), "B": cell_name(*b), "pairs": result["n_pairs"],
                         "mean A-B (UA)": f"{result['mean_diff']:+.3f}",
                         "95% CI": f"{result['ci_low']:+.3f} .. {result['ci_high']:+.3f}",
                         "paired t p": p_value(result["p_ttest"]), "bootstrap p": p_value(result["p_bootstrap"])})
    return Table(pd.DataFrame(rows)) if rows else Text("_Fewer than two shared folds: no paired comparison._")


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
    figures = root / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    every_setting, epochs = read_table(sweep_dir, "folds"), read_table(sweep_dir, "epochs")
    folds = kept(every_setting)   # figures and comparisons: one setting per fold and seed (selection.py)
    predictions, summary = read_table(sweep_dir, "predictions"), read_table(sweep_dir, "summary")
    predictions = predictions[predictions["trial_id"].isin(folds["trial_id"])]
    trials = read_table(sweep_dir, "trials")
    comparison = published_table(sweep_dir)
    fold_bars(folds, figures / "fold_bars.png")
    interval_bars(folds, figures / "intervals.png")
    confusion_matrices(folds, figures / "confusion.png")
    learning_curves(folds, epochs, figures / "learning_curves.png")
    speaker_accuracy(predictions, figures / "speakers.png")
    has_published = published_bars(comparison, figures / "published.png")
    status = ", ".join(f"{count} {name}" for name, count in trials["status"].value_counts().items())
    blocks = [Heading(f"Sweep `{sweep_dir.rstrip('/').rsplit('/', 1)[-1]}`", 1),
              Text(f"Protocol: {OURS}. WA = accuracy, UA = mean per-class recall; mean ± std over folds and seeds. "
                   "The test-oracle column picks, per trial, the best test value over epochs (what released code of "
                   "the DS-LSTM and FG_CME papers reports); it is shown only to compare with published figures and "
                   "is never a result."),
              Text(f"Trials: {status}."), Heading("Summary"),
              Text("test UA: mean ± std over every fold and seed; seed sd: the spread of the seeds' mean UA over "
                   "folds (– with one seed)." + searched_note(every_setting)),
              Table(summary_frame(summary, every_setting)), *ensemble_blocks(folds),
              Figure("test UA per model with 95% intervals", "figures/intervals.png"),
              Heading("Beside the published numbers"), Table(comparison.drop(columns=["ours_UA_std"]))]
    if has_published:
        blocks.append(Figure("published", "figures/published.png"))
    blocks += [Heading("Paired comparisons (same folds and seeds, test UA)"), comparisons_block(folds),
               Heading("Per fold"), Figure("per-fold test UA", "figures/fold_bars.png"),
               Heading("Confusion matrices"), Figure("confusion matrices", "figures/confusion.png"),
               Heading("Learning curves"), Figure("learning curves", "figures/learning_curves.png"),
               Heading("Per speaker"), Figure("per-speaker accuracy", "figures/speakers.png")]
    blocks += cross_corpus_blocks(folds, optional_table(sweep_dir, "cross"), figures)
    blocks += unfinished_blocks(trials) + reproducibility_blocks(trials)
    (root / "report.html").write_text(self_contained_html(blocks, root))
    report = root / "report.md"
    report.write_text(markdown(blocks))
    return report


def ensemble_blocks(folds: pd.DataFrame) -> list:
    fused = folds[folds["selection"].fillna("").str.startswith("late fusion")]
    if not len(fused):
        return []
    names = ", ".join(f"{model} = {ablation.replace('+', ' + ')}"
                      for model, ablation in fused[["model", "ablation"]].drop_duplicates().itertuples(index=False))
    return [Text(f"Ensembles declared in the sweep file ({names}): per fold and seed, the mean of the members' test "
                 "probabilities, each member at its validation-chosen epoch; no validation or test-oracle column.")]


def optional_table(sweep_dir: str, name: str) -> pd.DataFrame:
    """A table that sweeps aggregated before it existed lack: empty, with its columns."""
    from orchestration.aggregate import SCHEMAS

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


def publish(sweep_dir: str, destination: Path, tables=("summary", "folds", "epochs", "trials")) -> None:
    """Copy the report, its figures and the small tables (dereferenced) to a folder meant for git."""
    import shutil

    source = Path(storage.normalize(sweep_dir))
    destination.mkdir(parents=True, exist_ok=True)
    for name in ("report.md", "report.html"):
        shutil.copy2(source / name, destination / name)
    shutil.copytree(source / "figures", destination / "figures", dirs_exist_ok=True)
    for name in tables:
        target = destination / "tables" / name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree((source / "tables" / name).resolve(), target)


def main(argv=None) -> int:
    parser = Parser(description=__doc__)
    parser.add_argument("sweep_dir")
    parser.add_argument("--publish", type=Path, default=None,
                        help="also copy report, figures and small tables here (e.g. results/reports/<sweep>)")
    args = parser.parse_args(argv)
    try:
        print(f"wrote {write_report(args.sweep_dir)}")
        if args.publish:
            publish(args.sweep_dir, args.publish)
            print(f"published to {args.publish}")
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    leave(main())
