"""Tune's trial folders, read in one place: which folders are trials, each one's config, results and error,
and what it came to. Resume (training.earlier_state) and the tables (aggregate.py) read them here."""
from __future__ import annotations

import json
import posixpath
import re
import warnings

from pyarrow import fs
from collections.abc import Iterator


def read_text_or_none(filesystem: fs.FileSystem, path: str) -> str | None:
    try:
        with filesystem.open_input_stream(path) as stream:
            return stream.read().decode()
    except (FileNotFoundError, OSError):
        return None


def trial_dirs(experiment: str) -> Iterator[tuple[fs.FileSystem, str]]:
    filesystem, root = fs.FileSystem.from_uri(experiment)
    try:
        infos = filesystem.get_file_info(fs.FileSelector(root))
    except FileNotFoundError:   # a sweep's first run: nothing yet
        return
    for info in sorted(infos, key=lambda i: i.path):
        params = posixpath.join(info.path, "params.json")
        if info.type == fs.FileType.Directory and read_text_or_none(filesystem, params):
            yield filesystem, info.path


class DamagedFile(UserWarning):
    """A storage file that could not be read whole; the message names it and the fix."""


def read_trial(filesystem: fs.FileSystem, path: str) -> tuple[dict, list[dict], str | None]:
    result_file = posixpath.join(path, "result.json")
    results = []
    for number, line in enumerate((read_text_or_none(filesystem, result_file) or "").splitlines(), 1):
        if not line.strip():
            continue
        try:
            results.append(json.loads(line))
        except json.JSONDecodeError:  # a driver killed while appending leaves a torn last line
            warnings.warn(f"{result_file}: line {number} is not valid JSON and was skipped (a write cut short); "
                          "the trial's other epochs are kept", DamagedFile, stacklevel=2)
    params = posixpath.join(path, "params.json")
    try:
        config = json.loads(read_text_or_none(filesystem, params))
    except json.JSONDecodeError:
        config = next((r["config"] for r in reversed(results) if isinstance(r.get("config"), dict)), None)
        if config is None:
            raise ValueError(f"{params}: not valid JSON, and no result line repeats the trial's config. Fix: "
                             "restore it from a copy") from None
        warnings.warn(f"{params}: not valid JSON; the trial's config was read from its results instead",
                      DamagedFile, stacklevel=2)
    return config, results, read_text_or_none(filesystem, posixpath.join(path, "error.txt"))


def trial_started(path: str) -> str:
    """Tune ends a trial directory's name with its creation time: sortable."""
    match = re.search(r"(\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2})/?$", path)
    return match.group(1) if match else ""


def outcome(results: list[dict], error: str | None) -> tuple[dict | None, str, int]:
    """(final report, status, attempts) of one trial directory.

    Tune appends one "Failure # N" entry to error.txt per failed attempt.
    """
    final = next((r for r in reversed(results) if r.get("final") and "test_ua" in r), None)
    status = "finished" if final else ("error" if error else "incomplete")
    return final, status, max(1, (error or "").count("Failure # ") + (status != "error"))
