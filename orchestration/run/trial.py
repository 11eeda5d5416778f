"""The Tune trial: train in-process, or drive a Ray Train TorchTrainer (DDP) that runs the same loop."""
from __future__ import annotations


import torch

from orchestration.store.identity import identity_key
from orchestration.run.training import train_loop
from orchestration.run.session import TrainSession, TuneSession


def use_trial_cpus(config: dict) -> None:
    """torch threads = the CPUs Ray reserved, so packed trials do not oversubscribe the cores."""
    torch.set_num_threads(max(1, int(float(config["resources"]["cpus_per_worker"]))))


def run_trial(config: dict, shipped: list | None = None, places: dict | None = None) -> dict | None:
    """shipped: [reference to the driver's Task in the object store] (see orchestration/run/task.py);
    places: where this run of the sweep keeps its files (storage_path, predictions_dir), never stored
    in the trial's config, so that a sweep folder can move between runs."""
    if shipped:
        config = {**config, "task_ref": shipped[0]}
    config = {**config, **(places or {})}
    if config["resources"]["mode"] == "inprocess":
        use_trial_cpus(config)
        return train_loop(config, TuneSession(config))
    return run_ddp(config)


def ddp_worker(config: dict) -> dict:
    use_trial_cpus(config)
    return train_loop(config, TrainSession())


def run_ddp(config: dict) -> None:
    import ray.train
    from ray import tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    context = tune.get_context()
    resources = config["resources"]
    gpus = float(resources["gpus_per_worker"])
    per_worker = {"CPU": float(resources["cpus_per_worker"])} | ({"GPU": gpus} if gpus else {})
    TorchTrainer(
        ddp_worker,
        train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(num_workers=int(resources["workers_per_trial"]), use_gpu=gpus > 0,
                                               resources_per_worker=per_worker),
        run_config=ray.train.RunConfig(
            # named by identity: the same trial in a later run of the sweep finds its Train snapshot and resumes
            name=f"{context.get_experiment_name()}/train/{identity_key(config)}",
            storage_path=config["storage_path"],
            callbacks=[TuneReportCallback()],
            failure_config=ray.train.FailureConfig(max_failures=int(config["train"]["retries"])),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
    ).fit()
    return None
