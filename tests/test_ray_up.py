"""`ray up cluster-onprem.yaml` for real: the on-prem file brought up over SSH on this machine, a head and a
worker, a sweep run on it with `ray exec`, then `ray down` and `ray stop` on the worker; docs/cluster.md walks a
user through the same commands.

The two "machines" are this one reached through two sshd of the test's own, on 127.0.0.1 (the head, on a free
port, reached through an ssh_proxy_command) and 127.0.0.2 (the worker, on port 22: the head's autoscaler
connects there, since Ray drops the proxy command from the head's copy of the file), with keys made here; each
gives its sessions a home of its own (sshd's SetEnv HOME), so `~/emosweep`, `~/.bashrc` and
`~/ray_bootstrap_config.yaml` never touch the real home. The cluster file is cluster-onprem.yaml with its
placeholders filled and three test-only changes: each node's Ray listens on free ports of its own at its own
address, the setup links this test's Python environment as ~/emosweep-venv instead of downloading torch, and
cluster.env (which every node exports, node-env.sh) gives each node a RAY_TMPDIR of its own besides the moto
bucket's variables and a folder first on PATH with two small programs: `ray`, whose `stop` ends only the
processes started with that node's RAY_TMPDIR (Ray's own would end every Ray process this user has on the
machine; a third Ray instance of this user runs meanwhile and must survive), and `ssh`, which makes the
head's `-i ~/ray_bootstrap_key.pem` absolute (OpenSSH expands ~ with /etc/passwd's home, not $HOME).
"""
from __future__ import annotations

import contextlib
import getpass
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
HEAD, WORKER = "127.0.0.1", "127.0.0.2"

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


NODE_SSH = """#!/bin/sh
# `ssh` on the test's node: OpenSSH expands the ~ of `-i ~/ray_bootstrap_key.pem` (the head's autoscaler
# passes it) with the account's home from /etc/passwd, not with $HOME, and the test's nodes have homes of their
# own; the key's path is made absolute, every other argument (rsync's remote path included) is left alone
previous=
for arg; do
  if [ "$previous" = -i ]; then case $arg in "~/"*) arg="$HOME/${{arg#"~/"}}" ;; esac; fi
  set -- "$@" "$arg"; shift; previous=$arg
done
exec {ssh} "$@"
"""


def need_tools() -> None:
    missing = [tool for tool in ("ssh", "ssh-keygen", "rsync", "nc") if not shutil.which(tool)]
    missing += [] if os.path.exists(SSHD) else ["sshd"]
    if missing:
        pytest.skip(f"`ray up` over SSH needs {', '.join(missing)}: apt-get install openssh-server rsync "
                    "netcat-openbsd (.ci/run installs them)")
    if not can_listen(WORKER, 22):
        pytest.skip(f"the worker's sshd needs port 22 on {WORKER} (the head's autoscaler reaches workers there: "
                    "Ray leaves ssh_proxy_command out of the head's copy of the cluster file); run as root, "
                    "with no sshd listening on 0.0.0.0:22")


def can_listen(address: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


def wait_for_port(address: str, port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited: {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=1):
            return
        time.sleep(0.2)
    raise RuntimeError(f"sshd did not listen on {port}: {log.read_text()[-2000:]}")


def keys(folder: Path) -> Path:
    """A host key and a client key made for the test; the client's is the one authorized."""
    folder.mkdir()
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / key)], check=True)
    shutil.copy(folder / "client_key.pub", folder / "authorized_keys")
    return folder


@contextlib.contextmanager
def sshd_on_loopback(address: str, port: int, keys: Path, home: Path):
    """An sshd on a loopback address that lets this user in with the test's key, into `home`."""
    config = keys / f"sshd-{address}"
    config.write_text(
        f"Port {port}\nListenAddress {address}\nHostKey {keys / 'host_key'}\n"
        f"AuthorizedKeysFile {keys / 'authorized_keys'}\nPidFile {config}.pid\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        f"PermitRootLogin prohibit-password\nSetEnv HOME={home}\n")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)          # sshd's privilege-separation folder, absent until installed
    log = Path(f"{config}.log")
    sshd = subprocess.Popen([SSHD, "-D", "-f", str(config), "-E", str(log)])
    try:
        wait_for_port(address, port, sshd, log)
        yield
    finally:
        for pid in {sshd.pid} | descendants({sshd.pid}):     # the listener and any session still open
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        sshd.wait(timeout=30)


def node_home(home: Path) -> Path:
    """A new account's home (Debian's .bashrc, which returns early for non-interactive shells), with the test's
    `ray` and `ssh` in a folder that cluster.env puts first on PATH."""
    home.mkdir()
    if Path("/etc/skel/.bashrc").is_file():
        shutil.copy("/etc/skel/.bashrc", home / ".bashrc")
    (home / "test-bin").mkdir()
    (home / "test-bin" / "ray").write_text(NODE_RAY.format(python=sys.executable))
    (home / "test-bin" / "ssh").write_text(NODE_SSH.format(ssh=shutil.which("ssh")))
    for tool in ("ray", "ssh"):
        (home / "test-bin" / tool).chmod(0o755)
    return home


def cluster_file(checkout: Path, ssh_port: int, key: Path) -> tuple[Path, int]:
    """cluster-onprem.yaml with its placeholders filled (head HEAD, one worker WORKER), each node's ports
    free and its address its own, the venv linked; and the head's GCS port."""

    config = yaml.safe_load((REPO / "cluster-onprem.yaml").read_text())
    config["cluster_name"] = f"emosweep-test-{uuid.uuid4().hex[:8]}"
    config["provider"].update(head_ip=HEAD, worker_ips=[WORKER])
    config["max_workers"] = 1
    config["auth"] = {"ssh_user": getpass.getuser(), "ssh_private_key": str(key),
                      # Ray's auth has no port setting; the head's copy of the file drops this line, so the
                      # head reaches the worker on port 22
                      "ssh_proxy_command": f"nc %h {ssh_port}"}
    installs = [command for command in config["setup_commands"] if "venv" in command or "pip install" in command]
    assert len(installs) == 3, config["setup_commands"]
    config["setup_commands"] = [command for command in config["setup_commands"] if command not in installs]
    config["setup_commands"].append(f"ln -sfn {sys.prefix} ~/emosweep-venv")
    ports = free_ports(3 + 2 * NODE_PORTS)
    gcs, client, dashboard = ports[:3]
    head = " ".join([f"--port={gcs}", f"--ray-client-server-port={client}", f"--dashboard-port={dashboard}",
                     f"--node-ip-address={HEAD}", "--min-worker-port=22000", "--max-worker-port=22099",
                     "--num-cpus=1", "--disable-usage-stats", *node_ports_flags(ports[3:3 + NODE_PORTS])[1]])
    worker = " ".join([f"{gcs}", f"--node-ip-address={WORKER}", "--min-worker-port=22100",
                       "--max-worker-port=22199", "--num-cpus=1", "--disable-usage-stats",
                       *node_ports_flags(ports[3 + NODE_PORTS:])[1]])
    for commands, default, ours in (("head_start_ray_commands", "--port=6379", head),
                                    ("worker_start_ray_commands", "6379", worker)):
        assert sum(default in command for command in config[commands]) == 1, config[commands]
        config[commands] = [command.replace(default, ours) for command in config[commands]]
    path = checkout / "cluster-test.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, gcs


def autoscaler_log(node_tmp: str) -> str:
    """The tail of the head's autoscaler log (it sets up the workers), for a failure's message."""
    logs = sorted(Path(node_tmp).glob("ray/session_*/logs/monitor.*"))
    return "".join(f"--- {log}\n{log.read_text(errors='replace')[-4000:]}\n" for log in logs)


def keep_logs(node_tmp: Path, into: Path) -> None:
    """A node's Ray logs, kept with the test's folder for a failure's reader (the node's temp dir goes)."""
    logs = node_tmp / "ray" / "session_latest" / "logs"
    if logs.is_dir():
        shutil.copytree(logs, into, dirs_exist_ok=True, ignore_dangling_symlinks=True)


def kill_all(node_tmp: str) -> None:
    for pid in processes_with(node_tmp):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def command_line(pid: int) -> str:
    with contextlib.suppress(OSError):
        return f"{pid} " + Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    return f"{pid} (gone)"


def ray_cli(laptop_env: dict, checkout: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """A `ray` command run where the user runs it: in the checkout (file_mounts' `.` is the folder of `ray up`)."""
    done = subprocess.run([RAY, *args], env=laptop_env, cwd=checkout, capture_output=True, text=True, timeout=timeout)
    print(f"$ ray {' '.join(args)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def test_ray_up_runs_a_sweep_on_head_and_worker_and_ray_down_leaves_no_process(tmp_path, synthetic_root,
                                                                                s3_server):
    need_tools()
    laptop_home, checkout = tmp_path / "laptop", tmp_path / "checkout"
    laptop_home.mkdir()
    homes = {"head": node_home(tmp_path / "head"), "worker": node_home(tmp_path / "worker")}
    run_id = uuid.uuid4().hex[:6]
    node_tmp = {name: f"/tmp/ru{run_id}-{name}" for name in homes}   # short: Ray's socket paths fit in 107 bytes
    # the user's working tree as `ray up` syncs it (.git included: the driver records the commit)
    subprocess.run(["rsync", "-a", "--exclude=.venv", "--exclude=results", "--exclude=build", "--exclude=*.egg-info",
                    "--exclude=__pycache__", "--exclude=.pytest_cache", "--exclude=cluster.env", f"{REPO}/",
                    f"{checkout}/"], check=True)
    bucket = f"s3://{s3_server['bucket']}/rayup-{run_id}"
    (checkout / "cluster.env").write_text(
        "".join(f"{key}={value}\n" for key, value in s3_server.items() if key.startswith("AWS_"))
        + f'RAY_TMPDIR=/tmp/ru{run_id}-$(basename "$HOME")\nPYTHONPATH=$HOME/emosweep\nPATH=$HOME/test-bin:$PATH\n')
    write_sweep(checkout, synthetic_root, name="rayup", storage=f"{bucket}/results", cache=f"{bucket}/cache",
                resources={"mode": "inprocess"})
    laptop_env = {key: value for key, value in os.environ.items()
                  if not key.startswith(("RAY_", "AWS_")) and key != "PYTHONPATH"}
    laptop_env.update(HOME=str(laptop_home), RAY_TMPDIR=tempfile.mkdtemp(prefix="rl", dir="/tmp"))
    token = subprocess.run([RAY, "get-auth-token", "--generate"], env=laptop_env, capture_output=True, text=True)
    assert (laptop_home / ".ray" / "auth_token").is_file(), token.stderr

    def left() -> dict[str, list[str]]:
        """Each node's processes still running, by command line."""
        running = {name: processes_with(folder) for name, folder in node_tmp.items()}
        return {name: [command_line(pid) for pid in pids] for name, pids in running.items() if pids}

    with contextlib.ExitStack() as stack:
        ssh_keys = keys(tmp_path / "ssh")
        [port] = free_ports(1)
        stack.enter_context(sshd_on_loopback(HEAD, port, ssh_keys, homes["head"]))
        stack.enter_context(sshd_on_loopback(WORKER, 22, ssh_keys, homes["worker"]))
        for name, folder in node_tmp.items():
            stack.callback(shutil.rmtree, folder, ignore_errors=True)
            stack.callback(kill_all, folder)                # what a failed run left (`ray down` skips workers)
            stack.callback(keep_logs, Path(folder), tmp_path / f"logs-{name}")
        other = stack.enter_context(local_cluster())              # another Ray of this user: it must survive
        config, gcs = cluster_file(checkout, port, ssh_keys / "client_key")
        cli = lambda *args: ray_cli(laptop_env, checkout, *args)  # noqa: E731
        stack.callback(lambda: left() and cli("down", "-y", str(config)))

        up = cli("up", "-y", "--no-config-cache", str(config))
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        head = homes["head"]
        assert (head / "emosweep" / "cluster.env").is_file()                 # the checkout reached the head
        assert (head / ".ray" / "auth_token").read_text() == (laptop_home / ".ray" / "auth_token").read_text()
        assert (head / ".bashrc").read_text().startswith(". ~/emosweep/node-env.sh")

        # the head's autoscaler sets up the worker (file mounts, setup, `ray start --address` with the token);
        # doctor says ready once both nodes are in
        deadline = time.monotonic() + 240
        while True:
            doctor = cli("exec", str(config), "emosweep doctor ~/emosweep/rayup.yaml")
            if doctor.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(10)
        assert doctor.returncode == 0, doctor.stdout[-3000:] + autoscaler_log(node_tmp["head"])
        assert f":{gcs}: 2 node(s)" in doctor.stdout                            # the head's Ray, found with no address
        assert "[check] 2 node(s)" in doctor.stdout and "ready" in doctor.stdout
        assert doctor.stdout.count("writable / ok / copied to") == 2            # the bucket, from each node's Ray
        worker = homes["worker"]
        assert (worker / ".ray" / "auth_token").read_text() == (head / ".ray" / "auth_token").read_text()
        assert (worker / ".bashrc").read_text().startswith(". ~/emosweep/node-env.sh")

        run = cli("exec", str(config), "cd ~/emosweep && python orchestration/sweep.py rayup.yaml")
        assert run.returncode == 0, run.stdout[-4000:]
        assert f":{gcs}: 2 node(s)" in run.stdout and "done: 2/2 trials finished" in run.stdout, run.stdout[-3000:]
        assert len(table(f"{bucket}/results", "rayup")) == 2
        recorded = json.loads(read_bytes(f"{bucket}/results/rayup/sweep.json"))
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
        assert recorded["git_commit"] == commit.stdout.strip()              # .git travelled with the checkout

        assert set(left()) == {"head", "worker"}                            # both nodes' Ray are up until now
        down = cli("down", "-y", str(config))
        assert down.returncode == 0 and "command not found" not in down.stdout + down.stderr
        assert "head" not in left(), left()                                 # `ray down` ran `ray stop` there
        # Ray's local provider stops only the head: a worker's raylet exits once it gives up on the head (60 s),
        # its log monitor never; docs/cluster.md has the user run `ray stop` on each worker, as here
        stop = subprocess.run(["ssh", "-i", str(ssh_keys / "client_key"), "-o", "StrictHostKeyChecking=no",
                               "-o", "UserKnownHostsFile=/dev/null", f"{getpass.getuser()}@{WORKER}", "ray stop"],
                              env=laptop_env, capture_output=True, text=True, timeout=120)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert left() == {}
        assert subprocess.run([RAY, "status", f"--address=127.0.0.1:{other.port}"], env={**other.env, **(
            {"RAY_AUTH_MODE": "token"} if (Path.home() / ".ray" / "auth_token").exists() else {})},
            capture_output=True, text=True, timeout=60).returncode == 0           # the other Ray still runs
