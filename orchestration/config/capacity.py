"""Can the cluster ever run a trial, and what is a waiting sweep waiting for?

An autoscaling cluster is judged by what it can grow to, not by what is up
this second: a fresh `ray up cluster.yaml` has a head with no CPUs and no
workers yet. The autoscaler's own view of its node types and their maxima is
the bootstrap config that `ray up` writes on the head
(~/ray_bootstrap_config.yaml, the file its monitor runs from);
EMOSWEEP_AUTOSCALER_CONFIG names another.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"
RESOURCE_KEYS = ("CPU", "GPU")


@dataclass
class NodeShape:
    name: str            # a live node's id, or an autoscaler node type
    resources: dict
    count: int           # 1 for a live node; max_workers for a node type
    live: bool


def trial_bundles(resources: dict) -> list[dict]:
    """One resource bundle per process a trial runs: 1 in-process, workers_per_trial with DDP."""
    bundle = {"CPU": float(resources["cpus_per_worker"]), "GPU": float(resources["gpus_per_worker"])}
    bundle = {key: value for key, value in bundle.items() if value > 0}
    return [bundle] * (int(resources["workers_per_trial"]) if resources["mode"] == "ddp" else 1)


def live_shapes(nodes: list[dict]) -> list[NodeShape]:
    """From ray.nodes()."""
    return [NodeShape(node["NodeID"][:8], dict(node.get("Resources") or {}), 1, True)
            for node in nodes if node.get("Alive")]


def autoscaler_shapes(path: str | None = None) -> list[NodeShape]:
    """Worker node types the autoscaler may add (none when this is not a `ray up` head)."""
    location = Path(os.path.expanduser(path or os.environ.get("EMOSWEEP_AUTOSCALER_CONFIG", BOOTSTRAP_CONFIG)))
    if not location.is_file():
        return []
    config = yaml.safe_load(location.read_text()) or {}
    head = config.get("head_node_type")
    return [NodeShape(name, dict(spec.get("resources") or {}), int(spec.get("max_workers", 0)), False)
            for name, spec in (config.get("available_node_types") or {}).items()
            if name != head and int(spec.get("max_workers", 0)) > 0]


def copies(bundle: dict, resources: dict) -> int:
    """How many bundles fit on one node with these resources."""
    needed = [(key, amount) for key, amount in bundle.items() if amount > 0]
    if not needed:
        return 1 << 30
    return min(int(math.floor(resources.get(key, 0) / amount + 1e-9)) for key, amount in needed)


def never_fits(resources: dict, shapes: list[NodeShape]) -> str | None:
    """Why no trial could ever run on these nodes and node types, or None when one can."""
    bundles = trial_bundles(resources)
    if not bundles[0]:
        return None
    room = sum(copies(bundles[0], shape.resources) * shape.count for shape in shapes)
    if room >= len(bundles):
        return None
    described = "; ".join(f"{'node' if s.live else 'node type'} {s.name}"
                          f"{'' if s.live else f' (up to {s.count})'}: {format_resources(s.resources)}"
                          for s in shapes) or "none"
    what = f"{len(bundles)} worker(s) of {format_resources(bundles[0])}" if len(bundles) > 1 else \
        format_resources(bundles[0])
    return (f"a trial needs {what}, and no node of this cluster, now or that its autoscaler can add, "
            f"holds it ({described})")


def waiting_for(resources: dict, available: dict, shapes: list[NodeShape]) -> str:
    """What a sweep whose trials cannot start is waiting for, in words for the progress line."""
    bundles = trial_bundles(resources)
    need = {key: sum(b.get(key, 0) for b in bundles) for key in RESOURCE_KEYS}
    missing = {key: need[key] - available.get(key, 0) for key in RESOURCE_KEYS if need[key] > available.get(key, 0)}
    if not missing:
        return "waiting for the scheduler"
    addable = [s for s in shapes if not s.live]
    if "GPU" in missing and addable:
        per_node = max(s.resources.get("GPU", 0) for s in addable) or 1
        return f"waiting for {math.ceil(missing['GPU'] / per_node)} GPU worker(s) (the autoscaler adds them)"
    return "waiting for " + ", ".join(f"{value:g} more {key}" for key, value in missing.items()) + \
        (" (the autoscaler adds nodes)" if addable else " (busy: other trials or jobs hold them)")


def format_resources(resources: dict) -> str:
    shown = {key: value for key, value in resources.items() if key in RESOURCE_KEYS or key == "TRAIN_DRIVER"}
    return "{" + ", ".join(f"{key}: {value:g}" for key, value in sorted(shown.items())) + "}"
