"""Feature extraction spread over a Ray cluster's CPUs with Ray Data (`resources.extract: cluster`).

The utterance table goes out in chunks; an actor pool (`map_batches`, one CPU per actor, as many actors as the
cluster has CPUs) decodes each file once and runs every requested extractor, the same function the threads of
the driver path run (cache._extract_chunk); Ray Data streams the results back with backpressure, and the
driver writes them into the same content-keyed cache. Every node must read the corpus audio at the same path:
a node that cannot is an error that names it, never a quarantine.
"""
from __future__ import annotations

import logging
import os
import pickle
from typing import Callable


class ExtractChunks:
    """A Ray Data actor: one chunk of utterance rows in, one (utt_id, features or bad-audio reason) per row out.
    `extractors` (name -> extractor) is set on a subclass: constructor arguments would sit in the object store."""

    extractors: dict = {}

    def __init__(self):
        import ray
        import torch

        torch.set_num_threads(1)    # one CPU per actor: as many actors as the cluster has CPUs
        self.node = ray.get_runtime_context().get_node_id()

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
            for utt_id, outcome in _extract_chunk(rows, self.extractors):
                ids.append(utt_id)
                outcomes.append(pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL))
        return {"utt_id": ids, "outcome": outcomes, "node": [self.node] * len(ids)}


def extract_on_ray(chunks: list[list[dict]], extractors: dict, consume: Callable[[list], None]) -> set[str]:
    """Run the chunks on the connected Ray cluster; `consume` gets [(utt_id, outcome)] as results stream back.
    Returns the ids of the nodes that did the work."""
    import ray
    import ray.data

    logging.getLogger("ray.data").setLevel(logging.ERROR)   # its notices repeat what the driver's bar says
    ray.data.DataContext.get_current().enable_progress_bars = False
    actors = min(max(1, int(ray.cluster_resources().get("CPU", 1))), len(chunks))
    dataset = ray.data.from_items([{"rows": pickle.dumps(chunk)} for chunk in chunks], override_num_blocks=len(chunks))
    extractor = type("ExtractChunks", (ExtractChunks,), {"extractors": dict(extractors)})
    results = dataset.map_batches(extractor, batch_size=1, compute=ray.data.ActorPoolStrategy(size=actors),
                                  num_cpus=1, batch_format="numpy")
    nodes = set()
    for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
        consume(list(zip(batch["utt_id"], map(pickle.loads, batch["outcome"]))))
        nodes.update(batch["node"])
    return nodes

