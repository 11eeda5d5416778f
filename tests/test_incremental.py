"""Incremental sweeps: a sweep file that gains cells runs only the new trials, and a resume loads no pickle."""
import json

import pandas as pd

from .sweeps import run_sweep, table, write_sweep


def trial_dirs(tmp_path) -> set[str]:
    return {p.name for p in (tmp_path / "results" / "t" / "experiment").iterdir()
            if p.is_dir() and (p / "params.json").exists()}


def test_adding_a_model_and_a_seed_runs_only_the_new_trials(tmp_path, synthetic_root, monkeypatch):
    first = write_sweep(tmp_path, synthetic_root, fold_indices=[0], train={"epochs": 1, "batch_size": 8, "lr": 3e-3})
    assert run_sweep(first).returncode == 0
    before, dirs = table(tmp_path), trial_dirs(tmp_path)
    assert len(before) == 1
    # Tune's own state files are pickles, which run code when loaded: plant one in each, and see none run
    marker = tmp_path / "code-ran"
    experiment = tmp_path / "results" / "t" / "experiment"
    planted = [*experiment.glob("tuner.pkl"), *experiment.glob("search_gen_state-*.json"),
               *experiment.glob("experiment_state-*.json")]
    assert planted
    for state_file in planted:
        state_file.write_bytes(f"cos\nsystem\n(S'touch {marker}'\ntR.".encode())
    grown = write_sweep(tmp_path, synthetic_root, fold_indices=[0], seeds=[0, 1],
                        models={"lstm_attn_text": ["full"], "fg_cme": ["no_excite"]},
                        train={"epochs": 1, "batch_size": 8, "lr": 3e-3})
    again = run_sweep(grown)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "cells changed since the last run" in again.stdout and "resuming: 1 trials already finished" in again.stdout
    after = table(tmp_path)
    assert len(after) == 4 and set(after["status"]) == {"finished"}
    assert len(trial_dirs(tmp_path) - dirs) == 3                     # only the three new trials ran
    assert not marker.exists()                                        # no pickle from storage was loaded
    kept = after[(after["model"] == "lstm_attn_text") & (after["seed"] == 0)]
    pd.testing.assert_frame_equal(kept.reset_index(drop=True), before.reset_index(drop=True))
    record = json.loads((tmp_path / "results" / "t" / "sweep.json").read_text())
    assert record["sweep"]["seeds"] == [0, 1]                          # the last file it ran is recorded


def test_a_changed_setting_runs_every_trial_anew_and_keeps_the_old_rows(tmp_path, synthetic_root):
    first = write_sweep(tmp_path, synthetic_root, train={"epochs": 1, "batch_size": 8, "lr": 3e-3})
    assert run_sweep(first).returncode == 0
    before = table(tmp_path)
    changed = run_sweep(write_sweep(tmp_path, synthetic_root, train={"epochs": 1, "batch_size": 8, "lr": 1e-2}))
    assert changed.returncode == 0, changed.stdout[-3000:] + changed.stderr[-3000:]
    assert "settings that decide the numbers changed since the last run (train)" in changed.stdout
    assert "resuming" not in changed.stdout and "done: 2/2 trials finished" in changed.stdout
    after = table(tmp_path)
    old = after[after["status"] == "superseded"].sort_values("trial_id").reset_index(drop=True)
    assert list(old["trial_id"]) == sorted(before["trial_id"])                    # kept, queryable, marked
    assert (old["test_ua"].values == before.sort_values("trial_id")["test_ua"].values).all()
    new = after[after["status"] == "finished"]
    assert len(new) == 2 and all(json.loads(r)["lr"] == 1e-2 for r in new["recipe"])
    assert set(new["trial_id"]).isdisjoint(before["trial_id"])
