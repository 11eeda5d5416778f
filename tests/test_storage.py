"""Sweep storage on a real S3-compatible server (moto), and file:// URIs."""
import json

import pytest

from orchestration.store import storage
from orchestration.results.aggregate import read_table

from .sweeps import run_sweep, table, write_sweep


def bucket_keys(bucket: str, prefix: str) -> set[str]:
    import boto3

    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {item["Key"][len(prefix):] for page in pages for item in page.get("Contents", [])}


def test_a_sweep_on_s3_writes_tables_report_and_guard_then_resumes(tmp_path, synthetic_root, s3_server):
    uri = f"s3://{s3_server['bucket']}/test-e2e"
    path = write_sweep(tmp_path, synthetic_root, storage=uri)
    done = run_sweep(path)
    assert done.returncode == 0, done.stderr[-3000:]
    keys = bucket_keys(s3_server["bucket"], "test-e2e/t/")
    assert {"sweep.json", "report.md", "figures/fold_bars.png", "figures/confusion.png"} <= keys
    assert any(key.startswith("experiment/predictions/") for key in keys)
    assert any(key.startswith("tables/folds/") for key in keys)
    assert not (tmp_path / "results").exists()                    # nothing fell back to a local folder
    folds = table(uri)
    assert len(folds) == 2 and set(folds["status"]) == {"finished"}
    summary = read_table(f"{uri}/t", "summary")
    assert "lstm_attn_text+ded" in set(summary["model"])         # dialog decoding read sweep.json from S3
    assert json.loads(storage.read_text(f"{uri}/t/sweep.json"))["corpus"]["name"] == "synthetic"

    again = run_sweep(path)                                       # the same command: nothing is redone
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming: 2 trials already finished" in again.stdout
    assert table(uri)["trial_id"].tolist() == folds["trial_id"].tolist()

    grown = run_sweep(write_sweep(tmp_path, synthetic_root, storage=uri, seeds=[0, 1]))   # cells may grow
    assert grown.returncode == 0 and "resuming: 2 trials already finished" in grown.stdout, grown.stderr[-3000:]
    assert len(table(uri)) == 4 and table(uri)["trial_id"].isin(folds["trial_id"]).sum() == 2


def test_unreachable_s3_storage_is_refused_with_a_fix(tmp_path, synthetic_root, s3_server):
    path = write_sweep(tmp_path, synthetic_root, storage="s3://no-such-bucket-emosweep/x")
    refused = run_sweep(path)
    assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert "s3://no-such-bucket-emosweep/x" in refused.stderr and "Fix:" in refused.stderr
    assert "Traceback" not in refused.stderr


@pytest.mark.parametrize("given, expected", [
    ("file:///data/sweeps", "/data/sweeps"),
    ("file:///data/my%20sweeps/", "/data/my sweeps"),
    ("s3://bucket/prefix/", "s3://bucket/prefix"),
    ("gs://bucket/p", "gs://bucket/p"),
])
def test_storage_locations_are_normalised(given, expected):
    assert storage.normalize(given) == expected


def test_relative_storage_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.normalize("results") == str(tmp_path / "results")


def test_local_text_round_trip_is_atomic(tmp_path):
    target = str(tmp_path / "deep" / "sweep.json")
    assert storage.read_text(target) is None
    storage.write_text(target, "one")
    storage.write_text(target, "two")
    assert storage.read_text(target) == "two"
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["sweep.json"]  # no temp file left


@pytest.mark.slow
def test_an_s3_sweep_killed_mid_run_resumes_with_nothing_lost_or_repeated(tmp_path, synthetic_root, s3_server,
                                                                          monkeypatch):
    import os
    import signal
    import subprocess
    import time

    from .conftest import REPO
    from .sweeps import sweep_command

    uri = f"s3://{s3_server['bucket']}/test-kill"
    faults = str(tmp_path / "faults")
    path = write_sweep(tmp_path, synthetic_root, storage=uri, fold_indices=[0, 1, 2, 3],
                       train={"epochs": 6, "batch_size": 4, "lr": 3e-3, "retries": 0})
    monkeypatch.setenv("EMOSWEEP_INJECT_FAILURE", json.dumps([{"fold": 3, "epoch": 0, "times": 1,
                                                                "marker_dir": faults}]))
    driver = subprocess.Popen(sweep_command(path), cwd=REPO, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 400
    keys = lambda: bucket_keys(s3_server["bucket"], "test-kill/t/")  # noqa: E731
    while not any(key.startswith("experiment/predictions/") for key in keys()):
        assert time.monotonic() < deadline, "no trial finished on S3 within 400 s"
        time.sleep(1)
    os.killpg(driver.pid, signal.SIGKILL)        # driver, its local Ray and the running trials
    driver.wait()
    time.sleep(2)
    resumed = run_sweep(path)
    assert resumed.returncode == 4, resumed.stderr[-3000:]        # all ran; one failed (on purpose)
    folds = table(uri).set_index("fold")
    assert sorted(folds.index) == [0, 1, 2, 3]                                       # nothing lost
    assert folds.loc[[0, 1, 2], "status"].eq("finished").all() and folds.loc[3, "status"] == "error"
    retried = run_sweep(path, "--restart-errored")                                   # the failure was one-off
    assert retried.returncode == 0, retried.stderr[-3000:]
    assert "--restart-errored: 1 errored trial(s) start from scratch" in retried.stdout
    final = table(uri)
    assert len(final) == 4 and set(final["status"]) == {"finished"}
    assert not final.duplicated(["model", "ablation", "fold", "seed"]).any()          # nothing repeated
    assert final.set_index("fold").loc[[0, 1, 2], "trial_id"].tolist() == folds.loc[[0, 1, 2], "trial_id"].tolist()
