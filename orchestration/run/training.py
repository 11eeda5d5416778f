"""The training loop: one function for unit tests, Tune trials (in-process) and DDP workers.

`train_loop(config, session)` trains one (model, ablation, fold, seed),
reports train and validation metrics every epoch with a checkpoint, picks
the epoch on the validation split (`select_on`), scores the test split once
with that checkpoint, writes its test predictions, and returns the final
metrics. What differs between the three settings lives in the Session.
"""
from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ser_models.metrics import SCORES, classification_metrics
from ser_models.registry import build_model, get_spec, model_inputs

from orchestration.store.identity import identity_key
from orchestration.run import averaging
from orchestration.run.session import (package_versions, rng_state, seed_everything, set_rng_state, tell,
                                       write_parquet, write_predictions)
from orchestration.run.loaders import Loaders, make_loaders, to_device
from orchestration.run.task import task_for

if TYPE_CHECKING:   # annotations only
    from torch.utils.data import DataLoader

    from ser_models.data.folds import Fold
    from ser_models.registry import SERModel

    from orchestration.run.session import LocalSession
    from orchestration.run.task import Task

    Batches = DataLoader | list[dict]     # a split's batches: a loader, or collated once and kept (loaders.py)
    Schedule = torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau


class Diverged(RuntimeError):
    """The training loss became NaN or infinite: the trial fails, naming the epoch."""


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """bf16 autocast where asked for (or `auto` on a GPU that supports it); otherwise a no-op context."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda"
                                       and torch.cuda.is_bf16_supported())
    if use_bf16 and device.type == "cpu" and (problem := cpu_bf16_problem()):
        capability = torch.backends.cpu.get_cpu_capability()
        raise ValueError(f"train.precision: bf16 cannot run on this CPU (torch: {capability}): {problem}. Fix: "
                         "train.precision: auto (fp32 on a CPU, bf16 on a GPU that supports it) or fp32")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)


@functools.cache
def cpu_bf16_problem() -> str | None:
    """Why bf16 autocast fails on this CPU, or None. On an AVX2 AMD EPYC without AVX-512, oneDNN had no bf16 LSTM
    kernel, and the trial died in its first batch with a bare oneDNN message; the probe asks the CPU at hand."""
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.nn.LSTM(4, 4, batch_first=True)(torch.zeros(1, 2, 4))
    except RuntimeError as error:
        return str(error).split(". ")[0]
    return None


@torch.no_grad()
def predict(model: torch.nn.Module, loader: Batches, device: torch.device, precision: str = "fp32") -> dict:
    model.eval()
    utt_ids, labels, probabilities, loss_sum = [], [], [], 0.0
    for batch in loader:
        batch = to_device(batch, device)
        with autocast(device, precision):
            logits = model(batch).float()
        loss_sum += F.cross_entropy(logits, batch["labels"], reduction="sum").item()
        probabilities.append(logits.softmax(-1).cpu())
        labels.append(batch["labels"].cpu())
        utt_ids += batch["utt_id"]
    probabilities = torch.cat(probabilities).numpy()
    labels = torch.cat(labels).numpy()
    return {"utt_id": utt_ids, "labels": labels, "probabilities": probabilities,
            "loss": loss_sum / max(1, len(labels))}


def split_metrics(prefix: str, outputs: dict, num_classes: int) -> dict:
    scores = classification_metrics(outputs["labels"], outputs["probabilities"].argmax(1), num_classes)
    return {f"{prefix}_{key}": value for key, value in scores.items()} | {f"{prefix}_loss": outputs["loss"]}


def better(score: float, best: float | None, select_on: str) -> bool:
    if best is None:
        return True
    return score < best if select_on == "val_loss" else score > best


def build_for_task(config: dict, task: Task) -> SERModel:
    model_name, ablation = config["model"], config["ablation"]
    options = dict(config.get("model_options") or {})
    options.update({k: v for k, v in (config.get("hparams") or {}).items() if k in get_spec(model_name).defaults})
    if task.vocab is not None and "words" in model_inputs(model_name, ablation):
        options.update(vocab_size=len(task.vocab), embeddings=task.embeddings, embedding_dim=task.embeddings.shape[1])
    if "encoder" in get_spec(model_name).defaults:     # a model that runs the sweep's encoder itself
        options["encoder"] = config.get("encoder")
    if "input_shapes" in get_spec(model_name).defaults:   # a head sized by its features (an encoder's layers)
        stores = task.report.stores
        options["input_shapes"] = {name: stores[name][stores[name].utt_ids[0]].shape
                                   for name in model_inputs(model_name, ablation) if name in stores}
    return build_model(model_name, ablation, num_classes=len(task.classes), **options)


def average_if_better(model: SERModel, best: dict, pool: averaging.Pool, validation: Batches, device: torch.device,
                      settings: dict, classes: int) -> dict:
    """The pool's average replaces the best epoch where its own validation select_on is better (validation
    alone decides, as for the epoch); the choice and the epochs averaged are recorded either way."""
    state = averaging.averaged(pool, best["model"])
    model.load_state_dict(state)
    scores = split_metrics("val", predict(model, validation, device, settings["precision"]), classes)
    select_on, epochs = settings["select_on"], sorted(entry["epoch"] for entry in pool)
    record = {"epochs": epochs, select_on: scores[select_on]}
    if not better(scores[select_on], best["metrics"][select_on], select_on):
        return {**best, "average": {**record, "kept": False}}
    metrics = {**best["metrics"], **{k: v for k, v in scores.items() if not isinstance(v, list)}}
    return {**best, "model": state, "metrics": metrics, "average": {**record, "kept": True}}


def skewed_scores(model: SERModel, skewed: dict, device: torch.device, precision: str, task: Task) -> dict:
    """train.skewed_test_class's two scores of the same skewed test mix (loaders.skewed_loaders)."""
    if not skewed:
        return {}
    scores = {name: split_metrics("test", predict(model, skewed[name], device, precision), len(task.classes))
              for name in ("reference", "skewed")}
    return {"skewed_removed": skewed["removed"], "skewed_reference_ua": scores["reference"]["test_ua"],
            "skewed_test_ua": scores["skewed"]["test_ua"]}


def make_optimizer(settings: dict, parameters: Iterable) -> torch.optim.Optimizer:
    """`parameters`: a model's parameter_groups (parameters, or param groups of their own lr)."""
    name, lr, decay = settings["optimizer"], float(settings["lr"]), float(settings["weight_decay"])
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=float(settings["momentum"]), weight_decay=decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(parameters, lr=lr, alpha=float(settings["alpha"]), eps=float(settings["eps"]),
                                   weight_decay=decay)
    optimizer = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    return optimizer(parameters, lr=lr, eps=float(settings["eps"]), weight_decay=decay)


def make_schedule(settings: dict, optimizer: torch.optim.Optimizer) -> Schedule | None:
    """An epoch-level schedule (None for none); plateau steps on select_on, the others on the epoch."""
    import math

    kind, gamma, epochs = settings["schedule"], float(settings["gamma"]), int(settings["epochs"])
    if kind == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, int(settings["step_size"]), gamma)
    if kind == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(settings["milestones"]), gamma)
    if kind == "plateau":
        mode = "min" if settings["select_on"] == "val_loss" else "max"
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode, factor=gamma,
                                                          patience=int(settings["plateau_patience"]))
    if kind == "cosine":
        warmup = int(settings["warmup_epochs"])

        def factor(epoch: int) -> float:
            if epoch < warmup:
                return (epoch + 1) / (warmup + 1)
            return 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / max(1, epochs - warmup)))
        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return None


def step_schedule(schedule: Schedule | None, metrics: dict, select_on: str) -> None:
    if isinstance(schedule, torch.optim.lr_scheduler.ReduceLROnPlateau):
        schedule.step(metrics[select_on])
    elif schedule is not None:
        schedule.step()


def balanced_class_weight(task: Task, fold: Fold, device: torch.device) -> torch.Tensor:
    """n / (classes x n_c) over the training split (scikit-learn's "balanced"); an absent class weighs 0."""
    labels = task.table.loc[task.table["utt_id"].isin(set(fold.train)), "label"]
    counts = torch.tensor([float((labels == c).sum()) for c in task.classes])
    weight = torch.where(counts > 0, counts.sum() / (len(task.classes) * counts.clamp(min=1)), torch.zeros(1))
    return weight.to(device)


def train_loop(config: dict, session: LocalSession) -> dict:
    """config["train"]: the trial's resolved settings (config.sweep_file.train_for), read as they are."""
    settings = config["train"]
    seed = int(config["seed"]) * 1000 + int(config["fold"])
    seed_everything(seed)
    inputs = model_inputs(config["model"], config["ablation"])
    task = task_for(config, inputs)
    fold = task.folds[int(config["fold"])]
    device = session.device()
    core, loaders, optimizer, schedule, objective = set_up(config, task, fold, inputs, session, seed, device)
    train_loader, eval_loaders, sampler, sizes = loaders.train, loaders.evaluate, loaders.sampler, loaders.sizes
    state = session.restore()
    if state is not None and state.get("final"):
        if state["best"].get("model") is not None:
            return finish_again(config, session, core, state, device, task, sizes, loaders)
        tell(session.notes, "its final checkpoint (of an older emosweep) holds no model to write its outputs again "
                            "from: it is trained again from epoch 0 (seeded: the same result)")
        state = None
    start, history, best, pool = 0, [], {"epoch": None, "score": None, "model": None, "metrics": None}, []
    if state is not None:
        set_rng_state(state["rng"])
        core.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if schedule is not None:
            schedule.load_state_dict(state["schedule"])
        start, history, best, pool = state["epoch"] + 1, state["history"], state["best"], state.get("pool", [])
    resumed_from = start
    select_on, classes, precision = settings["select_on"], len(task.classes), settings["precision"]
    patience = int(settings["early_stop_patience"])
    for epoch in range(start, int(settings["epochs"])):
        if patience and history and epoch - best["epoch"] > patience:
            break   # early stopping: `patience` epochs passed without a better select_on
        started = time.perf_counter()
        sampler.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        train_loss = train_one_epoch(objective, train_loader, optimizer, device, precision,
                                     float(settings["clip_norm"]))
        if not np.isfinite(train_loss):     # never "finished" with the chance-level UA of a diverged model
            raise Diverged(f"epoch {epoch}: the training loss is {train_loss} (lr {lr}). Fix: lower train.lr, or "
                           "set train.clip_norm (e.g. 5.0); this trial is recorded as failed")
        validation = split_metrics("val", predict(core, eval_loaders["validation"], device, precision), classes)
        metrics = {"epoch": epoch, "train_loss": train_loss, "lr": lr, "epoch_seconds": time.perf_counter() - started,
                   "resumed_from": resumed_from, "final": False,
                   **{k: v for k, v in validation.items() if not isinstance(v, list)}}
        if settings.get("test_oracle"):
            # Only for the labelled "test-oracle" column that reproduces papers which pick the epoch on
            # the test fold. Selection below reads validation keys only.
            oracle = split_metrics("oracle_test", predict(core, eval_loaders["test"], device, precision), classes)
            metrics.update({f"oracle_test_{m}": oracle[f"oracle_test_{m}"] for m in SCORES})
        window = [m[select_on] for m in history[-(int(settings["select_window"]) - 1):]] \
            if int(settings["select_window"]) > 1 else []
        score = float(np.mean(window + [metrics[select_on]]))   # trailing mean: a noisy peak picks nothing
        if better(score, best["score"], select_on):
            best = {"epoch": epoch, "score": score, "metrics": metrics,
                    "model": {k: v.detach().cpu().clone() for k, v in core.state_dict().items()}}
        if int(settings["average_epochs"]):
            pool = averaging.kept(pool, epoch, metrics[select_on], core.state_dict(), settings)
        history.append(metrics)
        metrics["selected_epoch"], metrics["objective"] = best["epoch"], best["score"]
        step_schedule(schedule, metrics, select_on)
        session.report(metrics, {"epoch": epoch, "model": core.state_dict(), "optimizer": optimizer.state_dict(),
                                 "schedule": schedule.state_dict() if schedule is not None else None,
                                 "rng": rng_state(), "history": history, "best": best, "pool": pool})
    if len(pool) > 1:
        best = average_if_better(core, best, pool, eval_loaders["validation"], device, settings, classes)
    if settings["refit"] and best["epoch"] is not None:
        core, refit_size = refit(config, task, fold, inputs, session, seed, device, history[:best["epoch"] + 1])
        best = {**best, "model": core.state_dict(), "refit": {"epochs": best["epoch"] + 1, "n_train": refit_size}}
    final = finish(config, session, core, best, eval_loaders["test"], device, task, sizes, resumed_from, history,
                   loaders)
    # the chosen model stays in the final checkpoint: a run that finds this trial's outputs lost writes them
    # again from it without training (finish_again)
    session.report(final, {"final": final, "history": history, "best": best})
    return final


def finish_again(config: dict, session: LocalSession, model: SERModel, state: dict, device: torch.device, task: Task,
                 sizes: dict, loaders: Loaders) -> dict:
    """A trial that finished before an interruption: its outputs are written again from the chosen model kept
    in its final checkpoint (a kill may have lost them; the files are keyed by identity, so this rewrites the
    same bytes) and its final report is made again, here. Nothing is trained."""
    final = finish(config, session, model, state["best"], loaders.evaluate["test"], device, task, sizes,
                   state["final"]["resumed_from"], state["history"], loaders)
    session.report(final, state | {"final": final})
    return final


def set_up(config: dict, task: Task, fold: Fold, inputs: tuple[str, ...], session: LocalSession, seed: int,
           device: torch.device) -> tuple[SERModel, Loaders, torch.optim.Optimizer, Schedule | None, torch.nn.Module]:
    """A fresh model for this fold, its loaders, optimiser, schedule and the (DDP-wrapped) training objective."""
    settings = config["train"]
    model = build_for_task(config, task).to(device)
    loaders = make_loaders(task, fold, inputs, config, session, seed, device)
    model.fit_to_training(loaders.unlabelled)
    optimizer = make_optimizer(settings, model.parameter_groups(float(settings["lr"])))
    schedule = make_schedule(settings, optimizer)
    if settings["class_weights"] == "balanced":
        model.class_weight = balanced_class_weight(task, fold, device)
    return model, loaders, optimizer, schedule, session.prepare_model(TrainingObjective(model))


def refit(config: dict, task: Task, fold: Fold, inputs: tuple[str, ...], session: LocalSession, seed: int,
          device: torch.device, chosen: list[dict]) -> tuple[SERModel, int]:
    """train.refit: a fresh model, seeded as the first, trained on training + validation speakers for the
    epochs validation chose, each at the learning rate that epoch had (so a plateau schedule replays too).
    The test split is still untouched. Returns the model and its training-set size."""
    import dataclasses

    merged = dataclasses.replace(fold, train=tuple(fold.train) + tuple(fold.validation))
    seed_everything(seed)
    model, loaders, optimizer, _, objective = set_up(config, task, merged, inputs, session, seed, device)
    for epoch, record in enumerate(chosen):
        loaders.sampler.set_epoch(epoch)
        for group in optimizer.param_groups:
            group["lr"] = record["lr"] * group.get("lr_scale", 1.0)
        train_one_epoch(objective, loaders.train, optimizer, device, config["train"]["precision"],
                        float(config["train"]["clip_norm"]))
    return model, loaders.sizes["train"]


class TrainingObjective(torch.nn.Module):
    """forward = the model's training loss, so DDP's forward hooks (gradient sync) see the whole step."""

    def __init__(self, model: SERModel):
        super().__init__()
        self.model = model

    def forward(self, batch: dict, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.training_loss(batch, labels)


def train_one_epoch(objective: torch.nn.Module, loader: Batches, optimizer: torch.optim.Optimizer, device: torch.device,
                    precision: str = "fp32", clip_norm: float = 0.0) -> float:
    objective.train()
    total, count = 0.0, 0
    for batch in loader:
        batch = to_device(batch, device)
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, precision):
            loss, _ = objective(batch, batch["labels"])
        loss.backward()
        if clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(objective.parameters(), clip_norm)
        optimizer.step()
        total += loss.item() * len(batch["labels"])
        count += len(batch["labels"])
    if torch.distributed.is_available() and torch.distributed.is_initialized():  # the global mean, not rank 0's
        sums = torch.tensor([total, count], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(sums)
        total, count = sums.tolist()
    return total / max(1, count)


def finish(config: dict, session: LocalSession, model: SERModel, best: dict, test_loader: Batches, device: torch.device,
           task: Task, sizes: dict, resumed_from: int, history: list[dict], loaders: Loaders) -> dict:
    """Score the test split once, and each cross-corpus test set once, with the checkpoint chosen on validation;
    write the test predictions, and the validation ones automatic ensembles choose their members by."""
    model.load_state_dict(best["model"])
    outputs = predict(model, test_loader, device, config["train"]["precision"])
    # the chosen model's validation scores, for ensembles chosen on validation; a refit model has trained on
    # the validation speakers, so its scores there would choose nothing honestly
    validation = None if best.get("refit") else predict(model, loaders.evaluate["validation"], device,
                                                        config["train"]["precision"])
    test = split_metrics("test", outputs, len(task.classes))
    cross_scores = {name: {"n": len(loader.dataset), **split_metrics(
        "test", predict(model, loader, device, config["train"]["precision"]), len(task.classes))}
        for name, loader in loaders.cross.items()}
    selected = {f"selected_{k}": v for k, v in best["metrics"].items() if k.startswith("val_")}
    # "final", never Tune's reserved "done": a reported done=True ends the Tune trial at once, which
    # cut a DDP trial's TorchTrainer off before it gave back its placement group (the next trials hung)
    final = {"final": True, "epoch": history[-1]["epoch"], "selected_epoch": best["epoch"],
             "select_on": config["train"]["select_on"], "objective": best["score"], "resumed_from": resumed_from,
             **selected, **test, "classes": list(task.classes), "n_train": sizes["train"],
             "n_validation": sizes["validation"], "n_test": sizes["test"],
             "quarantined": len(task.report.quarantine), "oov_words": task.oov_words,
             "world_size": session.world_size, "worker_nodes": session.worker_nodes(),
             "versions": package_versions(), "recipe": json.dumps(config["train"], sort_keys=True, default=str),
             "git_commit": config.get("git_commit"), "corpus": task.corpus.name, "cross": cross_scores,
             "refit_epochs": (best.get("refit") or {}).get("epochs"),
             "averaged_epochs": (best.get("average") or {}).get("epochs") if (best.get("average") or {}).get(
                 "kept") else None, "average": best.get("average"),
             "n_refit": (best.get("refit") or {}).get("n_train"),
             "context_turns": len(loaders.context.dataset) if loaders.context is not None else 0,
             "validation_scored": validation is not None, **skewed_scores(model, loaders.skewed, device,
                                                                         config["train"]["precision"], task),
             # every epoch's row, from the checkpoints' chain: the epochs table never depends on which of a
             # resumed trial's reports reached result.json before a kill
             "history": [{k: v for k, v in row.items() if k != "final"} for row in history]}
    if session.rank == 0 and config.get("predictions_dir"):
        # written (atomically) before the final report: a trial that counts as finished has its predictions
        name = identity_key(config)
        write_predictions(config, name, outputs, task)
        if validation is not None:
            write_predictions(config, f"{name}.validation", validation, task)
        if loaders.context is not None:
            context = predict(model, loaders.context, device, config["train"]["precision"])
            write_parquet(config, f"{name}.context", pd.DataFrame({
                "utt_id": context["utt_id"], "probabilities": list(context["probabilities"].astype(np.float32))}))
    return final


