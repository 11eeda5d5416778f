"""Joining or starting Ray for a sweep, and what the cluster can hold: used by `run` and by `doctor`."""
from __future__ import annotations

import json
import os
import time

from orchestration.config.sweep_file import SweepError

from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # annotations only
    from orchestration.config.capacity import NodeShape

EMBEDDED_RESOURCES = {"TRAIN_DRIVER": 64}  # the embedded instance's: DDP trial drivers hold this, never a CPU


def init_ray(ray: ModuleType, address: str | None, **options) -> object:
    """ray.init; through Ray Client, retried twice when the head fails to spawn this client's server process.

    The proxier forks that process from a threaded gRPC server; under load the child at times dies at birth
    ("Starting Ray client server failed", or an "Initialization failure from server" naming a zombie
    process, ray-project/ray#63408). The next attempt gets a fresh one.
    """
    for attempt in range(3):
        try:
            return ray.init(address=address, **options)
        except ConnectionError as err:
            if not str(address or "").startswith("ray://") or not spawn_failure(err) or attempt == 2:
                raise
            print(f"[sweep] the cluster's Ray Client server did not start (attempt {attempt + 1}); trying again",
                  flush=True)
            time.sleep(3)


def spawn_failure(err: ConnectionError) -> bool:
    return any(sign in str(err) for sign in ("client server failed", "Initialization failure from server"))


def start_ray(address: str | None, verbose: bool, dashboard: bool = False) -> object:
    """Join the cluster Ray finds (--address, RAY_ADDRESS, a `ray start` on this machine), else start one.

    `ray.init()` does the finding; nothing local-only is passed, because passing
    resources while joining is an error. A node that Ray starts itself reads
    RAY_OVERRIDE_RESOURCES (the autoscaler's own mechanism), which is how the
    embedded instance gets TRAIN_DRIVER; a joined cluster ignores it, and include_dashboard too.
    """
    import ray

    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS")
    check_listening(address)
    ours = "RAY_OVERRIDE_RESOURCES" not in os.environ
    if ours:
        os.environ["RAY_OVERRIDE_RESOURCES"] = json.dumps(EMBEDDED_RESOURCES)
    try:
        # through Ray Client the Tune loop and its progress lines run on the head: their output must come back
        client = str(address or "").startswith("ray://")
        local = {} if client else {"include_dashboard": dashboard}   # Ray Client accepts no node options
        context = init_ray(ray, address, log_to_driver=verbose or client, configure_logging=verbose, **local)
    except Exception as err:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError, auth errors
        raise SweepError(
            f"cannot connect to the Ray cluster at {address or 'this machine'}: {type(err).__name__}: {err}. "
            "Fix: check the address (ray status shows it on the head), that the cluster runs the same Ray "
            "version as this environment, and, for a cluster with token authentication, export "
            "RAY_AUTH_MODE=token with the cluster's ~/.ray/auth_token; or unset RAY_ADDRESS to run locally"
        ) from None
    finally:
        if ours:
            del os.environ["RAY_OVERRIDE_RESOURCES"]
    resources = ray.cluster_resources()
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    print(f"[sweep] Ray {ray.get_runtime_context().gcs_address}: {len(nodes)} node(s), "
          f"{resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs"
          + (f", TRAIN_DRIVER {resources['TRAIN_DRIVER']:g}" if "TRAIN_DRIVER" in resources else "")
          + (f"; dashboard http://{context.dashboard_url}" if getattr(context, "dashboard_url", None) else ""),
          flush=True)
    return ray


def check_listening(address: str | None) -> None:
    """Fail in seconds, not after Ray's minutes of reconnecting, when nothing listens at a host:port address."""
    import socket

    if not address or address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not port.isdigit():
        return
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=10).close()
    except OSError as err:
        raise SweepError(f"nothing answers at the Ray address {address} ({err}). Fix: start the cluster (ray up, or "
                         f"ray start --head), check the address (`ray status` on the head prints it), or unset "
                         f"RAY_ADDRESS / drop --address to run on this machine") from None


def cluster_shapes(ray: ModuleType) -> list[NodeShape]:
    """Live nodes plus the worker node types the autoscaler may add (orchestration/config/capacity.py)."""
    from orchestration.config.capacity import autoscaler_shapes, live_shapes

    return live_shapes(ray.nodes()) + autoscaler_shapes()


def report_autoscaler(shapes: list[NodeShape]) -> None:
    from orchestration.config.capacity import format_resources

    addable = [shape for shape in shapes if not shape.live]
    if addable:
        print("[sweep] the autoscaler can add: " + ", ".join(
            f"{shape.name} up to {shape.count} x {format_resources(shape.resources)}" for shape in addable), flush=True)
