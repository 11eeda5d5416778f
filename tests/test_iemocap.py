import warnings

import pandas as pd
import pytest

from ser_models.data.corpora import iemocap
from ser_models.data.corpus import load_corpus
from ser_models.data.folds import fold_summary

from .fixtures.iemocap_fake import MISSING_WDSEG, write_fake_iemocap


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    return write_fake_iemocap(tmp_path_factory.mktemp("iemocap"))


@pytest.fixture(scope="module")
def table(fake_root):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = load_corpus("iemocap", fake_root.parent, "4").table
    table.attrs["warnings"] = [str(w.message) for w in caught]
    return table


def test_full_size_counts(table):
    assert len(table) == 10_039
    task = table[table["label"].notna()]
    assert len(task) == 5_531
    assert task["label"].value_counts().to_dict() == {"neutral": 1708, "happy": 1636, "angry": 1103, "sad": 1084}
    assert task.groupby("session").size().to_dict() == {
        "Ses01": 1085, "Ses02": 1023, "Ses03": 1151, "Ses04": 1031, "Ses05": 1241}


def test_turn_fields(table):
    row = table.set_index("utt_id").loc["Ses01F_impro01_F000"]
    assert row["speaker"] == "Ses01F" and row["gender"] == "F" and row["dialog"] == "Ses01F_impro01"
    assert row["text"].startswith("Hello there number")
    assert (row["valence"], row["arousal"], row["dominance"]) == (2.5, 3.0, 3.5)
    assert row["duration"] == pytest.approx(1.5)
    assert table["speaker"].nunique() == 10
    assert not table["utt_id"].str.endswith("XX0").any()  # unlabelled overlap turns are not turns


def test_dialog_order_follows_start_times(table):
    for _, dialog in table.groupby("dialog"):
        ordered = dialog.sort_values("turn")
        assert ordered["start_s"].is_monotonic_increasing
        assert list(ordered["turn"]) == list(range(len(dialog)))


def test_wdseg_alignment_and_missing_fallback(table):
    indexed = table.set_index("utt_id")
    aligned = indexed.loc["Ses03M_impro03_M000"]
    assert aligned["align_source"] == "wdseg"
    assert aligned["align_words"][:3] == ["hello", "there", "number"]
    assert aligned["align_start"][0] == pytest.approx(0.2) and aligned["align_end"][0] == pytest.approx(0.5)
    for utt_id in MISSING_WDSEG:
        assert pd.isna(indexed.loc[utt_id, "align_source"])
        assert indexed.loc[utt_id, "align_words"] is None
    assert any("no .wdseg" in message for message in table.attrs["warnings"])


def test_other_class_maps(fake_root):
    table = load_corpus("iemocap", fake_root, "4-noexc").table
    assert table["label"].notna().sum() == 5_531 - 1_041
    with pytest.raises(ValueError, match=r"corpus.classes .nine. is not a preset of .iemocap. \(4, 4-noexc, 6\)"):
        load_corpus("iemocap", fake_root, "nine")


def test_loso_folds(fake_root):
    corpus = load_corpus("iemocap", fake_root)
    assert corpus.classes == ["angry", "happy", "neutral", "sad"]  # DED's class order
    folds = corpus.folds()
    assert len(folds) == 5
    task = corpus.task.set_index("utt_id")
    for fold in folds:
        test_sessions = set(task.loc[list(fold.test), "session"])
        assert len(test_sessions) == 1
        assert not test_sessions & set(task.loc[list(fold.validation), "session"])
        assert not test_sessions & set(task.loc[list(fold.train), "session"])
        assert len(fold.train) + len(fold.validation) + len(fold.test) == 5_531
    assert fold_summary(corpus.task, folds).query("split == 'test'")["utterances"].sum() == 5_531


def test_missing_root_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="IEMOCAP_full_release"):
        iemocap.read(tmp_path)


def test_shared_layout_sample(data_dir):
    sample = data_dir / "iemocap_layout_sample"
    if not sample.exists():
        pytest.skip("no iemocap_layout_sample")
    table = load_corpus("iemocap", sample, "4").table
    row = table.set_index("utt_id").loc["Ses01F_impro01_F000"]
    assert row["text"] == "Excuse me." and row["align_words"] == ["excuse", "me"]
    assert set(table["emotion"]) >= {"neutral", "frustrated", "undecided"}
