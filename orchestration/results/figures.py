"""The report's figures, drawn for print: a two-column paper's widths, fonts >= 8 pt, a colour-blind-safe palette.

Each function returns a matplotlib Figure; `save` writes it as PNG and SVG
(text kept as text) and returns what `layout_problems` finds: text boxes that
intersect, text smaller than MIN_FONT_PT, a figure wider than the page.
"""
from __future__ import annotations

import re
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")   # before pyplot: reports are written on machines without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from cycler import cycler  # noqa: E402

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # annotations only
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PAGE_WIDTH_IN = 7.0     # a two-column paper's text width (IEEE 7.16 in): no figure is wider, so none is shrunk
MIN_FONT_PT = 8
# Okabe & Ito's palette: told apart with every common colour-vision deficiency
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
HEATMAP = "cividis"     # perceptually uniform and colour-blind safe
plt.rcParams.update({"font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "xtick.labelsize": 8,
                     "ytick.labelsize": 8, "legend.fontsize": 8, "figure.titlesize": 9,
                     "axes.prop_cycle": cycler(color=PALETTE), "axes.spines.top": False, "axes.spines.right": False,
                     "savefig.dpi": 200, "svg.fonttype": "none", "svg.hashsalt": "emosweep",
                     "font.family": "DejaVu Sans"})


def cell_name(model: str, ablation: str) -> str:
    """How a figure or table names a cell; an ensemble by its own name (its ablation lists its members)."""
    return model if ablation in ("full", "raw") or "+" in ablation else f"{model} / {ablation}"


def ablation_name(ablation: str) -> str:
    return f"ensemble of {ablation.count('+') + 1}" if "+" in ablation else ablation


def cells_of(folds: pd.DataFrame) -> list[tuple[str, str]]:
    done = folds[folds["status"] == "finished"]
    return sorted(set(zip(done["model"], done["ablation"])))


def chance_of(folds: pd.DataFrame) -> float:
    return 1 / len(folds[folds["status"] == "finished"]["classes"].iloc[0])


# ---------------------------------------------------------------- saving and checking

def save(fig: Figure, path: Path) -> list[str]:
    """path.png (200 dpi) and path.svg; returns the layout problems found (empty: fit for print)."""
    problems = layout_problems(fig)
    for suffix in (".png", ".svg"):     # no date inside: the same tables draw the same bytes
        fig.savefig(path.with_suffix(suffix), bbox_inches="tight", pad_inches=0.03, metadata={"Date": None}
                    if suffix == ".svg" else {})
    plt.close(fig)
    return [f"{path.with_suffix('.png').name}: {problem}" for problem in problems]


def layout_problems(fig: Figure) -> list[str]:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = drawn_texts(fig)
    problems = [f"{t.get_text()!r} is {t.get_fontsize():g} pt (< {MIN_FONT_PT})" for t in texts
                if t.get_fontsize() < MIN_FONT_PT]
    width = fig.get_tightbbox(renderer).width
    if width > PAGE_WIDTH_IN + 0.3:
        problems.append(f"{width:.1f} in wide, more than the page's {PAGE_WIDTH_IN} in")
    boxes = [(t, t.get_window_extent(renderer).shrunk(0.98, 0.9)) for t in texts]
    for i, (a, box_a) in enumerate(boxes):
        for b, box_b in boxes[i + 1:]:
            if box_a.overlaps(box_b):
                problems.append(f"{a.get_text()!r} overlaps {b.get_text()!r}")
    return problems


def drawn_texts(fig: Figure) -> list:
    """Every text the figure shows: titles, axis labels, tick labels in view, annotations, legends."""
    texts = list(fig.texts)
    legends = list(fig.legends)
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        texts += [*ax.texts, ax.title]
        legends += [ax.get_legend()] if ax.get_legend() is not None else []
        if not ax.axison:
            continue
        for axis in (ax.xaxis, ax.yaxis):
            texts.append(axis.label)
            low, high = sorted(axis.get_view_interval())
            locations = axis.get_majorticklocs()
            for tick in axis.get_major_ticks(len(locations)):
                if low - 1e-9 <= tick.get_loc() <= high + 1e-9:
                    texts += [tick.label1, tick.label2]
    for legend in legends:
        texts += [*legend.get_texts(), legend.get_title()]
    return [t for t in dict.fromkeys(texts) if t.get_visible() and t.get_text().strip()]


def fit_labels(ax: Axes, positions: Sequence[float], labels: list[str], axis: str = "x", upright: bool = False) -> None:
    """Tick labels that never collide: wrapped to the room each tick has, else turned upright (90 degrees, so
    their boxes are exact for the layout check). Call after the figure's size and subplots are set."""
    if axis == "y":
        ax.set_yticks(positions, labels)
        return
    room_in = ax.get_position().width * ax.figure.get_size_inches()[0] / max(1, len(labels))
    chars = int(0.8 * room_in * 72 / (0.6 * MIN_FONT_PT))
    lines = [wrap_label(str(label), chars) for label in labels]
    if not upright and all(len(line) <= chars for label in lines for line in label.splitlines()):
        ax.set_xticks(positions, lines)
    else:
        ax.set_xticks(positions, labels, rotation=90)


def wrap_label(label: str, chars: int) -> str:
    """Lines of at most `chars`, broken after spaces and '/', and after '_' only inside a name too long."""
    def greedy(tokens: list[str]) -> list[str]:
        lines = [""]
        for token in tokens:
            if lines[-1] and len(lines[-1]) + len(token.rstrip()) > chars:
                lines.append("")
            lines[-1] += token
        return [line.strip() for line in lines]

    lines = []
    for line in greedy(re.split(r"(?<=[ /])", label)):
        lines += greedy(re.split(r"(?<=_)", line)) if len(line) > chars else [line]
    return "\n".join(lines)


def wrapped_title(text: str, width_in: float, size_pt: float = 9) -> str:
    return textwrap.fill(text, max(12, int(0.75 * width_in * 72 / (0.6 * size_pt))))


def legend_columns(labels: list[str], width_in: float = PAGE_WIDTH_IN) -> int:
    longest = max((len(str(label)) for label in labels), default=1)
    return max(1, min(len(labels), int(width_in * 72 // (0.6 * MIN_FONT_PT * longest + 30))))


# ---------------------------------------------------------------- figures

def fold_bars(folds: pd.DataFrame) -> Figure:
    """Test UA per fold, one bar per cell; the legend gives each cell's mean."""
    done = folds[folds["status"] == "finished"]
    table = done.assign(cell=[cell_name(m, a) for m, a in zip(done["model"], done["ablation"])]) \
        .groupby(["fold", "cell"])["test_ua"].mean().unstack("cell")
    labels = [f"{cell} (mean {table[cell].mean():.3f})" for cell in table.columns]
    width = 0.8 / max(1, len(table.columns))
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH_IN, 2.8), layout="constrained")
    for i, column in enumerate(table.columns):
        ax.bar(np.arange(len(table)) + (i - (len(table.columns) - 1) / 2) * width, table[column], width,
               label=labels[i], color=PALETTE[i % len(PALETTE)])
    ax.axhline(chance_of(folds), color="grey", lw=0.8, ls="--", label="chance")
    fit_labels(ax, range(len(table)), [f"fold {f}" for f in table.index])
    ax.set_ylabel("test UA (epoch chosen on validation)")
    ax.set_ylim(0, 1)
    ax.set_title("Test UA per fold")
    fig.legend(loc="outside lower center", ncol=legend_columns(labels + ["chance"]), frameon=False)
    return fig


def interval_bars(folds: pd.DataFrame) -> Figure:
    """Test UA per cell: the mean over folds x seeds with its 95% t interval over folds, best on top."""
    from scipy import stats

    done = folds[folds["status"] == "finished"]
    rows = []
    for (model, ablation), group in done.groupby(["model", "ablation"]):
        per_fold = group.groupby("fold")["test_ua"].mean().dropna().to_numpy()
        half = (stats.t.ppf(0.975, len(per_fold) - 1) * per_fold.std(ddof=1) / np.sqrt(len(per_fold))
                if len(per_fold) > 1 else 0.0)
        rows.append((cell_name(model, ablation), group["test_ua"].mean(), half, len(per_fold), len(group)))
    rows.sort(key=lambda row: row[1])
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH_IN, 0.28 * len(rows) + 1.0), layout="constrained")
    ax.errorbar([r[1] for r in rows], range(len(rows)), xerr=[r[2] for r in rows], fmt="o", capsize=3,
                color=PALETTE[0])
    fit_labels(ax, range(len(rows)), [wrap_label(f"{r[0]} ({r[3]} folds, n={r[4]})", 48) for r in rows], axis="y")
    ax.axvline(chance_of(folds), color="grey", linestyle=":")
    ax.set_xlabel("test UA: mean, and 95% t interval over the folds' means (dotted: chance)")
    ax.set_ylim(-0.6, len(rows) - 0.4)
    return fig


def per_layer(curves: pd.DataFrame, chance: float) -> Figure:
    """Validation UA per encoder layer, one line per probe (mean and std over folds and seeds)."""
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH_IN / 2, 2.4), layout="constrained")
    for model, group in curves.groupby("model"):
        group = group.sort_values("layer")
        line, = ax.plot(group["layer"], group["val_ua"], marker="o", markersize=3, label=model)
        ax.fill_between(group["layer"], group["val_ua"] - group["val_sd"].fillna(0),
                        group["val_ua"] + group["val_sd"].fillna(0), color=line.get_color(), alpha=0.2, linewidth=0)
    ax.axhline(chance, color="grey", linestyle=":")
    ax.set_xlabel("encoder layer (0: CNN or embedding output)")
    ax.set_ylabel("validation UA")
    ax.xaxis.get_major_locator().set_params(integer=True)
    labels = sorted(set(curves["model"]))
    fig.legend(loc="outside lower center", ncol=legend_columns(labels, PAGE_WIDTH_IN / 2), frameon=False)
    return fig


def confusion_matrices(folds: pd.DataFrame) -> Figure:
    """Row-normalised test confusion per cell, summed over folds (and seeds); counts shown where they fit."""
    cells = cells_of(folds)
    classes_n = len(folds[folds["status"] == "finished"]["classes"].iloc[0])
    columns = min(len(cells), 3 if classes_n <= 5 else 2 if classes_n <= 8 else 1)
    rows_n = int(np.ceil(len(cells) / columns))
    side = PAGE_WIDTH_IN / columns
    fig, axes = plt.subplots(rows_n, columns, figsize=(PAGE_WIDTH_IN, side * rows_n + 0.3), squeeze=False,
                             layout="constrained")
    image = None
    for ax, (model, ablation) in zip(axes.flat, cells):
        rows = folds[(folds["model"] == model) & (folds["ablation"] == ablation) & (folds["status"] == "finished")]
        classes = list(rows["classes"].iloc[0])
        counts = sum(np.array([list(r) for r in m]) for m in rows["test_confusion"])
        share = counts / counts.sum(1, keepdims=True).clip(min=1)
        image = ax.imshow(share, cmap=HEATMAP, vmin=0, vmax=1)
        if classes_n <= 12:
            for (i, j), value in np.ndenumerate(counts):
                text = f"{share[i, j]:.2f}\n({value})" if classes_n <= 5 else f"{share[i, j]:.2f}"[1:]
                ax.text(j, i, text, ha="center", va="center", color="black" if share[i, j] > 0.55 else "white")
        fit_labels(ax, range(len(classes)), classes, upright=True)
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        runs = f"{rows['fold'].nunique()} folds" + (f" x {rows['seed'].nunique()} seeds" if rows["seed"].nunique() > 1
                                                     else "")
        ax.set_title(wrapped_title(f"{cell_name(model, ablation)} ({runs})", side))
    for ax in list(axes.flat)[len(cells):]:
        ax.axis("off")
    fig.colorbar(image, ax=axes, shrink=0.6, label="share of the true class")
    return fig


def learning_curves(folds: pd.DataFrame, epochs: pd.DataFrame) -> Figure:
    """Validation UA (top) and train loss (below) per epoch, one colour per fold, three cells a row."""
    trained = set(zip(epochs["model"], epochs["ablation"]))      # not DED or fusion rows: they train nothing
    cells = [c for c in cells_of(folds) if c in trained] or cells_of(folds)[:1]
    columns = min(3, len(cells))
    groups = int(np.ceil(len(cells) / columns))
    fig, axes = plt.subplots(2 * groups, columns, figsize=(PAGE_WIDTH_IN, 2.9 * groups + 0.4), squeeze=False,
                             layout="constrained")
    handles = {}
    for index, (model, ablation) in enumerate(cells):
        top, bottom = axes[2 * (index // columns), index % columns], axes[2 * (index // columns) + 1, index % columns]
        curves = epochs[(epochs["model"] == model) & (epochs["ablation"] == ablation)]
        chosen = folds[(folds["model"] == model) & (folds["ablation"] == ablation)].set_index("trial_id")
        for trial_id, curve in sorted(curves.groupby("trial_id"), key=lambda item: int(item[1]["fold"].iloc[0])):
            fold = int(curve["fold"].iloc[0])
            color = PALETTE[fold % len(PALETTE)]     # one colour per fold; its seeds share it
            handles[f"fold {fold}"], = top.plot(curve["epoch"], curve["val_ua"], lw=0.9, color=color, alpha=0.8)
            bottom.plot(curve["epoch"], curve["train_loss"], lw=0.9, color=color, alpha=0.8)
            if trial_id in chosen.index and pd.notna(chosen.loc[trial_id, "selected_epoch"]):
                point = curve[curve["epoch"] == int(chosen.loc[trial_id, "selected_epoch"])]
                top.plot(point["epoch"], point["val_ua"], "o", color=color, ms=3.5)
        mean = curves.groupby("epoch")["val_ua"].mean()
        handles["mean"], = top.plot(mean.index, mean.to_numpy(), color="black", lw=1.8)
        top.set_title(wrapped_title(cell_name(model, ablation), PAGE_WIDTH_IN / columns))
        top.set_ylim(0, 1)
        top.tick_params(labelbottom=False)
        bottom.set_xlabel("epoch")
        if index % columns == 0:
            top.set_ylabel("validation UA")
            bottom.set_ylabel("train loss")
    for index in range(len(cells), groups * columns):
        for row in (0, 1):
            axes[2 * (index // columns) + row, index % columns].axis("off")
    fig.legend(handles.values(), handles.keys(), loc="outside upper center", ncol=min(len(handles), 7),
               frameon=False, title="dots: the epoch chosen on validation")
    return fig


def speaker_accuracy(predictions: pd.DataFrame) -> Figure:
    """Test accuracy per speaker (rows) and cell (columns); each speaker is in exactly one test fold."""
    cells = [cell_name(m, a) for m, a in zip(predictions["model"], predictions["ablation"])]
    table = predictions.assign(correct=predictions["label"] == predictions["predicted"], cell=cells) \
        .groupby(["speaker", "cell"])["correct"].mean().unstack("cell")
    label_in = 0.6 * MIN_FONT_PT * max(len(str(s)) for s in table.index) / 72 + 0.3
    cell_in = min(0.7, (PAGE_WIDTH_IN - label_in - 0.9) / table.shape[1])
    fig, ax = plt.subplots(figsize=(label_in + cell_in * table.shape[1] + 0.9, 0.2 * table.shape[0] + 1.6),
                           layout="constrained")
    image = ax.imshow(table.to_numpy(), cmap=HEATMAP, vmin=0, vmax=1, aspect="auto")
    if cell_in >= 0.32:    # room for "0.83" at 8 pt
        for (i, j), value in np.ndenumerate(table.to_numpy()):
            if not np.isnan(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="black" if value > 0.55 else "white")
    fit_labels(ax, range(table.shape[1]), list(table.columns), upright=True)
    ax.set_yticks(range(table.shape[0]), table.index)
    ax.set_ylabel("speaker")
    ax.set_title("Test accuracy (WA) per speaker")
    fig.colorbar(image, ax=ax, shrink=0.8, label="accuracy")
    return fig


def published_bars(comparison: pd.DataFrame) -> Figure:
    rows = comparison[comparison["paper_UA"].notna()]
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH_IN, 2.9), layout="constrained")
    x = np.arange(len(rows))
    ax.bar(x - 0.27, rows["ours_UA"], 0.27, yerr=rows["ours_UA_std"], capsize=2, color=PALETTE[0],
           label="ours: epoch chosen on validation")
    ax.bar(x, rows["test_oracle_UA"], 0.27, color="#BBBBBB", label="ours: test-oracle epoch (NOT a result)")
    ax.bar(x + 0.27, rows["paper_UA"], 0.27, color=PALETTE[1], label="published (their protocol)")
    fit_labels(ax, x, [cell_name(m, a) for m, a in zip(rows["model"], rows["ablation"])])
    ax.set_ylabel("UA")
    ax.set_ylim(0, 1)
    fig.legend(loc="outside lower center", ncol=legend_columns(ax.get_legend_handles_labels()[1]), frameon=False)
    ax.set_title("Ours beside the published numbers (UA)")
    return fig


def cross_corpus(matrix: pd.DataFrame) -> Figure:
    """One train x test heatmap of UA per cell; the diagonal is the in-corpus speaker-disjoint test."""
    cells = sorted(set(zip(matrix["model"], matrix["ablation"])))
    columns = min(2, len(cells))
    rows_n = int(np.ceil(len(cells) / columns))
    fig, axes = plt.subplots(rows_n, columns, figsize=(PAGE_WIDTH_IN, 2.8 * rows_n + 0.4), squeeze=False,
                             layout="constrained")
    image = None
    for ax, (model, ablation) in zip(axes.flat, cells):
        part = matrix[(matrix["model"] == model) & (matrix["ablation"] == ablation)]
        grid = part.pivot(index="train_corpus", columns="test_corpus", values="mean")
        image = ax.imshow(grid.to_numpy(dtype=float), vmin=0, vmax=1, cmap=HEATMAP)
        fit_labels(ax, range(len(grid.columns)), list(grid.columns), upright=True)
        ax.set_yticks(range(len(grid.index)), grid.index)
        for (i, j), value in np.ndenumerate(grid.to_numpy(dtype=float)):
            if not np.isnan(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="black" if value > 0.55 else "white")
        ax.set_title(wrapped_title(cell_name(model, ablation), PAGE_WIDTH_IN / columns))
        ax.set_xlabel("test corpus")
        ax.set_ylabel("train corpus")
    for ax in list(axes.flat)[len(cells):]:
        ax.axis("off")
    fig.colorbar(image, ax=axes, shrink=0.8, label="test UA (mean over folds, seeds)")
    return fig
