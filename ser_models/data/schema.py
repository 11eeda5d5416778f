"""One utterance table for every corpus.

Every loader returns a pandas DataFrame with exactly COLUMNS, so folds, features
and models never need to know which corpus they came from.
"""
from __future__ import annotations

import pandas as pd

# column -> pandas dtype
COLUMNS: dict[str, str] = {
    "utt_id": "string",
    "corpus": "string",
    "path": "string",
    "speaker": "string",
    "session": "string",      # recording session or speaker group; folds group on it
    "gender": "string",       # "F", "M" or <NA>
    "emotion": "string",      # canonical emotion of the raw annotation (all turns)
    "label": "string",        # class of the chosen task, <NA> when outside the task
    "text": "string",         # "" when there is no transcript
    "dialog": "string",       # <NA> outside dialog corpora
    "turn": "Int64",          # order within the dialog
    "start_s": "Float64",     # start of the turn inside its dialog, where known
    "duration": "Float64",    # seconds
    "sample_rate": "Int64",   # of the file on disk (we resample to 16 kHz on load)
    "valence": "Float64",
    "arousal": "Float64",
    "dominance": "Float64",
    "align_source": "string", # "wdseg", "textgrid", "synthetic" or <NA> (fallback at feature time)
    "align_words": "object",  # list[str] or None
    "align_start": "object",  # list[float] seconds or None
    "align_end": "object",    # list[float] seconds or None
}

# Emotion names and their English word forms, shared by every corpus. Corpus-specific codes (IEMOCAP's
# `ang`, EmoDB's `W`) belong to the corpus module or to a manifest's `labels:` mapping, never here.
EMOTION_NAMES: dict[str, str] = {
    "angry": "angry", "anger": "angry", "happy": "happy", "happiness": "happy", "joy": "happy",
    "excited": "excited", "excitement": "excited", "neutral": "neutral", "sad": "sad", "sadness": "sad",
    "frustrated": "frustrated", "frustration": "frustrated", "surprised": "surprised", "surprise": "surprised",
    "fearful": "fearful", "fear": "fearful", "disgusted": "disgusted", "disgust": "disgusted", "calm": "calm",
    "bored": "bored", "boredom": "bored", "contempt": "contempt", "other": "other",
}


def canonical_emotion(label: str) -> str:
    """An emotion's canonical name (`anger` -> `angry`); other labels pass through stripped and lowercased."""
    key = str(label).strip().lower()
    return EMOTION_NAMES.get(key, key)


def empty_table() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in COLUMNS.items()})


def make_table(rows: list[dict]) -> pd.DataFrame:
    """Build a schema-conforming table from dicts; missing columns become <NA>/None."""
    frame = pd.DataFrame(rows, columns=list(COLUMNS)) if rows else empty_table()
    for name, dtype in COLUMNS.items():
        if dtype == "object":
            frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
        else:
            frame[name] = frame[name].astype(dtype)
    frame["text"] = frame["text"].fillna("")
    if frame["utt_id"].duplicated().any():
        dupes = frame.loc[frame["utt_id"].duplicated(), "utt_id"].head(5).tolist()
        raise ValueError(f"duplicate utterance ids {dupes}: every utterance id must be unique. Fix: give each "
                         "utterance its own id (a manifest's utt_id column, or distinct file names)")
    return frame.reset_index(drop=True)
