"""An SSL encoder's layers through emosweep's data plane against the `transformers` model called directly.

    .venv/bin/python bench/ssl_layers.py                        # WavLM-base-plus size, random weights, 48 utterances
    .venv/bin/python bench/ssl_layers.py --encoder FOLDER       # a real checkpoint (save_pretrained / hf download)
    .venv/bin/python bench/ssl_layers.py --tiny --utterances 8  # a check of the script in seconds

Both paths read the same files (RAVDESS 4-class from ../shared/data when present, else the synthetic corpus),
decode each once and encode it alone, every hidden layer mean-pooled: the direct loop is what a researcher
writes by hand (load_audio, the feature extractor, model(..., output_hidden_states=True)); the data plane is
`extract(..., ["ssl_layers"])` into a fresh cache (decoding, quarantine, the cache's writes included), one
worker, torch's default threads for both. Beside them: fbank40 through the same data plane. The last line is
`ssl_dataplane_over_direct=<data plane seconds / direct seconds>` (target: at most 1.2). For 2 nodes against
one, run bench/extract_cluster.py --features ssl_layers --encoder FOLDER (this script prints the command).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import shared_data_dir  # noqa: E402


def write_encoder(folder: Path, tiny: bool, front_end: str = "group") -> Path:
    """WavLM at wavlm-base-plus's size (or tiny) with random weights: throughput does not depend on them.
    front_end layer: the per-frame layer norm of the large checkpoints, which batching by length needs."""
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMModel

    torch.manual_seed(0)
    size = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                conv_dim=(32,) * 7) if tiny else {}
    layer = dict(feat_extract_norm="layer", do_stable_layer_norm=True) if front_end == "layer" else {}
    WavLMModel(WavLMConfig(**size, **layer)).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(return_attention_mask=front_end == "layer").save_pretrained(folder)
    return folder


def corpus_table(scratch: Path, count: int):
    from orchestration.run.task import corpus_from_config

    data = shared_data_dir()
    if data:
        config = {"name": "ravdess", "root": str(data / "ravdess16k"), "classes": "4"}
    else:
        from ser_models.data.corpora.synthetic import SyntheticConfig, generate

        generate(scratch / "synthetic", SyntheticConfig())
        config = {"name": "synthetic", "root": str(scratch / "synthetic"), **SyntheticConfig().__dict__}
    return config["name"], corpus_from_config(config).task.head(count).reset_index(drop=True)


@torch.no_grad()
def direct(folder: Path, paths: list[str]) -> float:
    """The hand-written loop: decode, feature extractor, model, mean of every hidden layer."""
    from transformers import AutoFeatureExtractor, AutoModel

    from ser_models.data.audio import load_audio

    model, processor = AutoModel.from_pretrained(folder).eval(), AutoFeatureExtractor.from_pretrained(folder)
    started = time.perf_counter()
    for path in paths:
        inputs = processor(load_audio(path), sampling_rate=16_000, return_tensors="pt")
        states = model(inputs["input_values"], output_hidden_states=True).hidden_states
        np.asarray(torch.stack(states)[:, 0].mean(1))
    return time.perf_counter() - started


@torch.no_grad()
def direct_batched(folder: Path, paths: list[str], seconds: float) -> float:
    """The hand-written loop, batched: decode, sort by length, at most `seconds` of padded audio per call, the
    attention mask, each layer's mean over each utterance's real frames."""
    from transformers import AutoFeatureExtractor, AutoModel

    from ser_models.data.audio import load_audio
    from ser_models.data.encoders import conv_frames

    model, processor = AutoModel.from_pretrained(folder).eval(), AutoFeatureExtractor.from_pretrained(folder)
    started = time.perf_counter()
    waves = sorted((load_audio(path) for path in paths), key=len)
    batch: list = []
    for wave in [*waves, None]:
        if batch and (wave is None or (len(batch) + 1) * len(wave) > seconds * 16_000):
            inputs = processor(batch, sampling_rate=16_000, return_tensors="pt", padding=True,
                               return_attention_mask=True)
            states = torch.stack(model(**inputs, output_hidden_states=True).hidden_states)
            for column, frames in enumerate(conv_frames(model.config, torch.tensor([len(w) for w in batch]))):
                np.asarray(states[:, column, :frames].mean(1))
            batch = []
        if wave is not None:
            batch.append(wave)
    return time.perf_counter() - started


def through_cache(table, names, cache: Path, configured: dict) -> float:
    from ser_models.data.cache import extract

    started = time.perf_counter()
    extract(table, names, cache, workers=1, progress=False, configured=configured)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utterances", type=int, default=48)
    parser.add_argument("--encoder", help="a checkpoint folder (default: a random WavLM-base-plus-size one)")
    parser.add_argument("--tiny", action="store_true", help="a tiny random encoder: checks the script")
    parser.add_argument("--front-end", choices=["group", "layer"], default="group",
                        help="the random encoder's CNN norm: group (base checkpoints; always one at a time) or layer "
                             "(large checkpoints; batched by length too)")
    parser.add_argument("--batch-seconds", type=float, default=60.0, help="encoder.batch_seconds for batched rows")
    args = parser.parse_args()
    from orchestration.run.task import configured_features
    from ser_models.data import encoders
    from ser_models.data.encoders import batches_exactly, load_encoder

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        folder = Path(args.encoder) if args.encoder else write_encoder(scratch / "encoder", args.tiny, args.front_end)
        name, table = corpus_table(scratch, args.utterances)
        alone = configured_features({"model": str(folder), "batch_seconds": 0})
        batched = configured_features({"model": str(folder), "batch_seconds": args.batch_seconds})
        load_encoder(str(folder))        # both paths start with the model in memory: loading is not throughput
        encoders.BATCH_DEVICES.add("cpu")     # measure what batching would give here (the data plane: GPUs only)
        paths = list(table["path"])
        direct(folder, paths[:2])  # warm-up: first calls allocate
        baseline = direct(folder, paths)
        plane = through_cache(table, ["ssl_layers"], scratch / "cache", alone)
        rows = [("transformers called directly", baseline, baseline),
                ("data plane: extract(ssl_layers)", plane, baseline)]
        if batches_exactly(batched["ssl_layers"]):
            hand = direct_batched(folder, paths, args.batch_seconds)
            rows += [(f"directly, batched ({args.batch_seconds:.0f} s per call)", hand, hand),
                     ("data plane, batched", through_cache(table, ["ssl_layers"], scratch / "cache2", batched), hand)]
        fbank = through_cache(table, ["fbank40"], scratch / "cache", {})
        rows.append(("data plane: extract(fbank40)", fbank, baseline))
    seconds = table["duration"].astype(float).sum() if "duration" in table else float("nan")
    what = folder.name if args.encoder else "wavlm-base-plus size, random weights" + (" (tiny)" if args.tiny else "")
    print(f"{name}: {len(table)} utterances ({seconds:.0f} s of audio), encoder {what}, "
          f"{torch.get_num_threads()} torch threads, {'cuda' if torch.cuda.is_available() else 'cpu'}")
    print(f"{'path':40s} {'seconds':>8s} {'utt/s':>7s} {'vs direct, same batches':>24s}")
    for label, value, against in rows:
        print(f"{label:40s} {value:8.2f} {len(table) / value:7.2f} {value / against:24.2f}")
    print("2 nodes against 1: bench/extract_cluster.py --features ssl_layers --encoder <folder>")
    if len(rows) > 3:
        print(f"batched_over_alone={rows[3][1] / plane:.2f}")
        print(f"ssl_dataplane_batched_over_direct={rows[3][1] / rows[2][1]:.2f}")
    print(f"ssl_dataplane_over_direct={plane / baseline:.2f}")


if __name__ == "__main__":
    main()
