"""One searcher for the whole sweep: (model, ablation) cells x suggestions x folds x seeds.

Ray's OptunaSearch cannot sit beside tune.grid_search, and one Tuner per cell
would split a sweep into many experiments. This searcher keeps one Optuna
study per cell. Each suggestion becomes one trial per (fold, seed), all with
the same hyperparameters; when they have all finished, the study is told the
mean *validation* objective over them (never a test metric). Without a
search, each cell gets exactly one suggestion: the sweep's fixed settings.
Its whole state is pickled with the experiment, so a resumed sweep continues
the same studies.
"""
from __future__ import annotations

import math
import pickle

import optuna
from ray.tune.search import Searcher

from .spaces import parse_space

optuna.logging.set_verbosity(optuna.logging.WARNING)


class SweepSearcher(Searcher):
    def __init__(self, cells, folds, seeds, search: dict | None = None, metric: str = "objective",
                 mode: str = "max", seed: int = 0, model_options: dict | None = None):
        super().__init__(metric=metric, mode=mode)
        self.model_options = model_options or {}
        self.cells, self.folds, self.seeds = [tuple(c) for c in cells], list(folds), list(seeds)
        self.samples = int(search["samples"]) if search else 1
        self.space = parse_space(search["space"]) if search else None
        sampler_name = (search or {}).get("sampler", "tpe")
        self.studies = {}
        for index, cell in enumerate(self.cells):
            sampler = (optuna.samplers.TPESampler(seed=seed + index, constant_liar=True) if sampler_name == "tpe"
                       else optuna.samplers.RandomSampler(seed=seed + index))
            self.studies[cell] = optuna.create_study(direction="maximize" if mode == "max" else "minimize",
                                                     sampler=sampler)
        self.issued = {cell: 0 for cell in self.cells}
        self.queue: list[dict] = []
        self.groups: dict[str, dict] = {}
        self.trial_group: dict[str, str] = {}
        self.next_cell = 0

    @property
    def total_trials(self) -> int:
        return len(self.cells) * self.samples * len(self.folds) * len(self.seeds)

    def _refill(self) -> None:
        """Queue the next suggestion, taking cells in turn so every cell progresses."""
        for _ in range(len(self.cells)):
            cell = self.cells[self.next_cell]
            self.next_cell = (self.next_cell + 1) % len(self.cells)
            if self.issued[cell] >= self.samples:
                continue
            number, params = None, {}
            if self.space is not None:
                optuna_trial = self.studies[cell].ask(self.space)
                number, params = optuna_trial.number, dict(optuna_trial.params)
            group = f"{cell[0]}/{cell[1]}/{self.issued[cell]}"
            self.issued[cell] += 1
            members = [(fold, seed) for fold in self.folds for seed in self.seeds]
            self.groups[group] = {"cell": cell, "optuna_number": number, "params": params,
                                  "expected": len(members), "results": {}}
            self.queue += [{"model": cell[0], "ablation": cell[1], "fold": fold, "seed": seed, "hparams": params,
                            "group": group, "model_options": self.model_options.get(cell[0], {})}
                           for fold, seed in members]
            return

    def suggest(self, trial_id: str):
        if not self.queue:
            self._refill()
        if not self.queue:
            return Searcher.FINISHED
        config = self.queue.pop(0)
        self.trial_group[trial_id] = config["group"]
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        group_id = self.trial_group.get(trial_id)
        if group_id is None:
            return
        group = self.groups[group_id]
        value = None if error or not result else result.get(self.metric)
        group["results"][trial_id] = value
        if len(group["results"]) < group["expected"] or group.get("told") or group["optuna_number"] is None:
            return
        study = self.studies[group["cell"]]
        values = list(group["results"].values())
        if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
            # a failed fold would bias the mean toward the folds that survived: tell Optuna it failed
            study.tell(group["optuna_number"], state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(group["optuna_number"], sum(values) / len(values))
        group["told"] = True

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(self.__dict__, handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            self.__dict__.update(pickle.load(handle))
