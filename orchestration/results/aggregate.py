"""Experiment directory -> the sweep's Parquet tables, idempotent and atomic.

Tables (under <sweep>/tables/, each with an explicit schema):
  folds        one row per trial: every validation and test metric, selected epoch, confusion, recall, support
  epochs       learning curves: one row per trial and epoch
  predictions  one row per test utterance per trial, with class probabilities
  trials       status, error text, attempts, durations, resources, node, package versions, git commit
  summary      per (model, ablation, hparams): mean and std over folds and seeds, pooled and test-oracle columns
               (best test UA and WA over epochs, each on its own; and FG_CME's rule: one epoch by 0.9 WA + 0.1 UA);
               a searched cell also has the row of the settings its folds chose on validation (selection.py)
  cross        cross-corpus tests: one row per trial and test corpus (train_corpus, test_corpus), the same
               checkpoint the trial's own test split was scored with; the in-corpus rows are in folds
folds, epochs and predictions are hive-partitioned by model and ablation.

Everything is rebuilt from Tune's own files (params.json, result.json) and
the trials' prediction files, so running it twice gives the same rows. A
local build is written to .versions/<id>/ and published by replacing the
`tables` symlink in one atomic rename: a build killed halfway leaves the
previous tables intact.
"""
from __future__ import annotations

import json
import os
import posixpath
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from pyarrow import fs

from ser_models.metrics import ORACLE, PER_CLASS, SCORES

from orchestration.store import storage
from orchestration.results.ensemble import auto_fusions, fusions
from orchestration.config.record import sweep_record
from orchestration.store.trial_folders import DamagedFile
from orchestration.results.schemas import FOLDS, METRICS, PARTITIONED, SCHEMAS, SUMMARY, frame_of, sorted_frame
from orchestration.results.selection import CHOSEN, mark_chosen
from orchestration.results.trial_rows import read_experiment
from orchestration.results.verify import Gap, report

STALE_VERSION_S = 3600  # a table version nobody published within an hour was left by a killed aggregation


# ------------------------------------------------------------------ derived rows

def summarize(folds: pd.DataFrame, epochs: pd.DataFrame, predictions: pd.DataFrame, sweep: str) -> pd.DataFrame:
    """A row per (model, ablation, setting); a searched cell also gets the row of its kept settings (CHOSEN)."""
    done = folds[folds["status"] == "finished"]
    rows = []
    for (model, ablation), cell in done.groupby(["model", "ablation"], sort=True):
        settings = list(cell.groupby("hparams", sort=True))
        if len(settings) > 1:
            settings.append((CHOSEN, cell[cell["val_chosen"]]))
        for hparams, group in settings:
            chosen_folds = group.loc[group["val_chosen"], "fold"].nunique()
            rows.append({"sweep": sweep, "model": model, "ablation": ablation, "hparams": hparams, "n": len(group),
                         "n_folds": group["fold"].nunique(), "n_seeds": group["seed"].nunique(),
                         "val_chosen_folds": chosen_folds, **summary_metrics(group, epochs, predictions)})
    return sorted_frame("summary", frame_of(rows, SUMMARY))


def summary_metrics(group: pd.DataFrame, epochs: pd.DataFrame, predictions: pd.DataFrame) -> dict:
    from ser_models.metrics import classification_metrics

    row = {}
    for split in ("test", "val"):
        for metric in SCORES:
            values = group[f"{split}_{metric}"].astype(float)
            row[f"{split}_{metric}_mean"] = values.mean()
            row[f"{split}_{metric}_std"] = values.std(ddof=1) if len(values) > 1 else float("nan")
    model = group["model"].iloc[0]
    pooled = predictions[predictions["trial_id"].isin(group["trial_id"]) & (predictions["model"] == model)]
    if len(pooled):
        classes = list(group["classes"].iloc[0])
        index = {c: i for i, c in enumerate(classes)}
        scores = classification_metrics(pooled["label"].map(index), pooled["predicted"].map(index), len(classes))
        row["pooled_test_wa"], row["pooled_test_ua"] = scores["wa"], scores["ua"]
    curves = epochs[epochs["trial_id"].isin(group["trial_id"])]
    if len(curves) and curves["oracle_test_ua"].notna().any():
        # what released code reports: the best test value over epochs, per trial (WA and UA separately)
        best = curves.groupby("trial_id")[["oracle_test_wa", "oracle_test_ua"]].max()
        one_epoch = oracle_by_rule(curves)
        for metric in ORACLE:
            for name, values in ((f"test_oracle_{metric}", best[f"oracle_test_{metric}"]),
                                 (f"test_oracle_ref_{metric}", one_epoch[f"oracle_test_{metric}"])):
                row[f"{name}_mean"] = values.mean()
                row[f"{name}_std"] = values.std(ddof=1) if len(values) > 1 else float("nan")
    return row


def oracle_by_rule(curves: pd.DataFrame) -> pd.DataFrame:
    """Per trial, the epoch FG_CME's released code keeps: the one that maximises 0.9 WA + 0.1 UA on TEST (a
    test-oracle choice, shown only beside that paper's numbers); its oracle_test_wa and oracle_test_ua."""
    scored = curves.assign(score=0.9 * curves["oracle_test_wa"] + 0.1 * curves["oracle_test_ua"])
    scored = scored.dropna(subset=["score"])
    return scored.loc[scored.groupby("trial_id")["score"].idxmax()].set_index("trial_id")


def read_corpus_facts(sweep_dir: str) -> tuple[pd.DataFrame, pd.DataFrame] | Gap:
    filesystem, root = storage.resolve(storage.normalize(sweep_dir))
    try:
        return tuple(pq.read_table(f"{root}/{name}.parquet", filesystem=filesystem).to_pandas()
                     for name in ("utterances", "fold_splits"))
    except (FileNotFoundError, OSError, pa.ArrowInvalid) as err:
        return Gap("the sweep", None, f"no readable utterances.parquet / fold_splits.parquet for the DED rows "
                                      f"({str(err)[:120]})", sweep_dir)


def add_ded_rows(tables: dict, utterances: pd.DataFrame, splits: pd.DataFrame,
                 context: pd.DataFrame | None = None) -> dict:
    """Dialogical emotion decoding over every model's test predictions, as extra `<model>+ded` rows.

    As the reference: the transition bias p0 comes from every labelled turn of the training dialogs (turns
    outside the task included), and a test dialog is decoded whole, in order, where the trial scored its
    turns outside the task (`<trial>.context.parquet`); only the task's turns are then scored."""
    from ser_models import ded

    predictions, folds = tables["predictions"], tables["folds"]
    if predictions.empty or utterances["dialog"].isna().any():
        return tables
    table = utterances
    speaker_of = dict(zip(table["utt_id"], table["speaker"]))
    emotion_of = dict(zip(table["utt_id"], table["emotion"].replace({"excited": "happy"})))
    new_folds, new_predictions = [], []
    for trial_id, rows in predictions.groupby("trial_id", sort=True):
        if rows["model"].iloc[0].endswith("+ded"):
            continue
        fold_row_ = folds[folds["trial_id"] == trial_id].iloc[0]
        in_fold = splits[(splits["fold"] == int(fold_row_["fold"])) & (splits["split"] == "train")]
        # every labelled turn of the training speakers in their dialogs: another fold's speaker, who may
        # share a dialog under speaker-grouped folds, lends no label
        train = table[table["utt_id"].isin(set(in_fold["utt_id"]))]
        p0 = ded.transition_bias(_dialogs(table[table["dialog"].isin(set(train["dialog"]))
                                                & table["speaker"].isin(set(train["speaker"]))]),
                                 emotion_of, speaker_of)
        classes = list(fold_row_["classes"])
        extra = context[context["trial_id"] == trial_id] if context is not None else rows.iloc[:0]
        scored = pd.concat([rows[["utt_id", "probabilities"]], extra[["utt_id", "probabilities"]]])
        scores = {u: np.log(np.clip(np.asarray(p, dtype=float), 1e-8, None))
                  for u, p in zip(scored["utt_id"], scored["probabilities"])}
        test_dialogs = _dialogs(table[table["utt_id"].isin(set(scores))])
        decoded = ded.decode(test_dialogs, scores, speaker_of, p0)
        turns = "whole dialogs" if len(extra) else "task turns"
        ded_rows = rows.copy()
        ded_rows["model"] = rows["model"].iloc[0] + "+ded"
        ded_rows["trial_id"] = f"{trial_id}+ded"
        ded_rows["predicted"] = [classes[decoded[u]] for u in rows["utt_id"]]
        new_predictions.append(ded_rows)
        new_folds.append(rescored_row(fold_row_.to_dict(), ded_rows, model=ded_rows["model"].iloc[0],
                                      trial_id=f"{trial_id}+ded",
                                      selection=f"validation, then DED over {turns} (p0={p0:.3f})"))
    return append_rows(tables, new_folds, new_predictions)


# a trial's own measurements that a row derived from its predictions does not share
TRIAL_ONLY = ("skewed_removed", "skewed_reference_ua", "skewed_test_ua")


def rescored_row(base: dict, predictions: pd.DataFrame, **changes) -> dict:
    """A fold row for predictions derived from a trial's (DED, fusion): the base row, its test columns scored
    anew from `predictions` (label and predicted class names), no test loss."""
    from ser_models.metrics import classification_metrics

    classes = list(base["classes"])
    index = {c: i for i, c in enumerate(classes)}
    scores = classification_metrics(predictions["label"].map(index), predictions["predicted"].map(index),
                                    len(classes))
    return {**base, **{f"test_{m}": scores[m] for m in SCORES + PER_CLASS},
            "test_loss": None, **{column: None for column in TRIAL_ONLY}, **changes}


def append_rows(tables: dict, new_folds: list[dict], new_predictions: list[pd.DataFrame]) -> dict:
    if new_folds:
        folds = pd.concat([tables["folds"], frame_of(new_folds, FOLDS)], ignore_index=True)
        tables["folds"] = sorted_frame("folds", folds)
        tables["predictions"] = sorted_frame("predictions", pd.concat([tables["predictions"], *new_predictions],
                                                                 ignore_index=True))
    return tables


def declared_ensembles(sweep_dir: str) -> dict:
    """The `ensembles:` of the sweep file the sweep last ran with (its sweep.json)."""
    try:
        record = sweep_record(sweep_dir) or {}
    except (json.JSONDecodeError, OSError):
        return {}
    # parsed (automatic ensembles filled in); a sweep.json written before it was kept holds the file's own
    return record.get("ensembles", (record.get("sweep") or {}).get("ensembles")) or {}


def add_ensemble_rows(tables: dict, ensembles: dict, validation: pd.DataFrame) -> dict:
    """Each ensemble's late-fusion rows, beside the trials' (orchestration/results/ensemble.py): a declared one's
    from its members' test predictions, an automatic one's chosen on `validation`, the trials' validation
    predictions."""
    new_folds, new_predictions = [], []
    for name, spec in ((name, spec) for name, spec in ensembles.items() if isinstance(spec, dict)):
        how = (f"greedy forward selection with replacement, {spec['size']} rounds" if spec["method"] == "greedy"
               else f"the {spec['size']} best cells, equal weights")
        for base, fused, on_validation, members in auto_fusions(tables["folds"], tables["predictions"], validation,
                                                               name, spec):
            scores = rescored_row({"classes": base["classes"]}, on_validation)
            new_predictions.append(fused)
            new_folds.append(rescored_row(base, fused, **{f"val_{m}": scores.get(f"test_{m}") for m in METRICS},
                                          model="auto", ablation=name, recipe=None, selected_epoch=None,
                                          epochs_run=None, resumed_from=None,
                                          selection=f"automatic ensemble on validation ({how}): {members}"))
    for name, members in ((name, spec) for name, spec in ensembles.items() if not isinstance(spec, dict)):
        for base, fused in fusions(tables["folds"], tables["predictions"], name, members):
            new_predictions.append(fused)
            new_folds.append(rescored_row(base, fused, **{f"val_{m}": None for m in METRICS}, recipe=None,
                                          selected_epoch=None, epochs_run=None, resumed_from=None,
                                          selection=f"late fusion: mean of {fused['ablation'].iloc[0]}'s test "
                                                    "probabilities, each at its validation-chosen epoch"))
    return append_rows(tables, new_folds, new_predictions)


def _dialogs(table: pd.DataFrame) -> dict[str, list[str]]:
    ordered = table.dropna(subset=["dialog"]).sort_values(["dialog", "turn"], kind="stable")
    return {dialog: list(group["utt_id"]) for dialog, group in ordered.groupby("dialog", sort=True)}


# ------------------------------------------------------------------ writing

def build_tables(sweep_dir: str, with_ded: bool = True) -> dict[str, pd.DataFrame]:
    sweep = posixpath.basename(sweep_dir.rstrip("/"))
    tables = read_experiment(f"{sweep_dir}/experiment", sweep)
    context, validation, gaps = tables.pop("context"), tables.pop("validation"), tables.pop("gaps")
    if with_ded and tables["predictions"]["dialog"].notna().any():
        facts = read_corpus_facts(sweep_dir)
        if isinstance(facts, Gap):
            gaps.append(facts)
        else:
            tables = add_ded_rows(tables, *facts, context)
    tables = add_ensemble_rows(tables, declared_ensembles(sweep_dir), validation)
    tables["folds"]["val_chosen"] = mark_chosen(tables["folds"])
    tables["summary"] = summarize(tables["folds"], tables["epochs"], tables["predictions"], sweep)
    return tables | {"gaps": gaps}


def write_tables(tables: dict[str, pd.DataFrame], sweep_dir: str) -> str:
    """Write every table, then publish them together. Returns where they are."""
    if storage.is_remote(sweep_dir):
        return _write_remote(tables, sweep_dir)
    root = Path(sweep_dir)
    version = root / ".versions" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{time.monotonic_ns()}"
    for name, frame in tables.items():
        _write_table(name, frame, str(version / name), fs.LocalFileSystem())
    link, tmp_link = root / "tables", root / f".tables-{os.getpid()}-{time.monotonic_ns()}"
    previous = root / os.readlink(link) if link.is_symlink() else None
    if link.is_dir() and previous is None:  # a copy that followed the link (cp -rL, copytree, a download)
        previous = root / ".versions" / f"copied-{version.name}"
        os.replace(link, previous)  # replaced below like any earlier version
    os.symlink(os.path.relpath(version, root), tmp_link)
    os.replace(tmp_link, link)  # the one atomic step
    if previous is not None and previous != version:
        shutil.rmtree(previous, ignore_errors=True)
    # a concurrent aggregation may still be writing its version: only long-abandoned ones of killed runs go
    for old in (root / ".versions").iterdir():
        if old not in (version, root / os.readlink(link)) and time.time() - old.stat().st_mtime > STALE_VERSION_S:
            shutil.rmtree(old, ignore_errors=True)
    return str(link)


def _write_table(name: str, frame: pd.DataFrame, path: str, filesystem: fs.FileSystem) -> None:
    table = pa.Table.from_pandas(frame, schema=SCHEMAS[name], preserve_index=False)
    if name in PARTITIONED:
        partitioning = ds.partitioning(pa.schema([("model", pa.string()), ("ablation", pa.string())]),
                                       flavor="hive")
        ds.write_dataset(table, path, format="parquet", partitioning=partitioning, filesystem=filesystem,
                         basename_template="part-{i}.parquet", existing_data_behavior="delete_matching")
    else:
        filesystem.create_dir(path, recursive=True)
        pq.write_table(table, f"{path}/part-0.parquet", filesystem=filesystem)


def _write_remote(tables: dict[str, pd.DataFrame], sweep_dir: str) -> str:
    """Object stores have no atomic rename: tables are replaced one by one (documented)."""
    filesystem, root = fs.FileSystem.from_uri(sweep_dir)
    for name, frame in tables.items():
        target = f"{root}/tables/{name}"
        try:
            filesystem.delete_dir(target)
        except (FileNotFoundError, OSError):
            pass
        _write_table(name, frame, target, filesystem)
    return f"{sweep_dir}/tables"


def read_table(sweep_dir: str, name: str) -> pd.DataFrame:
    """A table as pandas (partition columns as plain strings)."""
    filesystem, root = storage.resolve(storage.normalize(sweep_dir))
    if filesystem.get_file_info(f"{root}/tables/{name}").type == fs.FileType.NotFound:
        require_sweep_dir(sweep_dir)
        raise FileNotFoundError(f"{sweep_dir}: the sweep has no tables yet. Fix: run the sweep to its end, or "
                                f"emosweep results aggregate {sweep_dir}")
    frame = pq.read_table(f"{root}/tables/{name}", filesystem=filesystem, partitioning="hive").to_pandas()
    for column in ("model", "ablation"):
        if column in frame and isinstance(frame[column].dtype, pd.CategoricalDtype):
            frame[column] = frame[column].astype(str)
    return sorted_frame(name, frame[[c for c in SCHEMAS[name].names if c in frame.columns]])


def require_sweep_dir(sweep_dir: str) -> None:
    filesystem, root = storage.resolve(storage.normalize(sweep_dir))
    if filesystem.get_file_info(f"{root}/experiment").type != fs.FileType.Directory:
        raise FileNotFoundError(f"{sweep_dir}: not a sweep folder (it has no experiment/). Fix: give "
                                "<storage>/<sweep name>, e.g. results/demo, the folder that holds sweep.json")


class Incomplete(Exception):
    """Finished trials miss outputs they claim: the tables would be wrong, so none are published."""

    def __init__(self, gaps: list[Gap]):
        super().__init__(report(gaps))
        self.gaps = gaps


def aggregate(sweep_dir: str, with_ded: bool = True, allow_gaps: bool = False) -> dict[str, pd.DataFrame]:
    """Rebuild and publish the tables of the sweep at sweep_dir (local path, NFS path or s3://); raises
    Incomplete, publishing nothing, when a finished trial misses an output (unless allow_gaps)."""
    tables = collect(sweep_dir, with_ded)
    gaps = tables.pop("gaps")
    if gaps and not allow_gaps:
        raise Incomplete(gaps)
    write_tables(tables, storage.normalize(sweep_dir))
    return tables


def collect(sweep_dir: str, with_ded: bool = True) -> dict:
    """The tables, built from the experiment's files, and under "gaps" what finished trials miss (verify.py);
    damaged files of unfinished trials are named on stderr and skipped."""
    require_sweep_dir(sweep_dir)
    sweep_dir = storage.normalize(sweep_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DamagedFile)
        tables = build_tables(sweep_dir, with_ded)
    for warning in caught:
        if issubclass(warning.category, DamagedFile):
            print(f"[aggregate] warning: {warning.message}", file=sys.stderr, flush=True)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return tables


