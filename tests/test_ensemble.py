"""Late fusion (`ensembles:`): declared cells, fused per fold and seed at aggregation, no trial rerun."""
import numpy as np
import pandas as pd
import pytest

from orchestration.config.sweep_file import SweepError, parse_sweep
from ser_models.metrics import classification_metrics

from .sweeps import run_sweep, table, write_sweep

BASE = {"name": "s", "corpus": "synthetic", "models": {"fg_cme": ["full", "no_excite"], "egemaps_svm": ["full"]}}


@pytest.mark.parametrize("ensembles, message", [
    ({"fusion": ["fg_cme/full", "egemaps_svm/ful"]},
     "ensembles.fusion: 'egemaps_svm/ful' is not a cell of this sweep (did you mean 'egemaps_svm/full'?)"),
    ({"fusion": ["fg_cme/full", "fg_cme"]}, "ensembles.fusion must list two or more different cells"),
    ({"fusion": "fg_cme/full"}, "ensembles.fusion must list two or more different cells"),
    ({"fg_cme": ["fg_cme/full", "egemaps_svm/full"]}, "ensembles.fg_cme: the name is a model's"),
    ({"best": {"method": "greedyy"}}, "ensembles.best.method: 'greedyy' is not one of ['greedy', 'top_k'] (did "
                                      "you mean 'greedy'?)"),
    ({"best": {"method": "top_k", "sise": 2}}, "ensembles.best: unknown key 'sise' (did you mean 'size'?)"),
    ({"best": {"size": 0}}, "ensembles.best.size must be a whole number >= 1, got 0"),
    ({"best": {"from": ["fg_cme/full", "egemaps"]}}, "ensembles.best.from: 'egemaps' is not a cell of this sweep"),
    ({"best": {"from": ["fg_cme/full"]}}, "ensembles.best chooses among 1 cell(s); it needs two or more"),
])
def test_an_ensemble_names_two_or_more_cells_of_the_sweep(ensembles, message):
    with pytest.raises(SweepError) as raised:
        parse_sweep({**BASE, "ensembles": ensembles}, "s.yaml")
    assert f"s.yaml: {message}" in str(raised.value) and "Fix:" in str(raised.value)


def test_ensembles_fuse_fixed_settings_only():
    with pytest.raises(SweepError, match="ensembles.fusion: ensembles fuse fixed settings, and this sweep searches"):
        parse_sweep({**BASE, "ensembles": {"fusion": ["fg_cme/full", "fg_cme/no_excite"]},
                     "search": {"samples": 2, "space": {"lr": [1e-4, 1e-2]}}}, "s.yaml")
    sweep = parse_sweep({**BASE, "ensembles": {"fusion": ["fg_cme/full", "egemaps_svm"]}}, "s.yaml")
    assert sweep.ensembles == {"fusion": ["fg_cme/full", "egemaps_svm"]}


def test_an_ensemble_added_to_a_finished_sweep_fuses_its_members_without_training(tmp_path, synthetic_root):
    cells = {"models": {"lstm_attn_text": ["full"], "fg_cme": ["no_excite"]}, "fold_indices": [0], "seeds": [0, 1],
             "train": {"epochs": 1, "batch_size": 8, "lr": 3e-3}}
    assert run_sweep(write_sweep(tmp_path, synthetic_root, **cells)).returncode == 0
    before = table(tmp_path)
    again = run_sweep(write_sweep(tmp_path, synthetic_root, **cells,
                                  ensembles={"both": ["lstm_attn_text/full", "fg_cme/no_excite"]}))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resuming: 4 trials already finished" in again.stdout and "settings that decide" not in again.stdout
    folds, predictions = table(tmp_path), table(tmp_path, which="predictions")
    fused = folds[folds["model"] == "both"]
    assert len(fused) == 2 and set(fused["ablation"]) == {"lstm_attn_text/full+fg_cme/no_excite"}
    assert fused["val_ua"].isna().all() and fused["selection"].str.startswith("late fusion").all()
    members = folds[folds["model"] != "both"]
    # the trials' rows are untouched (selected_epoch turns float: the fused rows have none)
    pd.testing.assert_frame_equal(members.reset_index(drop=True), before, check_dtype=False)
    for _, row in fused.iterrows():
        ids = members[members["seed"] == row["seed"]]["trial_id"]
        own = predictions[predictions["trial_id"].isin(ids)]
        mean = own.groupby("utt_id")["probabilities"].apply(lambda p: np.mean(np.stack(p.to_numpy()), axis=0))
        ours = predictions[predictions["trial_id"] == row["trial_id"]].set_index("utt_id")
        assert np.allclose(np.stack(ours.loc[mean.index, "probabilities"].to_numpy()), np.stack(mean.to_numpy()))
        classes = list(row["classes"])
        labels = ours.loc[mean.index, "label"].map(classes.index)
        expected = classification_metrics(labels, np.stack(mean.to_numpy()).argmax(1), len(classes))
        assert row["test_ua"] == pytest.approx(expected["ua"]) and row["test_wa"] == pytest.approx(expected["wa"])
    summary = table(tmp_path, which="summary")
    assert summary.loc[summary["model"] == "both", "n"].item() == 2
    report = (tmp_path / "results" / "t" / "report.md").read_text()
    assert "Ensembles declared in the sweep file (both = lstm_attn_text/full + fg_cme/no_excite)" in report


def test_an_automatic_ensemble_is_filled_with_its_defaults():
    sweep = parse_sweep({**BASE, "ensembles": {"greedy": {}, "top2": {"method": "top_k", "size": 2,
                                                                       "from": ["fg_cme", "egemaps_svm"]}}}, "s.yaml")
    assert sweep.ensembles == {"greedy": {"method": "greedy", "size": 20, "from": ["egemaps_svm/full", "fg_cme/full",
                                                                                  "fg_cme/no_excite"]},
                               "top2": {"method": "top_k", "size": 2, "from": ["fg_cme/full", "egemaps_svm/full"]}}


def test_greedy_selection_adds_what_helps_on_validation_and_stops_at_its_best_round():
    from orchestration.results.ensemble import choose_weights

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 25)
    truth = np.eye(4)[labels]
    good = 0.6 * truth + 0.4 * rng.dirichlet(np.ones(4), len(labels))        # right on most
    other = np.roll(truth, 1, axis=1) * 0.7 + 0.3 * rng.dirichlet(np.ones(4), len(labels))   # always wrong
    noise = rng.dirichlet(np.ones(4), len(labels))
    stacked = np.stack([noise, good, other])
    greedy = choose_weights(stacked, labels, "greedy", 10)
    assert greedy[1] >= 1 and greedy[2] == 0 and greedy.sum() <= 10
    assert choose_weights(stacked, labels, "top_k", 2).tolist() == [1, 1, 0]


def test_an_automatic_ensemble_is_chosen_on_validation_alone(tmp_path, synthetic_root):
    """Nested: each trial writes its chosen model's validation predictions; the members and weights come from
    them, and permuting the test labels (or scores) leaves every choice as it was."""
    from orchestration.results.aggregate import add_ensemble_rows, read_experiment

    cells = {"models": {"lstm_attn_text": ["full"], "fg_cme": ["no_excite", "full"]}, "fold_indices": [0, 1],
             "seeds": [0], "train": {"epochs": 2, "batch_size": 8, "lr": 3e-3},
             "ensembles": {"greedy": {"size": 5}, "top2": {"method": "top_k", "size": 2}}}
    done = run_sweep(write_sweep(tmp_path, synthetic_root, **cells))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    folds = table(tmp_path)
    auto = folds[folds["model"] == "auto"]
    assert sorted(auto["ablation"]) == ["greedy", "greedy", "top2", "top2"]
    assert auto["val_ua"].notna().all() and auto["selection"].str.startswith("automatic ensemble on validation").all()
    summary = table(tmp_path, which="summary")
    assert set(summary.loc[summary["model"] == "auto", "ablation"]) == {"greedy", "top2"}
    experiment = tmp_path / "results" / "t" / "experiment"
    assert len(list((experiment / "predictions").glob("*.validation.parquet"))) == 6
    report = (tmp_path / "results" / "t" / "report.md").read_text()
    assert "Automatic ensembles (model `auto`)" in report

    found = read_experiment(str(experiment), "t")
    ensembles = {"greedy": {"method": "greedy", "size": 5, "from": sorted(
        f"{m}/{a}" for m, a in [("lstm_attn_text", "full"), ("fg_cme", "no_excite"), ("fg_cme", "full")])}}
    chosen = add_ensemble_rows({k: found[k].copy() for k in ("folds", "predictions")}, ensembles,
                               found["validation"])["folds"]
    shuffled = found["predictions"].copy()
    shuffled["label"] = shuffled["label"].sample(frac=1, random_state=1).to_numpy()
    shuffled["probabilities"] = shuffled["probabilities"].sample(frac=1, random_state=2).to_numpy()
    permuted = add_ensemble_rows({"folds": found["folds"].copy(), "predictions": shuffled}, ensembles,
                                 found["validation"])["folds"]
    mine = lambda frame: frame[frame["model"] == "auto"].sort_values("fold")[["fold", "selection", "val_ua"]]  # noqa
    pd.testing.assert_frame_equal(mine(chosen).reset_index(drop=True), mine(permuted).reset_index(drop=True))
    assert not np.allclose(chosen.loc[chosen["model"] == "auto", "test_ua"].to_numpy(),
                           permuted.loc[permuted["model"] == "auto", "test_ua"].to_numpy())
