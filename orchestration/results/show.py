"""Query a sweep's tables.

  emosweep results aggregate results/<sweep>            rebuild the tables (idempotent, atomic)
  emosweep results verify results/<sweep>               does every finished trial have its outputs?
  emosweep results show results/<sweep>                 UA and WA per model and ablation (and searched setting)
  emosweep results show results/<sweep> --folds         every fold's row
  emosweep results show results/<sweep> --where model=fg_cme --by ablation --format markdown
  emosweep results show results/<sweep> --table predictions --where model=fg_cme fold=0
  emosweep results compare results/<sweep> fg_cme/full lstm_attn_audio/full --metric test_ua
  emosweep results published results/<sweep>           ours beside the papers' numbers
"""
from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd

from orchestration.results.aggregate import Incomplete, aggregate, collect, read_table
from orchestration.results.schemas import SCHEMAS
from orchestration.config.record import sweep_record
from orchestration.results.published import OURS, published
from orchestration.results.selection import CHOSEN, headline, kept, searched_cells, setting_label
from orchestration.results.stats import fold_comparison, paired_comparison
from orchestration.results.verify import report
from ser_models.cli import Parser, leave
import argparse

INCOMPLETE = 3   # as the sweep's "resumable": running the sweep's command again redoes what is missing
DEFAULT_METRICS = ["test_ua", "test_wa", "test_macro_f1", "val_ua"]


def parse_where(clauses: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for clause in clauses:
        if "=" not in clause:
            raise ValueError(f"--where {clause!r}: write column=value")
        column, value = clause.split("=", 1)
        pairs.append((column.strip(), value.strip()))
    return pairs


def filtered(frame: pd.DataFrame, where: list[tuple[str, str]]) -> pd.DataFrame:
    for column, value in where:
        if column not in frame.columns:
            raise ValueError(f"no column {column!r}; columns: {list(frame.columns)}")
        frame = frame[frame[column].astype(str) == value]
    return frame


def grouped(frame: pd.DataFrame, by: list[str], metrics: list[str]) -> pd.DataFrame:
    """mean and std of each metric per group, with n."""
    groups = frame.groupby(by, sort=True)
    out = groups[metrics].agg(["mean", "std"])
    out.columns = [f"{metric}_{stat}" for metric, stat in out.columns]
    out.insert(0, "n", groups.size())
    return out.reset_index()


def render(frame: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":   # print adds the last newline: a second one reads as an empty row (polars)
        return lists_as_json(frame).to_csv(index=False).rstrip("\n")
    if fmt == "markdown":
        return to_markdown(lists_as_json(frame))
    if fmt == "json":   # one record per line (JSON Lines): what jq, DuckDB and polars read directly
        return frame.to_json(orient="records", lines=True, default_handler=str).rstrip("\n")
    return frame.to_string(index=False)


def lists_as_json(frame: pd.DataFrame) -> pd.DataFrame:
    """List cells (recall, confusion, probabilities) as one-line JSON: numpy's repr spans lines inside a cell."""
    def as_json(value: object) -> object:
        if isinstance(value, (list, np.ndarray)):
            return json.dumps(_plain(value))
        return value
    columns = [c for c in frame.columns if frame[c].dtype == object
               and frame[c].map(lambda v: isinstance(v, (list, np.ndarray))).any()]
    return frame.assign(**{c: frame[c].map(as_json) for c in columns}) if columns else frame


def _plain(value: object) -> object:
    if isinstance(value, (list, np.ndarray)):
        return [_plain(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


def format_cell(value: object, digits: int = 3) -> str:
    """How a table cell reads in every report format: floats rounded, missing values as a dash."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def to_markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(format_cell(v, digits) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def published_table(sweep_dir: str) -> pd.DataFrame:
    """Ours (validation-selected and test-oracle) beside the published number for the same model and ablation."""
    summary = headline(read_table(sweep_dir, "summary"))
    record = sweep_record(sweep_dir) or {}
    folds = read_table(sweep_dir, "folds")
    # a published folder has no sweep.json: its rows name the corpus they trained on
    corpus_name = (record.get("corpus") or {}).get("name") or next(iter(folds.get("train_corpus", pd.Series())
                                                                          .dropna()), "?")
    classes = {(m, a): len(c) for m, a, c in zip(folds["model"], folds["ablation"], folds["classes"])
               if c is not None}
    rule = oracle_rule_means(sweep_dir, folds)
    rows = []
    for row in summary.itertuples():
        paper = published(corpus_name, classes.get((row.model, row.ablation)), row.model, row.ablation)
        rows.append({"model": row.model, "ablation": row.ablation, "n": row.n,
                     "ours_UA": row.test_ua_mean, "ours_UA_std": row.test_ua_std, "ours_WA": row.test_wa_mean,
                     "test_oracle_UA": row.test_oracle_ua_mean, "test_oracle_WA": row.test_oracle_wa_mean,
                     "test_oracle_rule_UA": rule.get((row.model, row.ablation, row.hparams), float("nan")),
                     "paper_UA": paper[1] if paper else None, "paper_WA": paper[0] if paper else None,
                     "paper_protocol": paper[2] if paper else "not reported for this corpus and task"})
    frame = pd.DataFrame(rows)
    frame.attrs["ours"] = OURS
    return frame


def oracle_rule_means(sweep_dir: str, folds: pd.DataFrame) -> dict:
    """(model, ablation, hparams) -> mean test UA at the epoch FG_CME's code keeps (0.9 WA + 0.1 UA on test),
    from the epochs table, so tables written before the summary had the column get it too."""
    from orchestration.results.aggregate import oracle_by_rule

    epochs = read_table(sweep_dir, "epochs")
    if "oracle_test_ua" not in epochs or epochs["oracle_test_ua"].isna().all():
        return {}
    kept_rows = kept(folds).assign(hparams=CHOSEN)
    means = {}
    for rows in (folds, kept_rows):
        chosen = oracle_by_rule(epochs[epochs["trial_id"].isin(rows["trial_id"])])
        by_trial = rows.set_index("trial_id")[["model", "ablation", "hparams"]].join(chosen["oracle_test_ua"],
                                                                                      how="inner")
        means |= by_trial.groupby(["model", "ablation", "hparams"])["oracle_test_ua"].mean().to_dict()
    return means


def comparison_line(folds: pd.DataFrame, a: tuple, b: tuple, metric: str, unit: str) -> str:
    if unit == "fold":
        r = fold_comparison(folds, a, b, metric)
        seeds = "" if pd.isna(r["seed_sd"]) else f"; the seeds' mean difference varies by sd {r['seed_sd']:.4f}"
        return (f"{r['a']} - {r['b']} on {metric} over {r['n_folds']} folds (each the mean of {r['n_seeds']} "
                f"seed(s)): {r['mean_diff']:+.4f} (95% CI {r['ci_low']:+.4f} .. {r['ci_high']:+.4f}, paired t-test "
                f"p = {r['p_ttest']:.4f} with {r['n_folds'] - 1} df, sign-flip p = {r['p_sign_flip']:.4f}{seeds})")
    r = paired_comparison(folds, a, b, metric)
    bootstrap = ("bootstrap needs >= 10 pairs" if pd.isna(r["p_bootstrap"]) else
                 f"bootstrap 95% CI {r['boot_low']:+.4f} .. {r['boot_high']:+.4f}, p = {r['p_bootstrap']:.4f}")
    return (f"{r['a']} - {r['b']} on {metric} over {r['n_pairs']} fold x seed runs, counted as independent though a "
            f"fold's seeds share its test speakers: {r['mean_diff']:+.4f} (95% CI {r['ci_low']:+.4f} .. "
            f"{r['ci_high']:+.4f}, paired t-test p = {r['p_ttest']:.4f}; {bootstrap})")


def shown(args: argparse.Namespace) -> pd.DataFrame:
    """What `results show` prints: a summary per cell and setting unless a table, columns or groups are asked."""
    table = "folds" if args.folds else args.table
    if table is None and not args.by and not args.columns:
        return summary_view(filtered(read_table(args.sweep_dir, "summary"), parse_where(args.where)))
    frame = filtered(read_table(args.sweep_dir, table or "folds"), parse_where(args.where))
    if args.by:
        if (table or "folds") == "folds" and not args.all_settings and searched_cells(frame):
            print(f"note: searched cells pool only the settings their folds kept on validation ({CHOSEN}); "
                  "--all-settings pools every setting", file=sys.stderr)
            frame = kept(frame)
        return grouped(frame, args.by.split(","), args.metrics.split(","))
    return frame[args.columns.split(",")] if args.columns else frame


def summary_view(summary: pd.DataFrame) -> pd.DataFrame:
    """model, ablation, (setting,) n, and test UA / WA as mean and std: one short line per row."""
    view = summary[["model", "ablation"]].copy()
    if (summary["hparams"] != "{}").any():
        view["setting"] = [setting_label(h) or "fixed" for h in summary["hparams"]]
        view["kept_in_folds"] = ["" if h == CHOSEN else f"{k}/{n}" for h, k, n in
                                 zip(summary["hparams"], summary["val_chosen_folds"], summary["n_folds"])]
    view["n"] = summary["n"]
    for metric in ("test_ua", "test_wa"):
        view[f"{metric}_mean"] = summary[f"{metric}_mean"].round(4)
        view[f"{metric}_std"] = summary[f"{metric}_std"].round(4)
    return view


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    agg = sub.add_parser("aggregate")
    agg.add_argument("sweep_dir")
    agg.add_argument("--no-ded", action="store_true")
    agg.add_argument("--allow-gaps", action="store_true",
                     help="publish the tables even where finished trials miss outputs (listed on stderr)")
    check = sub.add_parser("verify", help="does every finished trial have all its outputs? (exit 3 if not)")
    check.add_argument("sweep_dir")
    show = sub.add_parser("show", help="the summary by model and ablation (default), or a table's rows")
    show.add_argument("sweep_dir")
    show.add_argument("--folds", action="store_true", help="every fold's row (as --table folds)")
    show.add_argument("--table", default=None, choices=sorted(SCHEMAS), help="print this table's rows")
    show.add_argument("--all-settings", action="store_true",
                      help="with --by on a searched sweep: pool every setting, not only those the folds kept")
    show.add_argument("--where", nargs="*", default=[])
    show.add_argument("--by", default=None, help="comma-separated group-by columns")
    show.add_argument("--metrics", default=",".join(DEFAULT_METRICS))
    show.add_argument("--columns", default=None, help="comma-separated columns to print (no --by)")
    show.add_argument("--format", default="table", choices=["table", "csv", "json", "markdown"])
    compare = sub.add_parser("compare")
    compare.add_argument("sweep_dir")
    compare.add_argument("a", help="model/ablation")
    compare.add_argument("b", help="model/ablation")
    compare.add_argument("--metric", default="test_ua")
    compare.add_argument("--against", metavar="OTHER_SWEEP_DIR",
                         help="read B from another sweep run on the same folds and seeds (e.g. the same study "
                              "without speaker normalisation)")
    compare.add_argument("--unit", default="fold", choices=["fold", "run"],
                         help="fold (default): seeds averaged within a fold, df = folds - 1; run: every fold x seed "
                              "run as a pair (as before; a fold's seeds are not independent)")
    pub = sub.add_parser("published")
    pub.add_argument("sweep_dir")
    pub.add_argument("--format", default="table", choices=["table", "csv", "json", "markdown"])
    args = parser.parse_args(argv)
    try:
        if args.command == "aggregate":
            tables = aggregate(args.sweep_dir, with_ded=not args.no_ded, allow_gaps=args.allow_gaps)
            print(", ".join(f"{name}: {len(frame)} rows" for name, frame in tables.items()))
        elif args.command == "verify":
            tables = collect(args.sweep_dir)
            gaps = tables.pop("gaps")
            if gaps:
                print(f"error: {args.sweep_dir}: {report(gaps)}", file=sys.stderr)
                return INCOMPLETE
            finished = tables["folds"]["status"].eq("finished") & ~tables["folds"]["model"].str.contains("[+]")
            print(f"ok: {int(finished.sum())} finished trial(s), each with every epoch row, its predictions, "
                  "DED inputs and final checkpoint")
        elif args.command == "show":
            print(render(shown(args), args.format))
        elif args.command == "compare":
            folds = kept(read_table(args.sweep_dir, "folds"))   # a searched cell: the settings its folds kept
            a, b = tuple(args.a.split("/", 1)), tuple(args.b.split("/", 1))
            if args.against:   # B's rows from the other sweep, named apart so that A and B never mix
                prefix = args.against.rstrip("/").rsplit("/", 1)[-1] + ":"
                other = kept(read_table(args.against, "folds"))
                folds = pd.concat([folds, other.assign(model=prefix + other["model"])], ignore_index=True)
                b = (prefix + b[0], b[1])
            print(comparison_line(folds, a, b, args.metric, args.unit))
        else:
            frame = published_table(args.sweep_dir)
            print(render(frame, args.format))
            print(f"\nours: {frame.attrs['ours']}")
    except Incomplete as err:
        print(f"error: {args.sweep_dir}: tables NOT written: {err}", file=sys.stderr)
        return INCOMPLETE
    except (FileNotFoundError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    leave(main())
