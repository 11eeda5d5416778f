"""cluster.yaml is checked offline against Ray's autoscaler schema and our own policy."""
import json
import os

import yaml

from .conftest import REPO


def test_cluster_yaml_is_valid_for_ray_up():
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    schema = json.loads(open(os.path.join(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json")).read())
    jsonschema.validate(config, schema)
    full = prepare_config(config)
    validate_config(full)
    assert full["head_node_type"] in full["available_node_types"]
    head = full["available_node_types"][full["head_node_type"]]
    assert head["resources"]["TRAIN_DRIVER"] >= 1 and head["resources"]["CPU"] == 0
    assert full["available_node_types"]["gpu_worker"]["min_workers"] == 0       # scales to zero
    assert full["docker"]["image"].endswith("2.60.0-py311-gpu")                # pinned Ray version


def test_typos_are_caught():
    import jsonschema
    import pytest
    import ray.autoscaler

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    config["idle_timeout_minute"] = 5
    schema = json.loads(open(os.path.join(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json")).read())
    with pytest.raises(jsonschema.ValidationError, match="idle_timeout_minute"):
        jsonschema.validate(config, schema)
