"""Sweeps on a real local Ray instance, through the real command line."""
import json
import re

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from orchestration.config.sweep_file import SweepError, load_sweep, parse_sweep
from orchestration.config.checks import validate
from orchestration.sweep import main

from .sweeps import prediction_files, run_sweep, table, write_sweep


def test_grid_sweep(grid_sweep):  # the sweep itself runs in the shared fixture
    tmp_path, done = grid_sweep
    assert done.returncode == 0, done.stderr[-3000:]
    trials = table(tmp_path)
    assert len(trials) == 4 and set(trials["status"]) == {"finished"}
    assert not trials.duplicated(["model", "ablation", "fold", "seed"]).any()
    assert set(zip(trials["model"], trials["fold"])) == {("lstm_attn_text", 0), ("lstm_attn_text", 1),
                                                         ("fg_cme", 0), ("fg_cme", 1)}
    assert trials["selected_epoch"].between(0, 1).all() and trials["test_ua"].between(0, 1).all()
    experiment = tmp_path / "results" / "t" / "experiment"
    assert len([d for d in experiment.iterdir() if (d / "params.json").exists()]) == 4  # one experiment
    assert len(prediction_files(tmp_path / "results" / "t" / "experiment" / "predictions")) == 4
    assert len(list((tmp_path / "results" / "t" / "experiment" / "predictions").glob("*.validation.parquet"))) == 4
    assert "[sweep] 4/4 trials done" in done.stdout and "epochs 8/8" in done.stdout
    last = done.stdout.strip().splitlines()[-1]          # a command that works outside a checkout too
    assert last.endswith(f"Next: emosweep results show {tmp_path / 'results' / 't'}"), last
    # progress counts epochs: an ETA is printed before the first trial has finished
    before_first_trial = done.stdout.split("[sweep] finished", 1)[0]
    assert re.search(r"epochs 2/8; elapsed [\d.]+ min, ETA [\d.]+ min", before_first_trial), done.stdout[-2000:]
    assert re.search(r"\[sweep\] timing: data [\d.]+ s, ray_start [\d.]+ s, trials [\d.]+ s", done.stdout)
    ray_line = next(line for line in done.stdout.splitlines() if line.startswith("[sweep] Ray "))
    assert "TRAIN_DRIVER 64" in ray_line and "dashboard" not in ray_line   # no dashboard unless asked for


def test_the_dashboard_changes_no_number_so_turning_it_on_reruns_nothing():
    from orchestration.config.record import settings_digest

    base = {"name": "t", "corpus": "synthetic", "models": {"fg_cme": ["full"]}, "resources": {"cpus_per_worker": 1}}
    assert settings_digest(base) == settings_digest({**base, "resources": {"cpus_per_worker": 1, "dashboard": True}})
    assert settings_digest(base) != settings_digest({**base, "resources": {"cpus_per_worker": 2}})


def test_the_digest_follows_the_schema_and_keeps_the_value_earlier_versions_recorded():
    from orchestration.config import schema
    from orchestration.config.record import settings_digest

    base = {"name": "golden", "corpus": {"name": "synthetic", "sessions": 5}, "folds": "sessions",
            "models": {"fg_cme": {"ablations": ["full"], "options": {"hidden": 64}}, "lstm_attn_text": ["full"]},
            "seeds": [0, 1], "train": {"epochs": 3, "lr": 0.002, "retries": 1},
            "resources": {"mode": "inprocess", "max_concurrent_trials": 2}, "storage": "results",
            "tracking": {"mlflow": True}}
    # what the list-based digest of emosweep before the schema field gave: sweep.json records hold it, and a
    # digest that moved would rerun every finished trial of every existing sweep
    assert settings_digest(base) == "56664feb95b83b15833bc7f8511004c468f9964e89637227882c8964ffb69f5d"
    for key in schema.KEYS:   # every key the schema marks as deciding nothing leaves the digest alone; others move it
        section, _, name = key.path.rpartition(".")
        value = {"changed": 1} if dict in key.types else "changed"
        value = {**base["models"], "cma": ["full"]} if key.path == "models" else value   # a cell more, same options
        changed = {**base, section: {**(base.get(section) or {}), name: value}} if section else {**base, name: value}
        assert (settings_digest(changed) != settings_digest(base)) == key.changes_results, key.path
    assert settings_digest(base) != settings_digest({**base, "models": {"fg_cme": {"options": {"hidden": 32}}}})


def test_optuna_sweep_runs_each_suggestion_on_every_fold(tmp_path, synthetic_root):
    path = write_sweep(tmp_path, synthetic_root, fold_indices=[0, 1, 2],
                       search={"sampler": "tpe", "samples": 3, "space": {"lr": [1.0e-4, 1.0e-2, "log"]}})
    done = run_sweep(path)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = table(tmp_path)
    assert len(trials) == 9 and set(trials["status"]) == {"finished"}
    groups = trials.groupby("group")
    assert groups.ngroups == 3
    assert all(sorted(g["fold"]) == [0, 1, 2] and g["hparams"].nunique() == 1 for _, g in groups)
    assert trials["hparams"].nunique() == 3
    # each fold keeps the setting its own validation split prefers; that row, not the best setting's, is reported
    from orchestration.results.aggregate import read_table
    from orchestration.results.selection import CHOSEN

    sweep_dir = str(tmp_path / "results" / "t")
    for _, rows in trials.groupby("fold"):
        assert rows["val_chosen"].sum() == 1 and rows.loc[rows["val_chosen"], "val_ua"].item() == rows["val_ua"].max()
    summary = read_table(sweep_dir, "summary")
    cell = summary[(summary["model"] == trials["model"].iloc[0]) & (summary["ablation"] == "full")]
    chosen = cell[cell["hparams"] == CHOSEN]
    assert len(cell) == 4 and chosen["n"].item() == 3 and cell["val_chosen_folds"].sum() == 3 + 3
    assert chosen["test_ua_mean"].item() == pytest.approx(trials.loc[trials["val_chosen"], "test_ua"].mean())
    assert f"(n=3)  {CHOSEN}" in done.stdout and done.stdout.count("; kept in ") >= 3   # each setting labelled
    assert f"**{CHOSEN}** (compared below)" in (tmp_path / "results" / "t" / "report.md").read_text()
    # Optuna's value for each suggestion is the mean validation objective over its folds, never a test metric
    state_file = max((tmp_path / "results" / "t" / "experiment").glob("searcher-state-*"))
    saved = json.loads(state_file.read_text())                 # JSON, never a pickle
    state = saved["state"]
    journal = tmp_path / "results" / "t" / "optuna.journal"    # what optuna-dashboard opens
    assert journal.read_text() == saved["journal"]
    study = optuna.load_study(study_name="lstm_attn_text/full", storage=JournalStorage(JournalFileBackend(
        str(journal))))
    told = {t.number: t.value for t in study.trials if t.value is not None}
    assert len(told) == 3
    for group_id, group in state["groups"].items():
        rows = trials[trials["group"] == group_id]
        assert told[group["optuna_number"]] == pytest.approx(rows["val_ua"].mean())
    # a state cut short (a full disk, a kill): a search would lose what Optuna learnt, so the user decides
    state_file.write_text(state_file.read_text()[:100])
    again = run_sweep(path)
    assert again.returncode == 2, again.stdout[-2000:] + again.stderr[-2000:]
    assert f"{state_file}: the searcher's saved state is unreadable" in again.stderr
    assert "Fix: delete it" in again.stderr


def test_failing_trial_is_retried_then_recorded(tmp_path, synthetic_root):
    faults = str(tmp_path / "faults")
    path = write_sweep(tmp_path, synthetic_root, fold_indices=[0, 1, 2], storage=f"file://{tmp_path}/results",
                       train={"epochs": 2, "batch_size": 8, "lr": 3e-3, "retries": 1},
                       resources={"mode": "inprocess", "dashboard": True})
    faults_env = {"EMOSWEEP_INJECT_FAILURE": json.dumps([{"fold": 1, "epoch": 1, "times": 1, "marker_dir": faults},
                                                         {"fold": 2, "epoch": 0, "times": 99, "marker_dir": faults}])}
    done = run_sweep(path, env=faults_env)
    assert done.returncode == 4, done.stderr[-3000:]                 # finished, with a failed trial
    assert "--restart-errored" in done.stdout.strip().splitlines()[-1]  # the last line says what to run next
    trials = table(tmp_path).set_index("fold")
    assert trials.loc[0, "status"] == "finished"
    assert trials.loc[1, "status"] == "finished"                  # failed once, retried from its checkpoint
    assert trials.loc[1, "resumed_from"] == 1
    assert trials.loc[2, "status"] == "error"
    errors = table(tmp_path, which="trials").set_index("fold")
    assert "injected failure" in errors.loc[2, "error"] and errors.loc[2, "attempts"] == 2
    assert list(errors["attempts"]) == [1, 2, 2]
    assert len(list((tmp_path / "faults").glob("lstm_attn_text-full-2-0-*"))) == 2  # first try + one retry
    # one line per failed attempt, with the exception's own line; Tune's tracebacks stay in error.txt
    assert re.search(r"\[sweep\] lstm_attn_text/full fold 1 seed 0 resumes from epoch 1 \(retry 1 of 1\): "
                     r"(\w+\.)*InjectedFailure: injected failure", done.stdout), done.stdout
    assert re.search(r"\[sweep\] FAILED lstm_attn_text/full fold 2 seed 0: (\w+\.)*InjectedFailure: injected "
                     r"failure.*\(traceback: .*error.txt\)", done.stdout), done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    assert re.search(r"\[sweep\] Ray .*; dashboard http://127\.0\.0\.1:\d+", done.stdout)   # asked for
    sweep_dir = tmp_path / "results" / "t"                        # file:// storage is the local folder
    assert (sweep_dir / "sweep.json").exists() and (sweep_dir / "report.md").exists()
    again = run_sweep(path, "--restart-errored", env=faults_env)  # the errored trial runs again, from scratch
    assert again.returncode == 4, again.stderr[-3000:]
    assert "2 trials already finished" in again.stdout
    assert len(list((tmp_path / "faults").glob("lstm_attn_text-full-2-0-*"))) == 4
    rerun = table(tmp_path)
    assert len(rerun) == 3 and list(rerun["status"]) == ["finished", "finished", "error"]
    assert list(table(tmp_path, which="trials")["attempts"]) == [1, 2, 4]  # the restarted trial's attempts add up

def test_text_model_on_corpus_without_transcripts(tmp_path):
    import pandas as pd

    from .fixtures.audio import write

    rows = [{"path": str(write(tmp_path / f"{s}_{e}.wav")), "label": e, "speaker": s}
            for s in "abcdef" for e in ("angry", "sad")]
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    sweep = parse_sweep({"name": "x", "corpus": {"name": "manifest", "root": str(tmp_path / "m.csv")},
                         "models": {"fg_cme": ["full"]}}, "x.yaml")
    from orchestration.run.task import corpus_from_config
    with pytest.raises(SweepError, match="needs transcripts"):
        validate(sweep, corpus_from_config(sweep.corpus))


def test_malformed_yaml(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("name: x\nmodels: [fg_cme\n")
    assert main([str(tmp_path / "bad.yaml")]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    with pytest.raises(SweepError, match="unknown key"):
        parse_sweep({"name": "x", "corpus": "synthetic", "models": {"fg_cme": None}, "epochs": 3})
    assert load_sweep("configs/demo.yaml").cells == [("fg_cme", "full"), ("fg_cme", "no_excite"),
                                                     ("lstm_attn_text", "full")]


def test_only_a_client_server_dying_at_birth_is_retried():
    """The two ways Ray's proxier reports a client server that died as it spawned; a refusal is not retried."""
    from orchestration.run.cluster import spawn_failure

    assert spawn_failure(ConnectionError("ray client connection timeout: Starting Ray client server failed."))
    assert spawn_failure(ConnectionAbortedError("Initialization failure from server:\n... psutil.ZombieProcess"))
    assert not spawn_failure(ConnectionError("Authentication failed: token mismatch"))


def test_the_eta_counts_the_pace_after_the_first_epoch(monkeypatch):
    """The first epoch carries Ray's start and the trial process's imports: the audit saw 17.7 min said, 2.1 taken."""
    from types import SimpleNamespace

    from orchestration.run import progress

    clock = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    sweep = progress.SweepProgress(total=4, epochs_per_trial=5, every_s=1e9)
    trial = SimpleNamespace(trial_id="a", config={"model": "m", "ablation": "full", "fold": 0, "seed": 0})
    for at in (60.0, 65.0, 70.0):          # 55 s of start-up before the first epoch ends, then 5 s per epoch
        clock[0] = at
        sweep.on_trial_result(0, [], trial, {"epoch": 0, "final": False})
    assert sweep.line().endswith("epochs 3/20; elapsed 1.2 min, ETA 1.4 min")   # 17 epochs x 5 s, not 6.6 min
