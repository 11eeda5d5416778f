"""Where files live: a local (or NFS) path, or any pyarrow filesystem URI (s3://, gs://).

The feature cache and the sweep's storage (orchestration/store/storage.py) both go through these few functions, so a
folder on a laptop and a bucket behave the same. S3-compatible servers (MinIO, moto) are reached with the
standard AWS_ENDPOINT_URL variable, which pyarrow and boto3 both read.
"""
from __future__ import annotations

import os
import posixpath
import uuid
from contextlib import contextmanager

from pyarrow import fs


def is_remote(location: str) -> bool:
    return "://" in str(location)


# The variables a node's processes need to reach a location, by URI scheme (names only: values never leave the
# node). A region may also come as AWS_REGION.
VARIABLES = {"s3": ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"),
             "gs": ("GOOGLE_APPLICATION_CREDENTIALS",)}
SAME_AS = {"AWS_DEFAULT_REGION": "AWS_REGION"}


def variables_for(location: str) -> tuple[str, ...]:
    return VARIABLES.get(str(location).split("://", 1)[0], ()) if is_remote(location) else ()


def variables_set(names, environ=os.environ) -> set[str]:
    return {name for name in names if environ.get(name) or environ.get(SAME_AS.get(name, ""))}


def resolve(location: str) -> tuple[fs.FileSystem, str]:
    location = str(location)
    return fs.FileSystem.from_uri(location) if is_remote(location) else (fs.LocalFileSystem(), location)


def join(location: str, *parts: str) -> str:
    location = str(location)
    return posixpath.join(location, *parts) if is_remote(location) else os.path.join(location, *parts)


def exists(location: str) -> bool:
    filesystem, path = resolve(location)
    return filesystem.get_file_info(path).type != fs.FileType.NotFound


def read_bytes(location: str) -> bytes | None:
    """The file's bytes, or None when it does not exist."""
    filesystem, path = resolve(location)
    try:
        with filesystem.open_input_stream(path) as stream:
            return stream.read()
    except FileNotFoundError:
        return None
    except OSError as err:
        if "not exist" in str(err).lower() or "not found" in str(err).lower():
            return None
        raise


def delete(location: str) -> None:
    """Remove a file or object; one already gone is fine."""
    filesystem, path = resolve(location)
    try:
        filesystem.delete_file(path)
    except FileNotFoundError:
        pass


@contextmanager
def probe_file(folder: str, data: bytes = b"probe"):
    """A file written into `folder` (can this user write there? do other machines see it?), removed on exit."""
    probe = join(folder, f".emosweep-probe-{uuid.uuid4().hex}")
    write_bytes(probe, data)
    try:
        yield probe
    finally:
        delete(probe)


def write_bytes(location: str, data: bytes) -> None:
    """Replace the file in one step: a local temp file renamed over it, or one object PUT."""
    filesystem, path = resolve(location)
    filesystem.create_dir(posixpath.dirname(path) if is_remote(location) else os.path.dirname(path), recursive=True)
    if is_remote(location):
        with filesystem.open_output_stream(path) as stream:
            stream.write(data)
        return
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def upload_file(local: str, location: str) -> None:
    """Copy a local file to a bucket in one upload (on a disk, shards are renamed into place instead)."""
    filesystem, path = resolve(location)
    filesystem.create_dir(posixpath.dirname(path), recursive=True)
    fs.copy_files(local, path, source_filesystem=fs.LocalFileSystem(), destination_filesystem=filesystem)


def download_file(location: str, local: str) -> None:
    """Copy `location` to a local file, renamed into place so that a reader never sees half of it."""
    filesystem, path = resolve(location)
    os.makedirs(os.path.dirname(local), exist_ok=True)
    tmp = f"{local}.tmp-{os.getpid()}"
    fs.copy_files(path, tmp, source_filesystem=filesystem, destination_filesystem=fs.LocalFileSystem())
    os.replace(tmp, local)
