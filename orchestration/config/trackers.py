"""A sweep file's tracking section, checked before any work: the tracker's package installed, and a place to
write that every node reaches when storage is remote (results/tracking.py writes to them)."""
from __future__ import annotations

from orchestration.store import storage


EXTRA = "pip install 'emosweep[tracking]'"


# tracker -> (module it imports, its package, the key that says where it writes, why remote storage needs it, fix)
NEEDS = {"tensorboard": ("torch.utils.tensorboard", "tensorboard", "tensorboard_dir",
                         "writes local event files", "set tracking.tensorboard_dir to a local folder"),
         "mlflow": ("mlflow", "mlflow", "mlflow_uri", "default store is a local SQLite file",
                    "set tracking.mlflow_uri, e.g. http://your-mlflow-server:5000 or sqlite:////abs/mlflow.db")}


def problems(tracking: dict, sweep_storage: str) -> list[tuple[str, str]]:
    """(what is wrong, fix) for a tracking section, checked before any work."""
    found = []
    remote = storage.is_remote(storage.normalize(sweep_storage))
    for name, (module, package, where, why, fix) in NEEDS.items():
        if not tracking[name]:
            continue
        if not _importable(module):
            found.append((f"tracking.{name} needs the {package} package", EXTRA))
        if remote and not tracking[where]:
            found.append((f"tracking.{name} {why} and storage is remote", fix))
    return found


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True
