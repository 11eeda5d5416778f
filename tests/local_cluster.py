"""A real multi-node Ray cluster on this machine, started the way users start one (`ray start`).

Each node has its own ports; the cluster lives in a private RAY_TMPDIR, so no
other Ray instance of this user can find it; it is stopped by the process ids
of what it started (never `ray stop`, which ends every Ray process of the
user). Used by the slow cluster tests and bench/cluster.py.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

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


def processes_with(ray_tmpdir: str) -> list[int]:
    """The processes started with this RAY_TMPDIR: Ray's workers rename themselves, their environment stays."""
    marker = f"RAY_TMPDIR={ray_tmpdir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return [pid for pid in found if pid != os.getpid()]


def descendants(roots: set[int]) -> set[int]:
    parent_of = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit():
                parent_of[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = set(), set(roots)
    while frontier:
        frontier = {pid for pid, parent in parent_of.items() if parent in frontier} - found
        found |= frontier
    return found


def kill_processes_naming(text: str) -> None:
    """SIGKILL the processes whose command line names `text`, and every process they started: Ray's agents
    rename themselves (ray::DashboardAgent), so their own command lines no longer name the temp dir."""
    named = set(pids_naming(text))
    for pid in named | descendants(named):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def auth_env(env: dict) -> dict:
    """A token file in ~/.ray turns on token auth for a `ray start` head; joining processes must then say so."""
    return {**env, "RAY_AUTH_MODE": "token"} if (Path.home() / ".ray" / "auth_token").exists() else env


@dataclass
class Cluster:
    env: dict                   # what a process needs to find this cluster with no address (RAY_TMPDIR)
    port: int                   # the head's GCS port
    worker_manager_ports: list[int]
    dashboard_port: int         # the job-submission API, when started with dashboard=True
    client_port: int            # Ray Client: ray://127.0.0.1:<client_port>

    def kill_worker(self, index: int = 0) -> None:
        """SIGKILL one worker node at once, as a lost machine: its raylet, agents and every process they started."""
        port = self.worker_manager_ports[index]
        roots = {pid for marker in (f"node_manager_port={port}", f"node-manager-port={port}")
                 for pid in pids_naming(marker)}
        for pid in roots | descendants(roots):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


NODE_PORTS = 6


def node_ports_flags(ports: list[int]) -> tuple[int, list[str]]:
    """Every port a node listens on, its own: two nodes on one machine must not race for Ray's defaults."""
    manager, objects, agent, agent_grpc, metrics, runtime_env = ports
    return manager, [f"--node-manager-port={manager}", f"--object-manager-port={objects}",
                     f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
                     f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}"]


@contextlib.contextmanager
def local_cluster(head_resources: str | None = None, head_cpus: int = 1, worker_cpus: list[int] = (1,),
                  dashboard_on: bool = False):
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    env = {**os.environ, "RAY_TMPDIR": temp}
    env.pop("RAY_ADDRESS", None)
    # one call, all sockets bound at once: no port is handed out twice (separate calls once gave the dashboard
    # and a node's agent the same one)
    ports = free_ports(3 + NODE_PORTS * (1 + len(worker_cpus)))
    port, client, dashboard = ports[:3]
    node_ports = [node_ports_flags(ports[3 + NODE_PORTS * i: 3 + NODE_PORTS * (i + 1)])
                  for i in range(1 + len(worker_cpus))]
    head = [RAY, "start", "--head", f"--port={port}", f"--ray-client-server-port={client}",
            f"--dashboard-port={dashboard}", f"--include-dashboard={str(dashboard_on).lower()}",
            "--min-worker-port=21000", "--max-worker-port=21099", f"--num-cpus={head_cpus}", "--disable-usage-stats",
            *node_ports[0][1]]
    if head_resources:
        head.append(f"--resources={head_resources}")
    commands = [(head, env)]
    for i, cpus in enumerate(worker_cpus):
        low = 21100 + 100 * i
        commands.append(([RAY, "start", f"--address=127.0.0.1:{port}", f"--min-worker-port={low}",
                          f"--max-worker-port={low + 99}", f"--num-cpus={cpus}", "--disable-usage-stats",
                          *node_ports[1 + i][1]], auth_env(env)))
    try:
        for command, command_env in commands:
            done = subprocess.run(command, env=command_env, capture_output=True, text=True, timeout=120)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        yield Cluster(env, port, [manager for manager, _ in node_ports[1:]], dashboard, client)
    finally:
        kill_processes_naming(temp)
        kill_processes_naming(f"--port={client}\0--mode=proxy")   # Ray Client's server names no temp dir
        shutil.rmtree(temp, ignore_errors=True)
