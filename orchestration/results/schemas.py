"""The Parquet tables' schemas, and rows -> frames that fit them (aggregate.py writes the tables)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from ser_models.metrics import ORACLE, REPORTED, SCORES


METRICS = REPORTED


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
       ("test_support", pa.list_(pa.int64())), ("test_confusion", pa.list_(pa.list_(pa.int64())))]
    # train.skewed_test_class: test utterances removed, and UA on what is left by the trial's own and by skewed
    # normalisation statistics
    + [("skewed_removed", pa.int64()), ("skewed_reference_ua", pa.float64()), ("skewed_test_ua", pa.float64())])


EPOCHS = pa.schema(KEY + [("group", pa.string()), ("epoch", pa.int64()), ("train_loss", pa.float64())]
                   + [(f"val_{m}", pa.float64()) for m in METRICS]
                   + [(f"oracle_test_{m}", pa.float64()) for m in SCORES]
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
    + [(f"{split}_{m}_{stat}", pa.float64()) for split in ("test", "val") for m in SCORES
       for stat in ("mean", "std")]
    + [("pooled_test_wa", pa.float64()), ("pooled_test_ua", pa.float64())]
    + [(f"test_oracle_{m}_{stat}", pa.float64()) for m in ORACLE for stat in ("mean", "std")]
    + [(f"test_oracle_ref_{m}_{stat}", pa.float64()) for m in ORACLE for stat in ("mean", "std")])


CROSS = pa.schema(KEY + [
    ("group", pa.string()), ("hparams", pa.string()), ("status", pa.string()), ("train_corpus", pa.string()),
    ("test_corpus", pa.string()), ("selected_epoch", pa.int64()), ("n_test", pa.int64())]
    + [(f"test_{m}", pa.float64()) for m in METRICS]
    + [("classes", pa.list_(pa.string())), ("test_recall", pa.list_(pa.float64())),
       ("test_support", pa.list_(pa.int64())), ("test_confusion", pa.list_(pa.list_(pa.int64())))])


SCHEMAS = {"folds": FOLDS, "epochs": EPOCHS, "predictions": PREDICTIONS, "trials": TRIALS, "summary": SUMMARY,
           "cross": CROSS}


PARTITIONED = ("folds", "epochs", "predictions")


def clean(value: object) -> object:
    """NaN -> None and arrays -> lists, so pandas rows fit the Arrow schema."""
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, np.ndarray):
        return [clean(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def frame_of(rows: list[dict], schema: pa.Schema) -> pd.DataFrame:
    table = pa.Table.from_pylist([{name: clean(row.get(name)) for name in schema.names} for row in rows],
                                 schema=schema)
    return table.to_pandas()


def sorted_frame(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    order = {"epochs": ["model", "ablation", "fold", "seed", "trial_id", "epoch"],
             "predictions": ["model", "ablation", "fold", "seed", "trial_id", "utt_id"],
             "validation": ["model", "ablation", "fold", "seed", "trial_id", "utt_id"],
             "summary": ["model", "ablation", "hparams"],
             "cross": ["model", "ablation", "group", "fold", "seed", "test_corpus"]
             }.get(name, ["model", "ablation", "group", "fold", "seed"])
    order = [c for c in order if c in frame.columns]
    return frame.sort_values(order, kind="stable").reset_index(drop=True) if len(frame) else frame
