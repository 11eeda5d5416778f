"""Console progress for a sweep: trials and epochs done of the total, and an ETA from epochs.

The ETA comes from finished epochs, not finished trials, so it appears after
the first epoch of the first trial. It prints to whatever sys.stdout is at the
time and holds no open file, so it pickles (Ray Client ships callbacks).
"""
from __future__ import annotations

import pickle
import re
import time
from pathlib import Path

from ray.tune import Callback, Stopper

from typing import TYPE_CHECKING

if TYPE_CHECKING:   # annotations only
    from ray.tune.experiment import Trial


class SweepProgress(Callback):
    """resources, shapes: the sweep's resources section and the cluster's NodeShapes, to say what a
    sweep whose trials cannot start is waiting for (the autoscaler, busy nodes)."""

    def __init__(self, total: int, epochs_per_trial: int, every_s: float = 15.0, resources: dict | None = None,
                 shapes: list | None = None):
        self.total, self.epochs_per_trial, self.every_s = total, epochs_per_trial, every_s
        self.done, self.failed, self.running = 0, 0, set()
        self.training: set[str] = set()  # running trials that have reported an epoch
        self.epochs_done = 0
        self.epochs_here = 0  # epochs trained by this process: the ETA's rate
        # the pace counts from the end of the first epoch: Ray's start, the trial process's imports and the first
        # epoch's warm-up once made the first ETA 5-8x too long
        self.first_epoch_at: float | None = None
        self.started, self.last_print = time.monotonic(), 0.0
        self.resources, self.shapes = resources, shapes or []
        self.last_progress, self.waiting, self.waiting_since = time.monotonic(), "", None

    def resume(self, finished_trials: int) -> None:
        self.done, self.epochs_done = finished_trials, finished_trials * self.epochs_per_trial

    @property
    def total_epochs(self) -> int:
        return self.total * self.epochs_per_trial

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        remaining = max(0, self.total_epochs - self.epochs_done)
        eta = "?"
        if self.epochs_here >= 2:
            pace = (time.monotonic() - self.first_epoch_at) / (self.epochs_here - 1)
            eta = f"{pace * remaining / 60:.1f} min"
        waiting = (f"; {self.waiting} for {(time.monotonic() - self.waiting_since) / 60:.1f} min"
                   if self.waiting_since is not None else "")
        return (f"[sweep] {self.done}/{self.total} trials done, {len(self.running)} running, {self.failed} failed; "
                f"epochs {self.epochs_done}/{self.total_epochs}; elapsed {elapsed / 60:.1f} min, ETA {eta}{waiting}")

    @property
    def waited_s(self) -> float:
        return 0.0 if self.waiting_since is None else time.monotonic() - self.waiting_since

    def _check_waiting(self) -> None:
        """Waiting = no trial is training, none has reported for a while, and free resources cannot hold one."""
        quiet = time.monotonic() - self.last_progress > self.every_s
        if self.resources is None or self.training or not quiet or self.done + self.failed >= self.total:
            self.waiting_since = None
            return
        import ray

        from orchestration.config.capacity import waiting_for

        self.waiting = waiting_for(self.resources, ray.available_resources(), self.shapes)
        if self.waiting_since is None:
            self.waiting_since = self.last_progress

    def _print(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last_print >= self.every_s:
            print(self.line(), flush=True)
            self.last_print = now

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        self.running.add(trial.trial_id)
        self._print()

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info) -> None:
        self.last_progress = time.monotonic()
        for note in result.get("notes") or ():    # what the trial found restoring (a damaged checkpoint, ...)
            print(f"[sweep] {trial_label(trial)}: {note}", flush=True)
        self.training.add(trial.trial_id)
        if not result.get("final") and "epoch" in result:
            self.epochs_done += 1
            self.epochs_here += 1
            if self.epochs_here == 1:
                self.first_epoch_at = time.monotonic()
            self._print(force=self.epochs_here == 2)  # the first ETA as soon as there is one

    def _close(self, trial: Trial) -> None:
        """A trial that ended before its last epoch (early stop, error) still fills its share of the total."""
        self.running.discard(trial.trial_id)
        self.training.discard(trial.trial_id)
        self.last_progress = time.monotonic()
        last_epoch = int((trial.last_result or {}).get("epoch", -1))
        self.epochs_done += max(0, self.epochs_per_trial - 1 - last_epoch)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        self._close(trial)
        self.done += 1
        result = trial.last_result or {}
        print(f"[sweep] finished {trial_label(trial)}: val UA {result.get('selected_val_ua', float('nan')):.3f} "
              f"(epoch {result.get('selected_epoch')}), test UA {result.get('test_ua', float('nan')):.3f}",
              flush=True)
        self._print(force=True)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        self._close(trial)
        self.failed += 1
        print(f"[sweep] FAILED {trial_label(trial)}: {last_error(trial)} (traceback: {trial.error_file})",
              flush=True)
        self._print(force=True)

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        """An attempt that failed with retries left (its node lost, its process killed): one line, not Ray's
        traceback. Every epoch is checkpointed, so the retry continues after the last reported epoch."""
        self.running.discard(trial.trial_id)
        self.training.discard(trial.trial_id)
        checkpointed = (trial.latest_checkpoint_result.metrics if trial.latest_checkpoint_result else {})
        epoch = int(checkpointed["epoch"]) + 1 if "epoch" in checkpointed else 0
        retries = int(trial.run_metadata.num_failures), trial.max_failures
        print(f"[sweep] {trial_label(trial)} resumes from epoch {epoch} (retry {retries[0]} of {retries[1]}): "
              f"{last_error(trial)}", flush=True)

    def on_step_end(self, iteration: int, trials: list[Trial], **info) -> None:
        self._check_waiting()
        self._print()


def trial_label(trial: Trial) -> str:
    config = trial.config
    return f"{config.get('model')}/{config.get('ablation')} fold {config.get('fold')} seed {config.get('seed')}"


LOST = {"ActorUnavailableError", "ActorDiedError", "NodeDiedError", "WorkerCrashedError", "RayActorError"}


def last_error(trial: Trial, width: int = 400) -> str:
    """What the trial's last attempt failed with, in one line: the remote traceback's last 'Type: message' line,
    else the exception's type and first line (a lost actor's error has no traceback)."""
    text = Path(trial.error_file).read_text() if trial.error_file and Path(trial.error_file).exists() else ""
    lines = [line.strip() for line in text.rsplit("Failure #", 1)[-1].splitlines()[1:] if line.strip()]
    found = next((line for line in reversed(lines) if re.match(r"^(?:[a-z_]\w*\.)*[A-Z]\w*: ", line)),
                 None)
    if found is None and lines:
        kind = error_type(trial)
        found = (f"its process or its node was lost ({kind})" if kind in LOST else
                 f"{kind}: {lines[0]}" if kind else lines[0])
    found = found or "no error text was recorded"
    return found if len(found) <= width else found[:width - 3] + "..."


def error_type(trial: Trial) -> str | None:
    """The failed attempt's exception class, from the pickle Tune keeps beside error.txt."""
    try:
        with open(trial.pickled_error_file, "rb") as handle:
            return type(pickle.load(handle)).__name__
    except Exception:  # noqa: BLE001 - no pickle (an old Tune, an unpicklable error): the text alone says enough
        return None


class WaitLimit(Stopper):
    """Stops the sweep (resumable) when it has waited for resources longer than resources.wait_timeout_s."""

    def __init__(self, progress: SweepProgress, timeout_s: float):
        self.progress, self.timeout_s = progress, timeout_s

    @property
    def reached(self) -> bool:
        return self.progress.waited_s > self.timeout_s

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.reached


class Phases:
    """Wall time of each phase of a sweep, printed at the end (bench/orchestration.py reads the line)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._started = time.perf_counter()

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._started
        self._started = now

    def line(self) -> str:
        return "[sweep] timing: " + ", ".join(f"{name} {value:.2f} s" for name, value in self.seconds.items())
