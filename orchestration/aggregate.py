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
import signal
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

from . import storage
from .ensemble import fusions
from .identity import identity, identity_key
from .record import sweep_record
from .trial_folders import DamagedFile, outcome, read_trial, trial_dirs, trial_started
from .selection import CHOSEN, mark_chosen
from .verify import Gap, epoch_gaps, report, trial_name

METRICS = ("wa", "ua", "macro_f1", "loss")
KEY = [("sweep", pa.string()), ("trial_id", pa.string()), ("model", pa.string()), ("ablation", pa.string()),
       ("fold", pa.int64()), ("seed", pa.int64())]
FOLDS = pa.schema(KEY + [
    ("group", pa.string()), ("hparams", pa.string()), ("val_chosen", pa.bool_()), ("recipe", pa.string()),
    ("status", pa.string()), ("train_corpus", pa.string()), ("test_corpus", pa.string()), ("selection", pa.string()),
    ("select_on", pa.string()), ("selected_epoch", pa.int64()), ("epochs_run", pa.int64()),
    ("resumed_from", pa.int64()), ("world_size", pa.int64()), ("n_train", pa.int64()),
    ("n_validation", pa.int64()), ("n_test", pa.int64())]
    + [(f"{split}_{m}", pa.float64()) for split in ("val", "test") for m in METRICS]
    + [("classes", pa.list_(pa.string())), ("test_recall", pa.list_(pa.float64())),
       ("test_support", pa.list_(pa.int64())), ("test_confusion", pa.list_(pa.list_(pa.int64())))])
EPOCHS = pa.schema(KEY + [("group", pa.string()), ("epoch", pa.int64()), ("train_loss", pa.float64())]
                   + [(f"val_{m}", pa.float64()) for m in METRICS]
                   + [(f"oracle_test_{m}", pa.float64()) for m in ("wa", "ua", "macro_f1")]
                   + [("epoch_seconds", pa.float64())])
PREDICTIONS = pa.schema(KEY + [
    ("utt_id", pa.string()), ("speaker", pa.string()), ("session", pa.string()), ("dialog", pa.string()),
    ("turn", pa.int64()), ("label", pa.string()), ("predicted", pa.string()),
    ("probabilities", pa.list_(pa.float32()))])
TRIALS = pa.schema(KEY + [
    ("status", pa.string()), ("error", pa.string()), ("attempts", pa.int64()), ("time_total_s", pa.float64()),
    ("finished_at", pa.string()), ("mode", pa.string()), ("workers_per_trial", pa.int64()),
    ("cpus_per_worker", pa.float64()), ("gpus_per_worker", pa.float64()), ("node", pa.string()),
    ("node_ip", pa.string()), ("worker_nodes", pa.list_(pa.string())), ("python", pa.string()),
    ("emosweep", pa.string()), ("torch", pa.string()),
    ("torchaudio", pa.string()), ("ray", pa.string()), ("optuna", pa.string()), ("git_commit", pa.string())])
SUMMARY = pa.schema([
    ("sweep", pa.string()), ("model", pa.string()), ("ablation", pa.string()), ("hparams", pa.string()),
    ("n", pa.int64()), ("n_folds", pa.int64()), ("n_seeds", pa.int64()), ("val_chosen_folds", pa.int64())]
    + [(f"{split}_{m}_{stat}", pa.float64()) for split in ("test", "val") for m in ("wa", "ua", "macro_f1")
       for stat in ("mean", "std")]
    + [("pooled_test_wa", pa.float64()), ("pooled_test_ua", pa.float64())]
    + [(f"test_oracle_{m}_{stat}", pa.float64()) for m in ("wa", "ua") for stat in ("mean", "std")]
    + [(f"test_oracle_ref_{m}_{stat}", pa.float64()) for m in ("wa", "ua") for stat in ("mean", "std")])
CROSS = pa.schema(KEY + [
    ("group", pa.string()), ("hparams", pa.string()), ("status", pa.string()), ("train_corpus", pa.string()),
    ("test_corpus", pa.string()), ("selected_epoch", pa.int64()), ("n_test", pa.int64())]
    + [(f"test_{m}", pa.float64()) for m in METRICS]
    + [("classes", pa.list_(pa.string())), ("test_recall", pa.list_(pa.float64())),
       ("test_support", pa.list_(pa.int64())), ("test_confusion", pa.list_(pa.list_(pa.int64())))])
SCHEMAS = {"folds": FOLDS, "epochs": EPOCHS, "predictions": PREDICTIONS, "trials": TRIALS, "summary": SUMMARY,
           "cross": CROSS}
PARTITIONED = ("folds", "epochs", "predictions")
STALE_VERSION_S = 3600  # a table version nobody published within an hour was left by a killed aggregation


def _key(sweep: str, trial_id: str, config: dict) -> dict:
    return {"sweep": sweep, "trial_id": trial_id, "model": config["model"], "ablation": config["ablation"],
            "fold": int(config["fold"]), "seed": int(config["seed"])}


def current_settings(experiment: str) -> str | None:
    """The settings digest of the sweep file the sweep last ran with (sweep.json beside the experiment)."""
    try:
        record = sweep_record(experiment.rstrip("/").rsplit("/", 1)[0]) or {}
    except (json.JSONDecodeError, OSError):
        return None
    return (record.get("settings_digest") or "")[:12] or None


def read_experiment(experiment: str, sweep: str, with_predictions: bool = True) -> dict:
    """The tables of the experiment's trial directories, and under "gaps" what finished trials miss (verify.py).

    Every run of a sweep adds trial directories (a trial continued after a kill, or restarted with
    --restart-errored, is a new one): per identity the newest directory gives the outcome, and attempts add up.
    A finished trial's epochs are those its final report carries; an unfinished one's are merged from every
    directory (the newest report of an epoch wins). Without predictions, their files are only listed."""
    latest: dict[tuple, tuple] = {}
    earlier_attempts: dict[tuple, int] = {}
    epochs_of: dict[tuple, dict] = {}
    torn: dict[tuple, list] = {}      # torn lines and configs: worth a warning only if the trial is unfinished
    for filesystem, path in sorted(trial_dirs(experiment), key=lambda item: trial_started(item[1])):
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", DamagedFile)
                config, results, error = read_trial(filesystem, path)
        except ValueError as err:
            warnings.warn(f"{err}; that trial is left out of the tables", DamagedFile, stacklevel=2)
            continue
        key = identity(config)
        torn.setdefault(key, []).extend(str(warning.message) for warning in caught)
        if key in latest:
            earlier_attempts[key] = earlier_attempts.get(key, 0) + outcome(*latest[key][3:])[2]
        if config.get("fresh"):
            epochs_of[key] = {}          # restarted from scratch: the earlier epochs are not this run's
        epochs_of.setdefault(key, {}).update({r["epoch"]: r for r in results if not r.get("final") and "epoch" in r})
        latest[key] = (filesystem, path, config, results, error)
    current = current_settings(experiment)
    outputs = Outputs(experiment)
    folds, epochs, trials, predictions, cross, context, gaps = [], [], [], [], [], [], []
    for ident, (filesystem, path, config, results, error) in latest.items():
        trial_id = results[-1]["trial_id"] if results else posixpath.basename(path).split("_")[2]
        key = _key(sweep, trial_id, config)
        final, status, attempts = outcome(results, error)
        if current and config.get("settings") not in (None, current):
            status = "superseded"     # run under settings the sweep file no longer has: kept, out of summaries
        per_epoch = epochs_of[ident]
        if final and final.get("history") is not None:
            per_epoch = {row["epoch"]: row for row in final["history"]}
        folds.append(fold_row(key, config, final, status, len(per_epoch)))
        cross += cross_rows(folds[-1], final)
        epochs += [{**key, "group": config.get("group"), **{f: r.get(f) for f in EPOCHS.names if f in r}}
                   for _, r in sorted(per_epoch.items())]
        trials.append(trial_row(key, config, results, final, status, error,
                                attempts + earlier_attempts.get(ident, 0)))
        for message in torn[ident] if not final else ():   # a final report carries every epoch: nothing lost
            warnings.warn(message, DamagedFile, stacklevel=2)
        if final:
            found, missing = outputs.read(key, config, final, with_predictions)
            predictions += found.get("predictions", [])
            context += found.get("context", [])
            if status != "finished":   # superseded: kept in the tables, never run again, so no gap to redo
                for gap in missing:
                    warnings.warn(f"{gap.line()} (a superseded trial's)", DamagedFile, stacklevel=2)
                continue
            gaps += epoch_gaps(key, identity_key(config), final, set(per_epoch), f"{path}/result.json")
            gaps += checkpoint_gaps(key, config, filesystem, path, results, experiment)
            gaps += missing
    frames = {"folds": folds, "epochs": epochs, "trials": trials, "cross": cross}
    tables = {name: _frame(rows, SCHEMAS[name]) for name, rows in frames.items()}
    tables["predictions"] = (pd.concat(predictions, ignore_index=True) if predictions
                             else _frame([], PREDICTIONS))
    # not a table: the scores of dialog turns outside the task, which DED decodes along (never scored)
    tables["context"] = pd.concat(context, ignore_index=True) if context else pd.DataFrame(
        columns=["trial_id", "utt_id", "probabilities"])
    return {name: _sorted(name, frame) for name, frame in tables.items()} | {"gaps": gaps}


class Outputs:
    """A finished trial's prediction files: named by its identity (by its Tune trial id in sweeps run before)."""

    def __init__(self, experiment: str):
        self.filesystem, root = fs.FileSystem.from_uri(experiment)
        self.folder = f"{root}/predictions"
        try:
            listed = self.filesystem.get_file_info(fs.FileSelector(self.folder))
        except (FileNotFoundError, OSError):
            listed = []
        self.names = {info.base_name for info in listed if info.type == fs.FileType.File}

    def read(self, key: dict, config: dict, final: dict, with_predictions: bool) -> tuple[dict, list]:
        """({"predictions": [frame], "context": [frame]} as far as read, gaps)."""
        name = next((n for n in (identity_key(config), key["trial_id"]) if f"{n}.parquet" in self.names),
                    identity_key(config))
        claims = {"predictions": (f"{name}.parquet", "test predictions", final.get("n_test"))}
        if final.get("context_turns"):
            claims["context"] = (f"{name}.context.parquet", "scores of the test dialogs' other turns",
                                 final["context_turns"])
        found, gaps = {}, []
        for kind, (file, what, rows) in claims.items():
            path = f"{self.folder}/{file}"
            problem = None if file in self.names else "missing"
            if problem is None and with_predictions:
                try:
                    frame = pq.read_table(path, filesystem=self.filesystem).to_pandas()
                    if rows is not None and len(frame) != int(rows):
                        problem = f"{len(frame)} rows, not {rows}"
                    else:
                        found[kind] = [frame.assign(**key) if kind == "predictions"
                                       else frame.assign(trial_id=key["trial_id"])]
                except (OSError, pa.ArrowException) as err:
                    problem = f"unreadable ({str(err)[:120]})"
            if problem:
                gaps.append(Gap(trial_name(key), identity_key(config), f"{what} {problem}", path))
        return found, gaps


def checkpoint_gaps(key: dict, config: dict, filesystem, path: str, results: list[dict],
                    experiment: str) -> list[Gap]:
    """The final checkpoint the trial's report names (a DDP trial's: in its Ray Train run, named by identity)."""
    named = next((r["checkpoint_dir_name"] for r in reversed(results)
                  if r.get("final") and r.get("checkpoint_dir_name")), None)
    if named is not None:
        where = f"{path}/{named}/state.pt"
        found = filesystem.get_file_info(where).type == fs.FileType.File
    else:
        runs = f"{posixpath.dirname(path)}/train/{identity_key(config)}"
        where = f"{experiment}/train/{identity_key(config)}"
        infos = filesystem.get_file_info(fs.FileSelector(runs, recursive=True, allow_not_found=True))
        found = any(info.base_name == "state.pt" for info in infos)
    return [] if found else [Gap(trial_name(key), identity_key(config), "final checkpoint missing", where)]


def fold_row(key: dict, config: dict, final: dict | None, status: str, epochs_run: int) -> dict:
    row = {**key, "group": config.get("group"), "hparams": json.dumps(config.get("hparams") or {}, sort_keys=True),
           "status": status, "selection": "validation", "epochs_run": epochs_run}
    if (final or {}).get("refit_epochs"):
        row["selection"] = f"validation, then refit on train+validation ({final['refit_epochs']} epochs)"
    corpus = (final or {}).get("corpus") or (config.get("corpus") or {}).get("name")
    row["train_corpus"] = row["test_corpus"] = corpus   # the trial's own test split; other corpora: the cross table
    if final:
        row.update({k: final.get(k) for k in ("recipe", "select_on", "selected_epoch", "resumed_from", "world_size",
                                               "n_train", "n_validation", "n_test", "classes", "test_recall",
                                               "test_support", "test_confusion")})
        row.update({f"val_{m}": final.get(f"selected_val_{m}") for m in METRICS})
        row.update({f"test_{m}": final.get(f"test_{m}") for m in METRICS})
    return row


def cross_rows(fold: dict, final: dict | None) -> list[dict]:
    """A finished trial's cross-corpus scores, one row per test corpus."""
    rows = []
    for corpus, scores in ((final or {}).get("cross") or {}).items():
        rows.append({**{k: fold.get(k) for k in CROSS.names if k in fold}, "train_corpus": final.get("corpus"),
                     "test_corpus": corpus, "n_test": scores["n"], "classes": final.get("classes"),
                     **{f"test_{m}": scores.get(f"test_{m}") for m in METRICS},
                     **{f"test_{m}": scores.get(f"test_{m}") for m in ("recall", "support", "confusion")}})
    return rows


def trial_row(key: dict, config: dict, results: list[dict], final: dict | None, status: str,
              error: str | None, attempts: int) -> dict:
    last = results[-1] if results else {}
    versions = (final or {}).get("versions") or {}
    resources = config.get("resources") or {}
    return {**key, "status": status, "error": (error or "")[-4000:] if status != "finished" else "",
            "attempts": attempts, "time_total_s": last.get("time_total_s"),
            "finished_at": last.get("date"), "mode": resources.get("mode"),
            "workers_per_trial": resources.get("workers_per_trial"),
            "cpus_per_worker": resources.get("cpus_per_worker"),
            "gpus_per_worker": resources.get("gpus_per_worker"), "node": last.get("hostname"),
            "node_ip": last.get("node_ip"), "worker_nodes": (final or {}).get("worker_nodes"),
            **{k: versions.get(k) for k in
                                               ("python", "emosweep", "torch", "torchaudio", "ray", "optuna")},
            "git_commit": (final or {}).get("git_commit") or config.get("git_commit")}


def _clean(value):
    """NaN -> None and arrays -> lists, so pandas rows fit the Arrow schema."""
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, np.ndarray):
        return [_clean(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _frame(rows: list[dict], schema: pa.Schema) -> pd.DataFrame:
    table = pa.Table.from_pylist([{name: _clean(row.get(name)) for name in schema.names} for row in rows],
                                 schema=schema)
    return table.to_pandas()


def _sorted(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    order = {"epochs": ["model", "ablation", "fold", "seed", "trial_id", "epoch"],
             "predictions": ["model", "ablation", "fold", "seed", "trial_id", "utt_id"],
             "summary": ["model", "ablation", "hparams"],
             "cross": ["model", "ablation", "group", "fold", "seed", "test_corpus"]
             }.get(name, ["model", "ablation", "group", "fold", "seed"])
    order = [c for c in order if c in frame.columns]
    return frame.sort_values(order, kind="stable").reset_index(drop=True) if len(frame) else frame


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
    return _sorted("summary", _frame(rows, SUMMARY))


def summary_metrics(group: pd.DataFrame, epochs: pd.DataFrame, predictions: pd.DataFrame) -> dict:
    from ser_models.metrics import classification_metrics

    row = {}
    for split in ("test", "val"):
        for metric in ("wa", "ua", "macro_f1"):
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
        for metric in ("wa", "ua"):
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


UTTERANCE_FACTS = ["utt_id", "speaker", "session", "dialog", "turn", "start_s", "emotion", "label"]


def store_corpus_facts(sweep_dir: str, corpus_table: pd.DataFrame, folds) -> None:
    """What the tables need from the corpus later (dialogs and turns for DED, every fold's splits), stored with
    the sweep when it runs: aggregation reads these and never goes back to the corpus."""
    splits = pd.DataFrame([(fold.index, utt_id, split) for fold in folds for split in ("train", "validation", "test")
                           for utt_id in getattr(fold, split)], columns=["fold", "utt_id", "split"])
    for name, frame in (("utterances", corpus_table[UTTERANCE_FACTS]), ("fold_splits", splits)):
        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink)
        storage.write_bytes(storage.join(sweep_dir, f"{name}.parquet"), sink.getvalue().to_pybytes())


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


def rescored_row(base: dict, predictions: pd.DataFrame, **changes) -> dict:
    """A fold row for predictions derived from a trial's (DED, fusion): the base row, its test columns scored
    anew from `predictions` (label and predicted class names), no test loss."""
    from ser_models.metrics import classification_metrics

    classes = list(base["classes"])
    index = {c: i for i, c in enumerate(classes)}
    scores = classification_metrics(predictions["label"].map(index), predictions["predicted"].map(index),
                                    len(classes))
    return {**base, **{f"test_{m}": scores[m] for m in ("wa", "ua", "macro_f1", "recall", "support", "confusion")},
            "test_loss": None, **changes}


def append_rows(tables: dict, new_folds: list[dict], new_predictions: list[pd.DataFrame]) -> dict:
    if new_folds:
        tables["folds"] = _sorted("folds", pd.concat([tables["folds"], _frame(new_folds, FOLDS)], ignore_index=True))
        tables["predictions"] = _sorted("predictions", pd.concat([tables["predictions"], *new_predictions],
                                                                 ignore_index=True))
    return tables


def declared_ensembles(sweep_dir: str) -> dict:
    """The `ensembles:` of the sweep file the sweep last ran with (its sweep.json)."""
    try:
        record = sweep_record(sweep_dir) or {}
    except (json.JSONDecodeError, OSError):
        return {}
    return (record.get("sweep") or {}).get("ensembles") or {}


def add_ensemble_rows(tables: dict, ensembles: dict) -> dict:
    """Each declared ensemble's late-fusion rows, beside the trials' (orchestration/ensemble.py)."""
    new_folds, new_predictions = [], []
    for name, members in ensembles.items():
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
    context, gaps = tables.pop("context"), tables.pop("gaps")
    if with_ded and tables["predictions"]["dialog"].notna().any():
        facts = read_corpus_facts(sweep_dir)
        if isinstance(facts, Gap):
            gaps.append(facts)
        else:
            tables = add_ded_rows(tables, *facts, context)
    tables = add_ensemble_rows(tables, declared_ensembles(sweep_dir))
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
        if os.environ.get("EMOSWEEP_AGGREGATE_KILL_AFTER") == name:  # fault injection for the atomicity test
            os.kill(os.getpid(), signal.SIGKILL)
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


def _write_table(name: str, frame: pd.DataFrame, path: str, filesystem) -> None:
    table = pa.Table.from_pandas(frame, schema=SCHEMAS[name], preserve_index=False)
    if name in PARTITIONED:
        partitioning = ds.partitioning(pa.schema([("model", pa.string()), ("ablation", pa.string())]),
                                       flavor="hive")
        ds.write_dataset(table, path, format="parquet", partitioning=partitioning, filesystem=filesystem,
                         basename_template="part-{i}.parquet", existing_data_behavior="delete_matching")
    else:
        filesystem.create_dir(path, recursive=True)
        pq.write_table(table, f"{path}/part-0.parquet", filesystem=filesystem)


def _write_remote(tables, sweep_dir: str) -> str:
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
    return _sorted(name, frame[[c for c in SCHEMAS[name].names if c in frame.columns]])


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


