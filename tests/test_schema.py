"""One schema for every sweep key: typos and wrong types at any depth are caught at load time, with a fix."""
import json

import pytest
import yaml

from orchestration.config import schema
from orchestration.config.sweep_file import SweepError, parse_sweep
from orchestration.config.checks import validate

from .conftest import REPO

BASE = {"name": "s", "corpus": "synthetic", "models": {"fg_cme": ["full"]}}


@pytest.mark.parametrize("change, message", [
    ({"train": {"epoch": 3}}, "train.epoch: unknown key (did you mean 'epochs'?)"),
    ({"resources": {"gpu_per_worker": 1}}, "resources.gpu_per_worker: unknown key (did you mean 'gpus_per_worker'?)"),
    ({"train": {"lr": "fast"}}, "train.lr: must be an integer or a number, got 'fast'"),
    ({"train": {"epochs": 2.5}}, "train.epochs: must be an integer, got 2.5"),
    ({"train": {"test_oracle": "yes"}}, "train.test_oracle: must be true or false, got 'yes'"),
    ({"train": {"select_on": "val_uaa"}},
     "train.select_on: 'val_uaa' is not one of ['val_ua', 'val_wa', 'val_macro_f1', 'val_loss'] "
     "(did you mean 'val_ua'?)"),
    ({"resources": {"mode": "dpp"}}, "resources.mode: 'dpp' is not one of ['inprocess', 'ddp'] (did you mean 'ddp'?)"),
    ({"resources": {"workers_per_trial": 0}}, "resources.workers_per_trial: must be at least 1, got 0"),
    ({"search": {"samples": 2}}, "search.space: missing"),
    ({"search": {"sampler": "tpe", "samples": 2, "space": {"lr": [0.1, 1]}, "sample": 3}},
     "search.sample: unknown key (did you mean 'samples'?)"),
    ({"storrage": "x"}, "storrage: unknown key (did you mean 'storage'?)"),
])
def test_typos_and_wrong_types_are_errors_with_the_key_and_a_fix(change, message):
    with pytest.raises(SweepError) as raised:
        parse_sweep({**BASE, **change}, "s.yaml")
    assert f"s.yaml: {message}" in str(raised.value) and "Fix:" in str(raised.value)


def test_every_problem_is_reported_at_once():
    with pytest.raises(SweepError) as raised:
        parse_sweep({**BASE, "train": {"epoch": 3, "lr": "fast"}, "resources": {"mode": "dpp"}}, "s.yaml")
    assert len(str(raised.value).splitlines()) == 3


def test_a_search_space_names_real_hyperparameters():
    sweep = parse_sweep({**BASE, "search": {"samples": 2, "space": {"lrr": [1e-4, 1e-2, "log"]}}}, "s.yaml")
    with pytest.raises(SweepError, match=r"search.space.lrr: not a training setting nor a hyperparameter of model "
                                         r"'fg_cme' \(did you mean 'lr'\?\)"):
        validate(sweep)
    validate(parse_sweep({**BASE, "search": {"samples": 2, "space": {"lr": [1e-4, 1e-2, "log"]}}}, "s.yaml"))


def test_defaults_come_from_the_schema():
    sweep = parse_sweep(BASE, "s.yaml")
    assert sweep.train == schema.defaults("train") and sweep.resources == schema.defaults("resources")


def test_reference_docs_and_json_schema_are_generated_from_the_schema():
    assert (REPO / "docs" / "sweep-keys.md").read_text() == schema.reference_markdown(), \
        "run: python -m orchestration.config.schema"
    assert json.loads((REPO / "docs" / "sweep.schema.json").read_text()) == schema.json_schema()
    rows = [line for line in schema.reference_markdown().splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == [key.path for key in schema.KEYS]   # one row per key, in order


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_the_shipped_sweep_files_validate_against_the_json_schema(name):
    import jsonschema

    from orchestration.config.sweep_file import parse_sweep

    data = yaml.safe_load((REPO / "configs" / name).read_text())
    jsonschema.validate(data, schema.json_schema())
    parse_sweep(data, name)          # and load: every key known, every type right


def test_the_json_schema_catches_a_nested_typo_as_an_editor_would():
    import jsonschema

    with pytest.raises(jsonschema.ValidationError, match="epoch"):
        jsonschema.validate({**BASE, "train": {"epoch": 3}}, schema.json_schema())
