"""Manifests: how users bring their own corpus. Labels, classes and folds are never silently reinterpreted."""
import json
from pathlib import Path

import pandas as pd
import pytest

from ser_models.data.__main__ import main as data_main
from ser_models.data.alignment import write_textgrid
from ser_models.data.corpora.manifest import ManifestError, load
from ser_models.data.corpus import CorpusError, corpora, load_corpus
from ser_models.data.folds import fold_warnings

from .fixtures.audio import write

EMODB_CODES = {"W": "angry", "F": "happy", "N": "neutral", "T": "sad", "L": "bored", "A": "fearful"}


def emodb_rows(tmp_path, speakers=("03", "08", "09", "10", "11", "12")) -> list[dict]:
    rows = []
    for speaker in speakers:
        for code, label in (("W", "anger"), ("F", "happiness"), ("N", "neutral"), ("T", "sadness"), ("L", "boredom")):
            path = write(tmp_path / "wav" / f"{speaker}a01{code}a.wav")
            rows.append({"path": f"wav/{path.name}", "label": label, "speaker": speaker})
    return rows


def manifest(tmp_path, rows, name="emodb.csv", **to_csv) -> str:
    pd.DataFrame(rows).to_csv(tmp_path / name, index=False, **to_csv)
    return str(tmp_path / name)


@pytest.fixture
def emodb_like(tmp_path):
    """An EmoDB-style corpus: emotion words for labels, speakers as numbers, a TextGrid for one file."""
    rows = emodb_rows(tmp_path)
    write_textgrid(tmp_path / "first.TextGrid", (["der", "lappen"], [0.1, 0.4], [0.4, 0.9]), 1.0)
    rows[0]["textgrid"] = "first.TextGrid"
    return manifest(tmp_path, rows)


def test_csv_manifest(emodb_like):
    table = load(emodb_like)
    assert len(table) == 30 and table["corpus"].iloc[0] == "emodb"
    assert set(table["emotion"]) == {"angry", "happy", "neutral", "sad", "bored"}
    first = table.iloc[0]
    assert first["align_words"] == ["der", "lappen"] and first["text"] == "der lappen"
    assert first["align_source"] == "textgrid"
    assert table["duration"].round(3).eq(1.0).all() and table["sample_rate"].eq(16_000).all()


@pytest.mark.parametrize("classes", [["angry", "happy", "neutral", "sad"], "angry,happy,neutral,sad",
                                     ["Angry", " happy", "neutral", "sad "]])
def test_classes_as_a_list_or_a_comma_string_select_the_task(emodb_like, classes):
    corpus = load_corpus("manifest", emodb_like, classes)
    assert corpus.classes == ["angry", "happy", "neutral", "sad"]
    assert len(corpus.task) == 24 and corpus.outside == {"bored": 6}
    assert len(corpus.folds("speakers-3")) == 3


@pytest.mark.parametrize("classes, message", [
    ("4", "corpus.classes '4' is not a list of two or more class names"),   # manifests have no presets
    (["angry"], "is not a list of two or more class names"),
    (["angry", "angry"], "names a class twice"),
    (["angry", "contempt"], "classes ['contempt'] do not occur; labels present"),
])
def test_classes_that_cannot_mean_a_task_are_errors_with_a_fix(emodb_like, classes, message):
    with pytest.raises(CorpusError, match="Fix:") as raised:
        load_corpus("manifest", emodb_like, classes)
    assert message in str(raised.value)


def test_label_codes_belong_to_the_manifest_not_to_every_corpus(tmp_path):
    rows = [{**row, "label": row["path"][9]} for row in emodb_rows(tmp_path)]  # EmoDB's letter: W, F, N, T, L
    path = manifest(tmp_path, rows)
    with pytest.raises(ManifestError) as raised:            # `A` is EmoDB's fear, another corpus's angry
        load_corpus("manifest", path)
    assert "unknown label(s)" in str(raised.value) and "rows [2, 3, 4, 5, 6, 7, 8, 9]" in str(raised.value)
    assert "corpus.labels" in str(raised.value)
    corpus = load_corpus("manifest", path, ["angry", "happy", "neutral", "sad"], labels=EMODB_CODES)
    assert corpus.classes == ["angry", "happy", "neutral", "sad"] and corpus.outside == {"bored": 6}


def test_a_typo_or_an_empty_label_is_an_error_listing_the_rows(tmp_path):
    rows = emodb_rows(tmp_path)
    rows[3]["label"], rows[17]["label"] = "angyr", "angyr"
    with pytest.raises(ManifestError, match=r"unknown label\(s\) \{'angyr': 2\} at rows \[5, 19\] "
                                            r"\(did you mean 'angry'\?\)"):
        load_corpus("manifest", manifest(tmp_path, rows), ["angry", "happy", "neutral", "sad"])
    rows[3]["label"], rows[17]["label"] = "angry", ""
    with pytest.raises(ManifestError, match=r"rows \[19\] have an empty path, label or speaker"):
        load_corpus("manifest", manifest(tmp_path, rows))


def test_labels_of_ones_own_are_declared_as_classes(tmp_path):
    rows = [{**row, "label": "positive" if row["label"] in ("happiness", "neutral") else "negative"}
            for row in emodb_rows(tmp_path)]
    corpus = load_corpus("manifest", manifest(tmp_path, rows), ["negative", "positive"])
    assert corpus.classes == ["negative", "positive"] and len(corpus.task) == 30


def test_a_latin1_manifest_names_the_file_and_the_encoding_option(tmp_path):
    rows = [{**row, "text": "Der Lappen liegt auf dem Eisschrank, Gärtner"} for row in emodb_rows(tmp_path)]
    path = manifest(tmp_path, rows, encoding="latin-1")
    with pytest.raises(ManifestError, match=r"emodb\.csv: not utf-8 text .*corpus\.encoding: latin-1"):
        load_corpus("manifest", path)
    assert "Gärtner" in load_corpus("manifest", path, encoding="latin-1").table["text"].iloc[0]


def test_duplicate_utterance_ids_name_the_file_and_rows(tmp_path):
    rows = emodb_rows(tmp_path)
    rows[4]["path"] = rows[0]["path"]
    with pytest.raises(ManifestError, match=r"emodb\.csv: utterance ids \['03a01Wa'\] occur more than once, "
                                            r"at rows \[2, 6\]"):
        load_corpus("manifest", manifest(tmp_path, rows))


def test_parquet_manifest(emodb_like, tmp_path):
    frame = pd.read_csv(emodb_like)
    frame["path"] = [str(tmp_path / p) for p in frame["path"]]
    frame.drop(columns="textgrid").to_parquet(tmp_path / "emodb.parquet")
    assert len(load(tmp_path / "emodb.parquet")) == 30


def test_missing_column_names_file_and_fix(tmp_path):
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"file": ["a.wav"], "label": ["angry"]}).to_csv(bad, index=False)
    with pytest.raises(ManifestError, match=r"bad\.csv.*missing column.*path.*speaker"):
        load(bad)


def test_degenerate_folds_are_errors_or_warnings_with_a_fix(tmp_path):
    two = load_corpus("manifest", manifest(tmp_path, emodb_rows(tmp_path, speakers=("03", "08")), "two.csv"))
    with pytest.raises(ValueError, match="need at least 3 speaker groups .* Fix: a corpus needs at least 3 speakers"):
        two.folds("loso-speaker")
    for strategy in (None, "speakers-2"):     # a fix that works: not "K <= 2", which is refused in turn
        with pytest.raises(ValueError, match=r"2 speaker\(s\) cannot make speaker-disjoint train, validation and test "
                                             r"splits. Fix: use a corpus with at least 3 speakers"):
            two.folds(strategy)
    rows = emodb_rows(tmp_path, speakers=("03", "08", "09", "10"))
    rows = [row for row in rows if row["speaker"] != "10"] + [rows[-5]]  # speaker 10: one angry utterance
    corpus = load_corpus("manifest", manifest(tmp_path, rows, "lonely.csv"))
    folds = corpus.folds("loso-speaker")
    warnings = fold_warnings(corpus.task, folds)
    assert any(line.startswith("4 fold(s) validate on a single speaker") and "Fix:" in line for line in warnings)
    assert any("test split without some class" in line and "['bored', 'happy', 'neutral', 'sad']" in line
               for line in warnings)


def test_the_documented_summary_command(emodb_like, capsys):
    assert data_main(["summary", "manifest", emodb_like, "--classes", "angry", "happy", "neutral", "sad",
                      "--folds", "speakers-3"]) == 0
    out = capsys.readouterr().out
    assert "24 in the task ['angry', 'happy', 'neutral', 'sad']" in out and "outside the task: {'bored': 6}" in out
    assert data_main(["summary", "manifest", emodb_like, "--classes", "4"]) == 2
    assert "Fix:" in capsys.readouterr().err


def test_every_corpus_is_registered_with_its_presets(capsys):
    assert set(corpora()) >= {"iemocap", "ravdess", "manifest", "synthetic"}
    assert data_main(["corpora"]) == 0
    out = capsys.readouterr().out
    assert "iemocap:" in out and "presets 4, 4-noexc, 6" in out and "corpus.labels:" in out
    with pytest.raises(CorpusError, match=r"unknown corpus 'ravdes' \(did you mean 'ravdess'\?\)"):
        load_corpus("ravdes", "/tmp")


def write_emobox(tmp_path, speakers=("03", "08", "09", "10")) -> Path:
    """An EmoBox dataset folder: one test fold per speaker, train = the rest, EmoBox's field names."""
    root = tmp_path / "emobox" / "emodb"
    rows = emodb_rows(tmp_path, speakers)
    lines = [{"key": Path(r["path"]).stem, "dataset": "emodb", "wav": str(tmp_path / r["path"]), "type": "raw",
              "sample_rate": 16000, "length": 1.0, "task": "category", "emo": r["label"][:3], "channel": 1,
              "_fold": speakers.index(r["speaker"]) + 1} for r in rows]
    for fold in range(1, len(speakers) + 1):
        (root / f"fold_{fold}").mkdir(parents=True)
        for split, keep in (("test", lambda line: line["_fold"] == fold),
                            ("train", lambda line: line["_fold"] != fold)):
            (root / f"fold_{fold}" / f"emodb_{split}_fold_{fold}.jsonl").write_text(
                "".join(json.dumps({k: v for k, v in line.items() if k != "_fold"}) + "\n"
                        for line in lines if keep(line)))
    (root / "label_map.json").write_text(json.dumps({"ang": "angry", "hap": "happy", "neu": "neutral", "sad": "sad",
                                                     "bor": "bored"}))
    return root


def test_emobox_folds_are_used_as_given_and_leak_checked(tmp_path):
    root = write_emobox(tmp_path)
    corpus = load_corpus("emobox", root, ["angry", "happy", "neutral", "sad"])
    assert corpus.name == "emodb" and len(corpus.task) == 16 and corpus.outside == {"bored": 4}
    folds = corpus.folds()
    speaker_of = corpus.task.set_index("utt_id")["speaker"]
    for fold, speaker in zip(folds, ("03", "08", "09", "10")):    # EmoBox's test split k is our test split k
        test_file = root / f"fold_{fold.index + 1}" / f"emodb_test_fold_{fold.index + 1}.jsonl"
        given = {json.loads(line)["key"] for line in test_file.read_text().splitlines()}
        assert set(fold.test) == given & set(corpus.task["utt_id"])
        assert not set(speaker_of[list(fold.test)]) & set(speaker_of[list(fold.train) + list(fold.validation)])
    leaky = root / "fold_1" / "emodb_test_fold_1.jsonl"
    stolen = (root / "fold_2" / "emodb_test_fold_2.jsonl").read_text().splitlines()[0]
    leaky.write_text(leaky.read_text() + stolen + "\n")
    with pytest.raises(CorpusError, match=r"also in the test split of fold .* the folds leak"):
        load_corpus("emobox", root)
