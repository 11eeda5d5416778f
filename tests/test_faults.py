"""Interruptions and concurrent drivers: exit codes a script can trust, nothing lost or done twice."""
import json
import os
import signal
import socket
import subprocess
import time

import pytest

from orchestration.results.aggregate import read_table
from orchestration.store.lock import DriverLock, SweepLocked

from .conftest import REPO
from .sweeps import prediction_files, run_sweep, sweep_command, table, write_sweep


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_live_lease_blocks_a_dead_one_does_not(tmp_path):
    sweep_dir = str(tmp_path / "s")
    lock = tmp_path / "s" / "driver.lock"
    lock.parent.mkdir()
    lock.write_text(json.dumps({"token": "x", "host": socket.gethostname(), "pid": dead_pid(), "started": time.time(),
                                "renewed": time.time()}))
    with DriverLock(sweep_dir):                             # its driver is gone: taken over at once
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        with pytest.raises(SweepLocked, match=f"pid {os.getpid()}.*Fix: wait for it"):
            DriverLock(sweep_dir).acquire(settle_s=0)
    assert not lock.exists()                                # released on exit
    lock.write_text(json.dumps({"token": "y", "host": "another-machine", "pid": 1, "started": 0, "renewed": 0}))
    with DriverLock(sweep_dir):                             # not renewed for long: expired
        pass


def test_a_second_driver_on_the_same_sweep_is_refused(tmp_path, synthetic_root):
    path = write_sweep(tmp_path, synthetic_root, fold_indices=[0, 1, 2])
    lock = tmp_path / "results" / "t" / "driver.lock"
    log = tmp_path / "first.log"
    first = subprocess.Popen(sweep_command(path), cwd=REPO, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not lock.exists():
        assert time.monotonic() < deadline and first.poll() is None, log.read_text()[-3000:]
        time.sleep(0.2)
    second = run_sweep(path)
    assert second.returncode == 2
    assert "another driver is running this sweep" in second.stderr and f"pid {first.pid}" in second.stderr
    assert first.wait(timeout=600) == 0, log.read_text()[-3000:]
    trials = table(tmp_path)
    assert len(trials) == 3 and set(trials["status"]) == {"finished"}          # all done once, by the first
    assert len(list((tmp_path / "results" / "t" / "experiment").glob("experiment_state-*.json"))) == 1
    assert not lock.exists()


@pytest.mark.slow
def test_ctrl_c_stops_resumably_and_the_same_command_finishes_the_sweep(tmp_path, synthetic_root):
    from .test_resume_ddp import experiment_state

    path = write_sweep(tmp_path, synthetic_root, fold_indices=[0, 1, 2, 3],
                       train={"epochs": 8, "batch_size": 4, "lr": 3e-3})
    experiment = tmp_path / "results" / "t" / "experiment"
    log = tmp_path / "driver.log"
    driver = subprocess.Popen(sweep_command(path), cwd=REPO, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 400
    while min(experiment_state(experiment)) < 1:           # one trial finished, another half-way
        assert time.monotonic() < deadline and driver.poll() is None, log.read_text()[-3000:]
        time.sleep(0.3)
    driver.send_signal(signal.SIGINT)                       # what Ctrl-C sends
    assert driver.wait(timeout=300) == 3, log.read_text()[-3000:]
    last = log.read_text().strip().splitlines()[-1]
    assert "interrupted" in last and "run the same command to resume" in last, last
    resumed = run_sweep(path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    trials = table(tmp_path)
    assert len(trials) == 4 and set(trials["status"]) == {"finished"}
    assert not trials.duplicated(["model", "ablation", "fold", "seed"]).any()
    assert (trials["resumed_from"] > 0).any()               # the interrupted trial continued mid-way


@pytest.mark.slow
def test_three_sigkills_at_different_moments_give_the_uninterrupted_tables(tmp_path, synthetic_root):
    """Kill the driver with its Ray and trials: mid-epoch of the first trial, between trials, at a random time."""
    import random

    from .test_resume_ddp import experiment_state

    train = {"epochs": 6, "batch_size": 4, "lr": 3e-3}
    cells = {"lstm_attn_text": ["full"], "cma": ["text_only"]}   # cma has dropout: random streams matter
    (tmp_path / "ref").mkdir()
    reference = write_sweep(tmp_path / "ref", synthetic_root, fold_indices=[0, 1, 2], train=train, models=cells)
    assert run_sweep(reference).returncode == 0
    killed_dir = tmp_path / "killed"
    killed_dir.mkdir()
    path = write_sweep(killed_dir, synthetic_root, fold_indices=[0, 1, 2], train=train, models=cells)
    experiment = killed_dir / "results" / "t" / "experiment"
    moments = [lambda: experiment_state(experiment)[1] >= 1,                      # a trial half-way
               lambda: experiment_state(experiment)[0] >= 2,                      # between trials
               lambda: time.monotonic() > started + random.Random(0).uniform(3, 8)]  # anywhere
    for moment in moments:
        driver = subprocess.Popen(sweep_command(path), cwd=REPO, start_new_session=True,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started = time.monotonic()
        while not moment() and driver.poll() is None:
            time.sleep(0.2)
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
        time.sleep(1)
    finished = run_sweep(path)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]

    metrics = ["model", "ablation", "fold", "seed", "selected_epoch", "val_ua", "val_loss", "test_ua", "test_wa",
               "test_loss", "test_confusion"]
    ours, theirs = (table(d)[metrics].sort_values(["model", "fold"]).reset_index(drop=True)
                    for d in (killed_dir, tmp_path / "ref"))
    assert len(ours) == 6 and not ours.duplicated(["model", "ablation", "fold", "seed"]).any()
    assert ours.drop(columns="test_confusion").equals(theirs.drop(columns="test_confusion"))  # bit-identical
    assert [list(map(list, c)) for c in ours["test_confusion"]] == \
        [list(map(list, c)) for c in theirs["test_confusion"]]
    assert (table(killed_dir)["resumed_from"] > 0).any()


@pytest.mark.slow
def test_a_sweep_folder_moved_after_a_crash_resumes_where_it_now_is(tmp_path, synthetic_root):
    import shutil

    from .test_resume_ddp import experiment_state

    path = write_sweep(tmp_path, synthetic_root, fold_indices=[0, 1, 2],
                       train={"epochs": 8, "batch_size": 4, "lr": 3e-3})
    experiment = tmp_path / "results" / "t" / "experiment"
    driver = subprocess.Popen(sweep_command(path), cwd=REPO, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 400
    while min(experiment_state(experiment)) < 1:
        assert time.monotonic() < deadline and driver.poll() is None
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    shutil.move(tmp_path / "results", tmp_path / "moved")          # e.g. copied off a cluster's disk
    resumed = run_sweep(path, "--storage", str(tmp_path / "moved"))
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resuming:" in resumed.stdout
    folds = read_table(str(tmp_path / "moved" / "t"), "folds")
    folds = folds[~folds["model"].str.endswith("+ded")]
    assert len(folds) == 3 and set(folds["status"]) == {"finished"} and (folds["resumed_from"] > 0).any()
    assert len(prediction_files(tmp_path / "moved" / "t" / "experiment" / "predictions")) == 3
    assert not (tmp_path / "results").exists()                     # nothing written to the old place


def test_a_torn_lease_blocks_only_while_it_may_still_be_being_written(tmp_path):
    lock = tmp_path / "driver.lock"
    lock.write_text('{"token": "x", "host": "h", "pi')                 # another driver writing it right now
    with pytest.raises(SweepLocked, match="starting this sweep this instant"):
        DriverLock(str(tmp_path)).acquire()
    os.utime(lock, (time.time() - 60, time.time() - 60))                # cut short a minute ago: no driver
    with DriverLock(str(tmp_path)):
        assert json.loads(lock.read_text())["pid"] == os.getpid()


def test_a_damaged_sweep_record_is_refused_with_the_fix(tmp_path, synthetic_root):
    from orchestration.config.sweep_file import SweepError, load_sweep
    from orchestration.config.record import record_sweep, recorded_change

    sweep = load_sweep(write_sweep(tmp_path, synthetic_root))
    sweep_dir = tmp_path / "results" / "t"
    assert recorded_change(sweep, str(sweep_dir)) is None        # a new sweep
    record_sweep(sweep, str(sweep_dir))
    assert recorded_change(sweep, str(sweep_dir)) is None        # the same file: accepted
    (sweep_dir / "sweep.json").write_text('{"digest": "ab')
    with pytest.raises(SweepError, match="sweep.json is damaged.*Fix: delete it"):
        recorded_change(sweep, str(sweep_dir))


@pytest.mark.slow
def test_a_killed_trial_process_is_retried_from_its_checkpoint(tmp_path, synthetic_root):
    from .local_cluster import descendants
    from .test_resume_ddp import experiment_state

    path = write_sweep(tmp_path, synthetic_root, fold_indices=[0],
                       train={"epochs": 60, "batch_size": 2, "lr": 1e-3, "retries": 2})
    experiment = tmp_path / "results" / "t" / "experiment"
    log = tmp_path / "driver.log"
    driver = subprocess.Popen(sweep_command(path), cwd=REPO, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 400
    while experiment_state(experiment)[1] < 1:                   # the trial is half-way
        assert time.monotonic() < deadline and driver.poll() is None, log.read_text()[-3000:]
        time.sleep(0.2)
    trial_processes = [pid for pid in descendants({driver.pid})
                       if open(f"/proc/{pid}/cmdline", "rb").read().startswith(b"ray::ImplicitFunc")]
    assert len(trial_processes) == 1
    os.kill(trial_processes[0], signal.SIGKILL)                 # OOM killer, a segfault in a native library...
    assert driver.wait(timeout=600) == 0, log.read_text()[-3000:]
    trials = table(tmp_path, which="trials")
    folds = table(tmp_path)
    assert len(folds) == 1 and folds.loc[0, "status"] == "finished"
    assert trials.loc[0, "attempts"] == 2 and folds.loc[0, "resumed_from"] > 0


@pytest.mark.slow
def test_a_full_disk_stops_resumably_and_the_same_command_finishes_after_space_is_freed(
        small_disk, tmp_path, synthetic_root):
    ballast = small_disk / "ballast"
    ballast.write_bytes(b"\0" * 52 * 2**20)   # other data: 12 MB stay free, one 10-MB checkpoint fits, two do not
    path = write_sweep(tmp_path, synthetic_root, fold_indices=[0], storage=str(small_disk / "results"),
                       train={"epochs": 3, "batch_size": 8, "lr": 3e-3, "retries": 1})
    full = run_sweep(path)
    assert full.returncode == 3, full.stdout[-3000:] + full.stderr[-3000:]     # stopped, resumable
    assert "No space left on device" in full.stdout + full.stderr
    assert "run the same command to resume" in full.stdout.strip().splitlines()[-1]
    ballast.unlink()                                            # the user frees space
    again = run_sweep(path)   # whichever file the full disk cut short (a checkpoint, the searcher's state)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    folds = read_table(str(small_disk / "results" / "t"), "folds")
    folds = folds[~folds["model"].str.endswith("+ded")]
    assert len(folds) == 1 and folds.loc[folds.index[0], "status"] == "finished"
