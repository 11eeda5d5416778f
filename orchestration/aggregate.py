"""Experiment directory -> one row per trial, read from Tune's own files (params.json, result.json).

Works on any finished, interrupted or resumed experiment, local or remote
(pyarrow filesystems), without a running Ray cluster.
"""
from __future__ import annotations

import json
import posixpath

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs

METRICS = ("wa", "ua", "macro_f1", "loss")


def _read_text(filesystem, path: str) -> str | None:
    try:
        with filesystem.open_input_stream(path) as stream:
            return stream.read().decode()
    except (FileNotFoundError, OSError):
        return None


def trial_dirs(experiment: str):
    filesystem, root = fs.FileSystem.from_uri(experiment)
    for info in filesystem.get_file_info(fs.FileSelector(root)):
        if info.type == fs.FileType.Directory and _read_text(filesystem, posixpath.join(info.path, "params.json")):
            yield filesystem, info.path


def read_trial(filesystem, path: str) -> tuple[dict, list[dict], str | None]:
    config = json.loads(_read_text(filesystem, posixpath.join(path, "params.json")))
    results = [json.loads(line) for line in (_read_text(filesystem, posixpath.join(path, "result.json")) or "").splitlines()
               if line.strip()]
    error = _read_text(filesystem, posixpath.join(path, "error.txt"))
    return config, results, error


def collect_trials(experiment: str, sweep: str) -> pd.DataFrame:
    rows = []
    for filesystem, path in trial_dirs(experiment):
        config, results, error = read_trial(filesystem, path)
        final = next((r for r in reversed(results) if r.get("done") and "test_ua" in r), None)
        epochs = [r for r in results if not r.get("done")]
        status = "finished" if final else ("error" if error else "incomplete")
        row = {"sweep": sweep, "trial_id": (results[-1]["trial_id"] if results else posixpath.basename(path)),
               "model": config["model"], "ablation": config["ablation"], "fold": int(config["fold"]),
               "seed": int(config["seed"]), "group": config.get("group"),
               "hparams": json.dumps(config.get("hparams") or {}, sort_keys=True), "status": status,
               "error": (error or "")[-2000:] if status != "finished" else "",
               "epochs_run": len({r["epoch"] for r in epochs}), "path": path}
        if final:
            classes = final["classes"]
            row.update({"selected_epoch": final["selected_epoch"], "select_on": final["select_on"],
                        "resumed_from": final.get("resumed_from", 0), "world_size": final.get("world_size", 1),
                        "n_train": final["n_train"],
                        "n_validation": final["n_validation"], "n_test": final["n_test"],
                        "classes": json.dumps(classes), "test_confusion": json.dumps(final["test_confusion"]),
                        "test_support": json.dumps(final["test_support"])})
            for metric in METRICS:
                row[f"val_{metric}"] = final.get(f"selected_val_{metric}")
                row[f"test_{metric}"] = final.get(f"test_{metric}")
            for name, recall in zip(classes, final["test_recall"]):
                row[f"test_recall_{name}"] = recall
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.sort_values(["model", "ablation", "group", "fold", "seed"], kind="stable").reset_index(drop=True)


def write_table(frame: pd.DataFrame, uri: str) -> None:
    """Write a Parquet file atomically (temporary name, then rename)."""
    filesystem, path = fs.FileSystem.from_uri(uri)
    filesystem.create_dir(posixpath.dirname(path), recursive=True)
    tmp = f"{path}.tmp"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp, filesystem=filesystem)
    filesystem.move(tmp, path)


def summarize(frame: pd.DataFrame) -> pd.DataFrame:
    done = frame[frame["status"] == "finished"]
    if done.empty:
        return pd.DataFrame()
    grouped = done.groupby(["model", "ablation", "hparams"])
    summary = grouped[["test_ua", "test_wa", "val_ua"]].agg(["mean", "std"])
    summary.columns = [f"{m}_{s}" for m, s in summary.columns]
    summary["n"] = grouped.size()
    return summary.reset_index()
