"""What fine-tuning an encoder costs per training step, beside the frozen probe it is compared with.

    python bench/ssl_finetune.py            # WavLM at wavlm-base-plus's size, random weights, cuda if present
    python bench/ssl_finetune.py --tiny     # a tiny config: checks the script in seconds

ssl_finetune (ser_models/models/ssl_finetune.py) is built through its real loading code from a checkpoint folder
that save_pretrained writes here (random weights: the cost does not depend on their values, and none can be
downloaded here). One training step (forward, loss, backward, Adam) on a batch of RAVDESS-length utterances
(3.0-5.3 s) is timed for the top 0, 2 and all layers trained, beside one step of ssl_probe/full on the cached
pooled layers of the same batch. The last lines are `<cell>_s_per_step=<s>` and
`finetune_over_probe=<ssl_finetune/full step ÷ ssl_probe step>`.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RATE = 16_000


def checkpoint(folder: str, tiny: bool) -> str:
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.manual_seed(0)
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 conv_dim=(32,) * 7) if tiny else {}
    WavLMModel(WavLMConfig(**small)).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(folder)
    return folder


def batch(size: int, seed: int = 0) -> dict:
    from ser_models.data.dataset import collate

    rng = np.random.default_rng(seed)
    return collate([{"utt_id": f"u{i}", "label": i % 4,
                     "waveform": (0.1 * rng.standard_normal(int(rng.uniform(3.0, 5.3) * RATE))).astype(np.float32)}
                    for i in range(size)])


def seconds_per_step(model, step_batch: dict, repeats: int, lr: float = 1e-4) -> float:
    optimizer = torch.optim.Adam(model.parameter_groups(lr), lr=lr)
    model.train()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss, _ = model.training_loss(step_batch, step_batch["labels"])
        loss.backward()
        optimizer.step()

    step()                              # warm-up: allocations, lazy kernels
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - started) / repeats


def main() -> None:
    from ser_models.data.encoders import encoder_feature
    from ser_models.registry import build_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4, help="utterances per step (the recipe's 4)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="a tiny config: a check of the script, not a figure")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    step_batch = batch(args.batch)
    audio = float(step_batch["waveform_lengths"].sum()) / RATE
    with tempfile.TemporaryDirectory() as folder:
        checkpoint(folder, args.tiny)
        pooled = encoder_feature(folder)
        step_batch["ssl_layers"] = torch.stack([pooled(wave[:n]) for wave, n in
                                                zip(step_batch["waveform"], step_batch["waveform_lengths"])])
        on_device = {k: v.to(device) if torch.is_tensor(v) else v for k, v in step_batch.items()}
        rows = {}
        for ablation in ("frozen", "full", "all"):
            model = build_model("ssl_finetune", ablation, encoder=folder).to(device)
            rows[f"ssl_finetune/{ablation}"] = seconds_per_step(model, on_device, args.repeats)
        probe = build_model("ssl_probe", input_shapes={"ssl_layers": tuple(pooled.shape)}).to(device)
        rows["ssl_probe/full"] = seconds_per_step(probe, on_device, args.repeats)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"batch of {args.batch} utterances, {audio:.1f} s of audio; {where}; torch {torch.__version__}"
          + (" (tiny config)" if args.tiny else " (WavLM-base-plus size)"))
    print(f"{'cell':24s} {'s per step':>10s} {'RAVDESS fold epoch (403 utt), min':>34s}")
    for cell, seconds in rows.items():
        print(f"{cell:24s} {seconds:10.3f} {seconds * 403 / args.batch / 60:34.1f}")
    for cell, seconds in rows.items():
        print(f"{cell.replace('/', '_')}_s_per_step={seconds:.4f}")
    print(f"finetune_over_probe={rows['ssl_finetune/full'] / rows['ssl_probe/full']:.0f}")


if __name__ == "__main__":
    main()
