"""Every key a sweep file can hold: its type, default, allowed values and help. One place.

The loader (unknown keys at any depth are errors with a did-you-mean, types
are checked at load time), the defaults the training loop uses, the docs'
reference table (docs/sweep-keys.md) and the JSON Schema for editors
(docs/sweep.schema.json) all come from KEYS; tests/test_schema.py keeps the
two files in sync. A small table of plain dataclasses rather than pydantic:
the sections are flat, the errors must name the file and give the fix in our
words, and the base install stays as it is.

Sections whose keys belong to something else are checked there: `corpus`
options by the corpus, `models.<name>.options` by the model's builder,
`search.space` names against the recipe and the model's hyperparameters.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from ser_models.cli import did_you_mean
from ser_models.metrics import REPORTED

NUMBER = (int, float)


@dataclass(frozen=True)
class Key:
    path: str                       # dotted: "train.epochs"
    types: tuple                    # accepted Python types after YAML parsing
    default: Any
    help: str
    choices: tuple | None = None
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None      # a sane upper bound: 10^21 epochs is a typo, not a plan
    above: float | None = None        # an exclusive minimum: a learning rate of 0 trains nothing
    # False: changing it changes no trial's numbers (where results go, how many run at once, which cells run):
    # a finished sweep whose file changes only such keys reruns nothing (orchestration/config/record.py)
    changes_results: bool = True

    @property
    def section(self) -> str:
        return self.path.split(".")[0] if "." in self.path else ""

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[-1]


KEYS = [
    Key("name", (str,), None, "the sweep's name: its folder under storage (letters, digits, - and _)", required=True,
        changes_results=False),
    Key("corpus", (str, dict), None, "a corpus name, or {name, root, classes, options...} (docs/corpora.md)",
        required=True),
    Key("test_corpora", (list, type(None)), None, "cross-corpus: other corpora every trial's chosen checkpoint "
        "is also tested on, each {name, root, classes, ...} like corpus; their classes must be the training "
        "corpus's (a preset, a list, or a mapping {their emotion: class}); validation stays on the training corpus"),
    Key("folds", (str, type(None)), None, "fold strategy: sessions, actors-5, speakers-K, loso-speaker "
        "(default: the corpus's own)"),
    Key("fold_indices", (list, type(None)), None, "run only these folds (default: all)", changes_results=False),
    Key("models", (dict,), None, "model -> list of ablations, or {ablations: [...], options: {...}}", required=True,
        changes_results=False),   # its cells; a model's options do change results (record.settings_digest)
    Key("seeds", (list, int), [0], "seeds; every (model, ablation, fold) runs once per seed", changes_results=False),
    Key("storage", (str,), "results", "where the sweep lives: a path, NFS path or s3://... (--storage overrides)",
        changes_results=False),
    Key("cache", (str, type(None)), None, "feature cache folder (default ~/.cache/emosweep/features)",
        changes_results=False),
    Key("vectors", (str,), "glove-6b-50d", "word vectors: glove-6b-50d or a path to a vectors file"),
    Key("train", (dict, type(None)), None, "training settings (below)"),
    Key("search", (dict, type(None)), None, "an Optuna search (below); null runs the fixed settings once"),
    Key("resources", (dict, type(None)), None, "how trials use the cluster (below)"),
    Key("ensembles", (dict, type(None)), None, "late fusion, scored when the tables are built: name -> two or "
        "more of the sweep's cells as model/ablation (their test probabilities averaged with equal weights), or "
        "name -> {method: greedy | top_k, size: rounds or k, from: [cells]}, an automatic ensemble whose members "
        "and weights are chosen per fold and seed on validation predictions only (greedy: Caruana's forward "
        "selection with replacement, 20 rounds; top_k: the 3 best cells), its rows model auto. Nothing is picked "
        "on test; adding one to a finished sweep reruns nothing", changes_results=False),
    Key("tracking", (dict, type(None)), None, "experiment trackers that watch the sweep (below); they change no "
        "number, so adding one to a finished sweep reruns nothing", changes_results=False),
    Key("encoder", (dict, type(None)), None, "a self-supervised speech encoder whose hidden layers the ssl_* "
        "models read (below; extra: ssl)"),

    Key("train.epochs", (int,), 20, "epochs per trial", minimum=1, maximum=100_000),
    Key("train.batch_size", (int,), 32, "global batch (DDP workers each take batch_size / workers_per_trial)",
        minimum=1, maximum=1_000_000),
    Key("train.optimizer", (str,), "adam", "the optimiser", choices=("adam", "adamw", "sgd", "rmsprop")),
    Key("train.lr", NUMBER, 1e-3, "learning rate", above=0, maximum=100),
    Key("train.weight_decay", NUMBER, 0.0, "weight decay (adamw: decoupled)", minimum=0, maximum=100),
    Key("train.momentum", NUMBER, 0.9, "sgd momentum", minimum=0, maximum=1),
    Key("train.alpha", NUMBER, 0.99, "rmsprop smoothing constant (SincNet: 0.95)", minimum=0, maximum=1),
    Key("train.eps", NUMBER, 1e-8, "adam, adamw and rmsprop epsilon", minimum=0, maximum=1),
    Key("train.schedule", (str,), "none", "learning-rate schedule, stepped once per epoch: step (every step_size "
        "epochs x gamma), multistep (x gamma at each of milestones), cosine (linear warmup over warmup_epochs, then "
        "cosine to 0), plateau (x gamma after plateau_patience epochs without a better select_on)",
        choices=("none", "step", "multistep", "cosine", "plateau")),
    Key("train.step_size", (int,), 10, "schedule step: epochs between decays", minimum=1, maximum=100_000),
    Key("train.milestones", (list,), [], "schedule multistep: the epochs (counted from 0) after which lr x gamma"),
    Key("train.gamma", NUMBER, 0.1, "schedule step, multistep, plateau: the decay factor", minimum=0, maximum=10),
    Key("train.warmup_epochs", (int,), 0, "schedule cosine: epochs of linear warmup", minimum=0, maximum=100_000),
    Key("train.plateau_patience", (int,), 2, "schedule plateau: epochs without improvement before a decay",
        minimum=0, maximum=100_000),
    Key("train.clip_norm", NUMBER, 0.0, "clip the gradient's global norm to this (0: no clipping)", minimum=0,
        maximum=1e6),
    Key("train.early_stop_patience", (int,), 0, "stop a trial after this many epochs without a better select_on "
        "(0: train every epoch)", minimum=0, maximum=100_000),
    Key("train.select_window", (int,), 1, "pick the epoch on the trailing mean of select_on over this many "
        "epochs (1: the epoch's own value)", minimum=1, maximum=1000),
    Key("train.speaker_norm", (bool,), False, "normalise features per speaker: frame features and eGeMAPS "
        "functionals, by the mean and std over each speaker's own utterances, test speakers' included (their "
        "audio, never their labels; +0.05 to +0.07 UA on RAVDESS, results/reports/STUDY.md)"),
    Key("train.speaker_norm_stats", (str,), "all_audio", "where speaker_norm's statistics come from: all_audio "
        "(each speaker's own utterances, test speakers' included: transductive), or training_speakers (each "
        "training speaker's own; validation and test speakers by the training speakers' pooled statistics, so no "
        "validation or test audio is read), or online (training speakers by their own; every other utterance by "
        "its speaker's utterances spoken before it, a speaker's first by the training speakers' pooled "
        "statistics: what a deployed system knows)", choices=("all_audio", "training_speakers", "online")),
    Key("train.skewed_test_class", (str, type(None)), None, "a robustness check of speaker_norm: the test speakers "
        "scored again with every other one of their utterances of this class removed (in spoken order), "
        "normalised by statistics of the full set (reference) and of the skewed set itself: the fold rows' "
        "skewed_reference_ua and skewed_test_ua, and the report's drop. E.g. neutral"),
    Key("train.class_weights", (str,), "none", "balanced: weight the loss by the inverse class frequency of the "
        "training split", choices=("none", "balanced")),
    Key("train.average_epochs", (int,), 0, "checkpoint averaging: average the weights of this many epochs (0: "
        "off) and keep the average where its validation select_on beats the best single epoch's", minimum=0,
        maximum=1000),
    Key("train.average_over", (str,), "best", "which epochs train.average_epochs averages: the best on "
        "validation, or the last", choices=("best", "last")),
    Key("train.refit", (bool,), False, "after choosing the epoch on validation, train a fresh model (same seed) "
        "on training + validation speakers for that many epochs, at the same learning rates, and score the test "
        "split with it"),
    Key("train.select_on", (str,), "val_ua", "the validation metric that picks the epoch (never a test metric)",
        choices=("val_ua", *(f"val_{m}" for m in REPORTED if m != "ua"))),   # the default first
    Key("train.retries", (int,), 2, "how often a failed trial is retried from its checkpoint", minimum=0,
        maximum=100, changes_results=False),
    Key("train.num_workers", (int,), 0, "DataLoader worker processes per trial", minimum=0, maximum=256,
        changes_results=False),
    Key("train.test_oracle", (bool,), False, "also record the test-oracle column (epoch picked on test; only to "
        "compare with papers that did so)"),
    Key("train.precision", (str,), "auto", "auto: bf16 autocast on a GPU that supports it, fp32 elsewhere",
        choices=("auto", "fp32", "bf16")),

    Key("resources.mode", (str,), "inprocess", "inprocess: one process per trial; ddp: Ray Train workers",
        choices=("inprocess", "ddp")),
    Key("resources.workers_per_trial", (int,), 1, "DDP workers per trial", minimum=1, maximum=4096),
    Key("resources.cpus_per_worker", NUMBER, 1, "CPUs per trial process or DDP worker", minimum=0,
        maximum=4096),
    Key("resources.gpus_per_worker", NUMBER, 0.0, "GPUs per trial process or DDP worker (a fraction packs trials "
        "onto one GPU)", minimum=0, maximum=64),
    Key("resources.max_concurrent_trials", (int, type(None)), None, "at most this many trials at once "
        "(default: as many as fit)", minimum=1, maximum=1_000_000, changes_results=False),
    Key("resources.wait_timeout_s", NUMBER, 3600, "stop (resumably, exit 3) after waiting this long with no "
        "trial training", minimum=0, maximum=30 * 86400, changes_results=False),
    Key("resources.extract", (str,), "driver", "where features are extracted: driver (threads on the driver's "
        "machine) or cluster (Ray Data tasks on every node's CPUs; every node must read the corpus audio at the same "
        "path). The same features either way", choices=("driver", "cluster"), changes_results=False),
    Key("resources.dashboard", (bool,), False, "start Ray's dashboard (127.0.0.1:8265) with the Ray instance a "
        "sweep starts itself; off saves about 1 s of each start. A cluster the sweep joins keeps its own",
        changes_results=False),

    Key("tracking.tensorboard", (bool,), False, "write TensorBoard event files: one run per trial (per-epoch "
        "scalars, final honest and test-oracle metrics as hparams) and the report's figures (extra: tracking)",
        changes_results=False),
    Key("tracking.tensorboard_dir", (str, type(None)), None, "where the event files go (default: "
        "<storage>/<name>/tensorboard; a local folder when storage is remote)", changes_results=False),
    Key("tracking.mlflow", (bool,), False, "log to MLflow: one parent run per sweep, one nested run per trial "
        "(params, per-epoch metrics, final metrics, figures as artifacts; extra: tracking)", changes_results=False),
    Key("tracking.mlflow_uri", (str, type(None)), None, "an MLflow tracking URI (default: the local store "
        "sqlite:///<storage>/<name>/mlflow.db; needed when storage is remote)", changes_results=False),
    Key("tracking.mlflow_experiment", (str, type(None)), None, "the MLflow experiment (default: the sweep's name)",
        changes_results=False),

    Key("search.sampler", (str,), "tpe", "Optuna sampler", choices=("tpe", "random")),
    Key("search.samples", (int,), 1, "suggestions per (model, ablation); each runs on every fold and seed",
        minimum=1, maximum=100_000),
    Key("search.space", (dict,), None, "hyperparameter -> [low, high] or [low, high, log] or a list of choices",
        required=True),

    Key("encoder.model", (str,), None, "a local folder written by save_pretrained (or `hf download`), or a "
        "Hugging Face hub id (microsoft/wavlm-base-plus, facebook/hubert-base-ls960, facebook/wav2vec2-base, "
        "openai/whisper-large-v3); offline, a hub id needs the hub cache filled", required=True),
    Key("encoder.revision", (str,), "main", "the hub revision (a branch, tag or commit); a local folder is what "
        "it is (the cache key holds a digest of its weight files either way)"),
    Key("encoder.pooling", (str,), "mean", "pool each layer over the utterance's frames: mean, or mean_std "
        "(mean and standard deviation, twice the dims)", choices=("mean", "mean_std")),
    Key("encoder.frame_layers", (list, type(None)), None, "layers whose frame-level outputs are cached as the "
        "ssl_frames feature ([frames, layers, hidden], 50 per second; read by ssl_asp), e.g. [6, 12]; 0 is the CNN "
        "or embedding output, -1 the last layer"),
    Key("encoder.chunk_seconds", NUMBER, 30, "wav2vec2, HuBERT, WavLM: longer utterances are encoded in windows "
        "of this many seconds (Whisper: always 30 s windows)", minimum=1, maximum=600),
    Key("encoder.batch_seconds", NUMBER, 60, "extraction on a GPU encodes utterances of similar length together, "
        "at most this many seconds of padded audio per call (Whisper: this / 30 windows); 0: one at a time. Only "
        "where padding cannot change an utterance's output: Whisper, and checkpoints with a per-frame layer-norm "
        "front end (the large ones); the group-norm base checkpoints, and any CPU, go one at a time",
        minimum=0, maximum=10_000),
]
BY_PATH = {key.path: key for key in KEYS}
SECTIONS = ("train", "resources", "search", "tracking", "encoder")


def defaults(section: str) -> dict:
    return {key.name: key.default for key in KEYS if key.section == section and not key.required}


def problems(data: dict) -> list[tuple[str, str, str]]:
    """(dotted key, what is wrong, fix) for every key of a sweep file's top level and sections."""
    found = []
    found += _check_level(data, "")
    for section in SECTIONS:
        value = data.get(section)
        if isinstance(value, dict):
            found += _check_level(value, section)
    return found


def _check_level(values: dict, section: str) -> list[tuple[str, str, str]]:
    known = {key.name: key for key in KEYS if key.section == section}
    found = []
    for name, value in values.items():
        path = f"{section}.{name}" if section else str(name)
        if name not in known:
            found.append((path, f"unknown key{did_you_mean(str(name), known)}",
                          f"use one of {sorted(known)} (docs/sweep-keys.md)"))
            continue
        key = known[name]
        if not isinstance(value, key.types) or (isinstance(value, bool) and bool not in key.types):
            found.append((path, f"must be {_type_words(key.types)}, got {value!r}",
                          f"e.g. {path}: {json.dumps(key.default) if key.default is not None else '...'}"))
        elif key.choices and value not in key.choices:
            found.append((path, f"{value!r} is not one of {list(key.choices)}{did_you_mean(str(value), key.choices)}",
                          f"use one of {list(key.choices)} ({key.help})"))
        elif isinstance(value, float) and not math.isfinite(value):   # .inf, .nan: training would diverge
            found.append((path, f"must be a finite number, got {value!r}", f"e.g. {path}: {json.dumps(key.default)}"))
        elif isinstance(value, str) and not value.strip():   # "" would quietly mean the default or the cwd
            found.append((path, "is empty", f"set {path}: {json.dumps(key.default)}" if key.default is not None
                          else f"give {path} a value ({key.help})" if key.required
                          else f"drop {path} for the default, or give a value ({key.help})"))
        elif key.above is not None and isinstance(value, NUMBER) and value <= key.above:
            found.append((path, f"must be greater than {key.above:g}, got {value!r}",
                          f"set {path}: {json.dumps(key.default)}"))
        elif key.minimum is not None and isinstance(value, NUMBER) and value < key.minimum:
            found.append((path, f"must be at least {key.minimum:g}, got {value!r}",
                          f"set {path}: {json.dumps(key.default)}"))
        elif key.maximum is not None and isinstance(value, NUMBER) and value > key.maximum:
            found.append((path, f"must be at most {key.maximum:g}, got {value!r}",
                          f"set {path}: {json.dumps(key.default)}, or a value up to {key.maximum:g}"))
    missing = [key for key in known.values() if key.required and key.name not in values]
    found += [(key.path, "missing", f"add it: {key.help}") for key in missing]
    return found


def _type_words(types: tuple) -> str:
    words = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a mapping",
             list: "a list", type(None): "null"}
    return " or ".join(dict.fromkeys(words[t] for t in types))


def reference_markdown() -> str:
    lines = ["# Sweep file keys", "",
             "Generated from `orchestration/config/schema.py` (`python -m orchestration.config.schema`); "
             "a test keeps it in sync.", "",
             "Any key can also be set on the command line, as a file edit would set it: a dotted key and a YAML "
             "value after the sweep file (`emosweep run FILE train.epochs=2 seeds=[0,1] models.fg_cme=[full]`; "
             "quote values with spaces for the shell). The same checks apply, an override that changes results "
             "starts new trials as an edit does, and the sweep folder keeps the file as it ran (`sweep.yaml`). "
             "`FILE` may be a shipped sweep file's name (`emosweep configs` lists them; `emosweep copy NAME` writes "
             "one here to edit). Relative paths in a sweep file (`corpus.root`, `test_corpora[].root`, `storage`, "
             "`cache`, a `vectors` file, an `encoder.model` folder given as ./ or ../) are relative to the file's "
             "own folder, wherever the command runs; in a shipped file (a template) and in a command-line override "
             "they are relative to the folder the command runs in.", "",
             "| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    for key in KEYS:
        default = "required" if key.required else f"`{json.dumps(key.default)}`"
        allowed = ", ".join(f"`{c}`" for c in key.choices) if key.choices else " and ".join(
            bound for bound in (f">= {key.minimum:g}" if key.minimum is not None else "",
                                f"> {key.above:g}" if key.above is not None else "",
                                f"<= {key.maximum:g}" if key.maximum is not None else "") if bound)
        lines.append(f"| `{key.path}` | {_type_words(key.types)} | {default} | {allowed} | {key.help} |")
    return "\n".join(lines) + "\n"


def json_schema() -> dict:
    """A JSON Schema (draft 2020-12) for editor completion of sweep YAML files."""
    kinds = {int: "integer", float: "number", str: "string", bool: "boolean", dict: "object", list: "array",
             type(None): "null"}

    def prop(key: Key) -> dict:
        entry = {"type": sorted(dict.fromkeys(kinds[t] for t in key.types)), "description": key.help}
        if key.choices:
            entry["enum"] = list(key.choices)
        if key.minimum is not None:
            entry["minimum"] = key.minimum
        if key.maximum is not None:
            entry["maximum"] = key.maximum
        if key.above is not None:
            entry["exclusiveMinimum"] = key.above
        if key.default is not None:
            entry["default"] = key.default
        return entry

    def level(section: str) -> dict:
        keys = [key for key in KEYS if key.section == section]
        return {"type": "object", "additionalProperties": False,
                "properties": {key.name: prop(key) for key in keys},
                "required": [key.name for key in keys if key.required]}

    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "emosweep sweep file",
              **level("")}
    for section in SECTIONS:
        schema["properties"][section] = {**level(section), "type": ["object", "null"],
                                         "description": BY_PATH[section].help}
    return schema


if __name__ == "__main__":  # regenerate the docs: python -m orchestration.config.schema
    from pathlib import Path

    docs = Path(__file__).resolve().parents[2] / "docs"
    (docs / "sweep-keys.md").write_text(reference_markdown())
    (docs / "sweep.schema.json").write_text(json.dumps(json_schema(), indent=2) + "\n")
    print(f"wrote {docs / 'sweep-keys.md'} and {docs / 'sweep.schema.json'}")
