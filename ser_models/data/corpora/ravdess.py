"""RAVDESS speech from Actor_XX/ folders: wav or flac, any rate, mono or stereo.

Names are `MM-VV-EE-II-SS-RR-AA`: modality, vocal channel (01 speech),
emotion, intensity, statement, repetition, actor (odd = male).
"""
from __future__ import annotations

from pathlib import Path

from ..audio import audio_info
from ..corpus import CorpusKind, register
from ..schema import make_table

EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry",
            "06": "fearful", "07": "disgusted", "08": "surprised"}
STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
ACTOR_GROUPS = [(1, 5), (6, 10), (11, 15), (16, 20), (21, 24)]  # the actor-disjoint 5 folds
CLASS_MAPS = {
    "4": {e: e for e in ("neutral", "happy", "sad", "angry")},  # 672 files, calm excluded
    "8": {e: e for e in EMOTIONS.values()},
}
AUDIO_SUFFIXES = {".wav", ".flac", ".aif", ".aiff"}


def actor_group(actor: int) -> str:
    for first, last in ACTOR_GROUPS:
        if first <= actor <= last:
            return f"actors{first:02d}-{last:02d}"
    raise ValueError(f"actor {actor} outside 1..24")


def parse_name(path: Path) -> dict | None:
    parts = path.stem.split("-")
    if len(parts) != 7 or not all(p.isdigit() for p in parts):
        return None
    modality, channel, emotion, intensity, statement, repetition, actor = parts
    if channel != "01" or emotion not in EMOTIONS:
        return None  # song files and anything that is not a RAVDESS speech name
    return {"emotion": EMOTIONS[emotion], "intensity": int(intensity), "statement": statement,
            "repetition": int(repetition), "actor": int(actor)}


def read(root: str | Path):
    root = Path(root)
    files = sorted(p for p in root.glob("Actor_*/*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{root}: no Actor_XX/*.wav or *.flac files. Fix: point the corpus root at the "
                                f"folder that holds the Actor_01 .. Actor_24 folders")
    rows = []
    for path in files:
        meta = parse_name(path)
        if meta is None:
            continue
        duration, sample_rate = audio_info(path)
        rows.append({
            "utt_id": path.stem, "corpus": "ravdess", "path": str(path),
            "speaker": f"Actor_{meta['actor']:02d}", "session": actor_group(meta["actor"]),
            "gender": "M" if meta["actor"] % 2 else "F", "emotion": meta["emotion"],
            "text": STATEMENTS[meta["statement"]], "duration": duration, "sample_rate": sample_rate,
        })
    return make_table(rows)


@register
class Ravdess(CorpusKind):
    name = "ravdess"
    help = "RAVDESS speech: Actor_XX/ folders of wav or flac, any rate; session = the actor group"
    default_folds = "actors-5"
    fold_aliases = {"actors-5": "sessions"}   # sessions are the actor groups 1-5, 6-10, 11-15, 16-20, 21-24
    presets = CLASS_MAPS
    default_classes = "4"

    def read(self, root, classes, **options):
        return read(root)
