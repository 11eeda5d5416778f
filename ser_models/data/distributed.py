"""Feature extraction spread over a Ray cluster's CPUs with Ray Data (`resources.extract: cluster`).

The utterance table goes out in chunks; an actor pool (`map_batches`, one CPU per actor, as many actors as the
cluster has CPUs; for an encoder's features on a cluster with GPUs, one actor per GPU, each holding it)
decodes each file once and runs every requested extractor, the same function the threads of
the driver path run (cache._extract_chunk). An actor whose node sees the cache (the same folder, or the bucket:
it finds the probe file the driver put there) writes each chunk's frames as shards of its own, published as the
driver's are (shards.ShardWriter), and sends back only which utterances it wrote: the driver does no
per-utterance work, so extraction scales with the nodes. An actor on a node that does not see the cache sends
the frames back, with Ray Data's backpressure, and the driver writes them. Every node must read the corpus
audio at the same path: a node that cannot is an error that names it, never a quarantine.
"""
from __future__ import annotations

import logging
import os
import pickle
from typing import Callable


MIN_CHUNK_ROWS, CHUNK_ROWS, CHUNKS_PER_CPU = 16, 1024, 8


class ExtractChunks:
    """A Ray Data actor: one chunk of utterance rows in, one (utt_id, features or bad-audio reason) per row out.
    `extractors` (name -> extractor) is set on a subclass: constructor arguments would sit in the object store."""

    extractors: dict = {}
    locations: dict = {}        # feature -> its cache location, where this node may write shards
    probe: str | None = None    # a file the driver put in the cache: seen here means the cache is shared
    shard_bytes: int = 0

    def __init__(self):
        import ray
        import torch

        from .location import exists

        torch.set_num_threads(1)    # one CPU per actor: as many actors as the cluster has CPUs
        self.node = ray.get_runtime_context().get_node_id()
        self.gpus = [str(gpu) for gpu in ray.get_gpu_ids()]   # the GPU Ray gave this actor, if it asked for one
        try:
            self.writes = bool(self.probe) and exists(self.probe)
        except OSError:     # a bucket this node has no credentials for: its frames go back to the driver
            self.writes = False

    def __call__(self, batch: dict) -> dict:
        from .cache import _extract_chunk

        ids, outcomes = [], []
        for blob in batch["rows"]:
            rows = pickle.loads(blob)
            unreadable = [row["path"] for row in rows if not os.path.exists(row["path"])]
            if unreadable:      # the driver sees these files (it checked): this node does not have the corpus
                raise FileNotFoundError(
                    f"node {self.node} cannot read {unreadable[0]}, which the driver can: every node needs the "
                    "corpus audio at the same path. Fix: mount it on every node (shared storage), or set "
                    "resources.extract: driver")
            results = _extract_chunk(rows, self.extractors)
            if self.writes:
                results = self.write(results)
            for utt_id, outcome in results:
                ids.append(utt_id)
                outcomes.append(pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL))
        return {"utt_id": ids, "outcome": outcomes, "node": [self.node] * len(ids),
                "gpu": [",".join(self.gpus)] * len(ids)}

    def write(self, results: list) -> list:
        """The chunk's frames into shards of this actor's own, published before the driver hears of them; what
        goes back is {} (written) or the bad-audio reason."""
        from .shards import ShardWriter

        writers = {name: ShardWriter(location, name, self.shard_bytes, resume=False)
                   for name, location in self.locations.items()}
        try:
            for utt_id, outcome in results:
                for name, array in (outcome.items() if isinstance(outcome, dict) else ()):
                    writers[name].add(utt_id, array)
            for writer in writers.values():
                writer.publish()
        finally:
            for writer in writers.values():
                writer.discard()
        return [(utt_id, outcome if isinstance(outcome, str) else {}) for utt_id, outcome in results]


def extract_on_ray(rows: list[dict], extractors: dict, consume: Callable[[list], None], locations: dict,
                   probe: str | None, shard_bytes: int) -> tuple[set[str], set[str]]:
    """Run the rows on the connected Ray cluster; `consume` gets [(utt_id, outcome)] as results stream back (an
    outcome of {} was written into a shard by the actor). Returns the ids of the nodes that did the work, and
    the GPUs its actors held (none unless an extractor runs on GPUs and the cluster has some)."""
    import ray
    import ray.data

    logging.getLogger("ray.data").setLevel(logging.ERROR)   # its notices repeat what the driver's bar says
    ray.data.DataContext.get_current().enable_progress_bars = False
    resources = ray.cluster_resources()
    # an encoder runs on GPUs where the cluster has them: one actor per GPU, each holding its GPU; else (and for
    # the other features) one actor per CPU
    gpus = int(resources.get("GPU", 0)) if any(getattr(e, "on_gpu", False) for e in extractors.values()) else 0
    slots = gpus or max(1, int(resources.get("CPU", 1)))
    # a chunk is one shard per feature (or a few, for a large feature): about CHUNKS_PER_CPU chunks per slot,
    # handed to whichever actor is free (one task in flight each), balance nodes that start or run unevenly,
    # and at most CHUNK_ROWS keep a killed extraction's loss small
    size = max(MIN_CHUNK_ROWS, min(CHUNK_ROWS, len(rows) // (CHUNKS_PER_CPU * slots)))
    chunks = [rows[i: i + size] for i in range(0, len(rows), size)]
    actors = min(slots, len(chunks))
    dataset = ray.data.from_items([{"rows": pickle.dumps(chunk)} for chunk in chunks], override_num_blocks=len(chunks))
    extractor = type("ExtractChunks", (ExtractChunks,), {"extractors": dict(extractors), "locations": locations,
                                                        "probe": probe, "shard_bytes": shard_bytes})
    pool = ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=1)
    results = dataset.map_batches(extractor, batch_size=1, compute=pool, num_cpus=1, num_gpus=1 if gpus else 0,
                                  batch_format="numpy")
    nodes, held = set(), set()
    for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
        consume(list(zip(batch["utt_id"], map(pickle.loads, batch["outcome"]))))
        nodes.update(batch["node"])
        held.update(f"{node}:{gpu}" for node, gpu in zip(batch["node"], batch["gpu"]) if gpu)
    return nodes, held

