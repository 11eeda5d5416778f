"""`ray up cluster-onprem.yaml` for real: the on-prem file brought up over SSH on this machine, a sweep run on it
with `ray exec`, then `ray down`; docs/cluster.md walks a user through the same commands.

The "node" is this machine reached through an sshd of the test's own (127.0.0.1, a free port, keys made here)
whose sessions get a home of their own (sshd's SetEnv HOME), so `~/emosweep`, `~/.bashrc` and
`~/ray_bootstrap_config.yaml` never touch the real home. The cluster file is cluster-onprem.yaml with its
placeholders filled and three test-only changes: the head's ports are free ones, the setup links this test's
Python environment as ~/emosweep-venv instead of downloading torch, and cluster.env (the file every node
exports, node-env.sh) gives the node a RAY_TMPDIR of its own and the moto bucket's variables. `ray stop`, which
`ray up` and `ray down` send, would end every Ray process this user has on the machine; on the node it is a
small `ray` first on PATH that stops the processes started with this node's RAY_TMPDIR and hands every other
command to Ray. A second Ray instance of this user runs meanwhile and must survive.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import yaml

from .local_cluster import (NODE_PORTS, RAY, descendants, free_ports, local_cluster, node_ports_flags,
                            processes_with)
from ser_models.data.location import read_bytes

from .sweeps import REPO, table, write_sweep

pytestmark = pytest.mark.slow

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"

NODE_RAY = '''#!{python}
"""`ray` on the test's node: `ray stop` stops this node's Ray only (the processes started with its RAY_TMPDIR),
never another Ray of this user on the machine; every other command is Ray's own."""
import os
import signal
import sys
import time

sys.path.insert(0, os.path.expanduser("~/emosweep"))
from tests.local_cluster import processes_with  # noqa: E402

if sys.argv[1:2] != ["stop"]:
    ray = os.path.expanduser("~/emosweep-venv/bin/ray")
    os.execv(ray, [ray, *sys.argv[1:]])
mine, spared, pid = os.environ["RAY_TMPDIR"], set(), os.getpid()
while pid > 1:                                  # this command's own shell and its parents stay
    spared.add(pid)
    pid = int(open(f"/proc/{{pid}}/stat").read().rsplit(")", 1)[1].split()[1])
ours = set(processes_with(mine)) - spared
for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
    for pid in ours:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + wait
    while (set(processes_with(mine)) & ours) and time.monotonic() < deadline:
        time.sleep(0.2)
print(f"stopped {{len(ours)}} Ray process(es) of {{mine}}")
'''


def need_tools() -> None:
    missing = [tool for tool in ("ssh", "ssh-keygen", "rsync", "nc") if not shutil.which(tool)]
    missing += [] if os.path.exists(SSHD) else ["sshd"]
    if missing:
        pytest.skip(f"`ray up` over SSH needs {', '.join(missing)}: apt-get install openssh-server rsync "
                    "netcat-openbsd (.ci/run installs them)")


def wait_for_port(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited: {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.2)
    raise RuntimeError(f"sshd did not listen on {port}: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def sshd_on_loopback(folder: Path, node_home: Path):
    """An sshd on 127.0.0.1 that lets this user in with a key made here; yields (port, private key)."""
    folder.mkdir()
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / key)], check=True)
    shutil.copy(folder / "client_key.pub", folder / "authorized_keys")
    [port] = free_ports(1)
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPidFile {folder / 'sshd.pid'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        f"PermitRootLogin prohibit-password\nSetEnv HOME={node_home}\n")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)          # sshd's privilege-separation folder, absent until installed
    log = folder / "sshd.log"
    sshd = subprocess.Popen([SSHD, "-D", "-f", str(folder / "sshd_config"), "-E", str(log)])
    try:
        wait_for_port(port, sshd, log)
        yield port, folder / "client_key"
    finally:
        for pid in {sshd.pid} | descendants({sshd.pid}):     # the listener and any session still open
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        sshd.wait(timeout=30)


def cluster_file(checkout: Path, ssh_port: int, key: Path) -> tuple[Path, int]:
    """cluster-onprem.yaml with its placeholders filled, the head's ports free, the venv linked; and the head's
    GCS port."""
    import getpass

    config = yaml.safe_load((REPO / "cluster-onprem.yaml").read_text())
    config["cluster_name"] = f"emosweep-test-{uuid.uuid4().hex[:8]}"
    config["provider"].update(head_ip="127.0.0.1", worker_ips=[])
    config["max_workers"] = 0
    config["auth"] = {"ssh_user": getpass.getuser(), "ssh_private_key": str(key),
                      "ssh_proxy_command": f"nc 127.0.0.1 {ssh_port}"}   # Ray's auth has no port setting
    installs = [command for command in config["setup_commands"] if "venv" in command or "pip install" in command]
    assert len(installs) == 3, config["setup_commands"]
    config["setup_commands"] = [command for command in config["setup_commands"] if command not in installs]
    config["setup_commands"].append(f"ln -sfn {sys.prefix} ~/emosweep-venv")
    ports = free_ports(3 + NODE_PORTS)
    gcs, client, dashboard = ports[:3]
    flags = " ".join([f"--port={gcs}", f"--ray-client-server-port={client}", f"--dashboard-port={dashboard}",
                      "--min-worker-port=22000", "--max-worker-port=22099", "--num-cpus=2",
                      "--disable-usage-stats", *node_ports_flags(ports[3:])[1]])
    [start] = [command for command in config["head_start_ray_commands"] if "ray start" in command]
    assert "--port=6379" in start
    config["head_start_ray_commands"] = [command.replace("--port=6379", flags)
                                         for command in config["head_start_ray_commands"]]
    path = checkout / "cluster-test.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, gcs


def ray_cli(laptop_env: dict, checkout: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """A `ray` command run where the user runs it: in the checkout (file_mounts' `.` is the folder of `ray up`)."""
    done = subprocess.run([RAY, *args], env=laptop_env, cwd=checkout, capture_output=True, text=True, timeout=timeout)
    print(f"$ ray {' '.join(args)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def test_ray_up_runs_a_sweep_and_ray_down_leaves_no_process(tmp_path, synthetic_root, s3_server):
    need_tools()
    node_home, laptop_home, checkout = tmp_path / "node", tmp_path / "laptop", tmp_path / "checkout"
    node_home.mkdir()
    laptop_home.mkdir()
    if Path("/etc/skel/.bashrc").is_file():                # a new account's home, as on a fresh machine
        shutil.copy("/etc/skel/.bashrc", node_home / ".bashrc")
    node_tmp = tempfile.mkdtemp(prefix="ru", dir="/tmp")      # short: Ray's socket paths must fit in 107 bytes
    # the user's working tree as `ray up` syncs it (.git included: the driver records the commit)
    subprocess.run(["rsync", "-a", "--exclude=.venv", "--exclude=results", "--exclude=build", "--exclude=*.egg-info",
                    "--exclude=__pycache__", "--exclude=.pytest_cache", "--exclude=cluster.env", f"{REPO}/",
                    f"{checkout}/"], check=True)
    bucket = f"s3://{s3_server['bucket']}/rayup-{uuid.uuid4().hex[:6]}"
    (checkout / "cluster.env").write_text(
        "".join(f"{key}={value}\n" for key, value in s3_server.items() if key.startswith("AWS_"))
        + f"RAY_TMPDIR={node_tmp}\nPYTHONPATH=$HOME/emosweep\nPATH=$HOME/test-bin:$PATH\n")
    (node_home / "test-bin").mkdir()
    (node_home / "test-bin" / "ray").write_text(NODE_RAY.format(python=sys.executable))
    (node_home / "test-bin" / "ray").chmod(0o755)
    write_sweep(checkout, synthetic_root, name="rayup", storage=f"{bucket}/results",
                cache=f"{bucket}/cache", resources={"mode": "inprocess"})
    laptop_env = {key: value for key, value in os.environ.items()
                  if not key.startswith(("RAY_", "AWS_")) and key != "PYTHONPATH"}
    laptop_env.update(HOME=str(laptop_home), RAY_TMPDIR=tempfile.mkdtemp(prefix="rl", dir="/tmp"))
    token = subprocess.run([RAY, "get-auth-token", "--generate"], env=laptop_env, capture_output=True, text=True)
    assert (laptop_home / ".ray" / "auth_token").is_file(), token.stderr

    with contextlib.ExitStack() as stack:
        port, key = stack.enter_context(sshd_on_loopback(tmp_path / "sshd", node_home))
        stack.callback(shutil.rmtree, node_tmp, ignore_errors=True)
        other = stack.enter_context(local_cluster())              # another Ray of this user: it must survive
        config, gcs = cluster_file(checkout, port, key)
        cli = lambda *args: ray_cli(laptop_env, checkout, *args)  # noqa: E731
        stack.callback(lambda: processes_with(node_tmp) and cli("down", "-y", str(config)))

        up = cli("up", "-y", "--no-config-cache", str(config))
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        assert (node_home / "emosweep" / "cluster.env").is_file()              # the checkout reached the node
        assert (node_home / ".ray" / "auth_token").read_text() == (laptop_home / ".ray" / "auth_token").read_text()
        assert (node_home / ".bashrc").read_text().startswith(". ~/emosweep/node-env.sh")

        doctor = cli("exec", str(config), "emosweep doctor ~/emosweep/rayup.yaml")
        assert doctor.returncode == 0, doctor.stdout[-3000:]
        assert f":{gcs}: 1 node(s)" in doctor.stdout                            # the head's Ray, found with no address
        assert "[check] 1 node(s)" in doctor.stdout and "ready" in doctor.stdout
        assert "writable / ok / copied to" in doctor.stdout                   # the bucket, from the node's Ray

        run = cli("exec", str(config), "cd ~/emosweep && python orchestration/sweep.py rayup.yaml")
        assert run.returncode == 0, run.stdout[-4000:]
        assert f":{gcs}: 1 node(s)" in run.stdout and "done: 2/2 trials finished" in run.stdout, run.stdout[-3000:]
        assert len(table(f"{bucket}/results", "rayup")) == 2
        recorded = json.loads(read_bytes(f"{bucket}/results/rayup/sweep.json"))
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
        assert recorded["git_commit"] == head.stdout.strip()                # .git travelled with the checkout

        assert processes_with(node_tmp)                                     # the node's Ray is up until now
        down = cli("down", "-y", str(config))
        assert down.returncode == 0 and "command not found" not in down.stdout + down.stderr
        deadline = time.monotonic() + 30
        while processes_with(node_tmp) and time.monotonic() < deadline:
            time.sleep(1)
        assert processes_with(node_tmp) == []
        assert subprocess.run([RAY, "status", f"--address=127.0.0.1:{other.port}"], env={**other.env, **(
            {"RAY_AUTH_MODE": "token"} if (Path.home() / ".ray" / "auth_token").exists() else {})},
            capture_output=True, text=True, timeout=60).returncode == 0           # the other Ray still runs
