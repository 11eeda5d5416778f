"""Any corpus from a CSV or Parquet manifest: how users bring EmoDB, CREMA-D, MSP-Podcast...

Required columns: path, label, speaker. Optional: utt_id, text, session,
gender, textgrid (Praat TextGrid with a "words" tier), dialog, turn, start_s,
valence, arousal, dominance. Relative paths are relative to the manifest.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...cli import did_you_mean
from ..alignment import parse_textgrid
from ..audio import audio_info
from ..corpus import CorpusError, CorpusKind, register
from ..schema import EMOTION_NAMES, canonical_emotion, make_table

REQUIRED = ("path", "label", "speaker")


class ManifestError(CorpusError):
    pass


def read_manifest(path: str | Path, encoding: str = "utf-8") -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise ManifestError(f"{path}: manifest not found. Fix: give the path of a .csv or .parquet manifest")
    try:
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else \
            pd.read_csv(path, dtype=str, keep_default_na=False, encoding=encoding)
    except UnicodeDecodeError as err:
        raise ManifestError(f"{path}: not {encoding} text (byte {err.start}: {err.reason}). Fix: save it as "
                            f"UTF-8, or name its encoding: corpus.encoding: latin-1") from None
    except (ValueError, OSError) as err:
        raise ManifestError(f"{path}: unreadable as {'Parquet' if path.suffix == '.parquet' else 'CSV'} "
                            f"({str(err)[:200]}). Fix: write a .csv or .parquet with columns path, label, speaker")
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise ManifestError(f"{path}: missing column(s) {missing}; found {list(frame.columns)}. "
                            f"Fix: a manifest needs at least the columns path, label, speaker")
    empty = frame.index[(frame[list(REQUIRED)].astype(str).apply(lambda col: col.str.strip()) == "").any(axis=1)]
    if len(empty):
        raise ManifestError(f"{path}: rows {rows_of(empty)} have an empty path, label or speaker. "
                            f"Fix: fill them in or delete those rows")
    return frame


def rows_of(index) -> str:
    """Manifest line numbers (the header is line 1), the first few."""
    lines = [int(i) + 2 for i in index]
    return f"{lines[:8]}{f' and {len(lines) - 8} more' if len(lines) > 8 else ''}"


def _optional(record: dict, name: str, cast=str):
    value = record.get(name)
    if value is None or (isinstance(value, float) and pd.isna(value)) or str(value).strip() == "":
        return None
    return cast(value)


def read_alignment(path: Path, tier: str, where: str):
    try:
        return parse_textgrid(path, tier=tier)
    except FileNotFoundError:
        raise ManifestError(f"{where}: TextGrid {path} not found. Fix: correct the textgrid column (relative to "
                            "the manifest), or leave it empty to use the fallback alignment") from None
    except (ValueError, IndexError, TypeError, UnicodeError) as err:
        detail = str(err) if "Fix:" in str(err) else f"{path}: not a Praat TextGrid ({type(err).__name__}: {err})"
        fix = "" if "Fix:" in detail else ". Fix: re-export it from Praat (text format), or leave the textgrid " \
                                          "cell empty to use the fallback alignment"
        raise ManifestError(f"{where}: {detail}{fix}") from None


def emotions(frame: pd.DataFrame, path: Path, labels: dict | None, classes: list[str] | None,
             locate=lambda index: f"rows {rows_of(index)}") -> pd.Series:
    """Each row's emotion: the manifest's own `labels:` mapping, else the shared emotion names.

    A label that is neither, nor a class the sweep names, is a typo until declared: it would otherwise become a
    class of its own, or vanish from the task.
    """
    raw = frame["label"].astype(str).str.strip()
    mapping = {str(k).strip(): str(v).strip().lower() for k, v in (labels or {}).items()}
    named = raw.map(lambda label: mapping.get(label) or canonical_emotion(label))
    known = set(EMOTION_NAMES.values()) | set(mapping.values()) | set(classes or [])
    unknown = ~raw.isin(mapping) & ~named.isin(known)
    if unknown.any():
        first = raw[unknown].iloc[0]
        hint = did_you_mean(first.lower(), sorted(known))
        counts = raw[unknown].value_counts().to_dict()
        raise ManifestError(f"{path}: unknown label(s) {counts} at {locate(frame.index[unknown])}{hint}. "
                            "Fix: correct them, or declare them: list them in corpus.classes, or map the "
                            "corpus's codes with corpus.labels: {W: angry, F: happy, ...}")
    return named


def load(manifest: str | Path, classes: list[str] | None = None, corpus: str | None = None, tier: str = "words",
         labels: dict | None = None, encoding: str = "utf-8") -> pd.DataFrame:
    """Utterance table from a manifest, `emotion` from its labels (`label` is set by the corpus registry)."""
    manifest = Path(manifest)
    frame = read_manifest(manifest, encoding)
    named = emotions(frame, manifest, labels, classes)
    base = manifest.parent
    rows = []
    for i, record in enumerate(frame.to_dict("records")):
        audio_path = Path(str(record["path"]))
        audio_path = audio_path if audio_path.is_absolute() else base / audio_path
        duration, sample_rate = audio_info(audio_path)
        textgrid = _optional(record, "textgrid")
        alignment = None
        if textgrid:
            alignment = read_alignment(Path(textgrid) if Path(textgrid).is_absolute() else base / textgrid,
                                       tier, f"{manifest} row {i + 2}")
        text = _optional(record, "text") or (" ".join(alignment[0]) if alignment else "")
        rows.append({
            "utt_id": _optional(record, "utt_id") or audio_path.stem,
            "corpus": corpus or manifest.stem, "path": str(audio_path),
            "speaker": str(record["speaker"]).strip(),
            "session": _optional(record, "session") or str(record["speaker"]).strip(),
            "gender": _optional(record, "gender"), "emotion": named.iloc[i],
            "text": text, "dialog": _optional(record, "dialog"), "turn": _optional(record, "turn", int),
            "start_s": _optional(record, "start_s", float), "duration": duration, "sample_rate": sample_rate,
            "valence": _optional(record, "valence", float), "arousal": _optional(record, "arousal", float),
            "dominance": _optional(record, "dominance", float),
            "align_source": "textgrid" if alignment else None,
            "align_words": alignment[0] if alignment else None,
            "align_start": alignment[1] if alignment else None,
            "align_end": alignment[2] if alignment else None,
        })
    ids = pd.Series([row["utt_id"] for row in rows], index=frame.index)
    if ids.duplicated(keep=False).any():
        twice = ids[ids.duplicated(keep=False)]
        raise ManifestError(f"{manifest}: utterance ids {sorted(set(twice))[:5]} occur more than once, at rows "
                            f"{rows_of(twice.index)}. Fix: give each row its own utt_id (or distinct file names)")
    return make_table(rows)


@register
class Manifest(CorpusKind):
    name = "manifest"
    help = "any corpus from a CSV or Parquet manifest (root: the manifest file)"
    options = {"labels": "the manifest's label codes -> emotion names, e.g. {W: angry, F: happy}",
               "encoding": "the CSV's text encoding (default utf-8)",
               "tier": "the TextGrid tier that holds words (default words)"}

    def read(self, root, classes, **options):
        return load(root, classes, **options)
