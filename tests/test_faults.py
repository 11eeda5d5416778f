"""Interruptions and concurrent drivers: exit codes a script can trust, nothing lost or done twice."""
import json
import os
import signal
import socket
import subprocess
import time

import pytest

from orchestration.lock import DriverLock, SweepLocked

from .conftest import REPO
from .sweeps import run_sweep, sweep_command, table, write_sweep


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
