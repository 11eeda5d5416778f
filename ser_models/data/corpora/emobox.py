"""EmoBox's published folds: `<dataset>_train_fold_<k>.jsonl` / `<dataset>_test_fold_<k>.jsonl` (+ `label_map.json`).

Each line holds EmoBox's fields: key, dataset, wav, type, sample_rate, length, task, emo, channel. The test
split of every fold is used exactly as given: fold k's test utterances form session `fold<k>`, so the
`sessions` strategy tests on them, validates on the next fold's test utterances (training data of fold k in
EmoBox too) and trains on the rest. The folds are checked when read: every utterance in exactly one test
fold, and each train file exactly the utterances outside its test file. EmoBox lists no speakers; a line
with a `speaker` field keeps it, otherwise the fold stands in for the speaker, and speaker-disjointness is
EmoBox's own construction.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from ..audio import audio_info
from ..corpus import CorpusError, CorpusKind, register
from ..schema import canonical_emotion, make_table

FOLD_FILE = re.compile(r"^(?P<dataset>.+)_(?P<split>train|test)_fold_(?P<fold>\d+)\.jsonl$")


def read_lines(path: Path) -> list[dict]:
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise CorpusError(f"{path} line {number}: not JSON. Fix: restore the file from EmoBox's release") from None
        missing = [k for k in ("key", "wav", "emo") if k not in records[-1]]
        if missing:
            raise CorpusError(f"{path} line {number}: no {missing}. Fix: EmoBox lines carry key, wav and emo")
    return records


def fold_files(root: Path) -> dict[int, dict[str, Path]]:
    folds: dict[int, dict[str, Path]] = {}
    for path in sorted(root.rglob("*.jsonl")):
        match = FOLD_FILE.match(path.name)
        if match:
            folds.setdefault(int(match["fold"]), {})[match["split"]] = path
    incomplete = [k for k, files in folds.items() if set(files) != {"train", "test"}]
    if not folds or incomplete:
        what = f"fold(s) {incomplete} lack a train or a test file" if folds else "no *_test_fold_<k>.jsonl files"
        raise CorpusError(f"{root}: {what}. Fix: point corpus.root at one EmoBox dataset folder (its fold files "
                          "and label_map.json)")
    return folds


def read(root: Path, audio_root: str | None = None, label_map: dict | None = None):
    folds = fold_files(root)
    mapping_file = next(iter(sorted(root.rglob("label_map.json"))), None)
    given = {**(json.loads(mapping_file.read_text()) if mapping_file else {}), **(label_map or {})}
    mapping = {str(code): name for code, name in given.items() if isinstance(name, str)}  # not code -> index
    base = Path(audio_root).expanduser() if audio_root else root
    rows, test_fold_of = [], {}
    for fold, files in sorted(folds.items()):
        test = read_lines(files["test"])
        for record in test:
            if record["key"] in test_fold_of:
                raise CorpusError(f"{files['test']}: utterance {record['key']!r} is also in the test split of fold "
                                  f"{test_fold_of[record['key']]}: the folds leak. Fix: use EmoBox's files as released")
            test_fold_of[record["key"]] = fold
            wav = Path(record["wav"])
            path = wav if wav.is_absolute() else base / wav
            duration, sample_rate = audio_info(path)
            rows.append({"utt_id": record["key"], "corpus": record.get("dataset") or root.name, "path": str(path),
                         "speaker": str(record.get("speaker") or f"fold{fold}"), "session": f"fold{fold}",
                         "emotion": canonical_emotion(mapping.get(record["emo"], record["emo"])),
                         "duration": duration, "sample_rate": sample_rate})
    for fold, files in folds.items():
        train = {record["key"] for record in read_lines(files["train"])}
        expected = {key for key, test_fold in test_fold_of.items() if test_fold != fold}
        if train != expected:
            raise CorpusError(f"{files['train']}: its utterances are not exactly those outside the test split of fold "
                              f"{fold} ({len(train - expected)} extra, {len(expected - train)} missing). Fix: use "
                              "EmoBox's files as released")
    return make_table(rows)


@register
class EmoBox(CorpusKind):
    name = "emobox"
    help = "one EmoBox dataset folder: its fold JSON Lines and label_map.json, test folds used as given"
    default_folds = "sessions"
    options = {"audio_root": "the folder EmoBox's relative wav paths start from (default: corpus.root)",
               "label_map": "EmoBox emo codes -> emotion names, over label_map.json"}

    def read(self, root, classes, **options):
        return read(root, **options)
