import pandas as pd
import pytest

from ser_models.data.alignment import write_textgrid
from ser_models.data.corpus import load_corpus
from ser_models.data.manifest import ManifestError, load

from .fixtures.audio import write


@pytest.fixture
def emodb_like(tmp_path):
    """An EmoDB-style corpus: German letter codes for labels, speakers as numbers, a TextGrid for one file."""
    rows = []
    for speaker in ("03", "08", "09", "10", "11", "12"):
        for code, label in (("W", "anger"), ("F", "happiness"), ("N", "neutral"), ("T", "sadness"), ("L", "boredom")):
            path = write(tmp_path / "wav" / f"{speaker}a01{code}a.wav")
            rows.append({"path": f"wav/{path.name}", "label": label, "speaker": speaker})
    write_textgrid(tmp_path / "first.TextGrid", (["der", "lappen"], [0.1, 0.4], [0.4, 0.9]), 1.0)
    rows[0]["textgrid"] = "first.TextGrid"
    frame = pd.DataFrame(rows)
    frame.to_csv(tmp_path / "emodb.csv", index=False)
    return tmp_path / "emodb.csv"


def test_csv_manifest(emodb_like):
    table = load(emodb_like)
    assert len(table) == 30 and table["corpus"].iloc[0] == "emodb"
    assert set(table["emotion"]) == {"angry", "happy", "neutral", "sad", "bored"}
    first = table.iloc[0]
    assert first["align_words"] == ["der", "lappen"] and first["text"] == "der lappen"
    assert first["align_source"] == "textgrid"
    assert table["duration"].round(3).eq(1.0).all() and table["sample_rate"].eq(16_000).all()


def test_classes_select_the_task(emodb_like):
    corpus = load_corpus("manifest", emodb_like, ["angry", "happy", "neutral", "sad"])
    assert corpus.classes == ["angry", "happy", "neutral", "sad"]
    assert len(corpus.task) == 24
    assert len(corpus.folds("speakers-3")) == 3


def test_parquet_manifest(emodb_like, tmp_path):
    frame = pd.read_csv(emodb_like)
    frame["path"] = [str(emodb_like.parent / p) for p in frame["path"]]
    frame.drop(columns="textgrid").to_parquet(tmp_path / "emodb.parquet")
    assert len(load(tmp_path / "emodb.parquet")) == 30


def test_missing_column_names_file_and_fix(tmp_path):
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"file": ["a.wav"], "label": ["angry"]}).to_csv(bad, index=False)
    with pytest.raises(ManifestError, match=r"bad\.csv.*missing column.*path.*speaker"):
        load(bad)


def test_empty_cell_and_unknown_class(tmp_path, emodb_like):
    bad = tmp_path / "holes.csv"
    pd.DataFrame({"path": ["a.wav", "b.wav"], "label": ["angry", ""], "speaker": ["1", "2"]}).to_csv(bad, index=False)
    with pytest.raises(ManifestError, match=r"rows \[3\]"):
        load(bad)
    with pytest.raises(ManifestError, match="do not occur"):
        load(emodb_like, classes=["angry", "contempt"])
