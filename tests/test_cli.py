"""The `emosweep` command: one entry point, consistent help, a plan before any work, and a wheel that runs alone."""
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml

from orchestration.cli import COMMANDS, main

from .conftest import REPO

EMOSWEEP = Path(sys.executable).parent / "emosweep"


def test_every_subcommand_has_help_and_exits_0():
    assert EMOSWEEP.exists(), "install as the README says (pip install -e .): it creates the emosweep script"
    for command in ["", *COMMANDS]:
        done = subprocess.run([str(EMOSWEEP), *([command] if command else []), "--help"], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0 and "usage:" in done.stdout, (command, done.stdout + done.stderr)
        if command:   # each its own help, not another command's (doctor once printed run's)
            assert f"usage: emosweep {command}" in done.stdout, (command, done.stdout)


def test_leaving_quickly_keeps_the_exit_code_and_every_write(tmp_path):
    """`leave` skips the collector at exit, not the flushing of output and open files, nor atexit handlers."""
    script = ("import atexit, sys\n"
              "from ser_models.cli import leave\n"
              "left_open = open(sys.argv[1], 'w')\n"
              "left_open.write('buffered')\n"
              "atexit.register(lambda: print('atexit ran'))\n"
              "sys.stdout.write('x' * 100000)\n"
              "leave(3)\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "file.txt")], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 3 and done.stdout == "x" * 100000 + "atexit ran\n", done.stderr
    assert (tmp_path / "file.txt").read_text() == "buffered"


def test_check_prints_the_plan_without_starting_anything(tmp_path, synthetic_root, capsys):
    from .sweeps import write_sweep

    path = write_sweep(tmp_path, synthetic_root, models={"fg_cme": ["full", "no_excite"]}, seeds=[0, 1])
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "classes ['angry', 'happy', 'neutral', 'sad']" in out and "2 of 5 (speaker-disjoint, checked)" in out
    assert "trials: 2 cells x 1 setting(s) x 2 folds x 2 seed(s) = 8" in out
    splits = [line.split()[2] for line in out.splitlines() if line.split()[1:2] and "=" in line.split()[1]]
    assert splits == ["train", "validation", "test"] * 2                  # sizes per split of the chosen folds
    assert not (tmp_path / "results").exists()


def test_check_refuses_a_bad_sweep_with_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "b", "corpus": "synthetic", "models": {"fg_cme": ["full"]},
                                   "train": {"epoch": 3}}))
    assert main(["check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: train.epoch: unknown key (did you mean 'epochs'?)" in err and "Fix:" in err


def test_models_and_data_and_an_unknown_command(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "DED" in out and "MultiStepLR [10, 20, 30] x 0.5" in out and "'optimizer': 'rmsprop'" in out
    assert main(["data", "corpora"]) == 0 and "manifest:" in capsys.readouterr().out
    with pytest.raises(SystemExit) as raised:
        main(["rnu"])
    assert raised.value.code == 2 and "Fix:" in capsys.readouterr().err


def test_the_wheel_alone_runs_the_embedded_demo_check(tmp_path):
    """Built from this checkout, installed into a fresh venv (dependencies seen through a .pth, not the checkout)."""
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"),
                            str(REPO)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("emosweep-*.whl"))
    assert "orchestration/configs/demo.yaml" in zipfile.ZipFile(wheel).namelist()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                              str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "EMOSWEEP_CACHE": str(tmp_path / "cache")}
    where = subprocess.run([str(python), "-c", "import orchestration; print(orchestration.__file__)"], cwd=elsewhere,
                           capture_output=True, text=True, env=env)
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr       # the wheel's code, not the checkout
    check = subprocess.run([str(venv / "bin" / "emosweep"), "check"], cwd=elsewhere, capture_output=True, text=True,
                           env=env, timeout=300)
    assert check.returncode == 0, check.stdout[-2000:] + check.stderr[-2000:]
    assert "sweep demo" in check.stdout and "= 15" in check.stdout and "ok: run it with: emosweep run" in check.stdout
    # the shipped files by name, outside any checkout: copied here, then checked with an override
    emosweep = str(venv / "bin" / "emosweep")
    listed = subprocess.run([emosweep, "configs"], cwd=elsewhere, capture_output=True, text=True, env=env, timeout=300)
    assert listed.returncode == 0 and "cross-corpus" in listed.stdout and "ravdess-study" in listed.stdout
    assert subprocess.run([emosweep, "copy", "demo"], cwd=elsewhere, env=env, timeout=300).returncode == 0
    edited = subprocess.run([emosweep, "check", "demo.yaml", "seeds=[0,1]"], cwd=elsewhere, capture_output=True,
                            text=True, env=env, timeout=300)
    assert edited.returncode == 0 and "sweep demo (demo.yaml with seeds=[0,1])" in edited.stdout and "= 30" in \
        edited.stdout, edited.stdout[-2000:] + edited.stderr[-2000:]


def readme_commands() -> list[str]:
    lines = (REPO / "README.md").read_text().splitlines()
    return [line.split("  #")[0].strip() for line in lines if line.startswith(".venv/bin/emosweep ")]


@pytest.mark.parametrize("line", [line for line in readme_commands() if line.split()[1] in ("check", "models", "data",
                                                                                           "results", "configs")])
def test_the_readmes_emosweep_commands_run(line):
    """`run`, `doctor` and `report` are the sweep tests' own subject; these read-only ones run as written."""
    from .conftest import shared_data_dir

    if "ravdess.yaml" in line and shared_data_dir() is None:
        pytest.skip("configs/ravdess.yaml reads the real RAVDESS corpus (SER_DATA_DIR)")
    done = subprocess.run([str(EMOSWEEP), *line.split()[1:]], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
