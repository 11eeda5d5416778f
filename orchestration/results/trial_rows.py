"""A sweep's trial folders -> rows of the folds, epochs, trials, predictions and cross tables, and the gaps a
finished trial's outputs leave (verify.py). Every run of a sweep adds trial folders; this reads them all."""
from __future__ import annotations

import json
import posixpath
import warnings

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs

from ser_models.metrics import PER_CLASS

from orchestration.config.record import sweep_record
from orchestration.results.schemas import CROSS, EPOCHS, METRICS, PREDICTIONS, SCHEMAS, frame_of, sorted_frame
from orchestration.results.verify import Gap, epoch_gaps, trial_name
from orchestration.store.identity import identity, identity_key
from orchestration.store.trial_folders import DamagedFile, outcome, read_trial, trial_dirs, trial_started


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
    folds, epochs, trials, predictions, cross, context, validation, gaps = [], [], [], [], [], [], [], []
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
            validation += found.get("validation", [])
            if status != "finished":   # superseded: kept in the tables, never run again, so no gap to redo
                for gap in missing:
                    warnings.warn(f"{gap.line()} (a superseded trial's)", DamagedFile, stacklevel=2)
                continue
            gaps += epoch_gaps(key, identity_key(config), final, set(per_epoch), f"{path}/result.json")
            gaps += checkpoint_gaps(key, config, filesystem, path, results, experiment)
            gaps += missing
    frames = {"folds": folds, "epochs": epochs, "trials": trials, "cross": cross}
    tables = {name: frame_of(rows, SCHEMAS[name]) for name, rows in frames.items()}
    tables["predictions"] = (pd.concat(predictions, ignore_index=True) if predictions
                             else frame_of([], PREDICTIONS))
    # not a table: the scores of dialog turns outside the task, which DED decodes along (never scored)
    tables["context"] = pd.concat(context, ignore_index=True) if context else pd.DataFrame(
        columns=["trial_id", "utt_id", "probabilities"])
    # not a table either: the chosen models' validation predictions, which automatic ensembles choose by
    tables["validation"] = (pd.concat(validation, ignore_index=True) if validation
                            else frame_of([], PREDICTIONS))
    return {name: sorted_frame(name, frame) for name, frame in tables.items()} | {"gaps": gaps}


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
        """({"predictions": [frame], "validation": [frame], "context": [frame]} as far as read, gaps)."""
        name = next((n for n in (identity_key(config), key["trial_id"]) if f"{n}.parquet" in self.names),
                    identity_key(config))
        claims = {"predictions": (f"{name}.parquet", "test predictions", final.get("n_test"))}
        if final.get("validation_scored"):     # trials of older sweeps have none, and claim none
            claims["validation"] = (f"{name}.validation.parquet", "validation predictions", final.get("n_validation"))
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
                        found[kind] = [frame.assign(**key) if kind in ("predictions", "validation")
                                       else frame.assign(trial_id=key["trial_id"])]
                except (OSError, pa.ArrowException) as err:
                    problem = f"unreadable ({str(err)[:120]})"
            if problem:
                gaps.append(Gap(trial_name(key), identity_key(config), f"{what} {problem}", path))
        return found, gaps


def checkpoint_gaps(key: dict, config: dict, filesystem: fs.FileSystem, path: str, results: list[dict],
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
    if (final or {}).get("averaged_epochs"):
        row["selection"] = f"validation: weights averaged over epochs {final['averaged_epochs']}, kept on validation"
    corpus = (final or {}).get("corpus") or (config.get("corpus") or {}).get("name")
    row["train_corpus"] = row["test_corpus"] = corpus   # the trial's own test split; other corpora: the cross table
    if final:
        row.update({k: final.get(k) for k in ("recipe", "select_on", "selected_epoch", "resumed_from", "world_size",
                                               "n_train", "n_validation", "n_test", "classes", "test_recall",
                                               "test_support", "test_confusion", "skewed_removed",
                                               "skewed_reference_ua", "skewed_test_ua")})
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
                     **{f"test_{m}": scores.get(f"test_{m}") for m in PER_CLASS}})
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
