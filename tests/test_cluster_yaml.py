"""The cluster files are checked offline against Ray's autoscaler schema and our own policy."""
import json
import os

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
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token" in c for c in starts)
    assert "export RAY_AUTH_MODE=token" in setup


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
    from orchestration.record import read_git_head

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
