"""Helpers to run the real sweep CLI on the small synthetic corpus."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from .conftest import REPO, SMALL_SYNTHETIC


def write_sweep(tmp_path: Path, synthetic_root: Path, **overrides) -> Path:
    sweep = {"name": "t", "corpus": {"name": "synthetic", "root": str(synthetic_root), **SMALL_SYNTHETIC.__dict__},
             "folds": "sessions", "fold_indices": [0, 1], "models": {"lstm_attn_text": ["full"]}, "seeds": [0],
             "train": {"epochs": 2, "batch_size": 8, "lr": 3e-3, "test_oracle": True},
             "resources": {"mode": "inprocess"},
             "storage": str(tmp_path / "results"), "cache": str(tmp_path / "cache")}
    sweep.update(overrides)
    path = tmp_path / f"{sweep['name']}.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def sweep_command(path: Path, *args) -> list[str]:
    return [sys.executable, str(REPO / "orchestration" / "sweep.py"), str(path), *args]


def run_sweep(path: Path, *args, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(sweep_command(path, *args), cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def table(tmp_path: Path | str, name: str = "t", which: str = "folds") -> pd.DataFrame:
    """A sweep table, without the extra DED rows (tmp_path: the test's folder, or a storage URI)."""
    from orchestration.results.aggregate import read_table

    frame = read_table(f"{tmp_path}/{name}" if "://" in str(tmp_path) else str(tmp_path / "results" / name), which)
    return frame[~frame["model"].str.endswith("+ded")].reset_index(drop=True) if "model" in frame else frame


def prediction_files(folder: Path) -> list[Path]:
    """A predictions folder's test prediction files (<identity>.parquet), without the .validation and
    .context ones."""
    return sorted(path for path in Path(folder).glob("*.parquet") if path.name.count(".") == 1)
