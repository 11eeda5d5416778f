"""audformat databases as a corpus: written here with audformat's own API from the synthetic corpus's audio."""
from __future__ import annotations

import shutil

import pandas as pd
import pytest

from ser_models.data.corpus import CorpusError, load_corpus
from ser_models.data.folds import check_speaker_disjoint

from .sweeps import run_sweep, table, write_sweep

audformat = pytest.importorskip("audformat")

NAMES = {"angry": "anger", "happy": "happiness", "neutral": "neutral", "sad": "sadness"}   # audformat-style words


def write_database(root, synthetic_root, segmented: bool = False, speakers: bool = True, rename=None) -> pd.DataFrame:
    """The synthetic corpus as an audformat database: a `files` table with speakers (their gender in the
    speaker scheme's labels) and an `emotion` table, as audb databases are laid out."""
    manifest = pd.read_csv(synthetic_root / "manifest.csv")
    (root / "audio").mkdir(parents=True)
    files = []
    for path in manifest["path"]:
        shutil.copy(synthetic_root / path, root / "audio" / (synthetic_root / path).name)
        files.append(f"audio/{(synthetic_root / path).name}")
    db = audformat.Database("synthetic-af", source="tests", usage=audformat.define.Usage.RESEARCH)
    db.media["mic"] = audformat.Media(audformat.define.MediaType.AUDIO, format="wav", sampling_rate=16000)
    genders = dict(zip(manifest["speaker"], manifest["gender"]))
    db.schemes["speaker"] = audformat.Scheme(labels={s: {"gender": {"F": "female", "M": "male"}[g]}
                                                     for s, g in genders.items()})
    labels = [(rename or {}).get(NAMES[label], NAMES[label]) for label in manifest["label"]]
    db.schemes["emotion"] = audformat.Scheme(labels=sorted(set(labels)))
    index = audformat.filewise_index(files)
    db["files"] = audformat.Table(index, media_id="mic")
    if speakers:
        db["files"]["speaker"] = audformat.Column(scheme_id="speaker")
        db["files"]["speaker"].set(list(manifest["speaker"]))
    if segmented:
        index = audformat.segmented_index(files, [0.0] * len(files), [0.5] * len(files))
    db["emotion"] = audformat.Table(index)
    db["emotion"]["emotion"] = audformat.Column(scheme_id="emotion")
    db["emotion"]["emotion"].set(labels)
    db.save(str(root))
    return manifest


def test_an_audformat_database_reads_as_a_corpus(tmp_path, synthetic_root):
    manifest = write_database(tmp_path / "db", synthetic_root)
    corpus = load_corpus("audformat", tmp_path / "db", classes=["angry", "happy", "neutral", "sad"])
    utterances = corpus.table.sort_values("path").reset_index(drop=True)
    assert len(utterances) == len(manifest) and corpus.name == "synthetic-af"
    expected = manifest.assign(name=manifest["path"].map(lambda p: p.rsplit("/", 1)[-1])).sort_values("name")
    assert list(utterances["emotion"]) == list(expected["label"])            # anger -> angry, ...
    assert list(utterances["speaker"]) == list(expected["speaker"].astype(str))
    assert list(utterances["gender"]) == list(expected["gender"])           # from the speaker scheme's labels
    for fold in corpus.folds("speakers-5"):
        check_speaker_disjoint(corpus.table, fold.train, fold.validation, fold.test)


@pytest.mark.parametrize("kind, message", [
    ("segmented", "labelled per segment"),
    ("no speakers", "have no 'speaker'"),
    ("typo", "unknown label(s) {'sadnes': 25} at files ['audio/"),
    ("no db.yaml", "no db.yaml"),
])
def test_what_cannot_be_read_is_named_with_a_fix(tmp_path, synthetic_root, kind, message):
    root = tmp_path / "db"
    if kind == "no db.yaml":
        root.mkdir()
    else:
        write_database(root, synthetic_root, segmented=kind == "segmented", speakers=kind != "no speakers",
                       rename={"sadness": "sadnes"} if kind == "typo" else None)
    with pytest.raises(CorpusError, match="Fix:") as err:
        load_corpus("audformat", root, classes=["angry", "happy", "neutral", "sad"])
    assert message in str(err.value) and str(root) in str(err.value)


def test_a_sweep_trains_on_an_audformat_database(tmp_path, synthetic_root):
    write_database(tmp_path / "db", synthetic_root)
    path = write_sweep(tmp_path, synthetic_root, models={"egemaps_svm": ["full"]}, folds="speakers-5",
                       fold_indices=[0], train={"epochs": 5, "batch_size": 8},
                       corpus={"name": "audformat", "root": str(tmp_path / "db"), "classes": "angry,happy,neutral,sad"})
    done = run_sweep(path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    folds = table(tmp_path)
    assert len(folds) == 1 and folds["status"].iloc[0] == "finished" and folds["n_test"].iloc[0] > 0
