"""Sweep files: parse, fill defaults, validate before any work starts.

A sweep file names a corpus, its folds, the (model, ablation) cells, seeds,
training settings, an optional Optuna search, resources and storage. Any
problem raises SweepError with the file, the field and the fix; the CLI turns
it into exit code 2.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ser_models.cli import did_you_mean

from orchestration.config import schema

from orchestration.store import storage
from typing import NoReturn

TRAIN_DEFAULTS = schema.defaults("train")
RESOURCE_DEFAULTS = schema.defaults("resources")


class SweepError(ValueError):
    pass


@dataclass
class Sweep:
    name: str
    corpus: dict
    folds: str | None
    cells: list[tuple[str, str]]                 # (model, ablation)
    model_options: dict[str, dict]              # model -> fixed options
    seeds: list[int]
    train: dict                                 # the schema's defaults and the sweep file's train section:
                                                # sweep-wide keys (retries); a model's trials use train_of
    search: dict | None
    resources: dict
    storage: str
    cache: str | None = None
    vectors: str = "glove-6b-50d"
    source: str = "<embedded>"
    fold_indices: list[int] | None = None        # subset of folds (default: all)
    train_explicit: dict = field(default_factory=dict)   # only the keys the sweep file sets: they beat recipes
    raw: dict = field(default_factory=dict)
    tracking: dict = field(default_factory=lambda: schema.defaults("tracking"))
    test_corpora: list[dict] = field(default_factory=list)   # cross-corpus test sets
    # name -> member cells, or an automatic ensemble's {method, size, from}: fused at aggregation
    ensembles: dict[str, list[str] | dict] = field(default_factory=dict)
    arguments: list[str] = field(default_factory=list)   # the command line's: "run the same command" repeats them
    encoder: dict | None = None                  # the ssl_* features' checkpoint (schema: encoder.*)

    def train_of(self, model: str, hparams: dict | None = None) -> dict:
        """The training settings of this model's trials (train_for): the driver resolves them once, and a
        trial, the checks and the plan all read these."""
        return train_for(model, self.train_explicit, hparams)

    def select_on(self) -> str:
        """The validation metric every cell's epochs are chosen by (checks.py refuses cells that differ)."""
        return self.train_of(self.cells[0][0])["select_on"]


def _fail(source: str, message: str, fix: str) -> NoReturn:
    """One message, one fix: a message that already carries its own (a corpus's, a registry's) keeps it."""
    raise SweepError(f"{source}: {message}" + ("" if "Fix:" in str(message) else f". Fix: {fix}"))


def absolute_root(corpus: dict) -> dict:
    """Trials chdir into their own directories: relative corpus roots are resolved when the file is read."""
    if corpus.get("root") and "://" not in str(corpus["root"]):
        corpus["root"] = str(Path(os.path.expanduser(str(corpus["root"]))).resolve())
    return corpus


def parse_sweep(data: dict, source: str = "<embedded>") -> Sweep:
    if not isinstance(data, dict):
        _fail(source, "a sweep file must be a YAML mapping", "start from configs/demo.yaml")
    found = schema.problems(data)
    if found:  # every problem at once, each with its dotted key and fix
        raise SweepError("\n".join(f"{source}: {path}: {what}. Fix: {fix}" for path, what, fix in found))
    name = str(data["name"])
    if not name.replace("-", "").replace("_", "").isalnum():
        _fail(source, f"name {name!r} must be letters, digits, - and _", "rename the sweep")
    if len(name) > 100:     # a folder name: filesystems and object stores refuse long ones (Errno 36)
        _fail(source, f"name is {len(name)} characters long", "keep it to 100 or fewer")
    corpus = data["corpus"] if isinstance(data["corpus"], dict) else {"name": data["corpus"]}
    if "name" not in corpus:
        _fail(source, "corpus needs a name (iemocap, ravdess, manifest or synthetic)", "add corpus: {name: ...}")
    corpus = absolute_root(dict(corpus))
    test_corpora = []
    for i, entry in enumerate(data.get("test_corpora") or []):
        entry = {"name": entry} if isinstance(entry, str) else entry
        if not isinstance(entry, dict) or "name" not in entry:
            _fail(source, f"test_corpora[{i}] must be a corpus name or a mapping with a name",
                  "e.g. test_corpora: [{name: ravdess, root: /data/ravdess, classes: \"4\"}]")
        test_corpora.append(absolute_root(dict(entry)))
    cache = data.get("cache")
    cache = storage.normalize(os.path.expanduser(str(cache))) if cache else None
    cells, options = [], {}
    models = data["models"]
    if not isinstance(models, dict) or not models:
        _fail(source, "models must map model names to ablation lists", "e.g. models: {fg_cme: [full, no_excite]}")
    for model, entry in models.items():
        if entry is None:
            ablations = ["full"]
        elif isinstance(entry, list):
            ablations = entry
        elif isinstance(entry, dict):
            ablations = entry.get("ablations", ["full"])
            options[model] = dict(entry.get("options", {}))
        else:
            _fail(source, f"models.{model} must be a list of ablations or a mapping", "e.g. fg_cme: [full]")
        distinct(source, f"models.{model}", [str(ablation) for ablation in ablations],
                 f"list at least one, e.g. {model}: [full] (python -m ser_models list)")
        cells += [(model, str(ablation)) for ablation in ablations]
    train = {**TRAIN_DEFAULTS, **(data.get("train") or {})}
    resources = {**RESOURCE_DEFAULTS, **(data.get("resources") or {})}
    seeds = data.get("seeds", [0])
    seeds = seeds if isinstance(seeds, list) else [seeds]
    bad = [seed for seed in seeds if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32]
    if bad:
        _fail(source, f"seeds must be integers from 0 to 2^32 - 1 (numpy's range), got {bad}", "e.g. seeds: [0, 1, 2]")
    distinct(source, "seeds", seeds, "e.g. seeds: [0, 1, 2]")
    if data.get("fold_indices") is not None:
        distinct(source, "fold_indices", list(data["fold_indices"]), "e.g. fold_indices: [0, 1], or drop it for "
                 "every fold")
    search = {**schema.defaults("search"), **data["search"]} if data.get("search") else None
    ensembles = parse_ensembles(source, data.get("ensembles") or {}, cells, search)
    return Sweep(name=name, corpus=corpus, folds=data.get("folds"), cells=cells, model_options=options,
                 seeds=[int(s) for s in seeds], train=train, search=search, resources=resources,
                 storage=str(data.get("storage", "results")), cache=cache,
                 vectors=str(data.get("vectors", "glove-6b-50d")), source=source,
                 fold_indices=data.get("fold_indices"), raw=copy.deepcopy(data),
                 train_explicit=dict(data.get("train") or {}),
                 tracking={**schema.defaults("tracking"), **(data.get("tracking") or {})},
                 test_corpora=test_corpora, ensembles=ensembles,
                 encoder={**schema.defaults("encoder"), **data["encoder"]} if data.get("encoder") else None)


def distinct(source: str, key: str, values: list, example: str) -> None:
    """A list that makes trials: empty would plan none, and a repeat would plan a trial that never runs."""
    if not values:
        _fail(source, f"{key} is empty: it would plan no trial", example)
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        _fail(source, f"{key} lists {repeated} more than once (one trial each, however often listed)",
              f"list each once: {sorted(dict.fromkeys(map(str, values)))}")


# an automatic ensemble's methods, each with its default size: greedy's rounds, top_k's k
AUTO_METHODS = {"greedy": 20, "top_k": 3}


def parse_ensembles(source: str, ensembles: dict, cells: list[tuple[str, str]],
                    search: dict | None) -> dict[str, list[str] | dict]:
    """Every member is a cell of this sweep; a declared ensemble has two or more, and its name is no model's.
    An automatic one ({method: ...}) is checked by parse_auto."""

    names = {f"{model}/{ablation}" for model, ablation in cells}
    parsed: dict[str, list[str] | dict] = {}
    for name, members in ensembles.items():
        where = f"ensembles.{name}"
        if search is not None:
            _fail(source, f"{where}: ensembles fuse fixed settings, and this sweep searches them",
                  "drop ensembles, or drop search and fix the settings")
        if name in {model for model, _ in cells}:
            _fail(source, f"{where}: the name is a model's", "name the ensemble apart, e.g. fg_cme+egemaps")
        if isinstance(members, dict):
            parsed[str(name)] = parse_auto(source, where, members, names)
            continue
        if not isinstance(members, list) or len({parse_member(m) for m in members}) < 2:
            _fail(source, f"{where} must list two or more different cells", "e.g. [fg_cme/full, egemaps_svm/full]")
        for member in members:
            if "/".join(parse_member(member)) not in names:
                _fail(source, f"{where}: {member!r} is not a cell of this sweep"
                      f"{did_you_mean('/'.join(parse_member(member)), names)}",
                      f"use one of {sorted(names)} (model/ablation, as in models:)")
        parsed[str(name)] = [str(m) for m in members]
    return parsed


def parse_auto(source: str, where: str, spec: dict, names: set[str]) -> dict:
    """{method: greedy | top_k, size: rounds or k, from: [cells] (default: every cell)}, checked and filled."""
    unknown = set(spec) - {"method", "size", "from"}
    if unknown:
        key = sorted(unknown)[0]
        _fail(source, f"{where}: unknown key {key!r}{did_you_mean(key, ['method', 'size', 'from'])}",
              "an automatic ensemble takes method (greedy or top_k), size and from")
    method = spec.get("method", "greedy")
    if method not in AUTO_METHODS:
        _fail(source, f"{where}.method: {method!r} is not one of {sorted(AUTO_METHODS)}"
              f"{did_you_mean(str(method), list(AUTO_METHODS))}", "greedy: forward selection with replacement "
              "(Caruana et al., 2004); top_k: the k best cells on validation, equal weights")
    size = spec.get("size", AUTO_METHODS[method])
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        _fail(source, f"{where}.size must be a whole number >= 1, got {size!r}", "e.g. size: 20 (greedy's rounds) "
              "or 3 (top_k's k)")
    pool = [str(m) for m in spec.get("from") or sorted(names)]
    for member in pool:
        if "/".join(parse_member(member)) not in names:
            _fail(source, f"{where}.from: {member!r} is not a cell of this sweep"
                  f"{did_you_mean('/'.join(parse_member(member)), names)}", f"use cells of {sorted(names)}")
    if len({parse_member(m) for m in pool}) < 2:
        _fail(source, f"{where} chooses among {len(pool)} cell(s); it needs two or more", "add cells, or drop it")
    return {"method": method, "size": size, "from": ["/".join(parse_member(m)) for m in pool]}


class UniqueKeys(yaml.SafeLoader):
    """yaml.safe_load, except that a key given twice in one mapping is an error: PyYAML keeps the last one
    silently (two `train:` blocks lost the first's lr and batch size)."""


def _unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in seen and key != "<<":
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} on lines {seen[key]} and {line} (the second would silently "
                f"replace the first)", key_node.start_mark)
        seen[key] = line
    return loader.construct_mapping(node, deep)


UniqueKeys.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


SHIPPED = Path(__file__).resolve().parents[1] / "configs"     # package data: ships in the wheel
DEMO = SHIPPED / "demo.yaml"


SWEEP_HELP = "sweep YAML, or a shipped one by name (emosweep configs); default: the embedded demo"
OVERRIDES_HELP = ("set sweep keys as a file edit would: dotted key, YAML value (train.epochs=2 seeds=[0,1] "
                  "models.fg_cme=[full])")


def shipped_configs() -> dict[str, Path]:
    """The sweep files that ship with emosweep, by name (the file name without .yaml)."""
    return {path.stem: path for path in sorted(SHIPPED.glob("*.yaml"), key=lambda path: path.stem)}


def describe(path: Path, width: int = 100) -> str:
    """A shipped file's opening comment, to its first sentence's end: what it runs."""
    words = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        words += line.lstrip("# ").split()
    text = " ".join(words)
    text = text[:text.index(". ") + 1] if ". " in text else text
    return text if len(text) <= width else text[:text.rindex(" ", 0, width - 3)] + " ..."


def find_sweep_file(given: str | Path) -> Path:
    """A path as given, else a shipped sweep file by name (`ravdess`, `ravdess.yaml`, `configs/ravdess.yaml`)."""
    path = Path(given)
    if path.exists():
        return path
    shipped = shipped_configs()
    name = path.stem if path.suffix in (".yaml", ".yml") else path.name
    if name in shipped and len(path.parts) <= 2 and (len(path.parts) == 1 or path.parts[0] == "configs"):
        return shipped[name]
    raise SweepError(f"{path}: sweep file not found{did_you_mean(name, shipped)}. Fix: give the path of a "
                     f"YAML sweep file, or a shipped one by name: {', '.join(shipped)} (emosweep configs lists them, "
                     f"emosweep copy NAME writes one here to edit)")


def split_overrides(given: str | None, overrides: list[str]) -> tuple[str, list[str]]:
    """`emosweep run train.epochs=2` means the demo with an override: a first argument with '=' that is no file."""
    if given is not None and "=" in given and not Path(given).exists():
        return str(DEMO), [given, *overrides]
    return str(DEMO) if given is None else given, list(overrides)


def apply_overrides(data: dict, overrides: list[str], source: str) -> dict:
    """KEY=VALUE with a dotted key and a YAML value, as a file edit would set it (the schema then checks it)."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip() or any(not part for part in key.split(".")):
            raise SweepError(f"{item!r}: an override is KEY=VALUE with a dotted key. Fix: e.g. train.epochs=2, "
                             f"seeds=[0,1] or models.fg_cme=[full]")
        try:
            value = yaml.load(text, Loader=UniqueKeys) if text.strip() else None
        except yaml.YAMLError as err:
            raise SweepError(f"{item!r}: the value is not valid YAML ({getattr(err, 'problem', None) or err}). Fix: "
                             f"quote it for the shell, "
                             f"e.g. '{key}=[0, 1]'") from None
        node, parts = data, key.strip().split(".")
        for depth, part in enumerate(parts[:-1]):
            if node.get(part) is None:
                node[part] = {}
            elif isinstance(node[part], str) and part == "corpus":   # corpus: ravdess is corpus: {name: ravdess}
                node[part] = {"name": node[part]}
            elif not isinstance(node[part], dict):
                where = ".".join(parts[:depth + 1])
                raise SweepError(f"{item!r}: {where} is {node[part]!r} in {source}, not a mapping. Fix: set "
                                 f"{where} whole, e.g. {where}=...")
            node = node[part]
        node[parts[-1]] = value
    return data


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> Sweep:
    path = find_sweep_file(path)
    if path.is_dir():
        raise SweepError(f"{path}: a folder, not a sweep file. Fix: give a YAML file, e.g. {path}/<name>.yaml")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeys)
    except UnicodeDecodeError:
        raise SweepError(f"{path}: not UTF-8 text (a binary file?). Fix: give the YAML sweep file") from None
    except yaml.constructor.ConstructorError as err:
        raise SweepError(f"{path}: {err.problem}. Fix: keep one of them (merge their keys)") from None
    except yaml.YAMLError as err:
        raise SweepError(f"{path}: not valid YAML ({err}). Fix: check indentation and quoting") from None
    if isinstance(data, dict) and path.resolve().parent != SHIPPED.resolve():
        data = anchored(data, path.resolve().parent)
    if overrides:
        if not isinstance(data, dict):
            _fail(str(path), "a sweep file must be a YAML mapping", "start from configs/demo.yaml")
        return parse_sweep(apply_overrides(data, overrides, str(path)), f"{path} with {' '.join(overrides)}")
    return parse_sweep(data, str(path))


def anchored(data: dict, folder: Path) -> dict:
    """The file's relative paths (corpus and test corpora roots, storage, cache, a vectors file, a local
    encoder folder) joined to the file's folder, so a sweep file means the same wherever the command runs.
    Shipped files are templates run from a checkout (their paths are the working folder's), and command-line
    overrides are typed where the command runs: neither is anchored."""
    data = copy.deepcopy(data)

    def join(value: object) -> object:
        if not isinstance(value, str) or not value or "://" in value or value.startswith("~") \
                or os.path.isabs(value):
            return value
        return str(folder / value)

    for entry in [data.get("corpus"), *(data.get("test_corpora") or [])]:
        if isinstance(entry, dict) and "root" in entry:
            entry["root"] = join(entry["root"])
    for key in ("storage", "cache"):
        if key in data:
            data[key] = join(data[key])
    if isinstance(data.get("vectors"), str) and ("/" in data["vectors"] or os.sep in data["vectors"]):
        data["vectors"] = join(data["vectors"])
    encoder = data.get("encoder")
    if isinstance(encoder, dict) and str(encoder.get("model", "")).startswith(("./", "../")):
        encoder["model"] = join(encoder["model"])
    return data


def train_for(model: str, explicit: dict, hparams: dict | None = None) -> dict:
    """The one resolution of a trial's training settings: the schema's defaults, the model's recipe from the
    registry, what the sweep file sets, then the trial's searched hyperparameters of the same name."""
    from ser_models.registry import get_spec

    settings = {**TRAIN_DEFAULTS, **get_spec(model).recipe, **explicit}
    return settings | {k: v for k, v in (hparams or {}).items() if k in settings}


def parse_member(text: str) -> tuple[str, str]:
    """'model/ablation' -> (model, ablation); a bare model name means its full variant."""
    model, _, ablation = str(text).partition("/")
    return model, ablation or "full"
