"""Where a trial runs, apart from how it trains: the sessions (no Ray, a Tune trial, a DDP worker) that
restore and save checkpoints and report metrics, the state an earlier run left for the same identity, RNG
state, and the trial's output files. The loop (training.py) sees only a session."""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from typing import TYPE_CHECKING

if TYPE_CHECKING:   # annotations only
    from orchestration.run.task import Task
    from pyarrow import fs


NO_CHECKPOINT_LEFT = "no intact checkpoint left: this trial restarts from epoch 0 (seeded: the same result)"
DAMAGED = ".damaged"   # a checkpoint that cannot be read is renamed, never deleted: the user may want to look


STATE_FILE = "state.pt"


class LocalSession:
    """No Ray: checkpoints in a directory, reports kept in a list (unit tests, debugging)."""

    rank, world_size = 0, 1

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.reports: list[dict] = []
        self.notes: list[str] = []

    def restore(self) -> dict | None:
        from pyarrow import fs

        state = checkpoint_state(fs.LocalFileSystem(), str((self.directory / "latest").resolve()), self.notes)
        if state is None and self.notes:
            tell(self.notes, NO_CHECKPOINT_LEFT)
        return state

    def with_notes(self, metrics: dict) -> dict:
        """What restoring had to say rides on the next report: the sweep prints it (trial output is not shown)."""
        notes, self.notes = self.notes, []
        return {**metrics, "notes": notes} if notes else metrics

    def report(self, metrics: dict, state: dict) -> None:
        self.reports.append(self.with_notes(metrics))
        target = self.directory / "latest"
        target.mkdir(parents=True, exist_ok=True)
        _atomic_save(state, target / STATE_FILE)

    def device(self) -> torch.device:
        return torch.device("cpu")

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def worker_nodes(self) -> list[str]:
        """The Ray node (or host) of every rank, in rank order."""
        return [this_node()]


class TuneSession(LocalSession):
    """Inside a Tune function trainable: tune.report with a checkpoint every epoch."""

    def __init__(self, config: dict | None = None):
        self.reports, self.config, self.notes = [], config or {}, []

    def restore(self) -> dict | None:
        from ray import tune

        checkpoint = tune.get_checkpoint()          # this run's own retry of the trial
        state = (checkpoint_state(checkpoint.filesystem, checkpoint.path, self.notes) if checkpoint is not None
                 else None)
        # else (or when that one is damaged) where this or an earlier run of the sweep left the newest intact one
        return state if state is not None else earlier_state(self.config, self.notes)

    def report(self, metrics: dict, state: dict) -> None:
        from ray import tune

        with tempfile.TemporaryDirectory() as directory:
            _atomic_save(state, Path(directory) / STATE_FILE)
            tune.report(self.with_notes(metrics), checkpoint=tune.Checkpoint.from_directory(directory))

    def device(self) -> torch.device:
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


class TrainSession(LocalSession):
    """Inside a Ray Train DDP worker: every rank reports (it is a barrier), rank 0 checkpoints."""

    def __init__(self):
        import ray.train

        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()
        self.reports, self.notes = [], []

    def restore(self) -> dict | None:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        state = checkpoint_state(checkpoint.filesystem, checkpoint.path, self.notes) if checkpoint else None
        if state is None and self.notes:
            tell(self.notes, NO_CHECKPOINT_LEFT)
        if state is not None and "epoch" in state and self.rank == 0:
            # Train restarts a worker group that lost a worker (or its node) inside the Tune trial: Tune sees no
            # failure, so this note is how the driver learns of it
            tell(self.notes, f"resumes from epoch {state['epoch'] + 1} (its DDP workers started again from "
                             f"their latest checkpoint)")
        return state

    def report(self, metrics: dict, state: dict) -> None:
        import ray.train

        with tempfile.TemporaryDirectory() as directory:
            checkpoint = None
            if self.rank == 0:
                _atomic_save(state, Path(directory) / STATE_FILE)
                checkpoint = ray.train.Checkpoint.from_directory(directory)
            ray.train.report(self.with_notes(metrics), checkpoint=checkpoint)

    def device(self) -> torch.device:
        from ray.train.torch import get_device

        return get_device()

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        from ray.train.torch import prepare_model

        return prepare_model(model)

    def worker_nodes(self) -> list[str]:
        nodes = [None] * self.world_size
        torch.distributed.all_gather_object(nodes, this_node())
        return nodes


def this_node() -> str:
    import socket

    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except ImportError:
        pass
    return socket.gethostname()


def tell(notes: list[str], message: str) -> None:
    print(f"[trial] {message}", flush=True)
    notes.append(message)


def earlier_state(config: dict, notes: list[str]) -> dict | None:
    """The newest intact checkpoint any run of the sweep left for this trial's identity (none for `fresh`)."""
    from pyarrow import fs

    from orchestration.store.trial_folders import read_trial, trial_dirs, trial_started
    from orchestration.store.identity import identity

    if config.get("fresh") or not config.get("storage_path"):
        return None
    mine, found = identity(config), []
    for filesystem, path in trial_dirs(f"{config['storage_path']}/experiment"):
        try:
            if identity(read_trial(filesystem, path)[0]) != mine:
                continue
        except (ValueError, KeyError):
            continue
        found += [(trial_started(path), info.base_name, filesystem, info.path)
                  for info in filesystem.get_file_info(fs.FileSelector(path))
                  if info.type == fs.FileType.Directory and info.base_name.startswith("checkpoint_")]
    for _, _, filesystem, directory in sorted(found, reverse=True):
        state = checkpoint_state(filesystem, directory, notes)
        if state is None:
            continue
        if notes:   # a damaged one was set aside on the way: news for the user
            tell(notes, f"continuing from {directory}, the newest intact checkpoint")
        else:
            print(f"[trial] continuing from {directory} (an earlier run of this sweep)", flush=True)
        return state
    if notes:
        tell(notes, NO_CHECKPOINT_LEFT)
    return None


def checkpoint_state(filesystem: fs.FileSystem, directory: str, notes: list[str]) -> dict | None:
    """The state in <directory>/state.pt on any pyarrow filesystem; None when there is none, or when it is
    damaged (then it is set aside as state.pt.damaged, with one line saying so)."""
    path = f"{directory}/{STATE_FILE}"
    try:
        with filesystem.open_input_stream(path) as stream:
            data = stream.read()
    except (FileNotFoundError, OSError):
        return None
    state = load_state(data, path)
    if state is None:
        filesystem.move(path, path + DAMAGED)
        tell(notes, f"{path}: unreadable checkpoint (damaged: {len(data)} bytes that are no intact torch archive); "
                    f"set aside as {STATE_FILE}{DAMAGED}")
    return state


def load_state(data: bytes, name: str) -> dict | None:
    """Tensors and plain values only (weights_only): a checkpoint in shared storage must not run code on load.

    torch.save writes a zip archive with checksums: bytes that are no intact archive were damaged (a kill, a
    full disk, a bad copy) and give None. An intact archive that holds Python objects is refused."""
    import io
    import pickle
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            intact = archive.testzip() is None
    except (zipfile.BadZipFile, EOFError, ValueError, OSError):
        intact = False
    try:
        if intact:
            return torch.load(io.BytesIO(data), weights_only=True)
    except (RuntimeError, EOFError):
        pass
    except pickle.UnpicklingError:
        raise RuntimeError(f"{name}: refused to load a checkpoint holding Python objects (only tensors and plain "
                           "values are loaded). "
                           "Fix: delete this checkpoint (its trial then restarts from the previous one or from "
                           "scratch), and check who can write the sweep's storage") from None
    return None


def _atomic_save(state: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every random stream training draws from, as tensors and plain values (weights_only-loadable)."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Continue the streams where the checkpoint left them: a resumed trial is the uninterrupted one."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["position"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def package_versions() -> dict:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("emosweep", "torch", "torchaudio", "ray", "optuna"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


def write_predictions(config: dict, name: str, outputs: dict, task: Task) -> None:
    """Nothing of which run wrote it (aggregation adds the trial's key): writing it again gives the same bytes."""
    meta = task.table.set_index("utt_id").loc[outputs["utt_id"]]
    frame = pd.DataFrame({
        "utt_id": outputs["utt_id"], "speaker": meta["speaker"].to_numpy(),
        "session": meta["session"].to_numpy(), "dialog": meta["dialog"].to_numpy(),
        "turn": meta["turn"].to_numpy(), "label": [task.classes[i] for i in outputs["labels"]],
        "predicted": [task.classes[i] for i in outputs["probabilities"].argmax(1)],
        "probabilities": list(outputs["probabilities"].astype(np.float32))})
    write_parquet(config, name, frame)


def write_parquet(config: dict, name: str, frame: pd.DataFrame) -> None:
    """<predictions_dir>/<name>.parquet, whole or not at all (storage.write_bytes: one PUT, or a rename)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from orchestration.store import storage

    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink)
    storage.write_bytes(storage.join(config["predictions_dir"], f"{name}.parquet"), sink.getvalue().to_pybytes())
