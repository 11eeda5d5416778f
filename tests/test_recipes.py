"""Per-model training recipes and the training features a researcher expects, each doing what it says."""
import json
import math

import pytest
import torch

from orchestration.config.sweep_file import SweepError, parse_sweep, train_for
from orchestration.run.training import TrainingObjective, balanced_class_weight, train_loop, train_one_epoch
from orchestration.run.session import LocalSession
from ser_models.registry import SERModel, all_models

from .test_training import trial_config


def test_every_recipe_is_valid_sweep_settings_and_the_sweep_file_wins():
    for name, spec in all_models().items():
        assert spec.recipe and spec.recipe_source, name
        parse_sweep({"name": "r", "corpus": "synthetic", "models": {name: ["full"]}, "train": spec.recipe}, "r.yaml")
    ds = train_for("ds_lstm", {})
    assert (ds["optimizer"], ds["lr"], ds["batch_size"], ds["epochs"]) == ("adam", 1e-3, 128, 50)
    assert (ds["schedule"], ds["milestones"], ds["gamma"]) == ("multistep", [10, 20, 30], 0.5)
    assert (train_for("sdl", {})["optimizer"], train_for("sdl", {})["alpha"]) == ("rmsprop", 0.95)
    assert train_for("fg_cme", {})["lr"] == 5e-4 and train_for("fg_cme", {"lr": 1e-2})["lr"] == 1e-2
    assert train_for("fg_cme", {})["select_on"] == "val_ua"     # recipes never change the protocol


def lrs(session) -> list[float]:
    return [report["lr"] for report in session.reports if not report["final"]]


@pytest.mark.parametrize("train, expected", [
    ({"schedule": "multistep", "milestones": [1, 2], "gamma": 0.5}, [2e-3, 1e-3, 5e-4, 5e-4]),
    ({"schedule": "step", "step_size": 2, "gamma": 0.1}, [2e-3, 2e-3, 2e-4, 2e-4]),
    ({"schedule": "cosine", "warmup_epochs": 1}, [2e-3 * f for f in (0.5, 1.0, 0.5 * (1 + math.cos(math.pi / 3)),
                                                                      0.5 * (1 + math.cos(2 * math.pi / 3)))]),
])
def test_learning_rate_schedules_step_once_per_epoch(synthetic_root, tmp_path, train, expected):
    session = LocalSession(tmp_path / "run")
    train_loop(trial_config(synthetic_root, tmp_path, model="lstm_attn_text", epochs=4, **train), session)
    assert lrs(session) == pytest.approx(expected)


def test_plateau_lowers_the_rate_only_after_patience(synthetic_root, tmp_path):
    session = LocalSession(tmp_path / "run")
    train_loop(trial_config(synthetic_root, tmp_path, model="lstm_attn_text", epochs=6, schedule="plateau",
                            plateau_patience=0, gamma=0.5), session)
    rates, scores = lrs(session), [r["val_ua"] for r in session.reports if not r["final"]]
    for epoch in range(1, 6):   # patience 0: halved right after every epoch that did not beat the best so far
        worse = scores[epoch - 1] <= max(scores[:epoch - 1], default=-1)
        assert rates[epoch] == pytest.approx(rates[epoch - 1] * (0.5 if worse else 1.0))


class Tiny(SERModel):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 2)

    def forward(self, batch):
        return self.linear(batch["x"])


def test_gradient_clipping_bounds_every_step():
    torch.manual_seed(0)
    batches = [{"x": torch.randn(4, 3) * 100, "labels": torch.randint(0, 2, (4,))} for _ in range(5)]
    for clip, bounded in ((1e-3, True), (0.0, False)):
        model = Tiny()
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        train_one_epoch(TrainingObjective(model), batches, optimizer, torch.device("cpu"), "fp32", clip)
        moved = (torch.cat([p.detach().flatten() for p in model.parameters()]) - before).norm().item()
        assert (moved <= 5 * 1e-3 + 1e-9) is bounded, (clip, moved)


def test_early_stopping_ends_a_trial_after_patience(synthetic_root, tmp_path):
    session = LocalSession(tmp_path / "run")
    final = train_loop(trial_config(synthetic_root, tmp_path, model="lstm_attn_text", epochs=12,
                                    early_stop_patience=2, lr=0.05), session)
    ran = [r["epoch"] for r in session.reports if not r["final"]]
    assert ran == list(range(len(ran)))
    assert len(ran) == 12 or ran[-1] == final["selected_epoch"] + 2       # stopped 2 epochs after the best
    assert json.loads(final["recipe"])["early_stop_patience"] == 2


def test_balanced_class_weights_follow_the_training_split(synthetic_root, tmp_path):
    from orchestration.run.task import task_for

    config = trial_config(synthetic_root, tmp_path, model="lstm_attn_text", epochs=1, class_weights="balanced")
    task = task_for(config, ("words",))
    fold = task.folds[0]
    labels = task.table.loc[task.table["utt_id"].isin(set(fold.train)), "label"]
    weight = balanced_class_weight(task, fold, torch.device("cpu"))
    for i, name in enumerate(task.classes):
        assert weight[i].item() == pytest.approx(len(labels) / (len(task.classes) * (labels == name).sum()))
    plain = train_loop(trial_config(synthetic_root, tmp_path, model="lstm_attn_text", epochs=1),
                       LocalSession(tmp_path / "a"))
    weighted = train_loop(config, LocalSession(tmp_path / "b"))
    assert weighted["selected_val_loss"] != plain["selected_val_loss"]


def test_the_test_oracle_never_changes_the_honest_numbers(synthetic_root, tmp_path):
    runs = {}
    for oracle in (False, True):
        session = LocalSession(tmp_path / str(oracle))
        final = train_loop(trial_config(synthetic_root, tmp_path, epochs=3, test_oracle=oracle), session)
        runs[oracle] = ([{k: v for k, v in r.items() if k.startswith(("val_", "train_loss"))}
                         for r in session.reports if not r["final"]],
                        {k: v for k, v in final.items() if k.startswith(("test_", "selected_"))})
    assert runs[True] == runs[False]


def test_selection_on_a_smoothed_validation_curve(synthetic_root, tmp_path):
    session = LocalSession(tmp_path / "run")
    final = train_loop(trial_config(synthetic_root, tmp_path, model="lstm_attn_text", epochs=6, select_window=3,
                                    lr=0.02), session)
    curve = [r["val_ua"] for r in session.reports if not r["final"]]
    smoothed = [sum(curve[max(0, e - 2): e + 1]) / len(curve[max(0, e - 2): e + 1]) for e in range(6)]
    first_best = max(range(6), key=lambda e: (smoothed[e], -e))
    assert final["selected_epoch"] == first_best and final["objective"] == pytest.approx(smoothed[first_best])
    assert final["selected_val_ua"] == curve[first_best]              # the epoch's own metrics are reported


def test_per_speaker_normalisation_gives_each_speaker_zero_mean_unit_std(synthetic_root, tmp_path):
    import numpy as np

    from orchestration.run.task import task_for
    from ser_models.data.dataset import UtteranceDataset, speaker_statistics

    config = trial_config(synthetic_root, tmp_path, model="cnn_lstm", epochs=1, speaker_norm=True)
    task = task_for(config, ("fbank40",))
    stats = speaker_statistics(task.table, task.report.stores, ("fbank40",))
    data = UtteranceDataset(task.table, task.report.stores, ("fbank40",), task.classes, None, stats)
    speaker = task.table["speaker"].iloc[0]
    frames = np.concatenate([data[i]["fbank40"] for i in np.flatnonzero(task.table["speaker"] == speaker)])
    assert np.allclose(frames.mean(0), 0, atol=1e-4) and np.allclose(frames.std(0), 1, atol=1e-3)
    final = train_loop(config, LocalSession(tmp_path / "run"))
    assert json.loads(final["recipe"])["speaker_norm"] is True


def test_speaker_norm_from_training_speakers_reads_no_test_audio(synthetic_root, tmp_path):
    """The non-transductive mode: training speakers by their own statistics, every other speaker by the
    training speakers' pooled ones; the test speakers' audio never enters a statistic."""
    import numpy as np

    from orchestration.config.sweep_file import SweepError
    from orchestration.config.checks import validate
    from orchestration.run.task import task_for
    from orchestration.run.loaders import make_loaders
    from ser_models.data.dataset import frame_moments

    config = trial_config(synthetic_root, tmp_path, model="cnn_lstm", epochs=2, speaker_norm=True,
                          speaker_norm_stats="training_speakers")
    task = task_for(config, ("fbank40",))
    fold = task.folds[0]
    train = task.table[task.table["utt_id"].isin(set(fold.train))]
    test = task.table[task.table["utt_id"].isin(set(fold.test))]
    assert not set(train["speaker"]) & set(test["speaker"])
    loaders = make_loaders(task, fold, ("fbank40",), {**config, "train": train_for("cnn_lstm", config["train"])},
                           LocalSession(tmp_path / "s"), 0, torch.device("cpu"))
    stats = loaders.train.dataset.speaker_stats
    assert {speaker for _, speaker in stats} == set(train["speaker"]) | {None}
    pooled_mean, pooled_std = frame_moments("fbank40", [task.report.stores["fbank40"][u] for u in train["utt_id"]])
    first = test.iloc[0]
    batch = next(iter(loaders.evaluate["test"]))
    index = batch["utt_id"].index(first["utt_id"])
    frames = task.report.stores["fbank40"][first["utt_id"]]
    assert np.allclose(batch["fbank40"][index, :len(frames)].numpy(), (frames - pooled_mean) / pooled_std, atol=1e-5)
    final = train_loop(config, LocalSession(tmp_path / "run"))
    assert json.loads(final["recipe"])["speaker_norm_stats"] == "training_speakers"

    sweep = parse_sweep({"name": "t", "corpus": "synthetic", "models": {"cnn_lstm": ["full"]},
                         "train": {"speaker_norm_stats": "training_speakers"}}, "t.yaml")
    with pytest.raises(SweepError, match="speaker_norm_stats is training_speakers, but speaker_norm is off"):
        validate(sweep)


def test_refit_trains_on_train_and_validation_for_the_chosen_epochs(synthetic_root, tmp_path, monkeypatch):
    """The refit replays the chosen epochs' learning rates on training + validation speakers; the test split
    is never seen, the selection is the plain run's, and the result is deterministic."""
    import orchestration.run.training as training

    train = {"schedule": "step", "step_size": 1, "gamma": 0.5}
    plain = train_loop(trial_config(synthetic_root, tmp_path, epochs=3, **train), LocalSession(tmp_path / "a"))
    seen = []
    original = training.train_one_epoch

    def recording(objective, loader, optimizer, *args, **kwargs):
        seen.append((len(loader.dataset), optimizer.param_groups[0]["lr"]))
        return original(objective, loader, optimizer, *args, **kwargs)
    monkeypatch.setattr(training, "train_one_epoch", recording)
    config = trial_config(synthetic_root, tmp_path, epochs=3, refit=True, **train)
    refitted = train_loop(config, LocalSession(tmp_path / "b"))
    chosen = plain["selected_epoch"] + 1
    assert refitted["selected_epoch"] == plain["selected_epoch"] and refitted["refit_epochs"] == chosen
    assert refitted["n_refit"] == plain["n_train"] + plain["n_validation"]
    assert seen[3:] == [(refitted["n_refit"], 2e-3 * 0.5 ** e) for e in range(chosen)]   # after the 3 epochs
    assert refitted["selected_val_ua"] == plain["selected_val_ua"]
    again = train_loop(config, LocalSession(tmp_path / "c"))
    assert again["test_ua"] == refitted["test_ua"] and again["test_wa"] == refitted["test_wa"]


def test_the_report_labels_cells_normalised_with_test_audio_as_transductive():
    import pandas as pd

    from orchestration.results.report import transductive_blocks, transductive_cells

    def rows(model, **train):
        return [{"model": model, "ablation": "full", "status": "finished", "recipe": json.dumps(train)}] * 2

    folds = pd.DataFrame(rows("fg_cme", speaker_norm=True) + rows("cma", speaker_norm=False)
                         + rows("cnn_lstm", speaker_norm=True, speaker_norm_stats="training_speakers"))
    assert transductive_cells(folds) == ["fg_cme"]
    assert "Transductive rows: fg_cme" in transductive_blocks(folds)[0].text
    assert transductive_blocks(folds[folds["model"] != "fg_cme"]) == []


def test_cells_whose_recipes_choose_epochs_differently_are_refused_until_the_file_says(monkeypatch):
    """One experiment has one direction of search and one resume objective: the file must settle select_on."""
    import dataclasses

    from orchestration.config.checks import validate
    from ser_models.registry import REGISTRY, get_spec

    spec = get_spec("lstm_attn_text")
    monkeypatch.setitem(REGISTRY, spec.name, dataclasses.replace(spec, recipe={**spec.recipe, "select_on": "val_loss"}))
    data = {"name": "t", "corpus": "synthetic", "models": {"lstm_attn_text": ["full"], "lstm_attn_audio": ["full"]}}
    with pytest.raises(SweepError, match="choose epochs by different metrics.*Fix: set train.select_on"):
        validate(parse_sweep(data, "t.yaml"))
    settled = parse_sweep({**data, "train": {"select_on": "val_ua"}}, "t.yaml")
    validate(settled)
    assert settled.select_on() == "val_ua" == settled.train_of("lstm_attn_text")["select_on"]



def test_online_speaker_norm_reads_only_a_speakers_earlier_utterances(synthetic_root, tmp_path):
    """speaker_norm_stats: online. A test utterance is normalised by its speaker's utterances spoken before it;
    a speaker's first by the training speakers' pooled statistics; nothing later, itself included, enters."""
    import numpy as np

    from orchestration.run.loaders import make_loaders
    from orchestration.run.task import task_for
    from ser_models.data.dataset import frame_moments

    config = trial_config(synthetic_root, tmp_path, model="cnn_lstm", epochs=1, speaker_norm=True,
                          speaker_norm_stats="online")
    task = task_for(config, ("fbank40",))
    fold, store = task.folds[0], task.report.stores["fbank40"]
    train = task.table[task.table["utt_id"].isin(set(fold.train))]
    test = task.table[task.table["utt_id"].isin(set(fold.test))]
    loaders = make_loaders(task, fold, ("fbank40",), config, LocalSession(tmp_path / "s"), 0, torch.device("cpu"))
    stats = loaders.train.dataset.speaker_stats
    speaker, spoken = next(iter(test.sort_values(["session", "dialog", "turn", "utt_id"]).groupby("speaker")))
    spoken = list(spoken["utt_id"])
    assert ("fbank40", speaker, spoken[0]) not in stats and ("fbank40", speaker) not in stats
    for k in (1, 2, len(spoken) - 1):
        mean, std = frame_moments("fbank40", [store[u] for u in spoken[:k]])
        online_mean, online_std = stats["fbank40", speaker, spoken[k]]
        assert np.allclose(online_mean, mean, atol=1e-4) and np.allclose(online_std, std, atol=1e-4)
    pooled_mean, pooled_std = frame_moments("fbank40", [store[u] for u in train["utt_id"]])
    seen = {utt_id: batch["fbank40"][i] for batch in loaders.evaluate["test"]
            for i, utt_id in enumerate(batch["utt_id"])}
    third = stats["fbank40", speaker, spoken[2]]
    for utt_id, (mean, std) in ((spoken[0], (pooled_mean, pooled_std)), (spoken[2], third)):
        frames = store[utt_id]
        assert np.allclose(seen[utt_id][:len(frames)].numpy(), (frames - mean) / std, atol=1e-5)
    final = train_loop(config, LocalSession(tmp_path / "run"))
    assert json.loads(final["recipe"])["speaker_norm_stats"] == "online"


@pytest.mark.parametrize("mode", ["all_audio", "training_speakers"])
def test_a_skewed_test_mix_is_scored_by_full_and_by_skewed_statistics(synthetic_root, tmp_path, mode):
    """train.skewed_test_class: every other one of each test speaker's utterances of the class is removed; the
    rest is scored by the trial's statistics and by statistics that never saw the removed ones (all_audio: the
    speaker's kept audio; training_speakers: the same as before, so the two scores agree)."""
    import numpy as np

    from orchestration.run.loaders import make_loaders
    from orchestration.run.task import task_for
    from ser_models.data.dataset import frame_moments

    config = trial_config(synthetic_root, tmp_path, model="cnn_lstm", epochs=1, speaker_norm=True,
                          speaker_norm_stats=mode, skewed_test_class="neutral")
    task = task_for(config, ("fbank40",))
    fold, store = task.folds[0], task.report.stores["fbank40"]
    test = task.table[task.table["utt_id"].isin(set(fold.test))]
    loaders = make_loaders(task, fold, ("fbank40",), config, LocalSession(tmp_path / "s"), 0, torch.device("cpu"))
    kept = set(u for batch in loaders.skewed["skewed"] for u in batch["utt_id"])
    gone = set(test["utt_id"]) - kept
    neutral = test[test["label"] == "neutral"]
    assert gone <= set(neutral["utt_id"]) and loaders.skewed["removed"] == len(gone)
    for speaker, group in neutral.groupby("speaker"):
        assert len(set(group["utt_id"]) & gone) == len(group) // 2
    reference, skewed = (loaders.skewed[name].dataset.speaker_stats for name in ("reference", "skewed"))
    assert reference is loaders.train.dataset.speaker_stats
    speaker = neutral["speaker"].iloc[0]
    if mode == "all_audio":
        own = task.table[(task.table["speaker"] == speaker) & ~task.table["utt_id"].isin(gone)]
        mean, std = frame_moments("fbank40", [store[u] for u in own["utt_id"]])
        assert np.allclose(skewed["fbank40", speaker][0], mean, atol=1e-5)
        assert not np.allclose(reference["fbank40", speaker][0], mean, atol=1e-5)
    else:
        assert all(np.array_equal(skewed[k][0], reference[k][0]) for k in reference)
    final = train_loop(config, LocalSession(tmp_path / "run"))
    assert final["skewed_removed"] == len(gone) and 0 <= final["skewed_test_ua"] <= 1
    if mode == "training_speakers":
        assert final["skewed_test_ua"] == final["skewed_reference_ua"]


def test_the_skewed_mix_check_names_its_mistakes(synthetic_root):
    from orchestration.config.checks import validate
    from ser_models.data.corpus import load_corpus

    from .conftest import SMALL_SYNTHETIC

    corpus = load_corpus("synthetic", synthetic_root, **SMALL_SYNTHETIC.__dict__)
    base = {"name": "t", "corpus": "synthetic", "models": {"cnn_lstm": ["full"]}}
    with pytest.raises(SweepError, match="skewed_test_class checks speaker_norm's statistics, and speaker_norm is off"):
        validate(parse_sweep({**base, "train": {"skewed_test_class": "neutral"}}, "t.yaml"))
    with pytest.raises(SweepError, match=r"'neutrl' is not one of the task's classes .*did you mean 'neutral'"):
        validate(parse_sweep({**base, "train": {"speaker_norm": True, "skewed_test_class": "neutrl"}}, "t.yaml"),
                 corpus)


def test_the_report_shows_the_drop_on_a_skewed_mix():
    import pandas as pd

    from orchestration.results.report import skew_blocks

    recipe = json.dumps({"speaker_norm": True, "speaker_norm_stats": "all_audio", "skewed_test_class": "neutral"})
    folds = pd.DataFrame([{"model": "fg_cme", "ablation": "full", "recipe": recipe, "skewed_removed": 6,
                           "skewed_reference_ua": reference, "skewed_test_ua": skewed}
                          for reference, skewed in ((0.70, 0.60), (0.80, 0.60))])
    heading, text, table = skew_blocks(folds)
    row = table.frame.iloc[0]
    assert row["drop"] == "+0.150 ± 0.071" and row["UA, skewed-set statistics"] == "0.600"
    assert row["removed"] == "half the neutral (6 per fold)" and row["statistics"] == "all_audio"
    assert skew_blocks(folds.assign(skewed_test_ua=None)) == []
    derived = folds.assign(model="auto", recipe=None)           # an ensemble's row carries no recipe
    assert len(skew_blocks(pd.concat([folds, derived]))[2].frame) == 1

    from orchestration.results.aggregate import rescored_row

    fused = rescored_row({**folds.iloc[0].to_dict(), "classes": ["a", "b"]},
                         pd.DataFrame({"label": ["a", "b"], "predicted": ["a", "a"]}))
    assert fused["skewed_test_ua"] is None and fused["skewed_removed"] is None   # a trial's own, not a fusion's


def test_the_pool_keeps_the_k_best_or_the_last_k_epochs_and_averages_their_weights():
    from orchestration.run import averaging

    settings = {"average_epochs": 2, "average_over": "best", "select_on": "val_ua"}
    pool = []
    for epoch, score in enumerate([0.5, 0.7, 0.6, 0.7]):
        pool = averaging.kept(pool, epoch, score, {"w": torch.full((2,), float(epoch)),
                                                   "n": torch.tensor(epoch)}, settings)
    assert [e["epoch"] for e in pool] == [1, 3]                          # ties: the earlier first
    last = []
    for epoch, score in enumerate([0.5, 0.7, 0.6, 0.7]):
        last = averaging.kept(last, epoch, score, {"w": torch.full((2,), float(epoch))},
                              {**settings, "average_over": "last"})
    assert [e["epoch"] for e in last] == [2, 3]
    mean = averaging.averaged(pool, {"w": torch.zeros(2), "n": torch.tensor(3)})
    assert torch.equal(mean["w"], torch.full((2,), 2.0)) and mean["n"].item() == 3   # integers: the best's


def test_checkpoint_averaging_is_kept_only_where_validation_prefers_it(synthetic_root, tmp_path):
    config = trial_config(synthetic_root, tmp_path, model="cnn_lstm", epochs=4, average_epochs=3)
    session = LocalSession(tmp_path / "run")
    final = train_loop(config, session)
    epochs = [r for r in session.reports if not r["final"]]
    average = final["average"]
    assert len(average["epochs"]) == 3 and set(average["epochs"]) <= {r["epoch"] for r in epochs}
    best_single = max(r["val_ua"] for r in epochs)
    assert average["kept"] == (average["val_ua"] > best_single)
    assert final["selected_val_ua"] == (average["val_ua"] if average["kept"] else best_single)
    assert final["averaged_epochs"] == (average["epochs"] if average["kept"] else None)
    for bad, message in (({"average_epochs": 1}, "averages one epoch"),
                         ({"average_epochs": 3, "refit": True}, "both make the final model")):
        with pytest.raises(SweepError, match=message):
            from orchestration.config.checks import validate
            validate(parse_sweep({"name": "t", "corpus": "synthetic", "models": {"cnn_lstm": ["full"]},
                                  "train": bad}, "t.yaml"))
