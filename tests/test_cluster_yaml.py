"""The cluster files are checked offline against Ray's autoscaler schema and our own policy."""
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from .conftest import REPO

CLUSTER_FILES = ["cluster.yaml", "cluster-onprem.yaml"]


def ray_schema() -> dict:
    import ray.autoscaler

    return json.loads(open(os.path.join(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json")).read())


def prepared(name: str) -> dict:
    """The file as `ray up` sees it: schema-checked, defaults filled in, validated."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / name).read_text())
    jsonschema.validate(config, ray_schema())
    full = prepare_config(config)
    validate_config(full)
    return full


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_cluster_files_are_valid_for_ray_up_and_follow_policy(name):
    full = prepared(name)
    start_head = " ".join(full["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start_head                       # never 0.0.0.0
    head_type = full["available_node_types"][full["head_node_type"]]
    assert (head_type["resources"].get("TRAIN_DRIVER", 0) >= 1              # the AWS file declares it per type,
            or '"TRAIN_DRIVER": 64' in start_head)                          # the on-prem one starts the head with it
    setup = " ".join(full["setup_commands"])
    assert "[cluster]" in setup                                        # boto3 (s3://) on every node
    assert not any(".git" in pattern for pattern in full["rsync_exclude"])   # the commit is recorded from the driver
    # token authentication: one token on every node, and every `ray start` and driver shell in token mode
    assert any(target.endswith(".ray/auth_token") and source == "~/.ray/auth_token"
               for target, source in full["file_mounts"].items())
    starts = [c for c in full["head_start_ray_commands"] + full["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2 and not any("RAY_AUTH_MODE=" in c for c in starts)     # node-env.sh says it, once
    if full["provider"]["type"] == "local":     # v2, ray up's default, never starts worker_ips (test_ray_up.py)
        assert "RAY_enable_autoscaler_v2=0 ray start --head" in start_head


def test_aws_file_scales_gpu_workers_from_zero_with_storage_credentials():
    full = prepared("cluster.yaml")
    head = full["available_node_types"][full["head_node_type"]]
    assert head["resources"]["CPU"] == 0                                     # the head never trains
    worker = full["available_node_types"]["gpu_worker"]
    assert worker["min_workers"] == 0
    assert worker["node_config"]["IamInstanceProfile"] == {"Name": "ray-autoscaler-v1"}  # S3 from workers too
    assert full["docker"]["image"].endswith("2.60.0-py311-gpu")             # pinned Ray version


def test_typos_are_caught():
    import jsonschema

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    config["idle_timeout_minute"] = 5
    with pytest.raises(jsonschema.ValidationError, match="idle_timeout_minute"):
        jsonschema.validate(config, ray_schema())


def test_the_commit_is_read_from_git_files_where_git_cannot_run(tmp_path):
    """Cluster images may lack git, or refuse a checkout owned by another user: .git's files still say it."""
    from orchestration.config.record import read_git_head

    git = tmp_path / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "packed-refs").write_text("# pack-refs with: peeled\n" + "a" * 40 + " refs/heads/main\n")
    assert read_git_head(git) == "a" * 40                     # packed, as after a fresh clone
    (git / "refs" / "heads" / "main").write_text("b" * 40 + "\n")
    assert read_git_head(git) == "b" * 40                     # a loose ref wins
    (git / "HEAD").write_text("c" * 40 + "\n")
    assert read_git_head(git) == "c" * 40                     # detached HEAD
    assert read_git_head(tmp_path / "nowhere") is None


def test_doctor_names_a_listed_worker_that_has_not_joined(tmp_path):
    from orchestration.doctor import missing_workers

    bootstrap = tmp_path / "ray_bootstrap_config.yaml"
    assert missing_workers(bootstrap, {"127.0.0.1"}) == []                      # no `ray up` here: nothing listed
    config = yaml.safe_load((REPO / "cluster-onprem.yaml").read_text())
    config["provider"]["worker_ips"] = ["127.0.0.1", "10.255.255.1"]
    bootstrap.write_text(yaml.safe_dump(config))
    problems = missing_workers(bootstrap, {"127.0.0.1"})
    assert len(problems) == 1 and problems[0].startswith("worker 10.255.255.1 ")
    assert "RAY_AUTH_MODE=token ray start --address" in problems[0] and "auth_token" in problems[0]
    assert "port 22" in problems[0] and "logs/monitor.{out,log}" in problems[0]      # where `ray up`'s attempt is told


DEBIAN_BASHRC = """# ~/.bashrc: executed by bash(1) for non-login shells.
case $- in
    *i*) ;;
      *) return;;
esac
export HISTSIZE=1000
"""


def node_shell(home: Path, command: str, interactive: bool) -> str:
    """`command` in a node's shell as Ray's SSH runner opens it (interactive, ~/.bashrc sourced), or as plain
    `ssh node command` does (bash -c, which sources ~/.bashrc because sshd starts it)."""

    wrapped = (["bash", "--login", "-c", "-i", f"source ~/.bashrc; {command}"] if interactive
               else ["bash", "-c", f"source ~/.bashrc; {command}"])
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "TERM": "dumb"}
    done = subprocess.run(wrapped, env=env, cwd=home, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_every_shell_ray_opens_on_a_node_finds_ray_the_token_mode_and_the_storage_variables(name, tmp_path):
    """The cluster file's setup, run in a node's home: afterwards `ray` (also the `ray stop` that `ray down` sends)
    is the one setup installed, RAY_AUTH_MODE=token, and cluster.env's variables are exported, in Ray's
    interactive shells and in plain ssh commands alike."""

    full = prepared(name)
    home = tmp_path / "home"
    checkout_target = next(target for target, source in full["file_mounts"].items() if source == ".")
    assert checkout_target in ("~/emosweep", "/home/ray/emosweep")          # the AWS image's user is ray
    assert not any("cluster.env" in pattern or pattern == "*.env" for pattern in full["rsync_exclude"])
    (home / "emosweep").mkdir(parents=True)
    shutil.copy(REPO / "node-env.sh", home / "emosweep")
    (home / "emosweep" / "cluster.env").write_text("AWS_ENDPOINT_URL=http://minio.internal:9000\n"
                                                   "AWS_ACCESS_KEY_ID=k\n")
    (home / ".bashrc").write_text(DEBIAN_BASHRC)
    installs = [c for c in full["setup_commands"] if "node-env.sh" in c]
    assert len(installs) == 1 and full["setup_commands"].index(installs[0]) == 0
    (home / ".bashrc").unlink()
    done = subprocess.run(["bash", "-c", installs[0]], env={"HOME": str(home)}, capture_output=True, text=True)
    assert done.returncode == 0 and (home / ".bashrc").read_text().strip() == ". ~/emosweep/node-env.sh"
    (home / ".bashrc").write_text(DEBIAN_BASHRC)
    for _ in range(2):                                              # `ray up` again must not add it twice
        done = subprocess.run(["bash", "-c", installs[0]], env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
    bashrc = (home / ".bashrc").read_text()
    assert bashrc.count("node-env.sh") == 1 and bashrc.endswith(DEBIAN_BASHRC)

    # the Python environment setup installs into: a bin folder (~/emosweep-venv/bin/pip), or the image's own
    pip = next(c.split()[0] for c in full["setup_commands"] if " install " in c and "[cluster]" in c)
    venv_bin = pip.rpartition("/")[0].replace("~", str(home))
    if venv_bin:
        Path(venv_bin).mkdir(parents=True)
        (Path(venv_bin) / "ray").write_text("#!/bin/sh\n")
        (Path(venv_bin) / "ray").chmod(0o755)
    for interactive in (True, False):
        seen = node_shell(home, "command -v ray; echo mode=$RAY_AUTH_MODE; echo endpoint=$AWS_ENDPOINT_URL; "
                                "bash -c 'echo child=$AWS_ACCESS_KEY_ID'", interactive)
        if venv_bin:
            assert seen.splitlines()[0] == f"{venv_bin}/ray"
        assert "mode=token" in seen and "endpoint=http://minio.internal:9000" in seen
        assert "child=k" in seen                                    # exported: `ray start`'s processes inherit it
    for command in full["head_start_ray_commands"] + full["worker_start_ray_commands"]:
        for call in command.split(";"):   # leading VAR=value words set the environment
            words = [word for word in call.split() if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=\S*", word)]
            assert not words or words[0] in ("ulimit", "ray"), command  # bare `ray`: the one on the node's PATH


def test_doctor_names_the_storage_variables_a_node_lacks():
    from orchestration.doctor import problems_of

    variables = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    report = {"ray": "2.60.0", "storage": "NOT writable: AWS Error ACCESS_DENIED", "object_store": "ok",
              "cache": "read in place", "variables": ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]}
    node = {"NodeID": "ab" * 20, "NodeManagerAddress": "10.0.0.7"}
    driver_has = {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}
    [problem] = problems_of([(node, report)], "2.60.0", driver_has, variables)
    assert "node abababab (10.0.0.7): storage NOT writable" in problem
    assert "lacks AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, which the driver has" in problem and "cluster.env" in problem
    # an instance profile on both sides: no variable is named, the general fix stays
    [general] = problems_of([(node, {**report, "variables": []})], "2.60.0", set(), variables)
    assert "lacks" not in general and "mount the same shared path" in general
