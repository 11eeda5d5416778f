"""One searcher for the whole sweep: (model, ablation) cells x suggestions x folds x seeds.

Ray's OptunaSearch cannot sit beside tune.grid_search, and one Tuner per cell
would split a sweep into many experiments. This searcher keeps one Optuna
study per cell. Each suggestion becomes one trial per (fold, seed), all with
the same hyperparameters; when they have all finished, the study is told the
mean *validation* objective over them (never a test metric). Without a
search, each cell gets exactly one suggestion: the sweep's fixed settings.
Its state is saved with the experiment as JSON, never a pickle (a pickle in
shared storage runs code when loaded): the bookkeeping as plain values and
the studies as Optuna's own journal (JSON lines), so a resumed sweep
continues the same studies, and `optuna-dashboard <journal>` shows them.
"""
from __future__ import annotations

import json
import math
import os
import tempfile

import optuna
from ray.tune.search import Searcher

from orchestration.store.identity import identity_key
from orchestration.config.spaces import parse_space
from collections.abc import Callable

optuna.logging.set_verbosity(optuna.logging.WARNING)


class SweepSearcher(Searcher):
    def __init__(self, cells: list[tuple[str, str]], folds: list[int], seeds: list[int], search: dict | None = None,
                 metric: str = "objective",
                 mode: str = "max", seed: int = 0, model_options: dict | None = None, publish_to: str | None = None,
                 settings: str | None = None, train_of: Callable[[str, dict], dict] | None = None):
        super().__init__(metric=metric, mode=mode)
        self.train_of = train_of  # (model, hparams) -> the trial's training settings (Sweep.train_of)
        self.settings = settings  # the digest of the settings that decide the numbers: part of each identity
        self.publish_to = publish_to  # a copy of the journal for optuna-dashboard (in the sweep's storage)
        self.model_options = model_options or {}
        self.cells, self.folds, self.seeds = [tuple(c) for c in cells], list(folds), list(seeds)
        self.samples = int(search["samples"]) if search else 1
        self.space = parse_space(search["space"]) if search else None
        self.sampler_name, self.seed = (search or {}).get("sampler", "tpe"), seed
        self.journal = tempfile.NamedTemporaryFile(prefix="optuna-", suffix=".journal", delete=False).name
        self.studies = self._open_studies(create=True)
        self.issued = {cell: 0 for cell in self.cells}
        self.queue: list[dict] = []
        self.groups: dict[str, dict] = {}
        self.trial_group: dict[str, str] = {}
        self.trial_identity: dict[str, str] = {}
        self.next_cell = 0
        self.done: dict[str, float | None] = {}   # identity_key -> objective of trials an earlier run finished
        self.fresh: set[str] = set()             # identity_keys to start from scratch (--restart-errored)

    def _open_studies(self, create: bool) -> dict:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        storage = JournalStorage(JournalFileBackend(self.journal))
        studies = {}
        for index, cell in enumerate(self.cells):
            # resumed samplers are re-seeded from how far their study got, so a resume stays deterministic
            told = 0 if create else self._told(cell, storage)
            seed = self.seed + index + 1000 * told
            sampler = (optuna.samplers.TPESampler(seed=seed, constant_liar=True) if self.sampler_name == "tpe"
                       else optuna.samplers.RandomSampler(seed=seed))
            studies[cell] = optuna.create_study(study_name=study_name(cell), storage=storage, sampler=sampler,
                                                direction="maximize" if self.mode == "max" else "minimize",
                                                load_if_exists=True)
        return studies

    @staticmethod
    def _told(cell: tuple[str, str], storage: optuna.storages.BaseStorage) -> int:
        try:
            return len(optuna.load_study(study_name=study_name(cell), storage=storage).trials)
        except KeyError:   # a cell the sweep file gained since the state was saved
            return 0

    @property
    def total_trials(self) -> int:
        return len(self.cells) * self.samples * len(self.folds) * len(self.seeds)

    def _refill(self) -> None:
        """Queue the next suggestion, taking cells in turn so every cell progresses (finished ones are skipped)."""
        while not self.queue and any(self.issued[cell] < self.samples for cell in self.cells):
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
            configs = [self.member(group, fold, seed) for fold, seed in members]
            self.queue += [c for c in configs if not self._already_done(group, c)]
            self._tell_if_complete(group)

    def member(self, group: str, fold: int, seed: int) -> dict:
        cell, hparams = self.groups[group]["cell"], self.groups[group]["params"]
        config = {"model": cell[0], "ablation": cell[1], "fold": fold, "seed": seed, "hparams": hparams,
                  "group": group, "settings": self.settings, "model_options": self.model_options.get(cell[0], {})}
        return config | ({"train": self.train_of(cell[0], hparams)} if self.train_of else {})

    def _already_done(self, group: str, config: dict) -> bool:
        key = identity_key(config)
        if key in self.done:
            self.groups[group]["results"][key] = self.done[key]
            return True
        return False

    def resume(self, done: dict[str, float | None], fresh: set[str] = frozenset()) -> None:
        """Continue where earlier runs stopped: `done` holds the identities they finished (with objectives).

        Members of groups already issued that are neither done nor queued (in flight when the earlier run
        stopped) are queued again, first; `fresh` ones start from scratch instead of their checkpoint.
        """
        self.done, self.fresh = dict(done), set(fresh)
        queued = {identity_key(c) for c in self.queue}
        again = []
        for group in self.groups:
            self.groups[group]["expected"] = len(self.folds) * len(self.seeds)   # seeds or folds may have grown
            for fold in self.folds:
                for seed in self.seeds:
                    config = self.member(group, fold, seed)
                    if not self._already_done(group, config) and identity_key(config) not in queued:
                        again.append(config)
            self._tell_if_complete(group)
        self.queue = again + [c for c in self.queue if identity_key(c) not in self.done]

    def pending(self) -> bool:
        """Whether any trial is left to suggest (queued, or in a suggestion not yet issued)."""
        if not self.queue:
            self._refill()
        return bool(self.queue)

    def suggest(self, trial_id: str) -> dict | str:
        if not self.queue:
            self._refill()
        if not self.queue:
            return Searcher.FINISHED
        config = self.queue.pop(0)
        self.trial_group[trial_id] = config["group"]
        self.trial_identity[trial_id] = identity_key(config)
        return {**config, "fresh": identity_key(config) in self.fresh}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        group_id = self.trial_group.get(trial_id)
        if group_id is None:
            return
        value = None if error or not result else result.get(self.metric)
        self.groups[group_id]["results"][self.trial_identity.get(trial_id, trial_id)] = value
        self._tell_if_complete(group_id)

    def _tell_if_complete(self, group_id: str) -> None:
        group = self.groups[group_id]
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

    def state(self) -> dict:
        """Everything but the studies, as JSON-safe values (cells become "model/ablation")."""
        return {"cells": [list(c) for c in self.cells], "issued": {"/".join(c): n for c, n in self.issued.items()},
                "queue": self.queue, "groups": {g: {**v, "cell": list(v["cell"])} for g, v in self.groups.items()},
                "trial_group": self.trial_group, "trial_identity": self.trial_identity, "next_cell": self.next_cell}

    def save(self, checkpoint_path: str) -> None:
        with open(self.journal) as handle:
            journal = handle.read()
        tmp = f"{checkpoint_path}.tmp"
        with open(tmp, "w") as handle:
            json.dump({"format": "emosweep-searcher-1", "state": self.state(), "journal": journal}, handle)
        os.replace(tmp, checkpoint_path)
        if self.publish_to and self.space is not None:
            from orchestration.store import storage

            storage.write_text(self.publish_to, journal)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as handle:
            saved = json.load(handle)
        if saved.get("format") != "emosweep-searcher-1":
            raise ValueError(f"{checkpoint_path}: not an emosweep searcher state. Fix: delete the experiment's "
                             "searcher-state files only if you mean to restart its search")
        state = saved["state"]
        # the cells are this run's (a sweep file may gain or drop cells); how far each got is the saved state's
        issued = {tuple(k.split("/", 1)): n for k, n in state["issued"].items()}
        self.issued = {cell: issued.get(cell, 0) for cell in self.cells}
        self.queue, self.trial_group, self.next_cell = state["queue"], state["trial_group"], state["next_cell"]
        self.trial_identity = state.get("trial_identity", {})
        self.groups = {g: {**v, "cell": tuple(v["cell"])} for g, v in state["groups"].items()
                       if tuple(v["cell"]) in self.issued}
        self.queue = [c for c in self.queue if (c["model"], c["ablation"]) in self.issued]
        with open(self.journal, "w") as handle:
            handle.write(saved["journal"])
        self.studies = self._open_studies(create=False)


def study_name(cell: tuple[str, str]) -> str:
    return f"{cell[0]}/{cell[1]}"
