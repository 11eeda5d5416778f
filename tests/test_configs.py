"""Shipped sweep files by name, `emosweep copy`, and KEY=VALUE overrides on the command line."""
import json
import os

import pytest
import yaml

from orchestration.cli import main
from orchestration.config.sweep_file import SweepError, load_sweep, shipped_configs, split_overrides
from orchestration.config.record import settings_digest

from .conftest import REPO
from .sweeps import write_sweep


def test_configs_lists_every_shipped_file_with_what_it_runs(capsys):
    assert main(["configs"]) == 0
    out = capsys.readouterr().out
    shipped = sorted(path.stem for path in (REPO / "orchestration" / "configs").glob("*.yaml"))
    listed = [line.split()[0] for line in out.splitlines()[:len(shipped)]]
    assert listed == shipped and len(shipped) >= 13
    assert "ravdess " in out and "RAVDESS, 4 classes (672 files)" in out and "emosweep copy NAME" in out


@pytest.mark.parametrize("given", ["ravdess", "ravdess.yaml", "configs/ravdess.yaml"])
def test_a_shipped_file_is_found_by_name_from_any_folder(given, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_sweep(given).source == str(shipped_configs()["ravdess"])


def test_an_unknown_name_says_the_names_and_the_nearest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SweepError, match=r"ravdes: sweep file not found \(did you mean 'ravdess'\?\)\. Fix: .*"
                                         r"cross-corpus, demo, .* \(emosweep configs lists them"):
        load_sweep("ravdes")
    with pytest.raises(SweepError, match="sweep file not found"):
        load_sweep("elsewhere/ravdess.yaml")   # a path that is not there is never swapped for a shipped file


def test_copy_writes_the_shipped_file_and_keeps_an_existing_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["copy", "ravdess"]) == 0
    assert (tmp_path / "ravdess.yaml").read_text() == shipped_configs()["ravdess"].read_text()
    assert "Next: edit it" in capsys.readouterr().out
    (tmp_path / "ravdess.yaml").write_text("# mine\n")
    assert main(["copy", "ravdess"]) == 2
    assert "ravdess.yaml exists. Fix: give another DEST, or add --force" in capsys.readouterr().err
    assert (tmp_path / "ravdess.yaml").read_text() == "# mine\n"
    assert main(["copy", "demo", "studies/mine.yaml"]) == 0 and (tmp_path / "studies" / "mine.yaml").exists()
    assert main(["copy", "ravdes"]) == 2
    assert "no shipped sweep file of that name (did you mean 'ravdess'?)" in capsys.readouterr().err


def test_an_override_is_a_file_edit(tmp_path, synthetic_root):
    path = write_sweep(tmp_path, synthetic_root)
    overridden = load_sweep(path, ["train.epochs=5", "seeds=[0, 1]", "models.fg_cme=[full, no_excite]",
                                   "resources.max_concurrent_trials=null"])
    data = yaml.safe_load(path.read_text())
    data["train"]["epochs"], data["seeds"] = 5, [0, 1]
    data["models"]["fg_cme"] = ["full", "no_excite"]
    data["resources"]["max_concurrent_trials"] = None
    (tmp_path / "edited.yaml").write_text(yaml.safe_dump(data))
    edited = load_sweep(tmp_path / "edited.yaml")
    assert overridden.raw == edited.raw and settings_digest(overridden.raw) == settings_digest(edited.raw)
    assert overridden.cells == [("lstm_attn_text", "full"), ("fg_cme", "full"), ("fg_cme", "no_excite")]
    assert overridden.source == f"{path} with train.epochs=5 seeds=[0, 1] models.fg_cme=[full, no_excite] " \
                                "resources.max_concurrent_trials=null"


def test_overrides_are_checked_by_the_schema_and_name_themselves(tmp_path, synthetic_root):
    path = write_sweep(tmp_path, synthetic_root)
    with pytest.raises(SweepError, match=r"with train\.epoch=2: train\.epoch: unknown key \(did you mean 'epochs'\?\)"):
        load_sweep(path, ["train.epoch=2"])
    with pytest.raises(SweepError, match=r"train\.lr: must be an integer or a number, got .fast."):
        load_sweep(path, ["train.lr=fast"])
    with pytest.raises(SweepError, match=r"'epochs': an override is KEY=VALUE with a dotted key. Fix: e\.g\."):
        load_sweep(path, ["epochs"])
    with pytest.raises(SweepError, match=r"'train\.\.lr=1': an override is KEY=VALUE"):
        load_sweep(path, ["train..lr=1"])
    with pytest.raises(SweepError, match=r"'seeds=\[0': the value is not valid YAML .* Fix: quote it"):
        load_sweep(path, ["seeds=[0"])
    with pytest.raises(SweepError, match=r"'name\.x=1': name is 't' in .*, not a mapping\. Fix: set name whole"):
        load_sweep(path, ["name.x=1"])


def test_a_corpus_given_by_name_takes_dotted_overrides(tmp_path, synthetic_root):
    data = yaml.safe_load(write_sweep(tmp_path, synthetic_root).read_text())
    data["corpus"] = "synthetic"
    (tmp_path / "named.yaml").write_text(yaml.safe_dump(data))
    sweep = load_sweep(tmp_path / "named.yaml", [f"corpus.root={synthetic_root}"])
    assert sweep.corpus == {"name": "synthetic", "root": str(synthetic_root)}


def test_the_demo_takes_overrides_alone():
    path, overrides = split_overrides("train.epochs=1", ["seeds=[3]"])
    assert path.endswith("demo.yaml") and overrides == ["train.epochs=1", "seeds=[3]"]
    assert load_sweep(path, overrides).seeds == [3]


def test_check_shows_the_override_and_the_command_to_run(tmp_path, synthetic_root, capsys):
    path = write_sweep(tmp_path, synthetic_root)
    assert main(["check", str(path), "train.epochs=7", "seeds=[0,1,2]"]) == 0
    out = capsys.readouterr().out
    assert "'epochs': 7" in out and "x 3 seed(s) = 6" in out
    assert f"ok: run it with: emosweep run {path} train.epochs=7 seeds=[0,1,2]" in out
    assert main(["check", str(path), "train.epochs=0"]) == 2
    assert "with train.epochs=0: train.epochs:" in capsys.readouterr().err


def test_the_sweep_folder_keeps_the_effective_file(tmp_path, synthetic_root):
    """A run with overrides writes sweep.yaml: the file as it ran; running it again finds every trial done."""
    from .sweeps import run_sweep

    path = write_sweep(tmp_path, synthetic_root, fold_indices=[0], train={"epochs": 2, "batch_size": 8, "lr": 3e-3})
    done = run_sweep(path, "train.epochs=1")
    assert done.returncode == 0, done.stderr[-3000:]
    effective = tmp_path / "results" / "t" / "sweep.yaml"
    ran = yaml.safe_load(effective.read_text())
    assert ran["train"]["epochs"] == 1 and "with train.epochs=1" in effective.read_text().splitlines()[0]
    recorded = json.loads((tmp_path / "results" / "t" / "sweep.json").read_text())["sweep"]
    assert ran == recorded
    again = run_sweep(effective)
    assert again.returncode == 0 and "1 trials already finished" in again.stdout, again.stdout[-2000:]


def test_a_sweep_files_relative_paths_are_its_own_folders_and_an_overrides_the_working_folders(tmp_path,
                                                                                               monkeypatch):
    study = tmp_path / "study"
    study.mkdir()
    (study / "t.yaml").write_text(yaml.safe_dump({
        "name": "t", "corpus": {"name": "synthetic", "root": "data/synthetic"}, "models": {"cnn_lstm": ["full"]},
        "storage": "out", "cache": "../cache", "encoder": {"model": "./ckpt"},
        "test_corpora": [{"name": "synthetic", "root": "/abs/other"}]}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    sweep = load_sweep("../study/t.yaml")
    assert sweep.corpus["root"] == str(study / "data" / "synthetic")
    assert sweep.storage == str(study / "out") and sweep.cache == str(tmp_path / "cache")
    assert sweep.encoder["model"] == str(study / "ckpt") and sweep.test_corpora[0]["root"] == "/abs/other"
    typed = load_sweep("../study/t.yaml", ["corpus.root=mine", "storage=here"])
    assert typed.corpus["root"] == str(elsewhere / "mine") and typed.storage == "here"
    shipped = load_sweep("ravdess")                          # a template: the working folder's, as before
    assert shipped.corpus["root"] == str((elsewhere / ".." / "shared" / "data" / "ravdess16k").resolve())


def test_a_copy_elsewhere_keeps_its_paths_pointing_where_they_did(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["copy", "ravdess", "studies/deep/mine.yaml"]) == 0
    copied = tmp_path / "studies" / "deep" / "mine.yaml"
    assert "root: ../../../shared/data/ravdess16k," in copied.read_text()
    assert "storage: ../../results" in copied.read_text()
    sweep = load_sweep(copied)
    assert sweep.corpus["root"] == str((tmp_path / ".." / "shared" / "data" / "ravdess16k").resolve())
    assert os.path.normpath(sweep.storage) == str(tmp_path / "results")
