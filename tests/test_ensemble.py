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
