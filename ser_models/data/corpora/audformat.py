"""An audformat database (audEERING's corpus format; what audb installs): its emotion labels as a corpus.

corpus.root is the folder holding `db.yaml`. The labels come from audformat's
own `Database.get`: the emotion scheme's labels over every table, with the
speaker (and the speaker's gender, where the speaker scheme maps to one)
gathered from whatever table holds them. Only filewise labels are read: a
segmented table would need segment-level audio, which the utterance table does
not hold. Extra: pip install 'emosweep[audformat]'.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..audio import audio_info
from ..corpus import CorpusError, CorpusKind, register
from ..schema import make_table
from .manifest import emotions


def load_database(root: Path):
    try:
        import audformat
    except ImportError:
        raise CorpusError("corpus audformat needs the audformat package. Fix: pip install "
                          "'emosweep[audformat]'") from None
    if not (root / "db.yaml").exists():
        raise CorpusError(f"{root}: no db.yaml. Fix: point corpus.root at the audformat database's folder (the "
                          "one with db.yaml; audb.load(...).root for an audb database)")
    return audformat.Database.load(str(root))


def labels_table(db, root: Path, emotion: str, speaker: str) -> pd.DataFrame:
    """file -> emotion, speaker and gender, through audformat's own scheme lookup."""
    extra = [speaker] + (["gender"] if speaker != "gender" else [])
    frame = db.get(emotion, extra)
    if frame.empty:
        raise CorpusError(f"{root}/db.yaml: no labels for the scheme or column {emotion!r} (schemes: "
                          f"{sorted(db.schemes)}, tables: {sorted(db.tables)}). Fix: name it with corpus.emotion")
    if "start" in frame.index.names:
        raise CorpusError(f"{root}/db.yaml: {emotion!r} is labelled per segment; only filewise labels are read. "
                          "Fix: use a filewise table, or cut the segments into files and use a manifest")
    missing = frame[speaker].isna() if speaker in frame else pd.Series(True, index=frame.index)
    if missing.any():
        raise CorpusError(f"{root}/db.yaml: {int(missing.sum())} file(s) have no {speaker!r}, e.g. "
                          f"{list(frame.index[missing][:3])}: folds must keep speakers apart. Fix: name the speaker "
                          "scheme or column with corpus.speaker")
    return frame


def read(root: Path, classes: list[str] | None, emotion: str = "emotion", speaker: str = "speaker",
         labels: dict | None = None) -> pd.DataFrame:
    db = load_database(root)
    frame = labels_table(db, root, emotion, speaker)
    where = root / "db.yaml"
    files = list(frame.index)
    named = emotions(pd.DataFrame({"label": frame[emotion].astype(str).to_numpy()}), where, labels, classes,
                     locate=lambda index: f"files {[files[i] for i in index[:5]]}")
    rows = []
    for i, (file, record) in enumerate(frame.iterrows()):
        path = Path(file) if Path(file).is_absolute() else root / file
        duration, sample_rate = audio_info(path)
        gender = str(record.get("gender") or "").strip().lower()[:1].upper() or None
        rows.append({"utt_id": str(Path(file).with_suffix("")).replace("/", "_"), "corpus": db.name,
                     "path": str(path), "speaker": str(record[speaker]), "session": str(record[speaker]),
                     "gender": gender if gender in ("F", "M") else None, "emotion": named.iloc[i], "text": "",
                     "duration": duration, "sample_rate": sample_rate})
    return make_table(rows)


@register
class Audformat(CorpusKind):
    name = "audformat"
    help = "an audformat database folder (db.yaml; what audb installs): filewise emotion labels, speakers"
    options = {"emotion": "the scheme or column holding emotion labels (default emotion)",
               "speaker": "the scheme or column holding speakers (default speaker)",
               "labels": "the database's label codes -> emotion names, e.g. {W: angry}"}

    def read(self, root, classes, **options):
        return read(Path(root), classes, **options)
