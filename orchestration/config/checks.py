"""Everything about a sweep that can be checked before training: models and ablations, the corpus's inputs,
train and resource settings, extras, the encoder, the search space and the cluster's nodes. Each problem
raises SweepError with the file, the key and the fix."""
from __future__ import annotations

import os
from pathlib import Path

from ser_models.cli import did_you_mean
from ser_models.data.corpus import CorpusError, get_kind

from orchestration.config.sweep_file import TRAIN_DEFAULTS, Sweep, SweepError, _fail
from orchestration.store import storage

from typing import TYPE_CHECKING

if TYPE_CHECKING:   # annotations only
    from ser_models.data.corpus import Corpus


def validate(sweep: Sweep, corpus: Corpus | None = None, cluster: list | None = None) -> None:
    """Everything that can be checked before training; raises SweepError.

    Call it first without a corpus (names, settings, paths), then with the
    loaded corpus (inputs it must provide) and the Ray cluster's nodes and
    autoscaler node types (orchestration.config.capacity.NodeShape).
    """
    from ser_models.registry import IncompatibleInputs, all_models, check_corpus_supports

    src, models = sweep.source, all_models()
    for model, ablation in sweep.cells:
        if model not in models:
            _fail(src, f"unknown model {model!r}", f"use one of {sorted(models)} (python -m ser_models list)")
        if models[model].ablation(ablation) is None:
            _fail(src, f"model {model!r} has no ablation {ablation!r}", f"use one of {models[model].ablation_names}")
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
    res = sweep.resources
    gpus = float(res["gpus_per_worker"])
    if gpus < 0 or (gpus > 1 and gpus != int(gpus)):
        _fail(src, f"resources.gpus_per_worker {gpus} is invalid", "use a fraction <= 1 or a whole number")
    if res["mode"] == "ddp" and res["workers_per_trial"] > 1 and 0 < gpus < 1:
        _fail(src, "two DDP workers of one trial would share one GPU (NCCL rejects duplicate GPUs)",
              "use gpus_per_worker: 1 with DDP, or workers_per_trial: 1 with fractional GPUs")
    settings = {model: sweep.train_of(model) for model, _ in sweep.cells}
    for model, train in settings.items():
        _validate_train(src, model, train, res)
        skewed = train["skewed_test_class"]
        if skewed and corpus is not None and skewed not in corpus.classes:
            _fail(src, f"train.skewed_test_class: {skewed!r} is not one of the task's classes {corpus.classes}"
                  f"{did_you_mean(skewed, corpus.classes)}", "name one of them")
    chosen_by = {model: train["select_on"] for model, train in settings.items()}
    if len(set(chosen_by.values())) > 1:   # one experiment, one direction: Tune's searcher and the resume agree
        _fail(src, f"the cells' recipes choose epochs by different metrics ({chosen_by})",
              "set train.select_on in the sweep file: it applies to every cell")
    _validate_extras(sweep)
    if sweep.cache and not storage.is_remote(sweep.cache) and Path(sweep.cache).exists() \
            and not Path(sweep.cache).is_dir():
        _fail(src, f"cache {sweep.cache} is a file, not a folder", "point cache at a folder (or drop it for "
              "~/.cache/emosweep/features)")
    if float(res["cpus_per_worker"]) <= 0:
        _fail(src, "resources.cpus_per_worker must be > 0", "set it to 1")
    if sweep.tracking["tensorboard"] or sweep.tracking["mlflow"]:
        from orchestration.config.trackers import problems

        for what, fix in problems(sweep.tracking, sweep.storage):
            _fail(src, what, fix)
    if cluster is not None:
        _validate_cluster(sweep, cluster)
    if sweep.search is not None:
        _validate_search(sweep)
    for where, entry in [("corpus", sweep.corpus)] + [(f"test_corpora[{i}]", c) for i, c in
                                                      enumerate(sweep.test_corpora)]:
        _validate_corpus_entry(src, where, entry)


def _validate_corpus_entry(src: str, where: str, entry: dict) -> None:
    root = entry.get("root")
    try:
        kind = get_kind(entry["name"])
    except CorpusError as err:
        raise SweepError(f"{src}: {where}: {err}") from None
    if kind.needs_root and not root:
        _fail(src, f"{where}: corpus {kind.name!r} needs a root", f"add {where}.root: /path/to/corpus")
    if root and not os.path.exists(os.path.expanduser(str(root))):
        _fail(src, f"{where}: corpus root {root} does not exist", f"correct {where}.root (absolute paths are safest)")


def _validate_extras(sweep: Sweep) -> None:
    """A model whose feature needs an optional package that is not installed is refused before any work."""
    from ser_models.data.features import missing_extra
    from ser_models.data.text import vectors_problem
    from ser_models.registry import model_inputs

    _validate_encoder(sweep)
    for model, ablation in sweep.cells:
        for name in model_inputs(model, ablation):
            fix = missing_extra(name)
            if fix:
                _fail(sweep.source, f"{model}/{ablation} reads the {name!r} feature, whose package is not installed "
                      "here", f"{fix} (on every node of a cluster)")
    readers = [f"{model}/{ablation}" for model, ablation in sweep.cells if "words" in model_inputs(model, ablation)]
    problem = vectors_problem(sweep.vectors) if readers else None
    if problem:
        _fail(sweep.source, f"vectors: {problem[0]}, and {readers[0]} reads words through them", problem[1])


def _validate_encoder(sweep: Sweep) -> None:
    """An ssl_* model needs the encoder: section, the section needs a reader, and its checkpoint must load here."""
    from ser_models.data.encoders import EncoderError, encoder_features
    from ser_models.data.features import CONFIGURED
    from ser_models.registry import get_spec, model_inputs

    reads = {f"{model}/{ablation}": set(model_inputs(model, ablation)) & set(CONFIGURED)
             for model, ablation in sweep.cells}
    live = [f"{model}/{ablation}" for model, ablation in sweep.cells if "encoder" in get_spec(model).defaults]
    readers = [cell for cell, names in reads.items() if names] + live
    frame_readers = [cell for cell, names in reads.items() if "ssl_frames" in names]
    if live and not sweep.encoder:
        _fail(sweep.source, f"{live[0]} fine-tunes the encoder: section's checkpoint, and there is none",
              "add encoder: {model: <a checkpoint folder or hub id>}, e.g. model: microsoft/wavlm-base-plus")
    if readers and not sweep.encoder:
        _fail(sweep.source, f"{readers[0]} reads the {sorted(reads[readers[0]])[0]} feature, which the encoder: "
              "section sets up", "add encoder: {model: <a checkpoint folder or hub id>}, e.g. model: "
              "microsoft/wavlm-base-plus")
    if sweep.encoder and not readers:
        _fail(sweep.source, "encoder: is set but no model reads its layers", "add an ssl_* model (emosweep models), "
              "or drop the encoder: section")
    if not sweep.encoder:
        return
    frame_layers = sweep.encoder.get("frame_layers")
    if frame_readers and not frame_layers:
        _fail(sweep.source, f"{frame_readers[0]} reads ssl_frames, the frame-level outputs of the layers that "
              "encoder.frame_layers names, and it names none", "add encoder.frame_layers, e.g. [6, 12] (0 is the "
              "CNN or embedding output)")
    if frame_layers and not frame_readers:
        _fail(sweep.source, "encoder.frame_layers is set but no model reads ssl_frames", "add ssl_asp (it pools "
              "those layers' frames), or drop encoder.frame_layers")
    if frame_layers and not all(isinstance(layer, int) and not isinstance(layer, bool) for layer in frame_layers):
        _fail(sweep.source, f"encoder.frame_layers must be layer numbers, got {frame_layers}", "e.g. [6, 12]")
    try:
        layers = encoder_features(**sweep.encoder)["ssl_layers"].shape[0]
    except EncoderError as err:
        _fail(sweep.source, str(err), "")
    for model, ablation in sweep.cells:
        options = get_spec(model).config(ablation, **sweep.model_options.get(model, {}))
        layer, unfrozen = options.get("layer"), options.get("unfrozen_layers")
        if isinstance(unfrozen, int) and not 0 <= unfrozen < layers:
            _fail(sweep.source, f"models.{model}: {ablation} trains the top {unfrozen} layers, and the encoder has "
                  f"{layers - 1} transformer layers", f"choose 0 to {layers - 1} layers, or the ablation all")
        if "ssl_layers" in reads[f"{model}/{ablation}"] and layer is not None and not -layers <= layer < layers:
            _fail(sweep.source, f"models.{model}: {ablation} probes layer {layer}, and the encoder has layers 0.."
                  f"{layers - 1}", f"choose layers from 0 to {layers - 1} (0 is the CNN or embedding output)")


def _validate_train(src: str, model: str, train: dict, res: dict) -> None:
    where = f"train (with {model}'s recipe)"
    if res["mode"] == "ddp" and train["batch_size"] % res["workers_per_trial"]:
        _fail(src, f"{where}: train.batch_size {train['batch_size']} is the global batch and must split evenly "
              f"over {res['workers_per_trial']} DDP workers", "make train.batch_size a multiple of workers_per_trial")
    if train["speaker_norm_stats"] != "all_audio" and not train["speaker_norm"]:
        _fail(src, f"{where}: train.speaker_norm_stats is {train['speaker_norm_stats']}, but speaker_norm is off",
              "set train.speaker_norm: true, or drop speaker_norm_stats")
    if train["average_epochs"] == 1:
        _fail(src, f"{where}: train.average_epochs 1 averages one epoch, which is that epoch", "use 2 or more, or 0")
    if train["average_epochs"] and train["refit"]:
        _fail(src, f"{where}: train.average_epochs and train.refit both make the final model", "choose one")
    if train["skewed_test_class"] and not train["speaker_norm"]:
        _fail(src, f"{where}: train.skewed_test_class checks speaker_norm's statistics, and speaker_norm is off",
              "set train.speaker_norm: true, or drop skewed_test_class")
    milestones = train["milestones"]
    if not all(isinstance(m, int) and not isinstance(m, bool) and m >= 0 for m in milestones) \
            or list(milestones) != sorted(set(milestones)):
        _fail(src, f"{where}: train.milestones {milestones} must be increasing epoch numbers",
              "e.g. milestones: [10, 20, 30]")
    if train["schedule"] == "multistep" and not milestones:
        _fail(src, f"{where}: train.schedule multistep needs train.milestones", "e.g. milestones: [10, 20, 30]")


def _validate_cluster(sweep: Sweep, shapes: list) -> None:
    from orchestration.config.capacity import never_fits

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
    """The space's ranges parse, and each name is a training setting or a hyperparameter of every model searched."""
    from ser_models.registry import get_spec

    from orchestration.config.spaces import parse_space

    try:
        parse_space(sweep.search["space"])
    except ValueError as err:
        _fail(sweep.source, f"search.space: {err}", "see the README's search example")
    for name in sweep.search["space"]:
        for model in dict.fromkeys(model for model, _ in sweep.cells):
            known = set(TRAIN_DEFAULTS) | set(get_spec(model).defaults)
            if name not in known:
                _fail(sweep.source, f"search.space.{name}: not a training setting nor a hyperparameter of model "
                      f"{model!r}{did_you_mean(name, known)}", f"search one of {sorted(known)}")


def cost_warnings(sweep: Sweep) -> list[str]:
    """What a plan will cost that its user should hear before it starts (not errors: the plan may be meant)."""
    from ser_models.registry import get_spec

    live = [f"{model}/{ablation}" for model, ablation in sweep.cells if "encoder" in get_spec(model).defaults]
    if not live or not sweep.encoder or float(sweep.resources["gpus_per_worker"]) > 0:
        return []
    return [f"{', '.join(live)} run {sweep.encoder['model']} inside the model without a GPU (resources."
            "gpus_per_worker: 0): every step runs the encoder forward (and backward through the trained layers); "
            "measured at base size on 2 CPU cores: 5 s per step of 4 utterances, 3000x a probe's step on cached "
            "features (bench/ssl_finetune.py). Give trials a GPU (resources.gpus_per_worker: 1), or use ssl_probe "
            "for a CPU sweep"]
