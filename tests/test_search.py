"""The sweep searcher's saved state is JSON plus Optuna's journal, and a restored searcher continues."""
import json

from orchestration.run.search import SweepSearcher

SEARCH = {"sampler": "tpe", "samples": 3, "space": {"lr": [1.0e-4, 1.0e-2, "log"]}}


def drive(searcher, trials: int, start: int = 0) -> list[dict]:
    configs = []
    for i in range(start, start + trials):
        config = searcher.suggest(f"t{i}")
        configs.append(config)
        searcher.on_trial_complete(f"t{i}", {"objective": 0.5 + 0.01 * i})
    return configs


def test_a_restored_searcher_continues_exactly_where_the_saved_one_was(tmp_path):
    cells, folds = [("fg_cme", "full"), ("cma", "raw")], [0, 1]
    original = SweepSearcher(cells, folds, [0], SEARCH, publish_to=str(tmp_path / "sweep" / "optuna.journal"))
    drive(original, 5)
    original.save(str(tmp_path / "state"))
    saved = json.loads((tmp_path / "state").read_text())          # plain JSON: nothing in it can run code
    assert saved["format"] == "emosweep-searcher-1" and saved["journal"]
    assert (tmp_path / "sweep" / "optuna.journal").read_text() == saved["journal"]

    restored = SweepSearcher(cells, folds, [0], SEARCH)
    restored.restore(str(tmp_path / "state"))
    assert restored.queue == original.queue and restored.groups.keys() == original.groups.keys()
    for cell in cells:
        assert [(t.number, t.state, t.value, t.params) for t in restored.studies[cell].trials] == \
            [(t.number, t.state, t.value, t.params) for t in original.studies[cell].trials]
    rest = drive(restored, restored.total_trials - 5, start=5)
    assert len(rest) == 7 and restored.suggest("t99") == "FINISHED"
    told = [t for cell in cells for t in restored.studies[cell].trials if t.value is not None]
    assert len(told) == 6                                           # every suggestion told, across the restore


def test_each_trial_gets_its_settings_resolved_once_in_the_driver():
    """Defaults, the model's recipe, the sweep file, then the searched value: the trial reads them as given."""
    from orchestration.config.sweep_file import parse_sweep

    sweep = parse_sweep({"name": "t", "corpus": "synthetic", "models": {"fg_cme": ["full"], "cma": ["raw"]},
                         "train": {"batch_size": 8}, "search": SEARCH}, "t.yaml")
    searcher = SweepSearcher(sweep.cells, [0], [0], SEARCH, train_of=sweep.train_of)
    for config in drive(searcher, 4):
        expected = sweep.train_of(config["model"]) | {"lr": config["hparams"]["lr"]}
        assert config["train"] == expected and config["train"]["batch_size"] == 8
    recipe = {model: sweep.train_of(model) for model in ("fg_cme", "cma")}
    assert recipe["fg_cme"] != recipe["cma"]     # each model's own recipe under the file's keys
