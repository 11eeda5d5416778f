"""Kill at any point, on local disk and on S3: 0 lost, 0 duplicated, the tables of a clean run, no warnings.

The schedule is drawn from a seed that is printed; EMOSWEEP_KILL_SEED=<seed> replays it.
"""
import os
import random
import re
import signal
import subprocess
import threading
import time

import pandas as pd
import pytest

from .conftest import REPO
from .sweeps import run_sweep, sweep_command, table, write_sweep

CELLS = {"lstm_attn_text": ["full"], "cma": ["text_only"]}     # cma has dropout: every random stream matters
TRAIN = {"epochs": 4, "batch_size": 4, "lr": 3e-3, "test_oracle": True}
KILLS = 10
FOLD_COLUMNS = ["model", "ablation", "fold", "seed", "status", "selected_epoch", "epochs_run", "n_train",
                "n_validation", "n_test", "val_ua", "val_wa", "val_loss", "test_ua", "test_wa", "test_macro_f1",
                "test_loss", "test_recall", "test_confusion"]
EPOCH_COLUMNS = ["model", "ablation", "fold", "seed", "epoch", "train_loss", "val_ua", "val_wa", "val_loss",
                 "oracle_test_ua"]
PREDICTION_COLUMNS = ["model", "ablation", "fold", "seed", "utt_id", "label", "predicted", "probabilities"]


def comparable(where, name: str, columns: list[str]) -> pd.DataFrame:
    frame = table(where, which=name) if name != "folds" else _all_folds(where)
    frame = frame[columns].sort_values(columns[:5] if name != "folds" else columns[:4]).reset_index(drop=True)
    return frame.map(lambda v: repr(v.tolist()) if hasattr(v, "tolist") else v)   # arrays compare as values


def _all_folds(where):
    from orchestration.results.aggregate import read_table

    return read_table(f"{where}/t" if "://" in str(where) else str(where / "results" / "t"), "folds")  # DED rows too


@pytest.fixture(scope="module")
def clean(tmp_path_factory, synthetic_root):
    """The same sweep, never interrupted."""
    where = tmp_path_factory.mktemp("clean")
    done = run_sweep(write_sweep(where, synthetic_root, fold_indices=[0, 1], train=TRAIN, models=CELLS))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return where


class Driver:
    """The sweep command in its own process group, its output read line by line as it comes."""

    def __init__(self, path, env=None):
        self.lines: list[str] = []
        self.process = subprocess.Popen(sweep_command(path), cwd=REPO, start_new_session=True, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        self.started = time.monotonic()
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()

    def read(self):
        for line in self.process.stdout:
            self.lines.append(line)

    def seen(self, pattern: str) -> bool:
        return any(re.search(pattern, line) for line in list(self.lines))

    def wait(self, timeout: float = 300) -> int:
        code = self.process.wait(timeout=timeout)
        self.reader.join(timeout=10)
        return code

    def output(self) -> str:
        return "".join(self.lines)


# when to kill: a pattern in the driver's output (then a short random wait), or a random time after the start
MOMENTS = {"right after a finished line": r"^\[sweep\] finished ",
           "mid-epoch": r"epochs [1-9]\d*/",
           "writing the tables": r"^\[sweep\] (fit finished|resuming: 4 trials)",
           "anywhere": None}


def kill_at_random_moments(path, seed: int, env=None) -> list[str]:
    """KILLS kills (SIGKILL of the process group or SIGINT of the driver) at moments drawn from `seed`."""
    rng = random.Random(seed)
    during_trials = [moment for moment in MOMENTS if moment != "writing the tables"]
    plan = during_trials * 2 + [rng.choice(during_trials) for _ in range(KILLS - 2 - 2 * len(during_trials))]
    rng.shuffle(plan)
    plan += ["writing the tables"] * 2          # last: waiting for it lets the attempt run every trial
    log = []
    while len(log) < KILLS:
        moment = plan[len(log)]
        how = rng.choice([signal.SIGKILL, signal.SIGINT])
        driver = Driver(path, env)
        pattern, after = MOMENTS[moment], rng.uniform(0.0, 0.4) if MOMENTS[moment] else rng.uniform(1.0, 14.0)
        while driver.process.poll() is None and not (driver.seen(pattern) if pattern else
                                                     time.monotonic() - driver.started > after):
            time.sleep(0.05)
        if driver.process.poll() is not None:          # ended before the moment came: no kill this time
            assert driver.wait() in (0, 3), driver.output()[-3000:]
            plan.insert(len(log), "anywhere")        # the sweep is done: later kills land in its short reruns
            continue
        time.sleep(after if pattern else 0)
        if how == signal.SIGKILL:
            os.killpg(driver.process.pid, signal.SIGKILL)
            driver.wait()
        else:
            driver.process.send_signal(signal.SIGINT)
            code = driver.wait(timeout=300)
            assert code in (0, 3), f"SIGINT {moment}: exit {code}\n{driver.output()[-3000:]}"
            try:
                os.killpg(driver.process.pid, signal.SIGKILL)    # whatever a driver interrupted in ray.init left
            except ProcessLookupError:
                pass
        log.append(f"{how.name} {moment} (+{time.monotonic() - driver.started:.1f} s)")
        time.sleep(0.5)
    return log


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["local", "s3"])
def test_random_kills_then_the_same_command_give_the_clean_run_tables(storage, request, tmp_path, synthetic_root,
                                                                      clean):
    seed = int(os.environ.get("EMOSWEEP_KILL_SEED") or random.SystemRandom().randrange(10**6))
    print(f"kill schedule seed {seed}: replay with EMOSWEEP_KILL_SEED={seed}")
    if storage == "s3":
        s3 = request.getfixturevalue("s3_server")
        where = f"s3://{s3['bucket']}/kills-{seed}-{time.monotonic_ns()}"
        path = write_sweep(tmp_path, synthetic_root, fold_indices=[0, 1], train=TRAIN, models=CELLS, storage=where)
    else:
        where = tmp_path
        path = write_sweep(tmp_path, synthetic_root, fold_indices=[0, 1], train=TRAIN, models=CELLS)
    kills = kill_at_random_moments(path, seed)
    print("\n".join(kills))
    finished = run_sweep(path)
    output = finished.stdout + finished.stderr
    assert finished.returncode == 0, f"seed {seed}: {kills}\n{output[-3000:]}"
    warned = [line for line in output.splitlines() if "warning" in line.lower() and "fold(s) have" not in line]
    assert not warned and "Traceback" not in output, f"seed {seed}: {warned}"   # nothing damaged or lost to say
    for name, columns in (("folds", FOLD_COLUMNS), ("epochs", EPOCH_COLUMNS),
                          ("predictions", PREDICTION_COLUMNS)):
        ours, theirs = comparable(where, name, columns), comparable(clean, name, columns)
        assert len(ours) == len(theirs), f"seed {seed}: {name} has {len(ours)} rows, not {len(theirs)}; {kills}"
        pd.testing.assert_frame_equal(ours, theirs, check_exact=True, obj=f"{name} (seed {seed}, {kills})")
    verify = subprocess.run([*sweep_command(path)[:1], str(REPO / "orchestration" / "results" / "show.py"), "verify",
                             f"{where}/t" if storage == "s3" else str(tmp_path / "results" / "t")],
                            capture_output=True, text=True)
    assert verify.returncode == 0 and verify.stdout.startswith("ok: 4 finished trial(s)"), verify.stderr


def ray_processes_of(gcs_address: str) -> list[str]:
    """Command lines of live processes that belong to the Ray whose GCS listens at gcs_address."""
    port = gcs_address.rsplit(":", 1)[1]
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                line = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if re.search(rf"(gcs[-_]address[= ]\S*:{port}\b|gcs_server_port[= ]{port}\b)", line):
            found.append(f"{pid}: {line[:200]}")
    return found


@pytest.mark.slow
def test_sigterm_stops_like_ctrl_c_resumably_with_nothing_left_running(tmp_path, synthetic_root, clean):
    """What Slurm, Kubernetes, systemd and `timeout` send: exit 3, Ray's processes gone, then the same tables."""
    path = write_sweep(tmp_path, synthetic_root, fold_indices=[0, 1], train=TRAIN, models=CELLS)
    driver = Driver(path)
    while driver.process.poll() is None and not driver.seen(r"epochs [1-9]\d*/"):
        time.sleep(0.05)
    address = re.search(r"\[sweep\] Ray (\S+):", driver.output()).group(1)
    assert ray_processes_of(address), "the check must see Ray's processes while they run"
    driver.process.send_signal(signal.SIGTERM)                  # to the driver alone, as `kill PID` does
    code = driver.wait(timeout=120)
    output = driver.output()
    assert code == 3, output[-3000:]
    assert "SIGTERM received" not in output and "Traceback" not in output
    last = output.strip().splitlines()[-1]
    assert "interrupted" in last and "run the same command to resume" in last, last
    deadline = time.monotonic() + 15
    while ray_processes_of(address) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not ray_processes_of(address), ray_processes_of(address)
    finished = run_sweep(path)
    assert finished.returncode == 0, finished.stdout[-3000:]
    pd.testing.assert_frame_equal(comparable(tmp_path, "folds", FOLD_COLUMNS), comparable(clean, "folds", FOLD_COLUMNS))


@pytest.mark.slow
def test_random_bytes_in_an_unfinished_trials_checkpoint_cost_one_epoch_and_a_line(tmp_path, synthetic_root, clean):
    """The audit's case: no refusal, no retries; set aside, the previous checkpoint used, the same tables."""
    import json

    path = write_sweep(tmp_path, synthetic_root, fold_indices=[0, 1], models=CELLS, train={**TRAIN, "retries": 0})
    failure = [{"model": "cma", "fold": 1, "epoch": 2, "times": 1, "marker_dir": str(tmp_path / "faults")}]
    stopped = run_sweep(path, env={"EMOSWEEP_INJECT_FAILURE": json.dumps(failure)})     # after epochs 0 and 1
    assert stopped.returncode == 4, stopped.stdout[-3000:] + stopped.stderr[-3000:]
    experiment = tmp_path / "results" / "t" / "experiment"
    trial = next(trial for trial in experiment.glob("run_trial_*") if (trial / "error.txt").exists())
    previous, newest = sorted(trial.glob("checkpoint_*/state.pt"))
    newest.write_bytes(os.urandom(newest.stat().st_size))
    again = run_sweep(path)
    output = again.stdout + again.stderr
    assert again.returncode == 0, output[-3000:]
    assert f"{newest}: unreadable checkpoint" in output and "set aside as state.pt.damaged" in output
    assert f"continuing from {previous.parent}, the newest intact checkpoint" in output
    assert "refused" not in output and "Traceback" not in output
    assert newest.with_name("state.pt.damaged").exists()
    for name, columns in (("folds", FOLD_COLUMNS), ("epochs", EPOCH_COLUMNS)):
        pd.testing.assert_frame_equal(comparable(tmp_path, name, columns), comparable(clean, name, columns))
