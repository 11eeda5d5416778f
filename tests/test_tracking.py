"""Trackers (`tracking:`), read back from a real MLflow store and real TensorBoard event files."""
from __future__ import annotations

import json

import pytest

from orchestration.config.sweep_file import SweepError, parse_sweep
from orchestration.config.checks import validate

from .sweeps import run_sweep, table, write_sweep

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("torch.utils.tensorboard")


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, synthetic_root):
    tmp_path = tmp_path_factory.mktemp("tracked")
    path = write_sweep(tmp_path, synthetic_root, tracking={"tensorboard": True, "mlflow": True})
    done = run_sweep(path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (tmp_path / "first_run.txt").write_text(done.stdout + done.stderr)
    return tmp_path, path


def mlflow_runs(sweep_dir):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{sweep_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("t")
    return client, client.search_runs([experiment.experiment_id])


def test_mlflow_has_one_parent_run_and_one_nested_run_per_trial(tracked):
    tmp_path, _ = tracked
    sweep_dir = tmp_path / "results" / "t"
    client, runs = mlflow_runs(sweep_dir)
    parents = [r for r in runs if r.data.tags.get("emosweep.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(parents) == 1 and len(children) == 2 and len(runs) == 3
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    folds = table(tmp_path)
    for run in children:
        params = run.data.params
        row = folds[(folds["fold"] == int(params["fold"]))].iloc[0]
        assert params["model"] == "lstm_attn_text" and params["seed"] == "0" and params["ablation"] == "full"
        assert json.loads(params["recipe"])["epochs"] == 2 and len(params["git_commit"]) == 40
        assert run.data.metrics["final.test_ua"] == pytest.approx(row["test_ua"])
        assert "final.test_oracle_ua" in run.data.metrics          # labelled apart from the honest one
        history = client.get_metric_history(run.info.run_id, "val_ua")
        assert sorted(m.step for m in history) == [0, 1]
        assert run.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id, "figures")}
    assert "figures/fold_bars.png" in artifacts and "figures/learning_curves.png" in artifacts
    assert {a.path for a in client.list_artifacts(parents[0].info.run_id)} >= {"report.html", "report.md"}
    # the sweep's run: its facts as params and each cell's result as metrics, for MLflow's compare view
    sweep_run = parents[0].data
    assert sweep_run.params["corpus"] == "synthetic" and sweep_run.params["classes"] == "angry,happy,neutral,sad"
    assert sweep_run.params["sweep_file"].endswith(".yaml") and sweep_run.params["cells"] == "lstm_attn_text/full"
    summary = table(tmp_path, which="summary")
    plain = summary[summary["model"] == "lstm_attn_text"].iloc[0]
    assert sweep_run.metrics["lstm_attn_text/full.test_ua_mean"] == pytest.approx(plain["test_ua_mean"])
    assert sweep_run.metrics["lstm_attn_text/full.n"] == 2


def test_the_sweep_says_where_tracking_went_and_tune_adds_no_logger_of_its_own(tracked):
    tmp_path, _ = tracked
    sweep_dir = tmp_path / "results" / "t"
    output = (tmp_path / "first_run.txt").read_text()
    assert f"[sweep] tracking: MLflow: sqlite:///{sweep_dir / 'mlflow.db'}" in output
    assert f"[sweep] tracking: TensorBoard: {sweep_dir / 'tensorboard'} (tensorboard --logdir" in output
    assert "To visualize your results with TensorBoard" not in output and "TBXLoggerCallback" not in output
    trial_files = {p.name for p in (sweep_dir / "experiment").glob("*/*") if p.is_file()}
    assert "result.json" in trial_files and "progress.csv" not in trial_files
    assert not any(name.startswith("events.out.tfevents") for name in trial_files)


def test_tensorboard_event_files_hold_epochs_finals_and_figures(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tmp_path, _ = tracked
    board = tmp_path / "results" / "t" / "tensorboard"
    trials = sorted(p for p in board.iterdir() if p.name != "sweep")
    assert len(trials) == 2
    for trial in trials:
        events = EventAccumulator(str(trial)).Reload()
        assert [s.step for s in events.Scalars("val/ua")] == [0, 1]
        assert {"train/loss", "test_oracle/ua", "lr"} <= set(events.Tags()["scalars"])
        finals = EventAccumulator(str(trial / "final")).Reload()          # add_hparams' own run
        assert "final/test_ua" in finals.Tags()["scalars"]
    figures = EventAccumulator(str(board / "sweep"), size_guidance={"images": 0}).Reload()
    assert "figures/fold_bars" in figures.Tags()["images"]


def test_running_again_adds_to_the_same_runs_and_trains_nothing(tracked):
    tmp_path, path = tracked
    again = run_sweep(path)
    assert again.returncode == 0 and "resuming: 2 trials already finished" in again.stdout, again.stdout[-2000:]
    _, runs = mlflow_runs(tmp_path / "results" / "t")
    assert len(runs) == 3


def test_tracking_changes_no_number_so_adding_it_reruns_nothing():
    from orchestration.config.record import settings_digest

    base = {"name": "t", "corpus": "synthetic", "models": {"fg_cme": ["full"]}}
    assert settings_digest(base) == settings_digest({**base, "tracking": {"mlflow": True}})


@pytest.mark.parametrize("tracking, message", [
    ({"mlflow": True}, "tracking.mlflow_uri"),
    ({"tensorboard": True}, "tracking.tensorboard_dir"),
    ({"mlfow": True}, "did you mean 'mlflow'"),
])
def test_tracking_problems_are_named_with_a_fix(tracking, message):
    sweep = {"name": "t", "corpus": "synthetic", "models": {"fg_cme": ["full"]}, "storage": "s3://bucket/x",
             "tracking": tracking}
    with pytest.raises(SweepError, match="Fix:") as err:
        validate(parse_sweep(sweep))
    assert message in str(err.value)
