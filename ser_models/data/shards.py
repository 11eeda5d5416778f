"""One feature's frames in shards, on a disk or in a bucket: written as extraction goes, read an utterance at a time.

    <cache>/<feature>/<key>/shards/<n>-<writer>.f32      frames of consecutive utterances, float32, row-major
    <cache>/<feature>/<key>/shards/<n>-<writer>.parquet  its manifest (utt_id, offset, frames; dims): published
                                                         after the frames, so a shard without one does not exist
    <cache>/<feature>/<key>/meta.json                    written once every utterance is in: the shards that
                                                         make the feature, its dims and size

Why shards: a killed extraction keeps every published shard, and the rerun extracts only the utterances no
shard holds; a cache in a bucket reaches a node shard by shard. Why read(), not mmap: a trial reads its whole
fold every epoch, and under mmap every page it touched would count in its own memory; read() leaves them in the
node's page cache, shared by every trial there, so a trial holds one batch. What travels to a trial (pickled
in Ray's object store) is the location and the manifests, never frames.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs

from .location import download_file, is_remote, join, read_bytes, resolve, upload_file, write_bytes

SHARD_BYTES = 256 * 2**20
ABANDONED_S = 600
# where a node keeps its copy of shards it cannot read in place (a bucket, or another machine's disk)
NODE_CACHE = Path(os.environ.get("EMOSWEEP_NODE_CACHE", Path(tempfile.gettempdir()) / "emosweep-shards"))


def published(location: str) -> tuple[list[str], list[dict], tuple | None]:
    """The shards a (possibly interrupted) extraction has published: their names, manifests (utt_id, offset,
    frames, as lists) and dims."""
    filesystem, path = resolve(join(location, "shards"))
    infos = filesystem.get_file_info(fs.FileSelector(path, allow_not_found=True))
    names, manifests, dims = [], [], None
    for info in sorted(infos, key=lambda i: i.base_name):
        if info.base_name.endswith(".parquet") and not info.base_name.startswith("."):
            manifest = pq.read_table(info.path, filesystem=filesystem)
            names.append(info.base_name[: -len(".parquet")])
            manifests.append(manifest.to_pydict())
            dims = tuple(json.loads(manifest.schema.metadata[b"dims"]))
    return names, manifests, dims


def utterance_ids(manifests: list[dict]) -> set[str]:
    return {utt_id for manifest in manifests for utt_id in manifest["utt_id"]}


def utterance_rows(manifests: list[dict]) -> dict[str, tuple[int, int, int]]:
    """utt_id -> (shard index, first frame, frames), the shards in the order of `manifests`."""
    return {u: (index, o, n) for index, manifest in enumerate(manifests)
            for u, o, n in zip(manifest["utt_id"], manifest["offset"], manifest["frames"])}


class ShardWriter:
    """Appends one feature's utterances to a local file and publishes it as a shard every `shard_bytes`.
    Utterances already in a published shard (an earlier, interrupted run) are skipped; resume=False: the
    caller has left them out already (an extraction actor writing its chunk), so the shards are not listed."""

    def __init__(self, location: str, name: str, shard_bytes: int = SHARD_BYTES, resume: bool = True):
        self.location, self.name, self.shard_bytes = str(location), name, shard_bytes
        self.shards, manifests, self.dims = published(self.location) if resume else ([], [], None)
        self.done = utterance_ids(manifests)
        self.resumed = len(self.done)
        self.writer = uuid.uuid4().hex[:8]     # two extractions of one key never publish the same shard name
        # the frames are written where the shard will live on a disk (published by a rename), or to a local
        # temporary folder for a bucket (published by one upload)
        self.scratch = tempfile.mkdtemp(prefix="emosweep-shard-") if is_remote(self.location) \
            else join(self.location, "shards")
        os.makedirs(self.scratch, exist_ok=True)
        self.handle = None
        self._reset()

    def _reset(self) -> None:
        self.ids, self.offsets, self.frames, self.total, self.size = [], [], [], 0, 0

    @property
    def tmp(self) -> str:
        return os.path.join(self.scratch, f".tmp-{self.writer}-{len(self.shards)}.f32")

    def add(self, utt_id: str, array: np.ndarray) -> None:
        if utt_id in self.done:
            return
        array = np.ascontiguousarray(array, dtype=np.float32)
        if self.dims is None:
            self.dims = array.shape[1:]
        elif array.shape[1:] != tuple(self.dims):
            raise ValueError(f"{self.name}: {utt_id} has shape {array.shape}, expected (*, {tuple(self.dims)})")
        if self.handle is None:
            self.handle = open(self.tmp, "wb")
        self.handle.write(array.tobytes())
        self.ids.append(utt_id)
        self.offsets.append(self.total)
        self.frames.append(len(array))
        self.total += len(array)
        self.size += array.nbytes
        if self.size >= self.shard_bytes:
            self.publish()

    def publish(self) -> None:
        """Make the frames written so far a shard: the frames first, then the manifest that makes it exist."""
        if self.handle is None:
            return
        self.handle.close()
        self.handle = None
        stem = f"{len(self.shards):05d}-{self.writer}"
        data = join(self.location, "shards", f"{stem}.f32")
        if is_remote(self.location):
            upload_file(self.tmp, data)
            os.remove(self.tmp)
        else:
            os.replace(self.tmp, data)
        manifest = pa.table({"utt_id": self.ids, "offset": pa.array(self.offsets, pa.int64()),
                             "frames": pa.array(self.frames, pa.int64())})
        manifest = manifest.replace_schema_metadata({"dims": json.dumps(list(self.dims))})
        buffer = io.BytesIO()
        pq.write_table(manifest, buffer)
        write_bytes(join(self.location, "shards", f"{stem}.parquet"), buffer.getvalue())
        self.shards.append(stem)
        self.done.update(self.ids)
        self._reset()

    def discard(self) -> None:
        """Stopped or failed: the unpublished frames go; published shards stay for the rerun."""
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        if os.path.exists(self.tmp):
            os.remove(self.tmp)
        if is_remote(self.location):
            shutil.rmtree(self.scratch, ignore_errors=True)

    def finish(self, meta: dict) -> "FeatureStore":
        """Publish the rest and write meta.json over every published shard (extraction actors' too)."""
        self.publish()
        self.shards, manifests, dims = published(self.location)
        self.done = utterance_ids(manifests)
        meta = {**meta, "dims": list(dims or self.dims or ()), "utterances": len(self.done), "shards": self.shards}
        write_bytes(join(self.location, "meta.json"), json.dumps(meta, indent=2).encode())
        self.discard()
        self.remove_abandoned()
        return FeatureStore.restored(self.location, meta, utterance_rows(manifests), origin=None)

    def remove_abandoned(self) -> None:
        """Frames of writers killed before they published (SIGKILL leaves their .tmp files on a disk): gone
        once untouched for ABANDONED_S, so that a writer still appending to its own is never disturbed."""
        if is_remote(self.location):
            return
        for tmp in Path(join(self.location, "shards")).glob(".tmp-*"):
            try:
                if time.time() - tmp.stat().st_mtime > ABANDONED_S:
                    tmp.unlink()
            except FileNotFoundError:
                pass


class FeatureStore:
    """Read-only features of one extractor: store[utt_id] -> np.ndarray, read from its shard on demand."""

    def __init__(self, location: str | Path):
        location = str(location)
        meta = json.loads(read_bytes(join(location, "meta.json")))
        filesystem, _ = resolve(location)
        manifests = [pq.read_table(resolve(join(location, "shards", f"{stem}.parquet"))[1],
                                   filesystem=filesystem).to_pydict() for stem in meta["shards"]]
        self._setup(location, meta, utterance_rows(manifests), origin=None)

    def _setup(self, location: str, meta: dict, rows: dict, origin: str | None) -> None:
        self.location, self.meta, self._rows, self.origin = location, meta, rows, origin
        self.dims = tuple(meta["dims"])
        self._row_bytes = 4 * int(np.prod(self.dims, dtype=np.int64))
        self._files: dict[int, int] = {}

    @classmethod
    def restored(cls, location: str, meta: dict, rows: dict, origin: str | None) -> "FeatureStore":
        store = cls.__new__(cls)
        store._setup(location, meta, rows, origin)
        return store

    def __reduce__(self):
        # a reference travels, never frames: the location, the manifests, and the node that can read a local cache
        return FeatureStore.restored, (self.location, self.meta, self._rows, self.origin or _this_node())

    def __getitem__(self, utt_id: str) -> np.ndarray:
        shard, offset, frames = self._rows[utt_id]
        size = frames * self._row_bytes
        data = os.pread(self._file(shard), size, offset * self._row_bytes) if size else b""
        if len(data) != size:
            raise OSError(f"{self.shard_location(shard)} is shorter than its manifest says ({utt_id}). Fix: delete "
                          f"{self.location} and run again (it is extracted anew)")
        return np.frombuffer(data, dtype=np.float32).reshape(frames, *self.dims)

    def __contains__(self, utt_id: str) -> bool:
        return utt_id in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def __del__(self):
        for handle in getattr(self, "_files", {}).values():
            os.close(handle)

    @property
    def utt_ids(self) -> list[str]:
        return list(self._rows)

    def utterance_bytes(self, utt_id: str) -> int:
        return self._rows[utt_id][2] * self._row_bytes

    @property
    def nbytes(self) -> int:
        """The frames' bytes in the cache."""
        return self._row_bytes * sum(frames for _, _, frames in self._rows.values())

    def shard_location(self, shard: int) -> str:
        return join(self.location, "shards", f"{self.meta['shards'][shard]}.f32")

    def _file(self, shard: int) -> int:
        if shard not in self._files:
            self._files[shard] = os.open(self.local_path(shard), os.O_RDONLY)
        return self._files[shard]

    def local_path(self, shard: int) -> str:
        """The shard in place when this node can read it, else this node's copy (made once, shared by every
        trial on the node)."""
        source = self.shard_location(shard)
        if not is_remote(source) and os.path.exists(source):
            return source
        copy = NODE_CACHE / hashlib.sha256(self.location.encode()).hexdigest()[:16] / Path(source).name
        if copy.exists():
            return str(copy)
        if is_remote(source):
            download_file(source, str(copy))
        elif self.origin and self.origin != _this_node():
            data = fetch_from(self.origin, source)
            copy.parent.mkdir(parents=True, exist_ok=True)
            tmp = copy.with_name(f"{copy.name}.tmp-{os.getpid()}")
            tmp.write_bytes(data)
            os.replace(tmp, copy)
        else:
            raise FileNotFoundError(f"feature shard {source} is missing. Fix: delete {self.location} and run again "
                                    "(it is extracted anew)")
        return str(copy)


def _this_node() -> str | None:
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    return ray.get_runtime_context().get_node_id()


def _read_file(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def fetch_from(node: str, path: str) -> bytes:
    """A file of another node's disk, read there by a task pinned to it (a cache that is not on shared storage)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    reader = ray.remote(num_cpus=0)(_read_file)
    return ray.get(reader.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(path))
