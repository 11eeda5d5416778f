"""Fault injection for tests, kept out of emosweep's own code: it wraps emosweep's functions as their modules are
imported, in whichever process the environment asks for a fault.

EMOSWEEP_INJECT_FAILURE: a JSON list of {epoch, times, marker_dir, and optionally model, ablation, fold, seed}.
  A matching trial fails at the end of `epoch` (before that epoch is reported) while fewer than `times` failures
  were recorded; marker files in marker_dir count the failures across processes and resumes.
EMOSWEEP_AGGREGATE_KILL_AFTER: a table name. Aggregation SIGKILLs itself once it has written that table.
"""
import functools
import importlib.abc
import importlib.util
import json
import os
import signal
import sys
from pathlib import Path

INJECT_FAILURE = "EMOSWEEP_INJECT_FAILURE"
KILL_AFTER = "EMOSWEEP_AGGREGATE_KILL_AFTER"


class InjectedFailure(RuntimeError):
    """Raised on purpose by EMOSWEEP_INJECT_FAILURE."""


def fail_if_asked(config: dict, epoch: int, session) -> None:
    for spec in json.loads(os.environ.get(INJECT_FAILURE) or "[]"):
        if epoch != int(spec.get("epoch", 0)):
            continue
        if any(config.get(k) != v for k, v in spec.items() if k in ("model", "ablation", "fold", "seed")):
            continue
        marker_dir = Path(spec["marker_dir"])
        marker_dir.mkdir(parents=True, exist_ok=True)
        key = f"{config['model']}-{config['ablation']}-{config['fold']}-{config['seed']}"
        done = len(list(marker_dir.glob(f"{key}-*")))
        if done < int(spec.get("times", 1)) and session.rank == 0:
            (marker_dir / f"{key}-{done}").touch()
        if done < int(spec.get("times", 1)):
            raise InjectedFailure(f"injected failure {done + 1} for {key} at epoch {epoch}")


def with_faults(train_loop):
    """The loop, failing where EMOSWEEP_INJECT_FAILURE says: at an epoch's report, so that epoch is never kept."""
    @functools.wraps(train_loop)
    def faulty(config: dict, session):
        report = session.report

        def reporting(metrics: dict, *args, **kwargs):
            if not metrics.get("final"):
                fail_if_asked(config, int(metrics["epoch"]), session)
            return report(metrics, *args, **kwargs)

        session.report = reporting
        return train_loop(config, session)
    return faulty


def killing_after(write_table):
    @functools.wraps(write_table)
    def write(name, *args, **kwargs):
        write_table(name, *args, **kwargs)
        if os.environ.get(KILL_AFTER) == name:
            os.kill(os.getpid(), signal.SIGKILL)
    return write


WRAPS = {"orchestration.run.training": ("train_loop", with_faults, INJECT_FAILURE),
         "orchestration.results.aggregate": ("_write_table", killing_after, KILL_AFTER)}


class Wrapper(importlib.abc.MetaPathFinder):
    """Finds nothing itself: it lets the normal finders find a module of WRAPS, then wraps its function."""

    def find_spec(self, name, path, target=None):
        if name not in WRAPS or not os.environ.get(WRAPS[name][2]):
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        execute = spec.loader.exec_module
        attribute, wrap, _ = WRAPS[name]

        def exec_module(module):
            execute(module)
            setattr(module, attribute, wrap(getattr(module, attribute)))
        spec.loader.exec_module = exec_module
        return spec


def install() -> None:
    if any(os.environ.get(variable) for variable in (INJECT_FAILURE, KILL_AFTER)):
        sys.meta_path.insert(0, Wrapper())
