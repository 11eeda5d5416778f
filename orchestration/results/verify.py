"""What a finished trial claims, checked against what the sweep's storage holds.

A trial counts as finished when a result.json of its identity holds its final report. That report claims:

  epochs       one row per epoch it ran, 0 to its last (the final report carries them all: `history`)
  predictions  <experiment>/predictions/<identity>.parquet with its n_test rows, written before that report
  validation   <identity>.validation.parquet with its n_validation rows: the chosen model's validation scores,
               which automatic ensembles choose by (not after a refit; not in sweeps run before they existed)
  context      <identity>.context.parquet, where its test dialogs have turns outside the task
  checkpoint   the final checkpoint the report names, holding the chosen model the outputs come from
  DED facts    utterances.parquet and fold_splits.parquet beside the experiment, where there are dialogs

A gap is one of these missing or unreadable. `emosweep results verify SWEEP_DIR` lists them; aggregation
publishes no tables while there are any (`--allow-gaps` to publish what there is); and a sweep counts a
trial with a gap as unfinished, so running its command again redoes just that trial's outputs: from its
final checkpoint, without training, when that is intact.
"""
from __future__ import annotations

from dataclasses import dataclass

FIX = ("Fix: run the sweep's command again: it redoes only these trials' outputs (without training where their "
       "final checkpoint is intact)")


@dataclass(frozen=True)
class Gap:
    trial: str                 # "fg_cme/full fold 2 seed 0 (trial 6ba8d69d)", or "the sweep"
    identity: str | None       # the trial's identity_key: the run that redoes it looks it up
    what: str
    where: str

    def line(self) -> str:
        return f"{self.trial}: {self.what}: {self.where}"


def trial_name(key: dict) -> str:
    return f"{key['model']}/{key['ablation']} fold {key['fold']} seed {key['seed']} (trial {key['trial_id']})"


def epoch_gaps(key: dict, identity: str, final: dict, epochs: set, where: str) -> list[Gap]:
    """Every epoch 0..last must have its row, the selected one above all."""
    missing = sorted(set(range(int(final["epoch"]) + 1)) - set(epochs))
    if not missing:
        return []
    selected = " (the selected epoch among them)" if final.get("selected_epoch") in missing else ""
    return [Gap(trial_name(key), identity, f"no row for epoch(s) {missing}{selected}", where)]


def report(gaps: list[Gap]) -> str:
    trials = {gap.trial for gap in gaps if gap.identity}
    lines = [f"{len(gaps)} missing output(s) of {len(trials)} finished trial(s):"]
    lines += [f"  {gap.line()}" for gap in gaps]
    return "\n".join(lines + [FIX])
