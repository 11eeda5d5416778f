"""Any corpus from a CSV or Parquet manifest: how users bring EmoDB, CREMA-D, MSP-Podcast...

Required columns: path, label, speaker. Optional: utt_id, text, session,
gender, textgrid (Praat TextGrid with a "words" tier), dialog, turn, start_s,
valence, arousal, dominance. Relative paths are relative to the manifest.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .alignment import parse_textgrid
from .audio import audio_info
from .schema import canonical_emotion, make_table

REQUIRED = ("path", "label", "speaker")
OPTIONAL = ("utt_id", "text", "session", "gender", "textgrid", "dialog", "turn", "start_s",
            "valence", "arousal", "dominance")


class ManifestError(ValueError):
    pass


def read_manifest(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise ManifestError(f"{path}: manifest not found. Fix: give the path of a .csv or .parquet manifest")
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise ManifestError(f"{path}: missing column(s) {missing}; found {list(frame.columns)}. "
                            f"Fix: a manifest needs at least the columns path, label, speaker")
    empty = frame.index[(frame[list(REQUIRED)].astype(str).apply(lambda col: col.str.strip()) == "").any(axis=1)]
    if len(empty):
        raise ManifestError(f"{path}: rows {[int(i) + 2 for i in empty[:5]]} have an empty path, label or speaker. "
                            f"Fix: fill them in or delete those rows")
    return frame


def _optional(record: dict, name: str, cast=str):
    value = record.get(name)
    if value is None or (isinstance(value, float) and pd.isna(value)) or str(value).strip() == "":
        return None
    return cast(value)


def load(manifest: str | Path, classes: list[str] | None = None, corpus: str | None = None,
         tier: str = "words"):
    """Utterance table from a manifest; `classes` picks and orders the task labels (default: all)."""
    manifest = Path(manifest)
    frame = read_manifest(manifest)
    base = manifest.parent
    rows = []
    for i, record in enumerate(frame.to_dict("records")):
        audio_path = Path(str(record["path"]))
        audio_path = audio_path if audio_path.is_absolute() else base / audio_path
        duration, sample_rate = audio_info(audio_path)
        textgrid = _optional(record, "textgrid")
        alignment = None
        if textgrid:
            textgrid_path = Path(textgrid) if Path(textgrid).is_absolute() else base / textgrid
            alignment = parse_textgrid(textgrid_path, tier=tier)
        text = _optional(record, "text") or (" ".join(alignment[0]) if alignment else "")
        rows.append({
            "utt_id": _optional(record, "utt_id") or audio_path.stem,
            "corpus": corpus or manifest.stem, "path": str(audio_path),
            "speaker": str(record["speaker"]).strip(),
            "session": _optional(record, "session") or str(record["speaker"]).strip(),
            "gender": _optional(record, "gender"), "emotion": canonical_emotion(record["label"]),
            "text": text, "dialog": _optional(record, "dialog"), "turn": _optional(record, "turn", int),
            "start_s": _optional(record, "start_s", float), "duration": duration, "sample_rate": sample_rate,
            "valence": _optional(record, "valence", float), "arousal": _optional(record, "arousal", float),
            "dominance": _optional(record, "dominance", float),
            "align_source": "textgrid" if alignment else None,
            "align_words": alignment[0] if alignment else None,
            "align_start": alignment[1] if alignment else None,
            "align_end": alignment[2] if alignment else None,
        })
    table = make_table(rows)
    present = sorted(table["emotion"].dropna().unique())
    wanted = [canonical_emotion(c) for c in classes] if classes else present
    unknown = sorted(set(wanted) - set(present))
    if unknown:
        raise ManifestError(f"{manifest}: classes {unknown} do not occur; labels present: {present}")
    table["label"] = table["emotion"].where(table["emotion"].isin(wanted)).astype("string")
    return table
