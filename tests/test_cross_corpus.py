"""Cross-corpus tests: train on one corpus, test every trial's chosen checkpoint on another, on shared classes."""
from __future__ import annotations

import pandas as pd
import pytest

from orchestration.results.aggregate import read_table
from ser_models.data.corpora.synthetic import SyntheticConfig, generate

from .sweeps import run_sweep, table, write_sweep

CODES = {"angry": "W", "happy": "F", "neutral": "N", "sad": "T"}   # EmoDB-style letter codes


@pytest.fixture(scope="module")
def other_corpus(tmp_path_factory):
    """Another corpus (other speakers and recordings) behind a manifest with its own label codes."""
    root = tmp_path_factory.mktemp("other")
    manifest = generate(root / "audio", SyntheticConfig(sessions=2, dialogs_per_session=1, turns_per_dialog=8,
                                                        seed=11))
    frame = pd.read_csv(manifest)
    frame["path"] = [str(manifest.parent / p) for p in frame["path"]]
    frame["label"] = frame["label"].map(CODES)
    frame[["path", "label", "speaker"]].to_csv(root / "emodb-like.csv", index=False)
    return root / "emodb-like.csv", frame


def cross_entry(path, classes):
    return {"name": "manifest", "root": str(path), "labels": {v: k for k, v in CODES.items()}, "classes": classes}


def test_every_trial_is_tested_on_the_other_corpus_with_its_own_checkpoint(tmp_path, synthetic_root,
                                                                          other_corpus):
    path, frame = other_corpus
    # the other corpus keeps three of the four classes: neutral is left out by the declared mapping
    mapping = {"angry": "angry", "happy": "happy", "sad": "sad"}
    sweep = write_sweep(tmp_path, synthetic_root, models={"egemaps_svm": ["full"]}, fold_indices=[0, 1],
                        train={"epochs": 4, "batch_size": 8}, test_corpora=[cross_entry(path, mapping)])
    done = run_sweep(sweep)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    kept = int((frame["label"] != "N").sum())
    assert f"cross-corpus test set emodb-like: {kept} utterances" in done.stdout
    folds, cross = table(tmp_path), read_table(str(tmp_path / "results" / "t"), "cross")
    assert len(cross) == 2 and set(cross["test_corpus"]) == {"emodb-like"}
    assert set(cross["train_corpus"]) == set(folds["train_corpus"]) == set(folds["test_corpus"]) != {"emodb-like"}
    assert (cross["n_test"] == kept).all() and (cross["status"] == "finished").all()
    for row in cross.itertuples():
        assert sum(row.test_support) == kept and row.test_support[list(row.classes).index("neutral")] == 0
        own = folds[folds["trial_id"] == row.trial_id].iloc[0]
        assert row.selected_epoch == own["selected_epoch"]          # the checkpoint chosen on validation
        assert 0.0 <= row.test_ua <= 1.0
    report = (tmp_path / "results" / "t" / "report.md").read_text()
    assert "## Cross-corpus" in report and (tmp_path / "results" / "t" / "figures" / "cross_corpus.png").exists()


def test_a_test_corpus_whose_classes_are_not_the_training_classes_is_refused(tmp_path, synthetic_root,
                                                                             other_corpus):
    path, _ = other_corpus
    mapping = {"angry": "angry", "happy": "joyful", "sad": "sad"}     # 'joyful' is no class of the training task
    sweep = write_sweep(tmp_path, synthetic_root, test_corpora=[cross_entry(path, mapping)])
    done = run_sweep(sweep)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "classes ['joyful'] are not classes of the training corpus" in done.stderr and "Fix:" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_training_corpus_itself_cannot_be_a_test_corpus(tmp_path, synthetic_root):
    sweep = write_sweep(tmp_path, synthetic_root, test_corpora=[{"name": "manifest",
                                                                 "root": str(synthetic_root / "manifest.csv")}])
    done = run_sweep(sweep)
    assert done.returncode == 2 and "also in the training corpus" in done.stderr, done.stderr[-2000:]
