"""The sharded feature cache: resume after a kill, a cache in a bucket (moto S3), references instead of frames."""
import json
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from ser_models.data import shards
from ser_models.data.cache import extract
from ser_models.data.shards import FeatureStore

from .sweeps import REPO, run_sweep, table, write_sweep

EXTRACT = """
import sys
import pandas as pd
from ser_models.data.cache import extract
extract(pd.read_pickle(sys.argv[1]), ["egemaps"], sys.argv[2], workers=1, progress=False, shard_bytes=int(sys.argv[3]))
"""


def manifests(cache) -> list:
    return sorted(cache.glob("egemaps/*/shards/*.parquet"))


def assert_same(store: FeatureStore, other: FeatureStore) -> None:
    assert sorted(store.utt_ids) == sorted(other.utt_ids)
    assert all(np.array_equal(store[u], other[u]) for u in store.utt_ids)


def test_a_killed_extraction_keeps_its_shards_and_the_rerun_extracts_only_the_rest(synthetic_corpus, tmp_path):
    """SIGKILL (no chance to clean up) once a few shards are out: the rerun extracts only utterances no shard
    holds, and the feature equals an extraction that was never stopped, bit for bit."""
    corpus_table = synthetic_corpus.task
    corpus_table.to_pickle(tmp_path / "table.pkl")
    shard_bytes = 88 * 4 * 8             # eGeMAPS is 88 numbers an utterance: 8 utterances a shard
    cache = tmp_path / "cache"
    child = subprocess.Popen([sys.executable, "-c", EXTRACT, str(tmp_path / "table.pkl"), str(cache), str(shard_bytes)],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while len(manifests(cache)) < 3:
        assert child.poll() is None and time.monotonic() < deadline, child.stdout.read()[-3000:]
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    kept = {u for path in manifests(cache) for u in pq.read_table(path).column("utt_id").to_pylist()}
    assert 3 * 8 <= len(kept) < len(corpus_table) and not list(cache.glob("egemaps/*/meta.json"))
    shards_folder = next(cache.glob("egemaps/*/shards"))
    abandoned = shards_folder / ".tmp-killed-0.f32"            # what a writer killed an hour ago left
    abandoned.write_bytes(b"\0" * 64)
    os.utime(abandoned, (time.time() - 3600, time.time() - 3600))
    live = shards_folder / ".tmp-another-0.f32"                # a writer still at work: recently written
    live.write_bytes(b"")

    resumed = extract(corpus_table, ["egemaps"], cache, progress=False, shard_bytes=shard_bytes)
    assert not abandoned.exists() and live.exists()
    assert resumed.resumed == {"egemaps": len(kept)} and resumed.computed == ["egemaps"]
    written = {u for path in manifests(cache) for u in pq.read_table(path).column("utt_id").to_pylist()}
    assert written == set(corpus_table["utt_id"])       # every utterance once, the kept ones never again
    assert sum(pq.read_metadata(path).num_rows for path in manifests(cache)) == len(corpus_table)
    clean = extract(corpus_table, ["egemaps"], tmp_path / "clean", progress=False)
    assert_same(resumed.stores["egemaps"], clean.stores["egemaps"])


def test_a_store_travels_as_a_reference_not_as_frames(synthetic_corpus, tmp_path):
    report = extract(synthetic_corpus.task, ["fbank40"], tmp_path / "cache", progress=False, shard_bytes=2**20)
    store = report.stores["fbank40"]
    assert len(store.meta["shards"]) > 1
    shipped = pickle.dumps(store)
    assert len(shipped) < store.nbytes / 20, (len(shipped), store.nbytes)
    assert_same(pickle.loads(shipped), store)


def test_a_cache_in_a_bucket_is_written_in_shards_and_read_through_one_copy_per_node(
        synthetic_corpus, tmp_path, s3_server, monkeypatch):
    import boto3

    import tempfile

    monkeypatch.setattr(shards, "NODE_CACHE", tmp_path / "node")
    (tmp_path / "scratch").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "scratch"))   # where an upload is staged
    uri = f"s3://{s3_server['bucket']}/features-{tmp_path.name}"
    corpus_table = synthetic_corpus.task.head(40)
    remote = extract(corpus_table, ["fbank40", "word_spans"], uri, progress=False, shard_bytes=200_000)
    keys = [item["Key"] for item in boto3.client("s3").list_objects_v2(
        Bucket=s3_server["bucket"], Prefix=f"features-{tmp_path.name}/")["Contents"]]
    shard_files = [key for key in keys if key.startswith(f"features-{tmp_path.name}/fbank40/") and
                   key.endswith(".f32")]
    feature_key = remote.stores["fbank40"].location.rsplit("/", 1)[1]
    assert len(shard_files) > 1 and f"features-{tmp_path.name}/fbank40/{feature_key}/meta.json" in keys
    assert not list((tmp_path / "scratch").iterdir())   # nothing of the uploads is left on this disk
    local = extract(corpus_table, ["fbank40", "word_spans"], tmp_path / "local", progress=False)
    for name in ("fbank40", "word_spans"):
        assert_same(pickle.loads(pickle.dumps(remote.stores[name])), local.stores[name])
    assert len(list((tmp_path / "node").rglob("*.f32"))) == len(shard_files) + 1   # fbank40's and word_spans' one
    again = extract(corpus_table, ["fbank40", "word_spans"], uri, progress=False)
    assert sorted(again.loaded) == ["fbank40", "word_spans"] and not again.computed
    meta_key = shard_files[0].rsplit("/", 2)[0] + "/meta.json"
    meta = boto3.client("s3").get_object(Bucket=s3_server["bucket"], Key=meta_key)
    assert len(json.loads(meta["Body"].read())["shards"]) == len(shard_files)


def test_a_node_that_cannot_read_the_cache_folder_fetches_a_shard_from_the_node_that_can(tmp_path):
    """What a worker node without the driver's disk does (shards.fetch_from): a task pinned to the origin
    node reads the file there."""
    import ray

    payload = os.urandom(1 << 16)
    (tmp_path / "shard.f32").write_bytes(payload)
    ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR")
    try:
        assert shards.fetch_from(ray.get_runtime_context().get_node_id(), str(tmp_path / "shard.f32")) == payload
    finally:
        ray.shutdown()


def test_ray_data_actors_write_shards_where_they_see_the_cache_and_send_frames_back_where_not(synthetic_corpus,
                                                                                                tmp_path):
    """A node that sees the cache writes its chunks' shards itself (the driver only lists them); one that does
    not see it (no probe file) sends the frames back for the driver to write. Either way the same numbers."""
    import ray

    from ser_models.data.distributed import extract_on_ray
    from ser_models.data.features import get_extractor

    table = synthetic_corpus.table
    threads = extract(table, ["fbank40"], tmp_path / "threads", progress=False)
    rows = table[["utt_id", "path", "text", "align_words", "align_start", "align_end"]].head(20).to_dict("records")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        cluster = extract(table, ["fbank40"], tmp_path / "ray", progress=False, engine="ray")
        returned = []
        extract_on_ray(rows, {"fbank40": get_extractor("fbank40")}, returned.extend,
                       {"fbank40": str(tmp_path / "unseen")}, None, shards.SHARD_BYTES)
    finally:
        ray.shutdown()
    assert_same(threads.stores["fbank40"], cluster.stores["fbank40"])
    writers = {path.stem.split("-")[1] for path in (tmp_path / "ray").glob("fbank40/*/shards/*.parquet")}
    assert len(writers) >= 2 and not list((tmp_path / "ray").rglob(".tmp-*"))    # the chunks' own shards
    assert sorted(utt_id for utt_id, _ in returned) == sorted(row["utt_id"] for row in rows)
    assert all(np.array_equal(outcome["fbank40"], threads.stores["fbank40"][utt_id]) for utt_id, outcome in returned)
    assert not (tmp_path / "unseen").exists()


def test_doctor_says_how_each_node_reaches_the_cache_and_what_to_fix(tmp_path, synthetic_root, s3_server):
    """A bucket cache is copied into each node's copy folder: doctor checks the node reads the bucket and can
    write that folder, and names EMOSWEEP_NODE_CACHE when it cannot; it leaves no probe behind."""
    import boto3

    prefix = f"doctor-{tmp_path.name}"
    path = write_sweep(tmp_path, synthetic_root, cache=f"s3://{s3_server['bucket']}/{prefix}")
    ready = run_sweep(path, "--check", env={"EMOSWEEP_NODE_CACHE": str(tmp_path / "node")})
    assert ready.returncode == 0, ready.stdout[-3000:] + ready.stderr[-3000:]
    assert f"writable / ok / copied to {tmp_path / 'node'}" in ready.stdout and "ready" in ready.stdout
    listed = boto3.client("s3").list_objects_v2(Bucket=s3_server["bucket"], Prefix=prefix).get("Contents", [])
    assert not [item["Key"] for item in listed if "probe" in item["Key"]]

    (tmp_path / "a-file").write_text("")
    broken = run_sweep(path, "--check", env={"EMOSWEEP_NODE_CACHE": str(tmp_path / "a-file" / "copies")})
    assert broken.returncode == 2
    problem = next(line for line in broken.stdout.splitlines() if line.startswith("problem:"))
    assert "feature cache NOT usable" in problem and "set EMOSWEEP_NODE_CACHE" in problem, broken.stdout

    unwritable = run_sweep(write_sweep(tmp_path, synthetic_root, cache="s3://no-such-bucket/features"), "--check")
    assert unwritable.returncode == 2
    assert "the driver cannot write the feature cache s3://no-such-bucket/features" in unwritable.stdout
    assert "AWS_ENDPOINT_URL" in unwritable.stdout


@pytest.mark.slow
def test_a_sweep_gives_the_same_table_from_a_bucket_cache_as_from_a_local_one(tmp_path, synthetic_root, s3_server):
    audio = {"models": {"lstm_attn_audio": ["full"]}}
    local = run_sweep(write_sweep(tmp_path, synthetic_root, **audio))
    assert local.returncode == 0, local.stderr[-3000:]
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    remote = run_sweep(write_sweep(bucket, synthetic_root, cache=f"s3://{s3_server['bucket']}/sweep-cache", **audio),
                       env={"EMOSWEEP_NODE_CACHE": str(tmp_path / "node")})
    assert remote.returncode == 0, remote.stderr[-3000:]
    assert list((tmp_path / "node").rglob("*.f32"))
    columns = ["fold", "selected_epoch", "val_ua", "test_ua", "test_wa", "test_loss"]
    mine, theirs = table(tmp_path), table(bucket)
    assert mine[columns].equals(theirs[columns]), (mine[columns], theirs[columns])
