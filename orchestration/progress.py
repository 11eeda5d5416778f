"""Console progress for a sweep: trials done / running / failed of the total, and an ETA."""
from __future__ import annotations

import sys
import time

from ray.tune import Callback


class SweepProgress(Callback):
    def __init__(self, total: int, already_done: int = 0, every_s: float = 15.0, stream=sys.stdout):
        self.total, self.every_s, self.stream = total, every_s, stream
        self.done, self.failed, self.running = already_done, 0, set()
        self.started, self.last_print, self.finished_here = time.monotonic(), 0.0, 0

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        remaining = self.total - self.done - self.failed
        eta = "?" if not self.finished_here else f"{elapsed / self.finished_here * remaining / 60:.1f} min"
        return (f"[sweep] {self.done}/{self.total} done, {len(self.running)} running, {self.failed} failed, "
                f"elapsed {elapsed / 60:.1f} min, ETA {eta}")

    def _print(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last_print >= self.every_s:
            print(self.line(), file=self.stream, flush=True)
            self.last_print = now

    def on_trial_start(self, iteration, trials, trial, **info):
        self.running.add(trial.trial_id)
        self._print()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)
        self.done += 1
        self.finished_here += 1
        config = trial.config
        result = trial.last_result or {}
        print(f"[sweep] finished {config.get('model')}/{config.get('ablation')} fold {config.get('fold')} "
              f"seed {config.get('seed')}: val UA {result.get('selected_val_ua', float('nan')):.3f} "
              f"(epoch {result.get('selected_epoch')}), test UA {result.get('test_ua', float('nan')):.3f}",
              file=self.stream, flush=True)
        self._print(force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)
        self.failed += 1
        self.finished_here += 1
        print(f"[sweep] FAILED {trial.config.get('model')}/{trial.config.get('ablation')} fold "
              f"{trial.config.get('fold')}: see {trial.local_path}/error.txt", file=self.stream, flush=True)
        self._print(force=True)

    def on_step_end(self, iteration, trials, **info):
        self._print()
