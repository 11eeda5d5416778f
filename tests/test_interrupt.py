"""Ctrl-C and SIGTERM are honoured at stop points, never in the middle of an import or a lock's hold."""
import os
import re
import signal
import time

import pytest

from ser_models.interrupt import deferred, stop_point

from .test_kills import Driver, ray_processes_of
from .sweeps import run_sweep, write_sweep


def test_a_first_signal_waits_for_a_stop_point_and_a_second_stops_at_once():
    before = signal.getsignal(signal.SIGINT)
    with deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)                    # the handler has run: no KeyboardInterrupt yet
        with pytest.raises(KeyboardInterrupt):
            stop_point()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is before
    stop_point()                           # the request ended with the command that deferred it


def test_nothing_requested_passes_every_stop_point():
    with deferred():
        for _ in range(3):
            stop_point()


def test_ctrl_c_during_extraction_stops_it_within_seconds_with_no_unpublished_frames_left(tmp_path, synthetic_root):
    """eGeMAPS of 240 utterances takes about 7 s here: stopped 1 s in, the driver is gone long before."""
    from ser_models.data.corpora.synthetic import SyntheticConfig, generate

    generate(tmp_path / "corpus", SyntheticConfig())
    corpus = {"name": "synthetic", "root": str(tmp_path / "corpus"), **SyntheticConfig().__dict__}
    path = write_sweep(tmp_path, synthetic_root, corpus=corpus, models={"egemaps_svm": ["full"]})
    cache = tmp_path / "cache"
    driver = Driver(path)
    deadline = time.monotonic() + 120
    while not list(cache.glob("*/*/shards/.tmp-*")):
        assert driver.process.poll() is None and time.monotonic() < deadline, driver.output()[-3000:]
        time.sleep(0.05)
    time.sleep(1.0)
    driver.process.send_signal(signal.SIGINT)
    asked = time.monotonic()
    code = driver.wait(timeout=60)
    output = driver.output()
    assert code == 3, output[-3000:]
    assert time.monotonic() - asked < 4, output[-3000:]      # the chunks in flight finish; the rest never start
    assert "stopping at the next safe point" in output and "Traceback" not in output, output[-3000:]
    assert "run the same command to resume" in output.strip().splitlines()[-1]
    assert not list(cache.glob("*/*/shards/.tmp-*")) and not list(cache.glob("egemaps/*/meta.json")), \
        sorted(cache.rglob("*"))
    finished = run_sweep(path)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    assert len(list(cache.glob("egemaps/*"))) == 1


@pytest.mark.slow
def test_ctrl_c_at_any_moment_of_the_start_exits_3_with_ray_stopped(tmp_path, synthetic_root):
    """Imports, corpus, Ray's start, the first trials: where a KeyboardInterrupt once hung the driver on
    logging's lock or killed it at exit with a segmentation fault."""
    path = write_sweep(tmp_path, synthetic_root, fold_indices=[0, 1], models={"lstm_attn_text": ["full"]})
    for after in (0.3, 0.8, 1.5, 2.2, 3.0, 3.8, 4.6, 5.5, 6.5, 8.0):
        driver = Driver(path)
        while driver.process.poll() is None and time.monotonic() - driver.started < after:
            time.sleep(0.02)
        driver.process.send_signal(signal.SIGINT)
        code = driver.wait(timeout=60)
        output = driver.output()
        assert code in (0, 3) and "Traceback" not in output, f"SIGINT at {after} s: exit {code}\n{output[-3000:]}"
        started = re.search(r"\[sweep\] Ray (\S+):", output)
        deadline = time.monotonic() + 15
        while started and ray_processes_of(started.group(1)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not (started and ray_processes_of(started.group(1))), f"SIGINT at {after} s: Ray left running"
