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

SELECT_ON = ("val_ua", "val_wa", "val_macro_f1", "val_loss")
TRAIN_DEFAULTS = {"epochs": 20, "batch_size": 32, "lr": 1e-3, "weight_decay": 0.0, "select_on": "val_ua",
                  "retries": 2, "num_workers": 0, "test_oracle": False, "precision": "auto"}
# auto: bf16 autocast on a GPU that supports it, fp32 elsewhere (so CPU results never change)
PRECISIONS = ("auto", "fp32", "bf16")
RESOURCE_DEFAULTS = {"mode": "inprocess", "workers_per_trial": 1, "cpus_per_worker": 1, "gpus_per_worker": 0.0,
                     "max_concurrent_trials": None,
                     # how long a sweep may wait with no trial training (autoscaler adding nodes, busy cluster)
                     "wait_timeout_s": 3600}


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
    train: dict
    search: dict | None
    resources: dict
    storage: str
    cache: str | None = None
    vectors: str = "glove-6b-50d"
    source: str = "<embedded>"
    fold_indices: list[int] | None = None        # subset of folds (default: all)
    raw: dict = field(default_factory=dict)


def _fail(source, message, fix):
    raise SweepError(f"{source}: {message}. Fix: {fix}")


def parse_sweep(data: dict, source: str = "<embedded>") -> Sweep:
    if not isinstance(data, dict):
        _fail(source, "a sweep file must be a YAML mapping", "start from configs/demo.yaml")
    known = {"name", "corpus", "folds", "models", "seeds", "train", "search", "resources", "storage", "cache",
             "vectors", "fold_indices"}
    unknown = sorted(set(data) - known)
    if unknown:
        _fail(source, f"unknown key(s) {unknown}", f"use only {sorted(known)}")
    for key in ("name", "corpus", "models"):
        if key not in data:
            _fail(source, f"missing '{key}'", "see configs/demo.yaml for a complete example")
    name = str(data["name"])
    if not name.replace("-", "").replace("_", "").isalnum():
        _fail(source, f"name {name!r} must be letters, digits, - and _", "rename the sweep")
    corpus = data["corpus"] if isinstance(data["corpus"], dict) else {"name": data["corpus"]}
    if "name" not in corpus:
        _fail(source, "corpus needs a name (iemocap, ravdess, manifest or synthetic)", "add corpus: {name: ...}")
    corpus = dict(corpus)
    if corpus.get("root") and "://" not in str(corpus["root"]):
        # trials chdir into their own directories: resolve relative paths now
        corpus["root"] = str(Path(os.path.expanduser(str(corpus["root"]))).resolve())
    cache = data.get("cache")
    cache = str(Path(os.path.expanduser(str(cache))).resolve()) if cache else None
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
        cells += [(model, str(ablation)) for ablation in ablations]
    train = {**TRAIN_DEFAULTS, **(data.get("train") or {})}
    resources = {**RESOURCE_DEFAULTS, **(data.get("resources") or {})}
    seeds = data.get("seeds", [0])
    seeds = seeds if isinstance(seeds, list) else [seeds]
    bad = [seed for seed in seeds if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0]
    if bad:
        _fail(source, f"seeds must be non-negative integers, got {bad}", "e.g. seeds: [0, 1, 2]")
    search = data.get("search")
    return Sweep(name=name, corpus=corpus, folds=data.get("folds"), cells=cells, model_options=options,
                 seeds=[int(s) for s in seeds], train=train, search=search, resources=resources,
                 storage=str(data.get("storage", "results")), cache=cache,
                 vectors=str(data.get("vectors", "glove-6b-50d")), source=source,
                 fold_indices=data.get("fold_indices"), raw=copy.deepcopy(data))


def load_sweep(path: str | Path) -> Sweep:
    path = Path(path)
    if not path.exists():
        raise SweepError(f"{path}: sweep file not found. Fix: give the path of a YAML sweep file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SweepError(f"{path}: not valid YAML ({err}). Fix: check indentation and quoting") from None
    return parse_sweep(data, str(path))


def validate(sweep: Sweep, corpus=None, cluster: list | None = None) -> None:
    """Everything that can be checked before training; raises SweepError.

    Call it first without a corpus (names, settings, paths), then with the
    loaded corpus (inputs it must provide) and the Ray cluster's nodes and
    autoscaler node types (orchestration.capacity.NodeShape).
    """
    from ser_models.registry import IncompatibleInputs, all_models, check_corpus_supports

    src, models = sweep.source, all_models()
    for model, ablation in sweep.cells:
        if model not in models:
            _fail(src, f"unknown model {model!r}", f"use one of {sorted(models)} (python -m ser_models list)")
        if ablation not in models[model].ablations:
            _fail(src, f"model {model!r} has no ablation {ablation!r}", f"use one of {sorted(models[model].ablations)}")
        try:
            models[model].config(ablation, **sweep.model_options.get(model, {}))
        except KeyError as err:
            _fail(src, f"models.{model}.options: {err.args[0]}", "remove or rename the option")
        if corpus is not None:
            try:
                check_corpus_supports(model, ablation, corpus)
            except IncompatibleInputs as err:
                _fail(src, str(err), "drop that cell from the sweep")
    if corpus is not None:
        try:
            folds = corpus.folds(sweep.folds)
        except ValueError as err:
            _fail(src, f"folds {sweep.folds!r}: {err}", "pick a strategy the corpus supports, with at most as many "
                  "folds as it has speakers (docs/corpora.md)")
        if sweep.fold_indices is not None and any(not 0 <= f < len(folds) for f in sweep.fold_indices):
            _fail(src, f"fold_indices {sweep.fold_indices} outside 0..{len(folds) - 1}", "correct fold_indices")
    train = sweep.train
    if train["select_on"] not in SELECT_ON:
        _fail(src, f"train.select_on {train['select_on']!r} is not a validation metric",
              f"use one of {SELECT_ON} (model selection never uses the test fold)")
    if train["precision"] not in PRECISIONS:
        _fail(src, f"train.precision {train['precision']!r}", f"use one of {PRECISIONS}")
    for key in ("epochs", "batch_size"):
        if not isinstance(train[key], int) or train[key] < 1:
            _fail(src, f"train.{key} must be a positive integer, got {train[key]!r}", f"set train.{key}: 20")
    res = sweep.resources
    if res["mode"] not in ("inprocess", "ddp"):
        _fail(src, f"resources.mode {res['mode']!r}", "use inprocess (laptops, tests) or ddp (Ray Train)")
    if not isinstance(res["workers_per_trial"], int) or res["workers_per_trial"] < 1:
        _fail(src, f"resources.workers_per_trial must be >= 1, got {res['workers_per_trial']!r}", "set it to 1 or more")
    gpus = float(res["gpus_per_worker"])
    if gpus < 0 or (gpus > 1 and gpus != int(gpus)):
        _fail(src, f"resources.gpus_per_worker {gpus} is invalid", "use a fraction <= 1 or a whole number")
    if res["mode"] == "ddp" and res["workers_per_trial"] > 1 and 0 < gpus < 1:
        _fail(src, "two DDP workers of one trial would share one GPU (NCCL rejects duplicate GPUs)",
              "use gpus_per_worker: 1 with DDP, or workers_per_trial: 1 with fractional GPUs")
    if res["mode"] == "ddp" and train["batch_size"] % res["workers_per_trial"]:
        _fail(src, f"train.batch_size {train['batch_size']} is the global batch and must split evenly over "
              f"{res['workers_per_trial']} DDP workers", "make train.batch_size a multiple of workers_per_trial")
    if not isinstance(res["wait_timeout_s"], (int, float)) or res["wait_timeout_s"] <= 0:
        _fail(src, f"resources.wait_timeout_s must be a positive number of seconds, got {res['wait_timeout_s']!r}",
              "set resources.wait_timeout_s: 3600")
    if float(res["cpus_per_worker"]) <= 0:
        _fail(src, "resources.cpus_per_worker must be > 0", "set it to 1")
    if cluster is not None:
        _validate_cluster(sweep, cluster)
    if sweep.search is not None:
        _validate_search(sweep)
    root = sweep.corpus.get("root")
    if sweep.corpus["name"] != "synthetic" and not root:
        _fail(src, f"corpus {sweep.corpus['name']!r} needs a root", "add corpus.root: /path/to/corpus")
    if root and not os.path.exists(os.path.expanduser(str(root))):
        _fail(src, f"corpus root {root} does not exist", "correct corpus.root (absolute paths are safest)")


def _validate_cluster(sweep: Sweep, shapes: list) -> None:
    from .capacity import never_fits

    res = sweep.resources
    if res["mode"] == "ddp" and not any(shape.resources.get("TRAIN_DRIVER") for shape in shapes):
        _fail(sweep.source, "resources.mode ddp needs the custom resource TRAIN_DRIVER (its trial drivers hold it "
              "instead of a CPU), and this Ray cluster has none, so no trial could ever start",
              "start the head with ray start --head --resources='{\"TRAIN_DRIVER\": 64}' (cluster.yaml does), "
              "or use resources.mode: inprocess")
    reason = never_fits(res, shapes)
    if reason:
        _fail(sweep.source, reason, "lower resources.cpus_per_worker, gpus_per_worker or workers_per_trial, or add "
              "a node type that holds a trial's worker (cluster.yaml's available_node_types)")


def _validate_search(sweep: Sweep) -> None:
    from .spaces import parse_space

    search = sweep.search
    if not isinstance(search, dict) or "space" not in search:
        _fail(sweep.source, "search needs a space", "e.g. search: {samples: 8, space: {lr: [1.0e-4, 1.0e-2, log]}}")
    if search.get("sampler", "tpe") not in ("tpe", "random"):
        _fail(sweep.source, f"search.sampler {search.get('sampler')!r}", "use tpe or random")
    if int(search.get("samples", 0)) < 1:
        _fail(sweep.source, "search.samples must be >= 1", "set search.samples: 8")
    try:
        parse_space(search["space"])
    except ValueError as err:
        _fail(sweep.source, f"search.space: {err}", "see the README's search example")
