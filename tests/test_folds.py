import pandas as pd
import pytest

from ser_models.data.folds import SpeakerLeakError, check_speaker_disjoint, folds_from_groups, make_folds


def table_of(speakers_and_labels):
    rows = [{"utt_id": f"{speaker}_{i}", "speaker": speaker, "session": session, "label": label, "gender": speaker[-1]}
            for session, speaker, labels in speakers_and_labels for i, label in enumerate(labels)]
    return pd.DataFrame(rows)


@pytest.fixture
def twelve_speakers():
    labels = ["angry", "happy", "neutral", "sad"] * 3
    return table_of([(f"s{k // 2}", f"spk{k:02d}{'FM'[k % 2]}", labels[: 6 + k % 5]) for k in range(12)])


def test_leak_check_rejects_a_leaking_split(twelve_speakers):
    ids = twelve_speakers["utt_id"]
    leaking_test = [ids.iloc[0]]               # spk00F's first utterance...
    train = list(ids.iloc[1:20])               # ...while spk00F's others are in train
    with pytest.raises(SpeakerLeakError, match="spk00F.*train and test"):
        check_speaker_disjoint(twelve_speakers, train, list(ids.iloc[40:50]), leaking_test)
    with pytest.raises(SpeakerLeakError, match="validation and test"):
        check_speaker_disjoint(twelve_speakers, list(ids.iloc[40:50]), list(ids.iloc[1:5]), leaking_test)


def test_groups_that_share_a_speaker_are_rejected(twelve_speakers):
    with pytest.raises(SpeakerLeakError):
        folds_from_groups(twelve_speakers, [["spk00F", "spk01M"], ["spk01M"], ["spk02F"], ["spk03M"]])


@pytest.mark.parametrize("strategy, n", [("speakers-4", 4), ("speakers-5", 5), ("loso-speaker", 12), ("sessions", 6)])
def test_every_strategy_is_speaker_disjoint_and_complete(twelve_speakers, strategy, n):
    folds = make_folds(twelve_speakers, strategy)
    assert len(folds) == n
    speaker = twelve_speakers.set_index("utt_id")["speaker"]
    tested = []
    for fold in folds:
        test, val, train = (set(speaker[list(ids)]) for ids in (fold.test, fold.validation, fold.train))
        assert not test & (val | train)
        assert not val & train                       # validation speakers are held out of training too
        assert len(fold.test) + len(fold.validation) + len(fold.train) == len(twelve_speakers)
        tested += fold.test
    assert sorted(tested) == sorted(twelve_speakers["utt_id"])  # every utterance is tested exactly once


def test_speaker_folds_are_balanced(twelve_speakers):
    sizes = [len(f.test) for f in make_folds(twelve_speakers, "speakers-4")]
    assert max(sizes) - min(sizes) <= 4
    with pytest.raises(ValueError, match="cannot make 20"):
        make_folds(twelve_speakers, "speakers-20")
    with pytest.raises(ValueError, match="unknown fold strategy"):
        make_folds(twelve_speakers, "random-5")
