"""After the trials: what earlier runs left (read back for resuming), then the tables, the report and the
trackers. A report or tracker problem never fails a finished sweep."""
from __future__ import annotations

import importlib
import json
import threading
from pathlib import Path

from ray.tune import Callback

from orchestration.config.record import git_commit
from orchestration.results.selection import CHOSEN, setting_label
from orchestration.store import storage
from ser_models.interrupt import stop_point

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # annotations only
    from orchestration.config.sweep_file import Sweep
    from orchestration.results.tracking import MLflowTracker
    from orchestration.results.tracking import TensorBoardTracker
    from ray.tune.experiment import Trial
    import pandas as pd


def earlier_trials(experiment: str, select_on: str, settings: str) -> tuple[dict, set]:
    """What earlier runs of the sweep left under the current settings: finished identities (with their
    objective) and errored ones. Rows of other settings are `superseded` in the tables, and not counted."""
    from orchestration.results.aggregate import read_experiment
    from orchestration.store.identity import identity_key

    found = read_experiment(experiment, "", with_predictions=False)
    redo = {gap.identity for gap in found["gaps"] if gap.identity}
    done, errored = {}, set()
    for row in found["folds"].to_dict("records"):
        key = identity_key({**row, "hparams": json.loads(row["hparams"] or "{}"), "settings": settings})
        if row["status"] == "finished" and key not in redo:
            done[key] = row.get(select_on)
        elif row["status"] == "error":
            errored.add(key)
    if redo:   # counted unfinished: their trials write the outputs again (verify.py)
        print("[sweep] finished trials whose outputs are incomplete are redone:\n"
              + "\n".join(f"  {gap.line()}" for gap in found["gaps"] if gap.identity), flush=True)
    return done, errored


def in_sweep(folds: pd.DataFrame, sweep: Sweep) -> pd.Series:
    """Rows of the sweep file's current cells (a file that dropped cells keeps their rows in the tables)."""
    cells = folds[["model", "ablation"]].apply(tuple, axis=1).isin(set(sweep.cells))
    chosen = folds["fold"].isin(sweep.fold_indices) if sweep.fold_indices is not None else True
    return cells & folds["seed"].isin(sweep.seeds) & chosen


def finish(sweep: Sweep, root: str, phase_done: Callable[[str], None], tracking: list) -> tuple[dict, bool]:
    """Tables and report; returns the count of trials per status and whether the tables were written."""
    from orchestration.results.aggregate import collect, write_tables
    from orchestration.results.verify import report

    sweep_dir = storage.join(root, sweep.name)
    tables = collect(sweep_dir)
    gaps = tables.pop("gaps")
    folds = tables["folds"]
    counts = folds.loc[in_sweep(folds, sweep), "status"].value_counts().to_dict()
    if gaps:
        print(f"[sweep] tables NOT written: {report(gaps)}", flush=True)
        return counts, False
    try:
        write_tables(tables, sweep_dir)
    except OSError as err:  # a full disk or lost permissions: the results stay in the experiment's files
        print(f"[sweep] {sum(counts.values())} trials: {counts}; tables NOT written ({err}). Fix: free space or "
              f"restore access to {sweep_dir}, then: emosweep results aggregate {sweep_dir}",
              flush=True)
        return counts, False
    phase_done("tables")
    print(f"[sweep] {sum(counts.values())} trials: {counts}; tables: {sweep_dir}/tables/"
          f"{{folds,epochs,predictions,trials,summary,cross}}")
    summary = tables["summary"]
    if not summary.empty:
        print("[sweep] test metrics, mean +- std over folds and seeds (epoch chosen on validation):")
        for row in summary.itertuples():
            setting = setting_label(row.hparams)
            print(f"  {row.model:20s} {row.ablation:20s} UA {row.test_ua_mean:.3f} +- {row.test_ua_std:.3f}  "
                  f"WA {row.test_wa_mean:.3f} +- {row.test_wa_std:.3f}  (n={row.n})"
                  + (f"  {setting}" if row.hparams == CHOSEN else
                     f"  {setting}; kept in {row.val_chosen_folds}/{row.n_folds} folds" if setting else ""))
        stop_point()   # the tables are written: a stop asked for meanwhile skips only the report and tracking
        write_report_safely(sweep_dir)
        phase_done("report")
    for tracker in tracking:
        stop_point()
        publish_safely(tracker, tables, sweep_dir, sweep_facts(sweep, folds))
        for line in tracker.where():
            print(f"[sweep] tracking: {line}")
    return counts, True


def sweep_facts(sweep: Sweep, folds: pd.DataFrame) -> dict:
    """What a tracker's sweep-level run records about the sweep: enough to tell sweeps apart when comparing."""
    classes = next((list(c) for c in folds["classes"] if c is not None), [])
    return {"sweep_file": str(sweep.source), "corpus": sweep.corpus["name"],
            "corpus_root": str(sweep.corpus.get("root") or ""), "folds": sweep.folds or "the corpus's own",
            "classes": ",".join(classes), "cells": ",".join(f"{m}/{a}" for m, a in sweep.cells),
            "seeds": ",".join(map(str, sweep.seeds)), "git_commit": git_commit() or "unknown"}


def publish_safely(tracker: TensorBoardTracker | MLflowTracker, tables: dict, sweep_dir: str, facts: dict) -> None:
    """Final metrics and figures to the trackers; like the report, a tracker's problem never fails the sweep."""
    figures = None if storage.is_remote(sweep_dir) else Path(sweep_dir) / "figures"
    try:
        tracker.publish(tables, figures, facts)
    except Exception as err:  # noqa: BLE001 - a tracking server down or full must not lose the sweep's result
        print(f"[sweep] tracking: final metrics not logged ({type(err).__name__}: {str(err)[:300]}). Fix: check "
              "the tracking section, then run the same command again: it logs them without training", flush=True)


def write_report_safely(sweep_dir: str) -> None:
    """The report is a convenience: a plotting problem must never fail a finished sweep."""
    from orchestration.results.report import write_report

    try:
        print(f"[sweep] report: {write_report(sweep_dir)}")
    except Exception as err:  # noqa: BLE001
        print(f"[sweep] report not written ({err}); run emosweep report {sweep_dir}")


class ReportPreload(Callback):
    """Imports the report's libraries (matplotlib, scipy: 0.6 s) in a thread once the first trial runs, when
    the driver only waits for results, so the report does not pay for them after the last trial. Not
    earlier: before the first trial the driver's own imports are on the critical path, and threads share
    one interpreter lock. Nothing else imports these meanwhile; a failure shows when the report is written."""

    def __init__(self):
        self.started = False

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        if not self.started:
            self.started = True
            threading.Thread(target=self.load, daemon=True).start()

    @staticmethod
    def load() -> None:
        try:
            importlib.import_module("orchestration.results.report")
        except Exception:  # noqa: BLE001 - the report imports it again and says what is wrong
            pass
