"""The sweep joins a real cluster started with `ray start` on this machine, with no RAY_ADDRESS (as `ray submit`).

A head and a worker node, each with its own ports, in a private RAY_TMPDIR so
no other Ray instance of this user can find them; stopped by the process ids
of what they started (never `ray stop`, which ends every Ray process of the user).
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from .sweeps import REPO, table, write_sweep

pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).with_name("ray"))


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def pids_naming(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
        except OSError:
            continue
    return [pid for pid in found if pid != os.getpid()]


@pytest.fixture
def ray_start_cluster():
    """Head (1 CPU, no TRAIN_DRIVER: any cluster not made from cluster.yaml) + a worker node (1 CPU)."""
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    env = {**os.environ, "RAY_TMPDIR": temp}
    env.pop("RAY_ADDRESS", None)
    port, *ports = free_ports(9)
    common = ["--num-cpus=1", "--disable-usage-stats"]
    head = [RAY, "start", "--head", f"--port={port}", f"--node-manager-port={ports[0]}",
            f"--object-manager-port={ports[1]}", f"--ray-client-server-port={ports[2]}",
            f"--dashboard-port={ports[3]}", "--include-dashboard=false",
            "--min-worker-port=21000", "--max-worker-port=21099", *common]
    # a token file in ~/.ray turns on token auth for the head; the joining node must then say so
    worker_env = {**env, **({"RAY_AUTH_MODE": "token"} if (Path.home() / ".ray" / "auth_token").exists() else {})}
    worker = [RAY, "start", f"--address=127.0.0.1:{port}", f"--node-manager-port={ports[4]}",
              f"--object-manager-port={ports[5]}", "--min-worker-port=21100", "--max-worker-port=21199", *common]
    try:
        for command, command_env in ((head, env), (worker, worker_env)):
            done = subprocess.run(command, env=command_env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        yield env, port
    finally:
        for pid in pids_naming(temp):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(temp, ignore_errors=True)


def test_sweep_joins_a_ray_start_cluster_without_an_address(ray_start_cluster, tmp_path, synthetic_root):
    env, port = ray_start_cluster
    path = write_sweep(tmp_path, synthetic_root, train={"epochs": 1, "batch_size": 8, "lr": 3e-3})
    done = subprocess.run([sys.executable, str(REPO / "orchestration" / "sweep.py"), str(path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f":{port}: 2 node(s), 2 CPUs" in done.stdout  # the cluster's two nodes, not a new local instance
    assert "resources must not be provided" not in done.stderr
    trials = table(tmp_path)
    assert len(trials) == 2 and set(trials["status"]) == {"finished"}
    status = subprocess.run([RAY, "status", f"--address=127.0.0.1:{port}"], env={**env, "RAY_AUTH_MODE": "token"}
                            if (Path.home() / ".ray" / "auth_token").exists() else env,
                            capture_output=True, text=True, timeout=60)
    assert status.stdout.count("node_") == 2  # the sweep disconnected; the cluster it joined is still up

    # DDP trial drivers hold TRAIN_DRIVER, which this cluster lacks: refused before any trial, with the fix
    ddp = write_sweep(tmp_path, synthetic_root, name="ddp", resources={"mode": "ddp", "workers_per_trial": 1})
    refused = subprocess.run([sys.executable, str(REPO / "orchestration" / "sweep.py"), str(ddp)], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert "TRAIN_DRIVER" in refused.stderr and "ray start --head --resources" in refused.stderr
    assert not (tmp_path / "results" / "ddp" / "experiment").exists()
