import numpy as np
import pytest

from ser_models import ded

from .conftest import SMALL_SYNTHETIC


def test_transition_bias_hand_count():
    dialogs = {"d1": ["a1", "b1", "a2", "b2", "a3"]}
    speaker = {u: u[0] for u in dialogs["d1"]}
    emotion = {"a1": "ang", "a2": "ang", "a3": "sad", "b1": "neu", "b2": "neu"}
    # speaker a: ang->ang, ang->sad (1 change in 2 pairs); b: neu->neu (0 in 1): (1 + 1) / 3
    assert ded.transition_bias(dialogs, emotion, speaker) == pytest.approx(2 / 3)


def test_hand_worked_dialog():
    """Worked by hand (p0 = 0.5, alpha = 1, beam 2, one pass):

    A1 [2, 0]: state 0 costs -2 + log 2 = -1.307; state 1 costs 0.693.
    B1 [0, 1] (new speaker): from [0]: 0 -> 0.079, 1 -> -0.921; from [1]: 0 -> 2.079, 1 -> 1.079.
    A2 [0.9, 1] (A was 0): from [0,1]: stay 0 -> -0.921 - 0.9 + log 2 = -1.128;
                           shift to 1 -> -0.921 - 1 + log 2 + log 3 = -0.129.
    Best [0, 1, 0]: DED keeps A's emotion though A2's scores slightly prefer 1.
    """
    scores = {"A1": np.array([2.0, 0.0]), "B1": np.array([0.0, 1.0]), "A2": np.array([0.9, 1.0])}
    speaker = {"A1": "A", "B1": "B", "A2": "A"}
    path = ded.decode_dialog(["A1", "B1", "A2"], scores, speaker, p0=0.5, beam_size=2, test_iteration=1)
    assert path == [0, 1, 0]
    assert [int(np.argmax(scores[u])) for u in ("A1", "B1", "A2")] == [0, 1, 1]
    best = ded.Beam(block_counts=[0, 0])
    for utt, state in zip(("A1", "B1", "A2"), path):
        best = best.extend(speaker[utt], state, scores[utt], 0.5, 1.0)
    assert best.cost == pytest.approx(-0.921 - 0.9 + np.log(2), abs=1e-3)


def persistent_dialogs(n_dialogs, rng, persistence=0.85, turns=12, states=4):
    dialogs, truth, speaker = {}, {}, {}
    for d in range(n_dialogs):
        mood = {s: int(rng.integers(states)) for s in "FM"}
        utterances = []
        for t in range(turns):
            who = "FM"[t % 2]
            if rng.random() > persistence:
                mood[who] = int(rng.integers(states))
            utt = f"d{d}_{who}{t:03d}"
            utterances.append(utt)
            truth[utt], speaker[utt] = mood[who], who
        dialogs[f"d{d}"] = utterances
    return dialogs, truth, speaker


def test_ded_raises_accuracy_when_emotions_persist():
    rng = np.random.default_rng(0)
    train_dialogs, train_truth, train_speaker = persistent_dialogs(40, rng)
    test_dialogs, test_truth, test_speaker = persistent_dialogs(40, rng)
    p0 = ded.transition_bias(train_dialogs, train_truth, train_speaker)  # training dialogs only
    assert 0.05 < p0 < 0.35
    # a weak classifier: log-probabilities from noisy logits, about 55% accurate
    scores = {}
    for utt, label in test_truth.items():
        logits = rng.normal(0, 1.0, 4)
        logits[label] += 1.2
        scores[utt] = logits - np.log(np.exp(logits).sum())
    decoded = ded.decode(test_dialogs, scores, test_speaker, p0)
    before = np.mean([np.argmax(scores[u]) == y for u, y in test_truth.items()])
    after = np.mean([decoded[u] == y for u, y in test_truth.items()])
    assert after > before + 0.05, (before, after)


def test_ded_decodes_whole_dialogs_with_the_turns_outside_the_task(tmp_path, synthetic_root):
    """Neutral left out of the classes: its turns are scored (not trained on, not evaluated) so that DED
    decodes each test dialog whole, with p0 from every labelled turn of the training speakers."""
    import pandas as pd

    from orchestration.results.aggregate import read_table

    from .sweeps import run_sweep, write_sweep

    corpus = {"name": "synthetic", "root": str(synthetic_root), "classes": "angry,happy,sad",
              **SMALL_SYNTHETIC.__dict__}
    path = write_sweep(tmp_path, synthetic_root, corpus=corpus, fold_indices=[0],
                       train={"epochs": 2, "batch_size": 8, "lr": 3e-3})
    done = run_sweep(path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    sweep_dir = tmp_path / "results" / "t"
    utterances = pd.read_parquet(sweep_dir / "utterances.parquet")
    predictions = read_table(str(sweep_dir), "predictions")
    plain = predictions[predictions["model"] == "lstm_attn_text"]
    context = pd.read_parquet(next((sweep_dir / "experiment" / "predictions").glob("lstm_attn_text-*.context.parquet")))
    test_dialogs = set(plain["dialog"])
    neutral = utterances[(utterances["emotion"] == "neutral") & utterances["dialog"].isin(test_dialogs)]
    assert sorted(context["utt_id"]) == sorted(neutral["utt_id"]) and len(neutral) > 0
    assert not set(context["utt_id"]) & set(predictions["utt_id"])          # never scored as a result

    splits = pd.read_parquet(sweep_dir / "fold_splits.parquet")
    train = utterances[utterances["utt_id"].isin(splits.loc[(splits["fold"] == 0) & (splits["split"] == "train"),
                                                                   "utt_id"])]
    speaker_of = dict(zip(utterances["utt_id"], utterances["speaker"]))
    emotion_of = dict(zip(utterances["utt_id"], utterances["emotion"]))

    def dialogs(frame):
        frame = frame.sort_values(["dialog", "turn"])
        return {d: list(g["utt_id"]) for d, g in frame.groupby("dialog")}
    p0 = ded.transition_bias(dialogs(utterances[utterances["dialog"].isin(set(train["dialog"]))
                                                & utterances["speaker"].isin(set(train["speaker"]))]),
                             emotion_of, speaker_of)
    scores = {u: np.log(np.clip(np.asarray(p, dtype=float), 1e-8, None))
              for u, p in zip(list(plain["utt_id"]) + list(context["utt_id"]),
                              list(plain["probabilities"]) + list(context["probabilities"]))}
    decoded = ded.decode(dialogs(utterances[utterances["utt_id"].isin(set(scores))]), scores, speaker_of, p0)
    classes = ["angry", "happy", "sad"]
    by_ded = predictions[predictions["model"] == "lstm_attn_text+ded"].set_index("utt_id")["predicted"]
    assert {u: by_ded[u] for u in plain["utt_id"]} == {u: classes[decoded[u]] for u in plain["utt_id"]}
    row = read_table(str(sweep_dir), "folds").query("model == 'lstm_attn_text+ded'").iloc[0]
    assert row["selection"].startswith("validation, then DED over whole dialogs") and f"{p0:.3f}" in row["selection"]
