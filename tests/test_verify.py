"""A finished trial whose outputs were lost counts as unfinished: named by verify, redone by the same command."""
import json
import shutil
import subprocess
import sys

import yaml

from orchestration.results.aggregate import read_table

from .conftest import REPO
from .sweeps import prediction_files, run_sweep

SHOW = REPO / "orchestration" / "results" / "show.py"


def verify(sweep_dir) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SHOW), "verify", str(sweep_dir)],
                          capture_output=True, text=True)


def test_lost_outputs_are_named_then_written_again_as_they_were(grid_sweep, tmp_path):
    original_root, done = grid_sweep
    assert done.returncode == 0, done.stderr[-3000:]
    original = original_root / "results" / "t"
    copy = tmp_path / "results" / "t"
    shutil.copytree(original, copy, symlinks=True)
    sweep = yaml.safe_load((original_root / "t.yaml").read_text()) | {"storage": str(tmp_path / "results")}
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(sweep))
    assert verify(copy).returncode == 0

    experiment = copy / "experiment"
    trials = sorted(experiment.glob("run_trial_*"))
    lost = prediction_files(experiment / "predictions")[0]
    lost.unlink()                                                   # a kill before the upload, say
    lost_validation = sorted((experiment / "predictions").glob("*.validation.parquet"))[-1]
    lost_validation.unlink()
    result = trials[1] / "result.json"                              # a driver killed before syncing its epochs
    result.write_text("".join(line + "\n" for line in result.read_text().splitlines()
                              if json.loads(line).get("final")))
    final = [json.loads(line) for line in (trials[2] / "result.json").read_text().splitlines()
             if json.loads(line).get("checkpoint_dir_name") and json.loads(line).get("final")][-1]
    shutil.rmtree(trials[2] / final["checkpoint_dir_name"])          # its final checkpoint gone

    checked = verify(copy)
    assert checked.returncode == 3, checked.stdout + checked.stderr
    assert f"test predictions missing: {lost}" in checked.stderr
    assert f"final checkpoint missing: {trials[2] / final['checkpoint_dir_name']}/state.pt" in checked.stderr
    assert "epoch" not in checked.stderr                  # the final report carries every epoch row: none lost
    assert f"validation predictions missing: {lost_validation}" in checked.stderr
    assert "Fix: run the sweep's command again" in checked.stderr and checked.stderr.count("\n  ") == 3

    again = run_sweep(path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "finished trials whose outputs are incomplete are redone" in again.stdout
    assert verify(copy).returncode == 0
    for file in (lost, lost_validation):
        assert file.read_bytes() == (original / "experiment" / "predictions" / file.name).read_bytes()
    for name in ("folds", "epochs", "predictions"):
        ours, theirs = (read_table(str(d), name).drop(columns=["trial_id", "resumed_from", "epoch_seconds"],
                                                       errors="ignore") for d in (copy, original))
        assert ours.astype(str).equals(theirs.astype(str)), name
