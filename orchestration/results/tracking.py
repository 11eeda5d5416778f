"""Experiment trackers (the sweep file's `tracking:` section): TensorBoard and MLflow.

Both are fed from the driver, never from inside trials: a Tune callback streams
each trial's per-epoch metrics as they arrive, and after the tables are written
the folds table gives every trial's final metrics, honest (epoch chosen on
validation) and test-oracle apart. Trials therefore need no tracking URI,
credentials or extra packages on worker nodes (the trap of `setup_mlflow`
inside trials), and a resumed sweep adds to the same runs: each trial's run is
found again by its identity.

MLflow's own run hierarchy: one parent run per sweep and one run per trial
nested under it through the `mlflow.parentRunId` tag. The default store is
MLflow's own default backend, a SQLite file, kept beside the sweep's tables.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
from ray.tune import Callback

from orchestration.store import storage
from ser_models.metrics import REPORTED, SCORES

from orchestration.store.identity import identity_key
from orchestration.results.selection import headline

from typing import TYPE_CHECKING

if TYPE_CHECKING:   # annotations only
    from mlflow.tracking import MlflowClient
    from ray.tune.experiment import Trial
    from torch.utils.tensorboard import SummaryWriter

EPOCH_KEYS = ("train_loss", "lr", *(f"val_{m}" for m in REPORTED), "epoch_seconds",
              *(f"oracle_test_{m}" for m in SCORES))


def trackers(tracking: dict, sweep_dir: str, sweep_name: str, settings: str) -> list:
    found = []
    if tracking["tensorboard"]:
        found.append(TensorBoardTracker(tracking["tensorboard_dir"] or storage.join(sweep_dir, "tensorboard")))
    if tracking["mlflow"]:
        uri = tracking["mlflow_uri"] or f"sqlite:///{Path(sweep_dir).resolve() / 'mlflow.db'}"
        found.append(MLflowTracker(uri, tracking["mlflow_experiment"] or sweep_name, sweep_name, sweep_dir))
    return [TrackingCallback(found, settings)] if found else []


def trial_params(config: dict) -> dict:
    params = {"model": config["model"], "ablation": config["ablation"], "fold": int(config["fold"]),
              "seed": int(config["seed"]), "git_commit": config.get("git_commit") or "unknown"}
    params.update({f"hparam.{k}": v for k, v in (config.get("hparams") or {}).items()})
    return params


def row_identity(row: tuple, settings: str) -> str:
    hparams = json.loads(row.hparams) if isinstance(row.hparams, str) and row.hparams else {}
    return identity_key({"model": row.model, "ablation": row.ablation, "group": row.group, "fold": row.fold,
                         "seed": row.seed, "hparams": hparams, "settings": settings})


def final_metrics(row: tuple, epochs: pd.DataFrame) -> dict:
    """A trial's final metrics: test_* honest (epoch chosen on validation), test_oracle_* labelled apart
    (the best test value over epochs, recorded only when train.test_oracle is on)."""
    metrics = {f"test_{k}": float(getattr(row, f"test_{k}")) for k in REPORTED
               if pd.notna(getattr(row, f"test_{k}"))}
    if pd.notna(row.selected_epoch):
        metrics.update({"selected_epoch": float(row.selected_epoch), "selected_val_ua": float(row.val_ua)})
    curve = epochs[epochs["trial_id"] == row.trial_id]
    for k in SCORES:
        if len(curve) and curve[f"oracle_test_{k}"].notna().any():
            metrics[f"test_oracle_{k}"] = float(curve[f"oracle_test_{k}"].max())
    return metrics


def cell_metrics(summary: pd.DataFrame) -> dict:
    """<model>/<ablation>.test_ua_mean and the like, one result per cell (a searched cell's kept settings)."""
    metrics = {}
    for row in headline(summary).itertuples():
        for name in ("test_ua_mean", "test_ua_std", "test_wa_mean", "test_wa_std", "n"):
            value = getattr(row, name)
            if pd.notna(value):
                # MLflow's names allow no "+" (fg_cme+ded): any such character becomes "_"
                metrics[re.sub(r"[^\w\-. :/]", "_", f"{row.model}/{row.ablation}.{name}")] = float(value)
    return metrics


class TrackingCallback(Callback):
    """Streams per-epoch metrics to every tracker; `publish` adds finals and figures after the tables."""

    def __init__(self, backends: list, settings: str):
        self.backends, self.settings = backends, settings

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info) -> None:
        if result.get("final") or "epoch" not in result:
            return
        key = identity_key(trial.config)
        metrics = {k: float(result[k]) for k in EPOCH_KEYS if isinstance(result.get(k), (int, float))}
        for backend in self.backends:
            backend.epoch(key, trial.config, int(result["epoch"]), metrics)

    def publish(self, tables: dict, figures: Path | None, facts: dict) -> None:
        """Each trial's finals, then the sweep's facts (corpus, folds, classes, file) and each cell's summary
        on the sweep's own run, then the figures."""
        folds, epochs = tables["folds"], tables["epochs"]
        trials = folds[(folds["status"] != "superseded") & ~folds["model"].str.endswith("+ded")]
        for row in trials.itertuples():   # DED rows are decodings of a trial's predictions, not trials
            config = {"model": row.model, "ablation": row.ablation, "fold": row.fold, "seed": row.seed,
                      "hparams": json.loads(row.hparams or "{}")}
            for backend in self.backends:
                backend.final(row_identity(row, self.settings), config, str(row.status),
                              final_metrics(row, epochs), row.recipe or "")
        cells = cell_metrics(tables["summary"])
        for backend in self.backends:
            backend.sweep(facts, cells)
            backend.close(figures)

    def where(self) -> list[str]:
        return [backend.where() for backend in self.backends]

    def __getstate__(self):   # Ray Client ships callbacks: open writers and clients stay behind
        return {"backends": [b.unopened() for b in self.backends], "settings": self.settings}


def scalar_tag(metric: str) -> str:
    """val_ua -> val/ua, oracle_test_ua -> test_oracle/ua: TensorBoard groups a tag's prefix into one section."""
    if metric.startswith("oracle_test_"):
        return "test_oracle/" + metric.removeprefix("oracle_test_")
    return metric.replace("_", "/", 1)


class TensorBoardTracker:
    """<dir>/<trial identity>/ per trial; <dir>/sweep/ holds the report's figures."""

    def __init__(self, directory: str):
        self.directory, self.writers = directory, {}

    def unopened(self) -> TensorBoardTracker:
        return TensorBoardTracker(self.directory)

    def writer(self, name: str) -> SummaryWriter:
        from torch.utils.tensorboard import SummaryWriter

        if name not in self.writers:
            self.writers[name] = SummaryWriter(log_dir=str(Path(self.directory) / name))
        return self.writers[name]

    def epoch(self, key: str, config: dict, epoch: int, metrics: dict) -> None:
        writer = self.writer(key)
        for name, value in metrics.items():
            writer.add_scalar(scalar_tag(name), value, epoch)
        writer.flush()

    def final(self, key: str, config: dict, status: str, metrics: dict, recipe: str) -> None:
        if not metrics:
            return
        params = {k: v for k, v in trial_params(config).items() if k != "git_commit"}
        self.writer(key).add_hparams(params, {f"final/{k}": v for k, v in metrics.items()}, run_name="final")

    def sweep(self, facts: dict, cells: dict) -> None:
        writer = self.writer("sweep")
        writer.add_text("sweep", "\n".join(f"- {k}: {v}" for k, v in facts.items()))
        for name, value in cells.items():
            writer.add_scalar(f"summary/{name}", value, 0)

    def where(self) -> str:
        return f"TensorBoard: {self.directory} (tensorboard --logdir {self.directory})"

    def close(self, figures: Path | None) -> None:
        if figures is not None and figures.is_dir():
            import matplotlib.image

            writer = self.writer("sweep")
            for png in sorted(figures.glob("*.png")):
                writer.add_image(f"figures/{png.stem}", matplotlib.image.imread(png)[..., :3], dataformats="HWC")
        for writer in self.writers.values():
            writer.close()
        self.writers = {}


class MLflowTracker:
    def __init__(self, uri: str, experiment: str, sweep_name: str, sweep_dir: str):
        self.uri, self.experiment, self.sweep_name, self.sweep_dir = uri, experiment, sweep_name, sweep_dir
        self._client, self.experiment_id, self.parent_id, self.runs = None, None, None, {}

    def unopened(self) -> MLflowTracker:
        return MLflowTracker(self.uri, self.experiment, self.sweep_name, self.sweep_dir)

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
            found = self._client.get_experiment_by_name(self.experiment)
            if found is not None:
                self.experiment_id = found.experiment_id
            else:   # artifacts beside the sweep when the store is the local default, else the server's choice
                local = self.uri.startswith("sqlite:") and not storage.is_remote(self.sweep_dir)
                location = (Path(self.sweep_dir).resolve() / "mlartifacts").as_uri() if local else None
                self.experiment_id = self._client.create_experiment(self.experiment, artifact_location=location)
            self.parent_id = self._run({"emosweep.sweep": self.sweep_name, "emosweep.kind": "sweep"},
                                       self.sweep_name, {})
        return self._client

    def _run(self, tags: dict, name: str, extra_tags: dict) -> str:
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        found = self._client.search_runs([self.experiment_id], filter_string=query, max_results=1)
        if found:
            return found[0].info.run_id
        return self._client.create_run(self.experiment_id, run_name=name, tags={**tags, **extra_tags}).info.run_id

    def run_of(self, key: str, config: dict) -> str:
        self.client   # noqa: B018 - first use opens the store and the sweep's parent run
        if key not in self.runs:
            name = f"{config['model']}/{config['ablation']} fold {config['fold']} seed {config['seed']}"
            self.runs[key] = self._run({"emosweep.sweep": self.sweep_name, "emosweep.identity": key}, name,
                                       {"mlflow.parentRunId": self.parent_id})
            self._params(self.runs[key], trial_params(config))
        return self.runs[key]

    def _params(self, run: str, params: dict) -> None:
        """Params are write-once in MLflow: a resumed sweep logs only the ones a run lacks."""
        from mlflow.entities import Param

        existing = self.client.get_run(run).data.params
        new = [Param(k, str(v)) for k, v in params.items() if k not in existing]
        if new:
            self.client.log_batch(run, params=new)

    def epoch(self, key: str, config: dict, epoch: int, metrics: dict) -> None:
        from mlflow.entities import Metric

        run = self.run_of(key, config)
        stamp = _now_ms()
        self.client.log_batch(run, metrics=[Metric(k, v, stamp, epoch) for k, v in metrics.items()])

    def final(self, key: str, config: dict, status: str, metrics: dict, recipe: str) -> None:
        from mlflow.entities import Metric, RunTag

        run = self.run_of(key, config)
        stamp = _now_ms()
        if recipe:
            self._params(run, {"recipe": recipe})
        self.client.log_batch(run, metrics=[Metric(f"final.{k}", v, stamp, 0) for k, v in metrics.items()],
                              tags=[RunTag("emosweep.status", status)])
        # an interrupted trial is KILLED, not FAILED: the next run of the sweep finishes it in the same run
        self.client.set_terminated(run, {"finished": "FINISHED", "error": "FAILED"}.get(status, "KILLED"))

    def sweep(self, facts: dict, cells: dict) -> None:
        """What MLflow's compare view needs on the parent run: the sweep's facts as params, cells as metrics."""
        from mlflow.entities import Metric

        self.client   # noqa: B018 - opens the store and the parent run
        self._params(self.parent_id, facts)
        stamp = _now_ms()
        if cells:
            self.client.log_batch(self.parent_id, metrics=[Metric(k, v, stamp, 0) for k, v in cells.items()])

    def where(self) -> str:
        return (f"MLflow: {self.uri}, experiment {self.experiment!r} (mlflow ui --backend-store-uri {self.uri})")

    def close(self, figures: Path | None) -> None:
        client = self.client
        if figures is not None and figures.is_dir():
            client.log_artifacts(self.parent_id, str(figures), artifact_path="figures")
            for page in ("report.md", "report.html"):
                if (figures.parent / page).exists():
                    client.log_artifact(self.parent_id, str(figures.parent / page))
        client.set_terminated(self.parent_id, "FINISHED")


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
