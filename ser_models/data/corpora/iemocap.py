"""IEMOCAP from a user's IEMOCAP_full_release/ (format notes: shared docs/iemocap_format.md).

All 10,039 turns are kept (dialog decoding needs them); `label` is set only
for turns inside the chosen class map. Audio is not opened here: durations come
from the label file, and missing or broken wavs are quarantined at extraction.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import pandas as pd

from ..alignment import parse_wdseg
from ..corpus import CorpusKind, register
from ..schema import make_table

# EmoEvaluation's consensus codes
CODES = {"ang": "angry", "hap": "happy", "exc": "excited", "neu": "neutral", "sad": "sad", "fru": "frustrated",
         "sur": "surprised", "fea": "fearful", "dis": "disgusted", "oth": "other", "xxx": "undecided"}

CLASS_MAPS = {
    # the standard 4-class task, happy = hap + exc: 5,531 turns
    "4": {"angry": "angry", "happy": "happy", "excited": "happy", "neutral": "neutral", "sad": "sad"},
    # without exc, as some older papers: 4,490 turns
    "4-noexc": {"angry": "angry", "happy": "happy", "neutral": "neutral", "sad": "sad"},
    "6": {"angry": "angry", "happy": "happy", "excited": "excited", "neutral": "neutral", "sad": "sad",
          "frustrated": "frustrated"},
}

_HEADER = re.compile(r"^\[(\d+\.?\d*)\s*-\s*(\d+\.?\d*)\]\t(\S+)\t(\S+)\t\[([^\]]*)\]")
_TRANSCRIPT = re.compile(r"^(Ses\d\d[FM]_\S+_[FM]\d+)\s+\[[^\]]*\]:\s?(.*)$")


def find_root(root: str | Path) -> Path:
    root = Path(root)
    if (root / "IEMOCAP_full_release").is_dir():
        root = root / "IEMOCAP_full_release"
    if not any(root.glob("Session[1-5]")):
        raise FileNotFoundError(f"{root}: no Session1..Session5 folders. Fix: point the corpus root at your "
                                f"IEMOCAP_full_release/ folder (or the folder that contains it)")
    return root


def parse_emo_evaluation(path: Path) -> list[dict]:
    """Consensus turns of one dialog: time span, raw label code and V/A/D."""
    turns = []
    for line in path.read_text(errors="replace").splitlines():
        match = _HEADER.match(line.rstrip("\r"))
        if match:
            start, end, utt_id, code, vad = match.groups()
            values = [float(v) for v in vad.split(",")] if vad.strip() else [None] * 3
            turns.append({"utt_id": utt_id, "start_s": float(start), "end_s": float(end), "code": code,
                          "valence": values[0], "arousal": values[1], "dominance": values[2]})
    return turns


def parse_transcripts(path: Path) -> dict[str, str]:
    """utt_id -> text; lines without a labelled turn id (`M: Yeah.`, `..._MXX0`) are skipped."""
    texts = {}
    for line in path.read_text(errors="replace").splitlines():
        match = _TRANSCRIPT.match(line.rstrip("\r").strip())
        if match:
            texts[match.group(1)] = match.group(2).strip()
    return texts


def read(root: str | Path) -> pd.DataFrame:
    """All turns, labelled or not: dialog decoding needs every one."""
    root = find_root(root)
    rows, missing_alignments = [], []
    for session_dir in sorted(root.glob("Session[1-5]")):
        session = int(session_dir.name[-1])
        texts: dict[str, str] = {}
        for transcript in sorted((session_dir / "dialog" / "transcriptions").glob("*.txt")):
            texts.update(parse_transcripts(transcript))
        for label_file in sorted((session_dir / "dialog" / "EmoEvaluation").glob("*.txt")):
            dialog = label_file.stem
            turns = sorted(parse_emo_evaluation(label_file), key=lambda turn: turn["start_s"])
            for turn_index, turn in enumerate(turns):
                utt_id = turn["utt_id"]
                wdseg = session_dir / "sentences" / "ForcedAlignment" / dialog / f"{utt_id}.wdseg"
                alignment = parse_wdseg(wdseg) if wdseg.exists() else None
                if alignment is None:
                    missing_alignments.append(utt_id)
                rows.append({
                    "utt_id": utt_id, "corpus": "iemocap",
                    "path": str(session_dir / "sentences" / "wav" / dialog / f"{utt_id}.wav"),
                    "speaker": f"Ses0{session}{utt_id.rsplit('_', 1)[1][0]}",
                    "session": f"Ses0{session}", "gender": utt_id.rsplit("_", 1)[1][0],
                    "emotion": CODES.get(turn["code"].lower(), turn["code"].lower()), "text": texts.get(utt_id, ""),
                    "dialog": dialog, "turn": turn_index, "start_s": turn["start_s"],
                    "duration": turn["end_s"] - turn["start_s"], "sample_rate": 16_000,
                    "valence": turn["valence"], "arousal": turn["arousal"], "dominance": turn["dominance"],
                    "align_source": "wdseg" if alignment else None,
                    "align_words": alignment[0] if alignment else None,
                    "align_start": alignment[1] if alignment else None,
                    "align_end": alignment[2] if alignment else None,
                })
    if not rows:
        raise FileNotFoundError(f"{root}: no turns found in Session*/dialog/EmoEvaluation/*.txt. "
                                f"Fix: check that the label files were extracted")
    if missing_alignments:
        warnings.warn(f"IEMOCAP: {len(missing_alignments)} turns have no .wdseg (e.g. {missing_alignments[:2]}); "
                      f"they use the proportional fallback alignment", stacklevel=2)
    return make_table(rows)


@register
class Iemocap(CorpusKind):
    name = "iemocap"
    help = "IEMOCAP_full_release/ (or its parent): all 10,039 turns, transcripts, word alignments, dialogs"
    default_folds = "sessions"
    presets = CLASS_MAPS
    default_classes = "4"

    def read(self, root, classes, **options):
        return read(root)
