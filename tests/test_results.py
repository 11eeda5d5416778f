"""The results layer on a real sweep: tables, atomic and idempotent aggregation, queries, report."""
import ast
import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from orchestration.results.aggregate import aggregate, read_table
from orchestration.results.schemas import SCHEMAS
from orchestration.results.show import main as results_main
from orchestration.results.stats import paired_comparison

from .conftest import REPO
from .sweeps import prediction_files

SHOW = REPO / "orchestration" / "results" / "show.py"
REPORT = REPO / "orchestration" / "results" / "report.py"


@pytest.fixture(scope="module")
def sweep_dir(grid_sweep):
    tmp_path, done = grid_sweep
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp_path / "results" / "t"


def test_tables_have_their_schemas_and_partitions(sweep_dir):
    for name, schema in SCHEMAS.items():
        frame = read_table(str(sweep_dir), name)
        assert list(frame.columns) == schema.names, name
    assert (sweep_dir / "tables" / "folds" / "model=fg_cme" / "ablation=no_excite").is_dir()
    part = next((sweep_dir / "tables" / "epochs").rglob("*.parquet"))
    assert pq.read_schema(part).field("oracle_test_ua").type == "double"
    folds = read_table(str(sweep_dir), "folds")
    plain = folds[~folds["model"].str.endswith("+ded")]
    assert len(plain) == 4 and set(plain["status"]) == {"finished"}
    assert {"lstm_attn_text+ded", "fg_cme+ded"} <= set(folds["model"])   # dialogs: DED rows are added
    recipe = json.loads(plain[plain.model == "fg_cme"]["recipe"].iloc[0])      # the settings in force, recorded
    assert (recipe["optimizer"], recipe["epochs"], recipe["lr"]) == ("adam", 2, 3e-3)  # the sweep file's keys win
    epochs = read_table(str(sweep_dir), "epochs")
    assert len(epochs) == 8 and epochs["oracle_test_ua"].notna().all()
    predictions = read_table(str(sweep_dir), "predictions")
    assert set(predictions.groupby("trial_id").size()) == set(plain["n_test"])
    assert predictions["probabilities"].map(len).eq(4).all()
    trials = read_table(str(sweep_dir), "trials")
    assert trials["torch"].str.startswith("2.").all() and trials["git_commit"].notna().all()
    summary = read_table(str(sweep_dir), "summary")
    row = summary[(summary["model"] == "fg_cme") & (summary["ablation"] == "no_excite")].iloc[0]
    assert row["n"] == 2 and row["test_ua_mean"] == pytest.approx(plain[plain.model == "fg_cme"]["test_ua"].mean())
    assert row["test_oracle_ua_mean"] >= row["test_ua_mean"] - 1e-9  # the oracle can only look better


def test_aggregating_twice_gives_identical_rows(sweep_dir):
    first = {name: read_table(str(sweep_dir), name) for name in SCHEMAS}
    aggregate(str(sweep_dir))
    second = {name: read_table(str(sweep_dir), name) for name in SCHEMAS}
    for name in SCHEMAS:
        pd.testing.assert_frame_equal(first[name], second[name], check_like=False)


def test_killed_aggregation_leaves_the_old_tables(sweep_dir):
    before_target = os.readlink(sweep_dir / "tables")
    before = {name: read_table(str(sweep_dir), name) for name in SCHEMAS}
    killed = subprocess.run([sys.executable, str(SHOW), "aggregate", str(sweep_dir)],
                            env={**os.environ, "EMOSWEEP_AGGREGATE_KILL_AFTER": "epochs"}, capture_output=True)
    assert killed.returncode == -9
    assert os.readlink(sweep_dir / "tables") == before_target
    for name in SCHEMAS:
        pd.testing.assert_frame_equal(before[name], read_table(str(sweep_dir), name))
    versions = sorted((sweep_dir / ".versions").iterdir())
    assert len(versions) == 2                          # published + half-written (its writer might still run)
    aggregate(str(sweep_dir))
    assert len(list((sweep_dir / ".versions").iterdir())) == 2  # the previous one replaced; the orphan kept
    orphan = next(v for v in versions if v.name != before_target.split("/")[-1])
    os.utime(orphan, (0, 0))                            # abandoned long ago: a killed run's
    aggregate(str(sweep_dir))
    assert len(list((sweep_dir / ".versions").iterdir())) == 1


def test_a_copied_sweep_with_damaged_files_publishes_nothing_wrong_and_names_them(sweep_dir, tmp_path):
    import shutil

    copy = tmp_path / "elsewhere" / "t"                  # moved or copied, e.g. cluster -> laptop
    shutil.copytree(sweep_dir, copy, symlinks=True)
    original, hidden = sweep_dir / "experiment" / "predictions", sweep_dir / "experiment" / ".predictions-hidden"
    original.rename(hidden)                              # the copy must not read the original's files
    epochs_before = read_table(str(sweep_dir), "epochs")
    try:
        prediction = prediction_files(copy / "experiment" / "predictions")[0]
        prediction.write_bytes(prediction.read_bytes()[:100])   # truncated by a kill
        result = sorted((copy / "experiment").glob("*/result.json"))[1]
        result.write_text(result.read_text() + '{"epoch": 7, "train_lo')  # a torn last line
        params = sorted((copy / "experiment").glob("*/params.json"))[2]
        params.write_text(params.read_text()[:40])                           # a torn config
        command = [sys.executable, str(SHOW), "aggregate", str(copy)]
        published = (copy / "tables").resolve()
        done = subprocess.run(command, capture_output=True, text=True)
        assert done.returncode == 3, done.stderr[-3000:]                       # a finished trial misses an output
        assert "test predictions unreadable" in done.stderr and str(prediction) in done.stderr
        assert "Fix: run the sweep's command again" in done.stderr and "Traceback" not in done.stderr
        assert (copy / "tables").resolve() == published                       # nothing wrong was published
        verified = subprocess.run([*command[:2], "verify", str(copy)], capture_output=True, text=True)
        assert verified.returncode == 3 and str(prediction) in verified.stderr
        # the torn line and config cost nothing: those trials' final reports carry every epoch
        assert "skipped" not in done.stderr and "not valid JSON" not in done.stderr
        allowed = subprocess.run([*command, "--allow-gaps"], capture_output=True, text=True)
        assert allowed.returncode == 0, allowed.stderr[-3000:]
        folds = read_table(str(copy), "folds")
        plain = folds[~folds["model"].str.endswith("+ded")]
        assert len(plain) == 4 and set(plain["status"]) == {"finished"}         # no trial lost
        assert read_table(str(copy), "predictions")["trial_id"].nunique() == 3 + 3  # 3 trials, 3 DED rows
        epochs = read_table(str(copy), "epochs")
        assert epochs.drop(columns="epoch_seconds").equals(epochs_before.drop(columns="epoch_seconds"))
    finally:
        hidden.rename(original)


def test_query_cli(sweep_dir, capsys):
    assert results_main(["show", str(sweep_dir), "--where", "model=fg_cme", "--by", "ablation",
                         "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| ablation | n | test_ua_mean") and "| no_excite | 2 |" in out
    assert results_main(["show", str(sweep_dir), "--table", "predictions", "--where", "fold=0",
                         "--columns", "utt_id,label,predicted", "--format", "csv"]) == 0
    csv = capsys.readouterr().out
    assert csv.startswith("utt_id,label,predicted") and not csv.endswith("\n\n")   # no empty last row
    assert results_main(["show", str(sweep_dir), "--table", "folds", "--format", "json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]   # JSON Lines, one per row
    folds = read_table(str(sweep_dir), "folds")
    assert [r["trial_id"] for r in records] == list(folds["trial_id"]) and records[0]["test_confusion"]
    assert results_main(["show", str(sweep_dir), "--where", "nonsense=1"]) == 2
    # no options: the summary, one short line per model and ablation
    assert results_main(["show", str(sweep_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["model", "ablation", "n", "test_ua_mean", "test_ua_std", "test_wa_mean",
                                "test_wa_std"]
    assert len(lines) == 1 + len(read_table(str(sweep_dir), "summary")) and max(map(len, lines)) < 120
    # CSV: list cells as one-line JSON, so a CSV reader gets one row per fold and the lists back
    assert results_main(["show", str(sweep_dir), "--folds", "--format", "csv"]) == 0
    parsed = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert len(parsed) == len(folds)
    assert [json.loads(cell) for cell in parsed["test_confusion"]] == [c.tolist() for c in
                                                                      folds["test_confusion"].map(np.stack)]
    assert results_main(["compare", str(sweep_dir), "fg_cme/no_excite", "lstm_attn_text/full"]) == 0
    said = capsys.readouterr().out
    assert "over 2 folds (each the mean of 1 seed(s))" in said and "with 1 df" in said and "sign-flip p" in said
    assert results_main(["compare", str(sweep_dir), "fg_cme/no_excite", "lstm_attn_text/full", "--unit", "run"]) == 0
    assert "over 2 fold x seed runs, counted as independent" in capsys.readouterr().out


def test_duckdb_reads_the_tables(sweep_dir):
    duckdb = pytest.importorskip("duckdb")
    rows = duckdb.sql(f"SELECT model, count(*) FROM read_parquet('{sweep_dir}/tables/folds/**/*.parquet', "
                      f"hive_partitioning=true) GROUP BY model ORDER BY model").fetchall()
    assert rows[0] == ("fg_cme", 2) and len(rows) == 4


def readme_query_examples() -> list[str]:
    text = (REPO / "README.md").read_text()
    return [block for block in re.findall(r"```python\n(.*?)```", text, re.S) if "results/demo" in block]


@pytest.mark.parametrize("library", ["pandas", "duckdb", "polars"])
def test_the_readmes_query_examples_run_on_a_real_sweep(sweep_dir, library):
    """Each block runs as written, on a finished sweep in place of results/demo; its last line's value is
    a per-cell table whose UA means equal the summary's (DuckDB and polars read the hive partitions)."""
    pytest.importorskip(library)
    block = next(b for b in readme_query_examples() if f"import {library}" in b)
    code = block.replace("results/demo", str(sweep_dir))
    *body, last = ast.parse(code).body
    scope = {}
    exec(compile(ast.Module(body, []), "README", "exec"), scope)
    value = eval(compile(ast.Expression(last.value), "README", "eval"), scope)
    frame = value.df() if library == "duckdb" else value.to_pandas() if library == "polars" else value
    folds = read_table(str(sweep_dir), "folds")
    finished = folds[folds["status"] == "finished"]
    if library == "pandas":   # the example filters fg_cme and groups by ablation
        expected = finished[finished["model"] == "fg_cme"].groupby("ablation")["test_ua"].mean()
        assert frame[("test_ua", "mean")].to_dict() == pytest.approx(expected.to_dict())
    else:
        means = frame.set_index(["model", "ablation"]).iloc[:, 0].to_dict()
        assert means == pytest.approx(finished.groupby(["model", "ablation"])["test_ua"].mean().to_dict())


def test_compare_across_two_sweeps_reproduces_the_studys_fold_level_claim(capsys):
    """STUDY.md: speaker normalisation adds +0.051 UA to FG_CME, a fold-level CI through 0 (p = 0.145, 4 df)."""
    reports = REPO / "results" / "reports"
    assert results_main(["compare", str(reports / "ravdess-study-spknorm"), "fg_cme/full", "fg_cme/full",
                         "--against", str(reports / "ravdess-study")]) == 0
    said = capsys.readouterr().out
    assert "fg_cme/full - ravdess-study:fg_cme/full on test_ua over 5 folds (each the mean of 3 seed(s)): +0.0512" \
        in said and "95% CI -0.0275 .. +0.1300, paired t-test p = 0.1452 with 4 df, sign-flip p = 0.0625" in said


def test_the_papers_oracle_rule_keeps_one_epoch_by_09_wa_plus_01_ua():
    from orchestration.results.aggregate import oracle_by_rule

    curves = pd.DataFrame({"trial_id": ["t"] * 3 + ["u"] * 2, "epoch": [0, 1, 2, 0, 1],
                           "oracle_test_wa": [0.60, 0.70, 0.66, 0.5, 0.5],
                           "oracle_test_ua": [0.55, 0.50, 0.80, 0.4, 0.6]})
    kept_epochs = oracle_by_rule(curves)
    # t: 0.9 WA + 0.1 UA = 0.595, 0.680, 0.674 -> epoch 1, whose UA (0.50) is far from the best UA (0.80)
    assert kept_epochs.loc["t", "epoch"] == 1 and kept_epochs.loc["t", "oracle_test_ua"] == 0.50
    assert kept_epochs.loc["u", "epoch"] == 1


def test_published_table_shows_both_oracle_rules(sweep_dir):
    from orchestration.results.show import published_table

    table = published_table(str(sweep_dir)).set_index(["model", "ablation"])
    row = table.loc[("fg_cme", "no_excite")]
    assert row["test_oracle_rule_UA"] <= row["test_oracle_UA"] + 1e-12       # one epoch for both metrics
    summary = read_table(str(sweep_dir), "summary").set_index(["model", "ablation"]).loc[("fg_cme", "no_excite")]
    assert summary["test_oracle_ref_ua_mean"] == pytest.approx(row["test_oracle_rule_UA"])


def test_fold_level_comparison_takes_the_fold_as_the_unit():
    from orchestration.results.stats import fold_comparison

    folds = pd.DataFrame({"model": ["a"] * 5 + ["b"] * 5, "ablation": "full", "status": "finished",
                          "fold": list(range(5)) * 2, "seed": 0,
                          "test_ua": [0.70, 0.72, 0.68, 0.75, 0.71, 0.65, 0.66, 0.64, 0.70, 0.66]})
    one = fold_comparison(folds, ("a", "full"), ("b", "full"))
    # the same five differences as the run-level test below: t = 15.8 with 4 df; every difference positive, so
    # only the all-plus and all-minus of the 32 sign patterns are as extreme: p = 2/32
    assert one["n_folds"] == 5 and one["p_ttest"] == pytest.approx(9.35e-5, rel=0.01)
    assert one["p_sign_flip"] == pytest.approx(0.0625) and np.isnan(one["seed_sd"])
    # a second seed: still 5 folds, each the mean of its 2 seeds; 10 runs are not 10 independent samples
    second = folds.assign(seed=1, test_ua=folds["test_ua"] + np.where(folds["model"] == "a", 0.02, 0.0))
    two = fold_comparison(pd.concat([folds, second]), ("a", "full"), ("b", "full"))
    assert two["n_folds"] == 5 and two["n_seeds"] == 2 and two["mean_diff"] == pytest.approx(0.06)
    assert two["seed_sd"] == pytest.approx(np.std([0.05, 0.07], ddof=1))
    assert two["ci_low"] == pytest.approx(0.06 - 2.776 * 0.00707 / np.sqrt(5), abs=2e-4)
    # one fold the other way: 4 of 32 patterns reach |mean| >= the observed
    mixed = folds.copy()
    mixed.loc[(mixed["model"] == "b") & (mixed["fold"] == 4), "test_ua"] = 0.72
    assert fold_comparison(mixed, ("a", "full"), ("b", "full"))["p_sign_flip"] == pytest.approx(4 / 32)


def test_paired_comparison_statistics():
    folds = pd.DataFrame({"model": ["a"] * 5 + ["b"] * 5, "ablation": "full", "status": "finished",
                          "fold": list(range(5)) * 2, "seed": 0,
                          "test_ua": [0.70, 0.72, 0.68, 0.75, 0.71, 0.65, 0.66, 0.64, 0.70, 0.66]})
    result = paired_comparison(folds, ("a", "full"), ("b", "full"))
    assert result["n_pairs"] == 5 and result["mean_diff"] == pytest.approx(0.05)
    # differences 0.05 0.06 0.04 0.05 0.05: sd 0.00707, se 0.00316, t = 15.8 (4 df), p = 9.3e-5,
    # 95% CI 0.05 +- 2.776 * 0.00316
    assert result["p_ttest"] == pytest.approx(9.35e-5, rel=0.01)
    assert result["ci_low"] == pytest.approx(0.0412, abs=2e-4) and result["ci_high"] == pytest.approx(0.0588, abs=2e-4)
    assert np.isnan(result["p_bootstrap"])  # 5 pairs: too few for an honest bootstrap
    ten = folds.assign(seed=1)
    ten["test_ua"] = ten["test_ua"] + np.where(ten["model"] == "a", 0.01, 0.0)
    both = paired_comparison(pd.concat([folds, ten]), ("a", "full"), ("b", "full"))
    assert both["n_pairs"] == 10 and both["boot_low"] < both["mean_diff"] < both["boot_high"]
    assert both["p_bootstrap"] < 0.001


def test_report_writes_markdown_and_figures(sweep_dir):
    done = subprocess.run([sys.executable, str(REPORT), str(sweep_dir)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "[report] warning" not in done.stderr, done.stderr     # every figure fits a two-column page
    report = (sweep_dir / "report.md").read_text()
    for figure in ("fold_bars", "intervals", "confusion", "learning_curves", "speakers"):
        path = sweep_dir / "figures" / f"{figure}.png"
        assert path.stat().st_size > 10_000 and f"figures/{figure}.png" in report
        assert "<text" in path.with_suffix(".svg").read_text()        # for print: vector, text kept as text
    assert "test-oracle" in report and "## Paired comparisons" in report
    assert "## Beside the published" not in report   # the synthetic corpus has no published numbers: left out
    assert "95% CI (folds)" in report and "\u00a0±\u00a0" in report


def test_report_reads_well_in_a_browser(sweep_dir):
    """Headless Chromium renders report.html; no text in a figure overlaps or leaves it, no table cell wraps."""
    from .browser import CHROMIUM, layout_problems

    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")
    from orchestration.results.report import write_report

    write_report(str(sweep_dir))
    measured = layout_problems(sweep_dir / "report.html")
    assert measured["figures"] == (sweep_dir / "report.md").read_text().count("![") and measured["cells"] > 20
    assert measured["problems"] == []


@pytest.mark.parametrize("report", sorted(str(p.relative_to(REPO)) for p in REPO.glob("results/reports/*/report.html")))
def test_the_committed_reports_read_well_in_a_browser(report):
    from .browser import CHROMIUM, layout_problems

    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")
    measured = layout_problems(REPO / report)
    assert measured["figures"] >= 4 and measured["problems"] == []


def test_the_summary_as_a_latex_table(sweep_dir):
    import shutil

    done = subprocess.run([sys.executable, str(REPORT), str(sweep_dir), "--latex"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    tex = (sweep_dir / "summary.tex").read_text()
    rows = [line for line in tex.splitlines() if line.endswith(r"\\") and not line.startswith("Model")]
    summary = read_table(str(sweep_dir), "summary")
    assert len(rows) == len(summary) == 4 and r"\toprule" in tex and r"\bottomrule" in tex   # DED rows too
    assert "2 speaker-disjoint folds $\\times$ 1 seed;" in tex and "chosen on validation speakers" in tex
    best = summary.loc[summary["test_ua_mean"].idxmax()]
    bold = [row for row in rows if r"\textbf{" + f"{100 * best['test_ua_mean']:.1f}" in row]
    assert len(bold) == 1 and bold[0].startswith(best["model"].replace("_", r"\_"))
    assert tex.count(r"\textbf{") == 3                          # one best value per metric column
    if shutil.which("pdflatex"):                                # it compiles as it stands
        document = sweep_dir / "table-check.tex"
        document.write_text("\\documentclass{article}\\usepackage{booktabs}\\begin{document}\n" + tex
                            + "\\end{document}\n")
        compiled = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", document.name],
                                  cwd=sweep_dir, capture_output=True, text=True, timeout=120)
        assert compiled.returncode == 0, compiled.stdout[-3000:]


def test_report_html_is_one_self_contained_file_with_the_same_content(sweep_dir):
    """report.html carries every figure inside it: copied alone, nothing is missing."""
    from html.parser import HTMLParser

    from orchestration.results.report import write_report

    write_report(str(sweep_dir))
    markdown = (sweep_dir / "report.md").read_text()

    class Collect(HTMLParser):
        headings, images, figures, links, cells, _in = [], [], [], [], [], None

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            self._in = tag
            if tag == "img":
                self.images.append(attrs["src"])
            if tag == "svg":
                self.figures.append(f"<svg {attrs.get('viewbox', '')}")
            self.links += [v for k, v in attrs.items() if k in ("href", "src") and not v.startswith("data:")]

        def handle_data(self, data):
            if self._in in ("h1", "h2") and data.strip():
                self.headings.append(data.strip())
            if self._in == "td":
                self.cells.append(data)

    page = Collect()
    page.feed((sweep_dir / "report.html").read_text())
    assert page.links == [] and page.images == [] and len(page.figures) == markdown.count("![")
    assert all(figure.startswith("<svg") for figure in page.figures)     # inline vectors, nothing to fetch
    assert [line.lstrip("# ").replace("`", "") for line in markdown.splitlines() if line.startswith("## ")] \
        == page.headings[1:]
    assert "fg_cme" in page.cells and any("±" in cell for cell in page.cells)


@pytest.mark.parametrize("command, layout, message", [
    (["results/show.py", "show"], None, "not a sweep folder"),
    (["results/show.py", "aggregate"], None, "not a sweep folder"),
    (["results/report.py"], None, "not a sweep folder"),
    (["results/show.py", "show"], "experiment", "has no tables yet"),
    (["results/report.py"], "experiment", "has no tables yet"),
])
def test_tools_on_a_wrong_folder_say_what_it_is_and_the_fix(tmp_path, command, layout, message):
    if layout:
        (tmp_path / layout).mkdir()
    done = subprocess.run([sys.executable, str(REPO / "orchestration" / command[0]), *command[1:], str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and message in done.stderr and "Fix:" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_ded_comes_from_the_sweeps_own_facts_not_the_corpus(sweep_dir, tmp_path):
    """A copied sweep folder, aggregated where its corpus does not exist, still gets its DED rows."""
    import shutil

    from orchestration.results.aggregate import collect

    copy = tmp_path / "t"
    shutil.copytree(sweep_dir, copy)
    record = json.loads((copy / "sweep.json").read_text())
    record["corpus"]["root"] = "/nowhere/corpus"          # nothing could reload it
    (copy / "sweep.json").write_text(json.dumps(record))
    folds = collect(str(copy))["folds"]
    before = read_table(str(sweep_dir), "folds")

    def ded(frame):
        return frame[frame["model"].str.endswith("+ded")].sort_values("trial_id")["test_ua"].tolist()
    assert ded(folds) == ded(before) and len(ded(folds)) == 4
    (copy / "utterances.parquet").unlink()
    tables = collect(str(copy))
    assert not tables["folds"]["model"].str.endswith("+ded").any()             # not guessed from elsewhere ...
    assert len(tables["gaps"]) == 1 and tables["gaps"][0].trial == "the sweep"   # ... but named as a gap
    assert tables["gaps"][0].what.startswith("no readable utterances.parquet / fold_splits.parquet")


def test_published_numbers_are_only_beside_the_same_task():
    """The FG_CME paper's RAVDESS figures are 4-class: an 8-class run of the same model has no counterpart."""
    from orchestration.results.published import published

    assert published("ravdess", 4, "fg_cme", "full")[1] == 0.708
    assert published("ravdess", 8, "fg_cme", "full") is None and published("ravdess", None, "fg_cme", "full") is None
