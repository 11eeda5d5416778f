"""The eGeMAPS floor: openSMILE's own functionals, standardised on the training split only, in a real sweep."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from orchestration.config.sweep_file import SweepError, parse_sweep
from orchestration.config.checks import validate
from orchestration.run.task import corpus_from_config
from orchestration.run.training import train_loop
from orchestration.run.session import LocalSession
from ser_models.data.audio import load_audio
from ser_models.data.features import Egemaps

from .sweeps import run_sweep, table, write_sweep
from .test_training import trial_config

opensmile = pytest.importorskip("opensmile")


def test_the_extractor_gives_opensmiles_own_egemaps_functionals(synthetic_root):
    path = sorted(synthetic_root.rglob("*.wav"))[0]
    ours = Egemaps()(load_audio(path))
    reference = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                                feature_level=opensmile.FeatureLevel.Functionals).process_file(str(path))
    assert ours.shape == (1, 88)
    np.testing.assert_allclose(ours.numpy()[0], reference.to_numpy()[0], rtol=1e-4, atol=1e-5)


def test_standardisation_comes_from_the_training_split_only(synthetic_root, tmp_path):
    config = trial_config(synthetic_root, tmp_path, model="egemaps_mlp", epochs=2)

    class KeepStates(LocalSession):
        states = []

        def report(self, metrics, state):
            self.states.append(state)
            super().report(metrics, state)
    session = KeepStates(tmp_path / "run")
    train_loop(config, session)
    weights = session.states[0]["model"]          # the first epoch's checkpoint
    corpus = corpus_from_config(config["corpus"])
    fold = corpus.folds("sessions")[0]
    table_ = corpus.task.set_index("utt_id")

    def functionals(utt_ids):
        return torch.cat([Egemaps()(load_audio(table_.loc[u, "path"])) for u in utt_ids])
    train = functionals(fold.train)
    assert torch.allclose(weights["standardize.mean"], train.mean(0), rtol=1e-4, atol=1e-4)
    assert torch.allclose(weights["standardize.std"], train.std(0, unbiased=False).clamp_min(1e-6), rtol=1e-3)
    everything = torch.cat([train, functionals(fold.validation), functionals(fold.test)])
    assert not torch.allclose(weights["standardize.mean"], everything.mean(0), rtol=1e-4, atol=1e-4)


def test_both_floor_models_run_in_a_sweep_and_beat_chance(tmp_path, synthetic_root):
    path = write_sweep(tmp_path, synthetic_root, models={"egemaps_svm": ["full"], "egemaps_mlp": ["full"]},
                       fold_indices=[0], train={"epochs": 15, "batch_size": 8})
    done = run_sweep(path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    folds = table(tmp_path)
    assert sorted(folds["model"]) == ["egemaps_mlp", "egemaps_svm"]
    assert (folds["test_ua"] > 0.4).all(), folds[["model", "test_ua"]]   # 4 classes: chance is 0.25


def test_a_missing_opensmile_is_refused_with_the_install_command(monkeypatch):
    from ser_models.data import features

    monkeypatch.setitem(features.NEEDS_EXTRA, "egemaps", ("no_such_module_here", "egemaps"))
    sweep = parse_sweep({"name": "t", "corpus": "synthetic", "models": {"egemaps_svm": ["full"]}})
    with pytest.raises(SweepError, match=r"egemaps_svm/full reads the 'egemaps' feature.*pip install "
                                         r"'emosweep\[egemaps\]'"):
        validate(sweep)
