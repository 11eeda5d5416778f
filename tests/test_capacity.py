"""Admission against what an autoscaling cluster can grow to, not what is up this second."""
import pytest
import yaml

from orchestration.config.capacity import NodeShape, autoscaler_shapes, never_fits, trial_bundles, waiting_for
from orchestration.config.sweep_file import SweepError, parse_sweep
from orchestration.config.checks import validate

from .conftest import REPO

FRESH_HEAD = NodeShape("head", {"CPU": 0.0, "TRAIN_DRIVER": 64.0, "memory": 1e10}, 1, True)


@pytest.fixture
def bootstrap_config(tmp_path):
    """cluster.yaml as `ray up` leaves it on the head: the AWS provider fills in each instance type's CPUs and GPUs."""
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    config["available_node_types"]["gpu_worker"]["resources"] = {"CPU": 8, "GPU": 1}   # g5.2xlarge
    path = tmp_path / "ray_bootstrap_config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def resources(**given):
    return {"mode": "inprocess", "workers_per_trial": 1, "cpus_per_worker": 1, "gpus_per_worker": 0.0, **given}


def test_node_types_and_maxima_come_from_the_bootstrap_config(bootstrap_config):
    shapes = autoscaler_shapes(str(bootstrap_config))
    assert [(s.name, s.count, s.resources) for s in shapes] == [("gpu_worker", 8, {"CPU": 8, "GPU": 1})]
    assert autoscaler_shapes(str(bootstrap_config.with_name("absent.yaml"))) == []   # not a `ray up` head


def test_a_fresh_ray_up_cluster_admits_what_its_workers_will_hold(bootstrap_config):
    shapes = [FRESH_HEAD, *autoscaler_shapes(str(bootstrap_config))]
    assert never_fits(resources(gpus_per_worker=1), shapes) is None
    assert never_fits(resources(mode="ddp", workers_per_trial=8, gpus_per_worker=1, cpus_per_worker=4), shapes) is None
    assert never_fits(resources(), [FRESH_HEAD]) is not None          # the same check without the autoscaler's view


@pytest.mark.parametrize("asked, why", [
    (dict(gpus_per_worker=2), "GPU: 2"),                                     # no node type has 2 GPUs
    (dict(cpus_per_worker=16), "CPU: 16"),
    (dict(mode="ddp", workers_per_trial=9, gpus_per_worker=1), "9 worker(s)"),  # 8 GPU workers at most
])
def test_a_trial_no_node_type_can_hold_is_refused_with_a_fix(bootstrap_config, asked, why, tmp_path):
    shapes = [FRESH_HEAD, *autoscaler_shapes(str(bootstrap_config))]
    assert why in never_fits(resources(**asked), shapes)
    sweep = parse_sweep({"name": "s", "corpus": "synthetic", "models": {"fg_cme": ["full"]},
                         "train": {"batch_size": 72}, "resources": resources(**asked)}, "s.yaml")
    with pytest.raises(SweepError, match="no node of this cluster.*Fix: lower resources"):
        validate(sweep, cluster=shapes)


def test_waiting_says_what_is_missing(bootstrap_config):
    shapes = [FRESH_HEAD, *autoscaler_shapes(str(bootstrap_config))]
    ddp = resources(mode="ddp", workers_per_trial=2, gpus_per_worker=1)
    assert waiting_for(ddp, {"CPU": 0, "TRAIN_DRIVER": 64}, shapes) == \
        "waiting for 2 GPU worker(s) (the autoscaler adds them)"
    assert "1 more CPU (busy" in waiting_for(resources(), {"CPU": 0}, [FRESH_HEAD])
    assert trial_bundles(ddp) == [{"CPU": 1.0, "GPU": 1.0}] * 2
