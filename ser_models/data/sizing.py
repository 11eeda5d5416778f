"""How many bytes a corpus's features take, before any is extracted: for `emosweep check` and the cache's room.

Each extractor is run once on 1 s and on 3 s of silence; its output grows linearly in between (frames per
second x dims x 4 bytes) and stops growing where it crops (kept_seconds) or has a fixed size. An utterance
of d seconds then takes intercept + slope x min(d, kept) bytes, the sum over the table is the feature's size.
"""
from __future__ import annotations

import functools
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from .features import SAMPLE_RATE, kept_seconds, resolve


@functools.lru_cache(maxsize=None)
def bytes_per_second(extractor) -> tuple[float, float]:
    """(intercept, slope) of one utterance's float32 bytes against its duration in seconds."""
    if hasattr(extractor, "shape"):     # a fixed size per utterance, known without running it (an encoder)
        return 4 * float(np.prod(extractor.shape)), 0.0
    one, three = (int(np.asarray(extractor(np.zeros(int(s * SAMPLE_RATE), np.float32))).size) * 4 for s in (1, 3))
    slope = (three - one) / 2
    return one - slope, slope


def durations(table: pd.DataFrame) -> np.ndarray:
    """Each utterance's seconds: the table's own column, else read from the file's header."""
    from .audio import audio_info

    known = table["duration"].astype("Float64") if "duration" in table else pd.Series(pd.NA, index=table.index)
    missing = known.isna()
    if missing.any():
        known = known.copy()
        known[missing] = [audio_info(path)[0] for path in table.loc[missing, "path"]]
    return known.astype(float).to_numpy()


def feature_bytes(table: pd.DataFrame, names: list[str], configured: dict | None = None) -> dict[str, int]:
    """Bytes each feature (an extractor's name) takes for every utterance of the table."""
    from .cache import WORD_SPANS

    seconds = durations(table)
    sizes = {}
    for name in names:
        if name == WORD_SPANS:    # a start and an end (float32) per word
            sizes[name] = 8 * int(table["text"].fillna("").astype(str).str.split().str.len().sum())
            continue
        intercept, slope = bytes_per_second(resolve(name, configured))
        kept = kept_seconds(name)
        # an unreadable file (nan seconds) is quarantined at extraction: it takes no room
        sizes[name] = int(np.nansum(intercept + slope * (np.minimum(seconds, kept) if kept else seconds)))
    return sizes


def human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def free_bytes(folder: str | Path) -> int:
    """Free space on the disk that holds `folder` (or its nearest existing parent)."""
    path = Path(folder).expanduser()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free
