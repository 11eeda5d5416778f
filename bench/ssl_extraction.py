"""Self-supervised encoders' extraction throughput: what a GPU (or CPU) gives, beside fbank40 on the CPU.

    python bench/ssl_extraction.py                          # real-size encoders, random weights, on cuda if present
                                                            # (needs transformers: pip install "emosweep[ssl]")
    python bench/ssl_extraction.py --tiny --utterances 32   # tiny configs: checks the script anywhere in seconds

Each encoder is built from its `transformers` config at the size of the published checkpoint
(wav2vec2-base, HuBERT-base, WavLM-base-plus, Whisper-large-v3's encoder) with random weights:
throughput does not depend on the weights' values, and no weights can be downloaded here.
This is the baseline that issue 22's data plane is measured against: the model called directly
in a loop, batches sorted by length, every hidden layer mean-pooled over its frames (masked),
bf16 autocast on a GPU that supports it. Whisper's encoder always takes 30 s windows (its
positional table is fixed), so a 3-5 s utterance costs a whole window: EmoBox's setting.

Utterances are RAVDESS-like lengths (uniform 3.0-5.3 s at 16 kHz) of noise. The last lines are
`<encoder>_utt_per_s=<n>` per encoder and `fbank40_utt_per_s=<n>` (CPU, one process).
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RATE = 16_000

from ser_models.data.encoders import conv_frames  # noqa: E402 - after the repo is on sys.path


def encoders(tiny: bool) -> dict:
    """name -> (config, model class); the published checkpoints' sizes, or tiny ones (--tiny)."""
    from transformers import (HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model, WavLMConfig, WavLMModel,
                              WhisperConfig)
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 conv_dim=(32,) * 7) if tiny else {}
    whisper = (dict(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64, num_mel_bins=128)
               if tiny else dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
                                 num_mel_bins=128))
    return {"wav2vec2-base": (Wav2Vec2Config(**small), Wav2Vec2Model),
            "hubert-base": (HubertConfig(**small), HubertModel),
            "wavlm-base-plus": (WavLMConfig(**small), WavLMModel),
            "whisper-large-v3-encoder": (WhisperConfig(**whisper), WhisperEncoder)}


def utterances(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(int(rng.uniform(3.0, 5.3) * RATE)).astype(np.float32) * 0.1 for _ in range(count)]


def batches(waves: list[np.ndarray], seconds: float):
    """Sorted by length, each batch at most `seconds` of padded audio."""
    order = sorted(range(len(waves)), key=lambda i: len(waves[i]))
    batch: list[int] = []
    for index in order:
        if batch and (len(batch) + 1) * len(waves[index]) > seconds * RATE:
            yield [waves[i] for i in batch]
            batch = []
        batch.append(index)
    if batch:
        yield [waves[i] for i in batch]


def pooled_layers(hidden_states, mask) -> torch.Tensor:
    """[batch, layers, hidden]: every layer's masked mean over frames."""
    stacked = torch.stack(hidden_states, 1).float()           # [B, L, T, H]
    weights = mask[:, None, :, None].float()
    return (stacked * weights).sum(2) / weights.sum(2).clamp(min=1)


def run_wave_encoder(model, batch, device) -> torch.Tensor:
    lengths = torch.tensor([len(w) for w in batch], device=device)
    padded = torch.zeros(len(batch), int(lengths.max()), device=device)
    for row, wave in enumerate(batch):
        padded[row, :len(wave)] = torch.from_numpy(wave).to(device, non_blocking=True)
    attention = torch.arange(padded.shape[1], device=device)[None, :] < lengths[:, None]
    out = model(padded, attention_mask=attention.long(), output_hidden_states=True)
    frames = out.hidden_states[0].shape[1]
    mask = torch.arange(frames, device=device)[None, :] < conv_frames(model.config, lengths)[:, None]
    return pooled_layers(out.hidden_states, mask)


def run_whisper(model, extractor, batch, device) -> torch.Tensor:
    features = extractor([w for w in batch], sampling_rate=RATE, return_tensors="pt", device=str(device),
                         return_attention_mask=True)
    inputs = features.input_features.to(device)
    out = model(inputs.to(next(model.parameters()).dtype), output_hidden_states=True)
    frames = out.hidden_states[0].shape[1]
    valid = torch.tensor([min(frames, -(-len(w) // 320)) for w in batch], device=device)   # 20 ms per frame
    mask = torch.arange(frames, device=device)[None, :] < valid[:, None]
    return pooled_layers(out.hidden_states, mask)


def measure(name, config, cls, waves, device, seconds: float, warmup: int) -> dict:
    from transformers import WhisperFeatureExtractor

    torch.manual_seed(0)
    model = cls(config).to(device).eval()
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    whisper = "whisper" in name
    extractor = WhisperFeatureExtractor(feature_size=config.num_mel_bins) if whisper else None
    window = 30.0 if whisper else None
    work = list(batches(waves, seconds if not whisper else max(window, seconds // window * window)))
    if whisper:   # every utterance fills a 30 s window: batch by count
        per = max(1, int(seconds // window))
        work = [waves[i:i + per] for i in range(0, len(waves), per)]

    def one(batch):
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            pooled = run_whisper(model, extractor, batch, device) if whisper else run_wave_encoder(model, batch, device)
        return pooled.cpu()

    for batch in work[:warmup]:
        one(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    shapes = [one(batch).shape for batch in work]
    elapsed = time.perf_counter() - started
    audio_s = sum(len(w) for w in waves) / RATE
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return {"encoder": name, "params_m": sum(p.numel() for p in model.parameters()) / 1e6, "batches": len(work),
            "layers": shapes[0][1], "utt_per_s": len(waves) / elapsed, "audio_x_realtime": audio_s / elapsed,
            "peak_gib": peak, "bf16": bf16}


def fbank_rate(waves: list[np.ndarray]) -> float:
    from ser_models.data.features import get_extractor

    fbank = get_extractor("fbank40")
    started = time.perf_counter()
    for wave in waves:
        fbank(torch.from_numpy(wave))
    return len(waves) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utterances", type=int, default=512)
    parser.add_argument("--batch-seconds", type=float, default=240.0, help="padded audio per batch (not Whisper)")
    parser.add_argument("--whisper-batch", type=int, default=32, help="30-s windows per Whisper batch")
    parser.add_argument("--encoders", nargs="+", help="a subset of the encoders (default: all)")
    parser.add_argument("--tiny", action="store_true", help="tiny configs: a check of the script, not a figure")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if importlib.util.find_spec("transformers") is None:
        sys.exit("bench/ssl_extraction.py needs Hugging Face transformers. Fix: pip install 'emosweep[ssl]'")
    device = torch.device(args.device)
    waves = utterances(args.utterances)
    audio_h = sum(len(w) for w in waves) / RATE / 3600
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{len(waves)} utterances, {audio_h * 60:.1f} min of audio; {gpu}; torch {torch.__version__}"
          + (" (tiny configs)" if args.tiny else ""), flush=True)
    print(f"{'encoder':26s} {'params M':>9s} {'layers':>6s} {'batches':>7s} {'utt/s':>9s} {'x realtime':>10s} "
          f"{'peak GiB':>8s} {'MSP-Podcast 237 h, h':>21s}")
    rows = []
    for name, (config, cls) in encoders(args.tiny).items():
        if args.encoders and name not in args.encoders:
            continue
        seconds = args.whisper_batch * 30.0 if "whisper" in name else args.batch_seconds
        row = measure(name, config, cls, waves, device, seconds, warmup=2)
        rows.append(row)
        print(f"{name:26s} {row['params_m']:9.1f} {row['layers']:6d} {row['batches']:7d} {row['utt_per_s']:9.1f} "
              f"{row['audio_x_realtime']:10.0f} {row['peak_gib']:8.2f} {237 / row['audio_x_realtime']:21.2f}",
              flush=True)
        del row
        if device.type == "cuda":
            torch.cuda.empty_cache()
    fbank = fbank_rate(waves[:min(len(waves), 128)])
    print(f"fbank40 on the CPU (one process, {torch.get_num_threads()} threads): {fbank:.1f} utt/s")
    for row in rows:
        print(f"{row['encoder']}_utt_per_s={row['utt_per_s']:.1f}")
    print(f"fbank40_utt_per_s={fbank:.1f}")


if __name__ == "__main__":
    main()
