import hashlib

import numpy as np
import pandas as pd

from ser_models.data.cache import extract
from ser_models.data.corpora.synthetic import SyntheticConfig, generate

from .conftest import SMALL_SYNTHETIC


def _digest(root):
    manifest = pd.read_csv(root / "manifest.csv")
    digest = hashlib.sha256(manifest.to_csv(index=False).encode())
    for path in manifest["path"].head(10):
        digest.update((root / path).read_bytes())
    return digest.hexdigest()


def test_deterministic(tmp_path, synthetic_root):
    generate(tmp_path, SMALL_SYNTHETIC)
    assert _digest(tmp_path) == _digest(synthetic_root)
    other = generate(tmp_path / "other", SyntheticConfig(**{**SMALL_SYNTHETIC.__dict__, "seed": 4}))
    assert _digest(other.parent) != _digest(synthetic_root)


def test_structure(synthetic_corpus):
    task = synthetic_corpus.task
    assert synthetic_corpus.classes == ["angry", "happy", "neutral", "sad"]
    assert task["speaker"].nunique() == 10 and task["session"].nunique() == 5
    assert task.groupby("session")["speaker"].nunique().eq(2).all()
    assert synthetic_corpus.has_text and synthetic_corpus.has_alignment and synthetic_corpus.has_dialogs
    for _, dialog in task.groupby("dialog"):
        assert list(dialog.sort_values("turn")["start_s"]) == sorted(dialog["start_s"])
    first = task.iloc[0]
    assert first["align_words"] == first["text"].split()


def test_emotions_persist_within_a_speaker(synthetic_corpus):
    task = synthetic_corpus.task.sort_values(["dialog", "turn"])
    same = [(a == b) for _, group in task.groupby(["dialog", "speaker"])
            for a, b in zip(group["label"], group["label"].iloc[1:])]
    assert np.mean(same) > 0.6  # chance would be about 0.25


def test_learnable_from_acoustics_alone(synthetic_corpus, tmp_path):
    """A nearest-centroid classifier on pooled fbank beats chance on unseen speakers."""
    task = synthetic_corpus.task
    fbank = extract(task, ["fbank40"], tmp_path, progress=False).stores["fbank40"]
    pooled = {u: np.concatenate([fbank[u].mean(0), fbank[u].std(0)]) for u in task["utt_id"]}
    label = task.set_index("utt_id")["label"]
    accuracies = []
    for fold in synthetic_corpus.folds():
        train = np.stack([pooled[u] for u in fold.train])
        mean, std = train.mean(0), train.std(0) + 1e-6
        centroids = {c: ((np.stack([pooled[u] for u in fold.train if label[u] == c]) - mean) / std).mean(0)
                     for c in synthetic_corpus.classes}
        predictions = [min(centroids, key=lambda c: np.linalg.norm((pooled[u] - mean) / std - centroids[c]))
                       for u in fold.test]
        accuracies.append(np.mean([p == label[u] for p, u in zip(predictions, fold.test)]))
    assert np.mean(accuracies) > 0.55, accuracies  # chance is 0.25; measured 0.71
