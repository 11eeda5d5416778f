"""What a sweep folder says about itself: sweep.json and sweep.yaml, the settings digest, the git commit.

Which sweep keys decide the numbers is the schema's to say (`Key.changes_results`, orchestration/config/schema.py):
the digest is computed from that field, so a new key never needs a list here.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from orchestration.config import schema

from orchestration.store import storage
from orchestration.config.sweep_file import SweepError

from typing import TYPE_CHECKING

if TYPE_CHECKING:   # annotations only
    from orchestration.config.sweep_file import Sweep

REPO = Path(__file__).resolve().parents[2]     # a checkout's root: its git commit is recorded with each sweep
STORAGE_ACCESS = ("for S3 give credentials (AWS_* variables or an instance profile) and, for MinIO or moto, "
                  "AWS_ENDPOINT_URL")


def git_commit() -> str | None:
    """The checkout's commit: git if it runs here, else read from .git (cluster images may lack git,
    or refuse a checkout owned by another user)."""
    import subprocess

    try:
        found = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                               timeout=10).stdout.strip()
        if found:
            return found
    except (OSError, subprocess.SubprocessError):
        pass
    return read_git_head(REPO / ".git")


def read_git_head(git_dir: Path) -> str | None:
    try:
        head = (git_dir / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head or None
        ref = head[5:]
        if (git_dir / ref).exists():
            return (git_dir / ref).read_text().strip()
        for line in (git_dir / "packed-refs").read_text().splitlines():
            if line.endswith(f" {ref}"):
                return line.split()[0]
    except OSError:
        pass
    return None


def settings_digest(raw: dict) -> str:
    """What decides a trial's numbers: every key whose schema entry says `changes_results`, as the file gives it.

    `models` is the one key read in part: its cells, like seeds and fold_indices, may grow or shrink between
    runs (only new cells then run), while a model's `options` change its numbers. The JSON layout is the one
    sweep.json records have always held, so existing sweeps keep their digest."""
    models = {name: entry["options"] for name, entry in (raw.get("models") or {}).items()
              if isinstance(entry, dict) and entry.get("options")}
    settings = {key: value for key, value in raw.items() if key not in schema.SECTIONS and decides(key)}
    for section in schema.SECTIONS:
        value = raw.get(section)
        if not decides(section):
            continue
        if isinstance(value, dict) or section in ("train", "resources"):   # these two always, as {} when absent
            value = {k: v for k, v in (value or {}).items() if decides(f"{section}.{k}")}
        if section in raw or section in ("train", "resources"):
            settings[section] = value
    return hashlib.sha256(json.dumps({**settings, "model_options": models}, sort_keys=True,
                                     default=str).encode()).hexdigest()


def decides(path: str) -> bool:
    key = schema.BY_PATH.get(path)
    return key is None or key.changes_results


def recorded_change(sweep: Sweep, sweep_dir: str) -> str | None:
    """What changed since <sweep_dir>/sweep.json recorded the sweep file (None: nothing, or a new sweep);
    a change the finished trials cannot be told apart under is refused."""
    marker = storage.join(sweep_dir, "sweep.json")
    try:
        text = storage.read_text(marker)
    except OSError as err:
        raise SweepError(f"cannot read {marker}: {err}. Fix: check the storage location; {STORAGE_ACCESS}") from None
    if text is None:
        return None
    stored = stored_record(text, marker)
    if "settings_digest" not in stored and stored.get("digest") != full_digest(sweep.raw):
        raise SweepError(f"{sweep.source}: the sweep file changed since {sweep_dir} was started, and its "
                         "sweep.json predates per-trial settings, so the finished trials cannot be told apart. "
                         f"Fix: give the sweep a new name, or delete {sweep_dir} to start it over")
    digest = settings_digest(sweep.raw)
    if stored.get("settings_digest", digest) != digest:
        return (f"settings that decide the numbers changed since the last run ({changed_keys(stored, sweep)}): "
                "every trial runs anew; the earlier rows stay in the tables with status superseded")
    if stored.get("sweep") != sweep.raw:
        return "the sweep file's cells changed since the last run: finished trials are kept, new ones run"
    return None


def record_sweep(sweep: Sweep, sweep_dir: str) -> None:
    record = {"settings_digest": settings_digest(sweep.raw), "sweep": sweep.raw, "corpus": sweep.corpus,
              "folds": sweep.folds, "ensembles": sweep.ensembles, "git_commit": git_commit()}
    storage.write_text(storage.join(sweep_dir, "sweep.json"), json.dumps(record, indent=2, default=str))
    # the file with the command line's overrides applied: what ran, readable, and runnable as it stands
    effective = f"# the sweep as run: {sweep.source}\n# emosweep run on this file runs (or resumes) the same sweep\n"
    storage.write_text(storage.join(sweep_dir, "sweep.yaml"), effective + yaml.safe_dump(sweep.raw, sort_keys=False))


def full_digest(raw: dict) -> str:
    """The digest that sweep.json records written before cells could change hold."""
    return hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()


def changed_keys(stored: dict, sweep: Sweep) -> str:
    before, now = stored.get("sweep") or {}, sweep.raw
    keys = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k) and decides(k))
    return ", ".join(keys) or "model options"


def stored_record(text: str, marker: str) -> dict:
    try:
        record = json.loads(text)
        if "settings_digest" not in record and "digest" not in record:
            raise KeyError("digest")
        return record
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise SweepError(f"{marker} is damaged (not the JSON record of a sweep file). Fix: delete it; the next run "
                         "records the current sweep file there (check first that it is the one the sweep started "
                         "with)") from None


def sweep_record(sweep_dir: str) -> dict | None:
    """What the sweep stored about itself in sweep.json (its file, resolved corpus and folds)."""
    text = storage.read_text(storage.join(storage.normalize(sweep_dir), "sweep.json"))
    return json.loads(text) if text else None
