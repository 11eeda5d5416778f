"""Preflight: can this sweep run on this cluster? `python orchestration/sweep.py SWEEP.yaml --check`.

Joins the cluster the sweep would use (or starts the embedded one), then:
lists every node with its CPUs, GPUs and custom resources, the node types
the autoscaler may add and their maxima; runs one small task on each node
that reports its Ray, torch and Python versions, writes a probe file to the
sweep's storage, reads an object the driver put in the object store (the
way trials receive the plan) and a probe file the driver put in the feature
cache (the way trials read shards: in place, or into the node's copy folder);
and validates the sweep file against all of it. Every problem is printed with its fix; the exit code is 2 if any.
"""
from __future__ import annotations

import contextlib
import os
import platform
import shutil
import socket
from pathlib import Path

from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # annotations only
    from orchestration.config.sweep_file import Sweep

CACHE_PROBE = b"emosweep cache probe"


def probe_node(storage_root: str, shipped: list, cache_probe: str | None, variables: tuple[str, ...]) -> dict:
    """Runs on one node: what a trial there would find, and which of the storage's variables its Ray has (the
    names; values never leave the node)."""
    import ray
    import torch

    from orchestration.store import storage
    from ser_models.data.location import variables_set

    found = {"host": socket.gethostname(), "ray": ray.__version__, "torch": torch.__version__,
             "python": platform.python_version(), "cuda": torch.cuda.is_available()}
    try:
        storage.check_writable(storage_root)
        found["storage"] = "writable"
    except OSError as err:
        found["storage"] = f"NOT writable: {err}"
    try:
        found["object_store"] = "ok" if ray.get(shipped[0]) == "features" else "wrong object"
    except Exception as err:  # noqa: BLE001 - any failure to fetch is the finding
        found["object_store"] = f"unreachable: {type(err).__name__}: {err}"
    found["cache"] = probe_cache(cache_probe)
    found["variables"] = sorted(variables_set(variables))
    return found


def probe_cache(probe: str | None) -> str:
    """How trials on this node reach the feature cache (as shards.FeatureStore.local_path does): a folder
    this node sees is read in place; a bucket, or a folder only the driver's machine has, is copied shard by
    shard into the node's copy folder, which must be writable."""
    from ser_models.data.location import is_remote, read_bytes
    from ser_models.data.shards import NODE_CACHE
    from ser_models.data.sizing import human

    from orchestration.store.storage import check_could_write

    if probe is None:
        return "not probed"
    if is_remote(probe):
        try:
            if read_bytes(probe) != CACHE_PROBE:
                return f"NOT readable: {probe} is not there"
        except OSError as err:
            return f"NOT readable: {err}"
    elif os.path.exists(probe):
        return "read in place"
    try:
        check_could_write(str(NODE_CACHE))
    except OSError as err:
        return f"NOT usable: its copy folder {NODE_CACHE}: {err}"
    existing = NODE_CACHE
    while not existing.exists():
        existing = existing.parent
    return f"copied to {NODE_CACHE} ({human(shutil.disk_usage(existing).free)} free)"


def node_reports(ray: ModuleType, storage_root: str, cache_probe: str | None,
                 variables: tuple[str, ...]) -> list[tuple[dict, dict]]:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    marker = ray.put("features")
    remote = ray.remote(num_cpus=0)(probe_node)
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    futures = [remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
               .remote(storage_root, [marker], cache_probe, variables) for node in nodes]
    reports = []
    for node, future in zip(nodes, futures):
        try:
            reports.append((node, ray.get(future, timeout=120)))
        except Exception as err:  # noqa: BLE001
            reports.append((node, {"error": f"{type(err).__name__}: {err}"}))
    return reports


def lacking(report: dict, driver_has: set[str], variables: tuple[str, ...]) -> str:
    """The storage variables the driver has and this node's Ray lacks, as the fix's first words."""
    missing = [name for name in variables if name in driver_has and name not in report.get("variables", ())]
    if not missing:
        return ""
    return (f"this node's Ray lacks {', '.join(missing)}, which the driver has: put them in cluster.env (node-env.sh "
            "exports it on every node before `ray start`; run `ray up` again) or export them before that node's "
            "`ray start`. Otherwise: ")


def problems_of(reports: list[tuple[dict, dict]], driver_ray: str, driver_has: set[str],
                variables: tuple[str, ...]) -> list[str]:
    problems = []
    for node, report in reports:
        name = f"node {node['NodeID'][:8]} ({node.get('NodeManagerAddress')})"
        if "error" in report:
            problems.append(f"{name}: the probe task failed: {report['error']}. Fix: check that the node runs this "
                            "environment (pip install -e '.[cluster]') and `ray status` lists it")
            continue
        if report["ray"] != driver_ray:
            problems.append(f"{name}: Ray {report['ray']}, the driver has {driver_ray}. Fix: install the same Ray "
                            "version on every node (cluster.yaml pins the image)")
        if report["storage"] != "writable":
            problems.append(f"{name}: storage {report['storage']}. Fix: {lacking(report, driver_has, variables)}"
                            "mount the same shared path on every node, or "
                            "use s3://... with credentials on every node (cluster.yaml gives workers an instance "
                            "profile)")
        if report["object_store"] != "ok":
            problems.append(f"{name}: object store {report['object_store']}. Fix: open the object manager port "
                            "between nodes (cluster.yaml uses 8076)")
        if report["cache"].startswith("NOT readable"):
            problems.append(f"{name}: feature cache {report['cache']}. Fix: {lacking(report, driver_has, variables)}"
                            "give every node the bucket's credentials before its `ray start` (AWS_ENDPOINT_URL, "
                            "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION in cluster.env; "
                            "cluster.yaml: an instance profile)")
        elif report["cache"].startswith("NOT usable"):
            problems.append(f"{name}: feature cache {report['cache']}. Fix: on that node, set EMOSWEEP_NODE_CACHE "
                            "to a writable local disk with room for the features (`emosweep check` prints the "
                            "bytes per node) before its `ray start`")
    return problems


BOOTSTRAP = Path.home() / "ray_bootstrap_config.yaml"   # what `ray up` leaves on the head


def missing_workers(bootstrap: Path, joined: set[str]) -> list[str]:
    """Machines an on-prem cluster file lists (provider.worker_ips) that are not in the cluster: a worker whose
    `ray start` failed, most often for want of the head's token (token authentication)."""
    import yaml

    if not bootstrap.is_file():
        return []
    provider = (yaml.safe_load(bootstrap.read_text()) or {}).get("provider") or {}
    problems = []
    for worker in provider.get("worker_ips") or []:
        try:
            address = socket.gethostbyname(str(worker))
        except OSError:
            address = str(worker)
        if address not in joined and str(worker) not in joined:
            problems.append(f"worker {worker} (provider.worker_ips of {bootstrap}) has not joined the cluster. "
                            "`ray up` sets workers up from the head after it returns, over SSH on port 22 with "
                            "~/ray_bootstrap_key.pem; if it has not joined a few minutes later, the head's autoscaler "
                            "log says why: tail -n 50 /tmp/ray/session_latest/logs/monitor.{out,log}. Fix by hand: "
                            f"on {worker}, copy the head's ~/.ray/auth_token to ~/.ray/auth_token and run "
                            "RAY_AUTH_MODE=token ray start --address=HEAD:6379")
    return problems


def check(sweep: Sweep, address: str | None, verbose: bool) -> int:
    from orchestration.store import storage
    from orchestration.config.capacity import format_resources
    from orchestration.config.sweep_file import SweepError
    from orchestration.config.checks import validate
    from ser_models.data.cache import DEFAULT_CACHE
    from ser_models.data.location import probe_file, variables_for, variables_set
    from orchestration.run.cluster import cluster_shapes, start_ray

    problems = []
    try:
        validate(sweep)
    except SweepError as err:
        problems.append(str(err))
    ray = start_ray(address, verbose)
    try:
        shapes = cluster_shapes(ray)
        root = storage.normalize(sweep.storage)
        cache = sweep.cache or str(DEFAULT_CACHE)
        with contextlib.ExitStack() as stack:
            try:
                cache_probe = stack.enter_context(probe_file(cache, CACHE_PROBE))
            except OSError as err:
                cache_probe = None
                problems.append(f"the driver cannot write the feature cache {cache}: {err}. Fix: point `cache:` at "
                                "a folder or bucket this user can write (for a bucket: AWS_ENDPOINT_URL, "
                                "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_DEFAULT_REGION set where the "
                                "driver runs)")
            variables = tuple(dict.fromkeys(variables_for(root) + variables_for(cache)))
            reports = node_reports(ray, root, cache_probe, variables)
        print(f"{'node':10s} {'address':16s} {'resources':44s} {'ray':7s} {'torch':14s} {'python':8s} "
              "storage / object store / feature cache")
        for node, report in reports:
            print(f"{node['NodeID'][:8]:10s} {node.get('NodeManagerAddress', ''):16s} "
                  f"{format_resources(node.get('Resources') or {}):44s} {report.get('ray', '?'):7s} "
                  f"{report.get('torch', '?'):14s} {report.get('python', '?'):8s} "
                  f"{report.get('storage', report.get('error', '?'))} / {report.get('object_store', '?')} / "
                  f"{report.get('cache', '?')}")
        for shape in shapes:
            if not shape.live:
                print(f"autoscaler node type {shape.name}: up to {shape.count} x {format_resources(shape.resources)}")
        problems += problems_of(reports, ray.__version__, variables_set(variables), variables)
        problems += missing_workers(BOOTSTRAP, {node.get("NodeManagerAddress") for node, _ in reports})
        try:
            validate(sweep, cluster=shapes)
        except SweepError as err:
            problems.append(str(err))
    finally:
        ray.shutdown()
    for problem in dict.fromkeys(problems):
        print(f"problem: {problem}")
    print(f"[check] {len(reports)} node(s), storage {root}, feature cache {cache}: " + ("ready" if not problems else
                                                                 f"{len(problems)} problem(s)"))
    return 2 if problems else 0
