"""The sweep's storage: a local (or NFS) path, or any pyarrow filesystem URI (s3://, gs://, file://).

Everything the driver, the trials and the report read or write outside Tune's
own files goes through here, so a sweep behaves the same on a laptop's disk
and in a bucket. S3-compatible servers (MinIO, moto) are reached with the
standard AWS_ENDPOINT_URL variable, which pyarrow and boto3 both read. The
file operations themselves are ser_models/data/location.py's, shared with the
feature cache.
"""
from __future__ import annotations

import os
import posixpath
from pathlib import Path
from urllib.parse import unquote, urlparse

from ser_models.data.location import is_remote, join, probe_file, read_bytes, resolve, write_bytes  # noqa: F401 - re-exported


def normalize(location: str) -> str:
    """An absolute local path, or a URI left as it is (file:// becomes a plain path: Tune and the report agree)."""
    location = str(location)
    if location.startswith("file://"):
        location = unquote(urlparse(location).path)
    if "://" in location:
        return location.rstrip("/")
    return str(Path(location).expanduser().resolve())


def read_text(location: str) -> str | None:
    """The file's text, or None when it does not exist."""
    data = read_bytes(location)
    return None if data is None else data.decode()


def write_text(location: str, text: str) -> None:
    write_bytes(location, text.encode())


def delete_dir(location: str) -> None:
    filesystem, path = resolve(location)
    try:
        filesystem.delete_dir(path)
    except (FileNotFoundError, OSError):
        pass


def upload_dir(local: Path, location: str) -> None:
    """Copy a local folder's files to remote storage (report figures are drawn locally first)."""
    filesystem, path = resolve(location)
    for file in sorted(Path(local).rglob("*")):
        if file.is_file():
            target = posixpath.join(path, file.relative_to(local).as_posix())
            filesystem.create_dir(posixpath.dirname(target), recursive=True)
            with filesystem.open_output_stream(target) as stream:
                stream.write(file.read_bytes())


def check_could_write(location: str) -> None:
    """check_writable without leaving anything behind on a disk (for `emosweep check`): the nearest existing
    folder must be one this user can write. A bucket gets the probe object, which is deleted."""
    if is_remote(location):
        return check_writable(location)
    path = Path(location)
    while not path.exists():
        path = path.parent
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is not a folder")
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(f"{path} is not writable by this user")


def check_writable(location: str) -> None:
    """Write and delete a probe file; raises OSError with the storage's own reason (on a disk, first the
    reasons check_could_write finds, so that check and run say the same)."""
    if not is_remote(location):
        check_could_write(location)
    with probe_file(location):
        pass
