"""Slow: a sweep killed with SIGKILL and resumed; a trial trained with 2 DDP workers (gloo)."""
import json
import os
import signal
import subprocess
import time

import pytest

from .conftest import REPO
from .sweeps import run_sweep, sweep_command, table, write_sweep

pytestmark = pytest.mark.slow


def experiment_state(experiment):
    """(finished trials, unfinished trials with >= 2 epochs reported)."""
    finished = partial = 0
    for result in experiment.glob("*/result.json"):
        lines = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        if any(line.get("final") for line in lines):
            finished += 1
        elif len(lines) >= 2:
            partial += 1
    return finished, partial


def test_sigkill_mid_sweep_then_resume(tmp_path, synthetic_root):
    path = write_sweep(tmp_path, synthetic_root, fold_indices=[0, 1, 2],
                       models={"fg_cme": ["full"], "lstm_attn_text": ["full"]},
                       train={"epochs": 8, "batch_size": 4, "lr": 3e-3})
    experiment = tmp_path / "results" / "t" / "experiment"
    driver = subprocess.Popen(sweep_command(path), cwd=REPO, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        finished, partial = experiment_state(experiment)
        if finished >= 1 and partial >= 1:
            break
        time.sleep(0.5)
    else:
        driver.kill()
        pytest.fail("the sweep never reached a state with finished and half-finished trials")
    os.killpg(driver.pid, signal.SIGKILL)  # the driver, its local Ray and every trial, as in a crash
    driver.wait()
    time.sleep(2)
    resumed = run_sweep(path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming:" in resumed.stdout
    trials = table(tmp_path)
    assert len(trials) == 6 and set(trials["status"]) == {"finished"}
    assert not trials.duplicated(["model", "ablation", "fold", "seed"]).any()       # nothing repeated
    assert experiment_state(experiment)[0] == 6           # nothing trained to the end twice (a resumed trial is a
    # new Tune trial that continues the old one's checkpoint: every run is a fresh experiment, see identity.py)
    assert (trials["resumed_from"] > 0).any(), trials[["model", "fold", "resumed_from"]]  # continued mid-trial


def test_ddp_trial_with_two_workers_restarts_them_from_its_checkpoint(tmp_path, synthetic_root):
    path = write_sweep(tmp_path, synthetic_root, fold_indices=[0],
                       train={"epochs": 3, "batch_size": 8, "lr": 3e-3, "retries": 1},
                       resources={"mode": "ddp", "workers_per_trial": 2, "cpus_per_worker": 1})
    faults = {"EMOSWEEP_INJECT_FAILURE": json.dumps([{"fold": 0, "epoch": 1, "times": 1,
                                                      "marker_dir": str(tmp_path / "faults")}])}
    done = run_sweep(path, env=faults)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = table(tmp_path)
    assert len(trials) == 1 and trials.loc[0, "status"] == "finished"
    assert trials.loc[0, "world_size"] == 2
    # Ray Train restarted the worker group inside the Tune trial: the driver hears of it from the trial, in one line
    assert trials.loc[0, "resumed_from"] == 1
    assert ("[sweep] lstm_attn_text/full fold 0 seed 0: resumes from epoch 1 (its DDP workers started again from "
            "their latest checkpoint)") in done.stdout, done.stdout[-3000:]
    assert "Traceback" not in done.stdout + done.stderr
    runs = list((tmp_path / "results" / "t" / "experiment" / "train").iterdir())   # named by the trial's identity
    assert [run.name.split("-f0-s0-")[0] for run in runs] == ["lstm_attn_text-full-lstm_attn_text_full_0"]
    assert (runs[0] / "checkpoint_manager_snapshot.json").exists()
