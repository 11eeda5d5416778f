"""Correctly shaped random inputs for any registered model, built through the real collate."""
from __future__ import annotations

import numpy as np
import torch

from ser_models.data.dataset import collate

VOCAB = 30
FIXED = {"mel512_fixed": (230, 128), "mel1024_fixed": (120, 256), "egemaps": (1, 88), "ssl_layers": (3, 64)}
FRAME_DIMS = {"fbank40": 40, "mfcc39": 39, "spec257": 257, "ssl_frames": (2, 16)}   # per frame: dims, or a shape
INPUT_SHAPES = {**FIXED, "ssl_frames": (1, *FRAME_DIMS["ssl_frames"])}   # what a head sized by its inputs is given


def examples(inputs, batch: int = 3, seed: int = 0, seconds=(0.45, 0.35, 0.3, 0.4, 0.5, 0.25, 0.38, 0.42)):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(batch):
        duration = seconds[i % len(seconds)]
        frames = int(duration * 100) - 2
        words = 2 + i % 4
        example = {"utt_id": f"u{i}", "label": i % 4}
        for name in inputs:
            if name == "waveform":
                example[name] = (0.1 * rng.standard_normal(int(duration * 16_000))).astype(np.float32)
            elif name in FIXED:
                example[name] = rng.standard_normal(FIXED[name]).astype(np.float32)
            elif name in FRAME_DIMS:
                example[name] = rng.standard_normal((frames, *np.atleast_1d(FRAME_DIMS[name]))).astype(np.float32)
            elif name == "words":
                example[name] = rng.integers(2, VOCAB, words).astype(np.int64)
            elif name == "word_spans":
                edges = np.sort(rng.uniform(0.02, duration - 0.05, 2 * words))
                example[name] = edges.reshape(words, 2).astype(np.float32)
        if "word_spans" in inputs and "fbank40" not in inputs:
            example["fbank40_frames"] = frames
        out.append(example)
    return out


def batch_for(inputs, **kwargs) -> dict:
    return collate(examples(inputs, **kwargs))


def pad_more(batch: dict, extra: int = 7) -> dict:
    """The same batch with every variable-length tensor padded further (lengths unchanged)."""
    padded = dict(batch)
    for key, value in batch.items():
        if not torch.is_tensor(value) or key.endswith("_lengths") or key in ("labels",) or key in FIXED:
            continue
        if key == "alignment":
            padded[key] = torch.nn.functional.pad(value, (0, extra, 0, 2))
        else:
            grow = extra * 160 if key == "waveform" else (2 if key == "words" else extra)
            shape = list(value.shape)
            shape[1] = grow
            padded[key] = torch.cat([value, value.new_zeros(shape)], dim=1)
    return padded
