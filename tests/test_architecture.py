"""The house rules of docs/architecture.md, checked on the code: rooms import one way, no circles, small
modules, and each thing a researcher adds (a model, a corpus, a sweep key, a metric) is one file's change."""
import ast
import subprocess
import sys
import textwrap
from pathlib import Path


from .conftest import REPO

PACKAGE = REPO / "orchestration"
# what each room may import besides itself; the top (cli.py, sweep.py, doctor.py) may import any room
ROOMS = {"store": set(), "config": {"store"}, "run": {"store", "config"}, "results": {"store", "config"}}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every orchestration module a file imports, lazy imports inside functions included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:   # within ser_models; orchestration names rooms
            assert not path.is_relative_to(PACKAGE), f"{path}: a relative import (rooms are named in full)"
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("orchestration"):
                names = [f"{node.module}.{alias.name}" for alias in node.names]
                found |= {name for name in names if (REPO / (name.replace(".", "/") + ".py")).exists()} \
                    or {node.module}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("orchestration")}
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(path): imports(path) for path in PACKAGE.rglob("*.py")}


def room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 else None


def test_rooms_import_one_way_and_run_never_imports_results():
    wrong = [(module, target) for module, targets in graph().items() for target in targets
             if room(module) and room(target) and room(target) != room(module)
             and room(target) not in ROOMS[room(module)]]
    assert wrong == []
    assert set(filter(None, map(room, graph()))) == set(ROOMS)


def test_no_module_is_part_of_an_import_circle():
    edges = graph()
    circles = []
    for start in edges:
        stack, seen = [(start, [start])], set()
        while stack:
            module, path = stack.pop()
            for target in edges.get(module, ()):
                if target == start:
                    circles.append(path + [start])
                elif target not in seen and target in edges:
                    seen.add(target)
                    stack.append((target, path + [target]))
    assert circles == []


def test_ser_models_never_imports_orchestration():
    users = [path for path in (REPO / "ser_models").rglob("*.py") if imports(path)]
    assert users == []


def test_modules_stay_small():
    sizes = {module_name(path): len(path.read_text().splitlines()) for path in PACKAGE.rglob("*.py")}
    assert {name: size for name, size in sizes.items() if size > 450} == {}
    assert sizes["orchestration.sweep"] < 300


def run_python(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)


def write_mean_model(folder: Path, name: str, feature: str, dims: int, recipe: dict | None = None) -> None:
    """One model file, as a contributor would add it: a linear layer on a feature's mean over frames."""
    folder.mkdir()
    (folder / f"{name}.py").write_text(textwrap.dedent(f'''
        import torch
        from ser_models.registry import ModelSpec, SERModel, register

        class MeanLinear(SERModel):
            def __init__(self, config):
                super().__init__()
                self.head = torch.nn.Linear({dims}, config["num_classes"])

            def forward(self, batch):
                return self.head(batch["{feature}"].mean(1))

        register(ModelSpec("{name}", "none", "mean {feature} + linear", MeanLinear, lambda config: ("{feature}",),
                           recipe={recipe or {}!r}))
    '''))


def test_a_model_is_one_new_file(tmp_path):
    """A file dropped into the models package registers itself; the sweep loader, its checks and the
    training settings pick it up with no other change."""
    write_mean_model(tmp_path / "extra", "tiny_mean", "fbank40", 40, recipe={"lr": 0.01})
    done = run_python(f'''
        import ser_models.models as models
        models.__path__.append({str(tmp_path / "extra")!r})
        from orchestration.config.checks import validate
        from orchestration.config.sweep_file import parse_sweep
        sweep = parse_sweep({{"name": "t", "corpus": "synthetic", "models": {{"tiny_mean": ["full"]}}}}, "t.yaml")
        validate(sweep)
        print(sweep.train_of("tiny_mean")["lr"])
    ''', tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0.01"]


def test_a_corpus_is_one_new_file(tmp_path):
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "tiny_corpus.py").write_text(textwrap.dedent('''
        from ser_models.data.corpus import register
        from ser_models.data.corpora.synthetic import Synthetic

        @register
        class TinyCorpus(Synthetic):
            name = "tiny_corpus"
    '''))
    done = run_python(f'''
        import ser_models.data.corpora as corpora
        from ser_models.data.corpus import discover, get_kind
        corpora.__path__.append({str(tmp_path / "extra")!r})
        discover.cache_clear()
        from orchestration.config.checks import validate
        from orchestration.config.sweep_file import parse_sweep
        sweep = parse_sweep({{"name": "t", "corpus": "tiny_corpus", "models": {{"lstm_attn_audio": ["full"]}}}},
                            "t.yaml")
        validate(sweep)
        print(type(get_kind("tiny_corpus")).__name__)
    ''', tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["TinyCorpus"]


def edited_copy(tmp_path: Path, file: str, *edits: tuple[str, str]) -> Path:
    """orchestration/ and ser_models/ copied, with edits in one file: what a contributor's change would be."""
    import shutil

    for package in ("orchestration", "ser_models"):
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    path = tmp_path / file
    text = path.read_text()
    for old, new in edits:
        assert text.count(old) == 1
        text = text.replace(old, new)
    path.write_text(text)
    return tmp_path


def test_a_sweep_key_is_one_entry_in_the_schema(tmp_path):
    """Its default, type check, did-you-mean, docs and its part in the sweep's identity follow the entry."""
    anchor = '    Key("train.clip_norm",'
    checkout = edited_copy(tmp_path, "orchestration/config/schema.py",
                           (anchor, '    Key("train.warmup_epochs", (int,), 0, "epochs of linear warm-up", minimum=0, '
                                    'maximum=100),\n' + anchor))
    done = run_python('''
        import orchestration
        from orchestration.config import schema
        from orchestration.config.record import settings_digest
        from orchestration.config.sweep_file import SweepError, parse_sweep
        import os
        assert os.path.abspath(orchestration.__file__).startswith(os.getcwd()), orchestration.__file__
        base = {"name": "t", "corpus": "synthetic", "models": {"lstm_attn_audio": ["full"]}}
        warm = parse_sweep({**base, "train": {"warmup_epochs": 3}}, "t.yaml")
        print(warm.train_of("lstm_attn_audio")["warmup_epochs"])
        print(parse_sweep(base, "t.yaml").train_of("lstm_attn_audio")["warmup_epochs"])
        try:
            parse_sweep({**base, "train": {"warmup_epoch": 3}}, "t.yaml")
        except SweepError as err:
            print("did-you-mean" if "did you mean 'warmup_epochs'" in str(err) else str(err))
        print("docs" if "`train.warmup_epochs`" in schema.reference_markdown() else "no docs")
        print(settings_digest({**base, "train": {"warmup_epochs": 3}}) != settings_digest(base))
    ''', checkout)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["3", "0", "did-you-mean", "docs", "True"]


def test_a_metric_is_one_entry_in_ser_models_metrics(tmp_path):
    """A score added to metrics.py reaches the tables' columns, the summary's and the trackers' keys."""
    checkout = edited_copy(tmp_path, "ser_models/metrics.py",
                           ('SCORES = ("wa", "ua", "macro_f1")', 'SCORES = ("wa", "ua", "macro_f1", "kappa")'))
    done = run_python('''
        from orchestration.results.schemas import EPOCHS, FOLDS, SUMMARY
        from orchestration.results.tracking import EPOCH_KEYS
        print(*[name for name in FOLDS.names + SUMMARY.names + EPOCHS.names if "kappa" in name],
              *[key for key in EPOCH_KEYS if "kappa" in key])
    ''', checkout)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["val_kappa", "test_kappa", "test_kappa_mean", "test_kappa_std", "val_kappa_mean",
                                   "val_kappa_std", "val_kappa", "oracle_test_kappa", "val_kappa",
                                   "oracle_test_kappa"]


def test_a_feature_is_one_file_its_extractor_and_its_meaning(tmp_path):
    """Added in features.py alone, a feature is a model input the registry lists, the checks accept for a
    model that names it, and the feature cache extracts (it is not one of the transcript's inputs)."""
    checkout = edited_copy(tmp_path, "ser_models/data/features.py",
                           ('    "fbank40": KaldiFbank(),\n',
                            '    "fbank40": KaldiFbank(),\n    "fbank80": KaldiFbank(80),\n'),
                           ('MEANINGS = {\n', 'MEANINGS = {\n    "fbank80": "Kaldi log fbank, 80 bins, 25/10 ms",\n'))
    write_mean_model(checkout / "extra", "fbank80_mean", "fbank80", 80)
    done = run_python('''
        import numpy as np
        import ser_models.models as models
        models.__path__.append("extra")
        from ser_models.data.features import get_extractor
        from ser_models.registry import INPUTS
        from orchestration.config.checks import validate
        from orchestration.config.sweep_file import parse_sweep
        from orchestration.run.task import features_for
        validate(parse_sweep({"name": "t", "corpus": "synthetic", "models": {"fbank80_mean": ["full"]}}, "t.yaml"))
        frames = get_extractor("fbank80")(np.zeros(16000, np.float32))
        print(INPUTS["fbank80"] == "Kaldi log fbank, 80 bins, 25/10 ms", features_for(("fbank80",)), frames.shape[1])
    ''', checkout)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "['fbank80']", "80"]

