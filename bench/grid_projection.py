"""How long the full IEMOCAP paper grid takes: measured per batch here, projected to the whole grid.

    python bench/grid_projection.py                   # CPU here: measured CPU time, GPU projected from FLOPs
    python bench/grid_projection.py --device cuda     # on a GPU: measured GPU time (bf16 autocast), no projection
    python bench/grid_projection.py --study ravdess   # issue 13's RAVDESS study: every family at its recipe

The grid: 17 (model, ablation) cells x 5 session folds x 3 seeds at each
recipe's epochs (model_specs.md). IEMOCAP 4-class: 5,531 turns, mean 4.5 s;
per fold about 3,300 training, 1,100 validation and 1,100 test turns.
Per cell and epoch: train batches x (forward + backward + step) + evaluation
batches x forward, measured on one batch of --measure-batch 4.5-s utterances
and scaled linearly to the recipe's batch size (time and FLOPs are close to
linear in the batch for these models on CPU).

On CPU the GPU figure is a projection, not a measurement: FLOPs per batch are
counted here (torch.utils.flop_counter), divided by an assumed sustained
throughput (--gpu-tflops, default 40 TFLOP/s: about 5 % of an H100's bf16 peak,
a typical share for small convolutional and recurrent SER models), with a floor
of --step-us microseconds per recurrent time step (LSTMs are sequential).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from orchestration.run.loaders import to_device  # noqa: E402
from orchestration.run.training import autocast  # noqa: E402
from ser_models.registry import all_models, build_model, model_inputs  # noqa: E402
from tests.model_inputs import VOCAB, batch_for  # noqa: E402

# (model, ablation, epochs, batch, recurrent steps per batch: frames the LSTMs walk, both directions and layers)
GRID = [("fg_cme", a, 20, 32, 2 * 12) for a in ("full", "no_excite_acoustic", "no_excite_semantic", "no_excite")] + [
    ("ds_lstm", a, 50, 128, 2 * (27 + 450)) for a in ("full", "ds_only", "mfcc_only", "lstm_mel512")] + [
    ("cma", a, 50, 32, 2 * 250) for a in ("raw", "spectrogram", "audio_only")] + [
    ("sdl", "full", 50, 32, 450), ("sll", "full", 50, 32, 450),
    ("lstm_attn_audio", "full", 20, 32, 2 * 450), ("lstm_attn_text", "full", 20, 32, 2 * 12),
    ("utt_concat", "full", 20, 32, 4 * 450), ("attn_fusion", "full", 20, 32, 4 * 450)]
# the RAVDESS study of issue 13 (4 classes, 672 files, mean 3.7 s; per actor fold 392 training and 140 + 140
# validation and test files, the test split scored every epoch for the test-oracle column)
RAVDESS_STUDY = [("fg_cme", a, 20, 32, 2 * 12) for a in ("full", "no_excite_acoustic", "no_excite_semantic",
                                                          "no_excite")] + [
    ("ds_lstm", a, 50, 128, 2 * (27 + 450)) for a in ("full", "ds_only", "mfcc_only", "lstm_mel512", "lstm_mel1024",
                                                      "two_lstms", "two_lstms_mfcc", "lstm_mel512_mfcc", "no_bn")] + [
    ("cma", a, 50, 32, 2 * 250) for a in ("raw", "spectrogram", "audio_only")] + [
    ("sll", "audio_only", 50, 32, 370)] + [
    (name, "full", 20, 32, 2 * 370) for name in ("cnn_lstm", "lstm_attn_audio", "lstm_attn_text", "utt_concat",
                                                 "attn_fusion", "mha")] + [
    ("egemaps_svm", "full", 50, 32, 0), ("egemaps_mlp", "full", 50, 32, 0)]
STUDIES = {"iemocap": (GRID, 3300, 2200, 4.5), "ravdess": (RAVDESS_STUDY, 392, 280, 3.7)}
FOLDS, SEEDS = 5, 3


def measure(name: str, ablation: str, batch_size: int, device: str, seconds: float) -> tuple[float, float, float]:
    """(s per training step, s per evaluation batch, training FLOPs per step) on one batch."""
    torch.manual_seed(0)
    overrides = {"vocab_size": VOCAB} if "vocab_size" in all_models()[name].defaults else {}
    model = build_model(name, ablation, **overrides).to(device)
    batch = to_device(batch_for(model_inputs(name, ablation), batch=batch_size,
                                seconds=tuple(seconds * f for f in (1.0, 0.8, 0.9, 1.1))), torch.device(device))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    precision = "auto" if device.startswith("cuda") else "fp32"

    def step():
        optimizer.zero_grad()
        with autocast(torch.device(device), precision):
            loss, _ = model.training_loss(batch, batch["labels"])
        loss.backward()
        optimizer.step()

    def forward():
        with torch.no_grad(), autocast(torch.device(device), precision):
            model(batch)

    counter = FlopCounterMode(display=False)
    with counter:
        step()  # also the warm-up
    timings = []
    for fn in (step, forward):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        timings.append(time.perf_counter() - started)
    return timings[0], timings[1], float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--study", default="iemocap", choices=sorted(STUDIES),
                        help="iemocap: the paper grid; ravdess: issue 13's RAVDESS study, every family at its recipe")
    parser.add_argument("--seconds", type=float, help="mean utterance length (default: the study's corpus)")
    parser.add_argument("--gpu-tflops", type=float, default=40.0)
    parser.add_argument("--step-us", type=float, default=60.0, help="GPU floor per recurrent step, fwd+bwd")
    parser.add_argument("--gpus", type=int, default=8, help="GPUs of the cluster in the last line")
    parser.add_argument("--measure-batch", type=int, help="batch measured (default: 8 on CPU, the recipe's on GPU)")
    args = parser.parse_args()
    grid, train_size, evaluate_size, seconds = STUDIES[args.study]
    args.seconds = args.seconds or seconds
    on_gpu = args.device.startswith("cuda")
    print(f"device={args.device} torch threads={torch.get_num_threads()} utterances {args.seconds} s")
    print(f"{'cell':28s} {'ep':>3s} {'batch':>5s} {'step s':>7s} {'GFLOP':>7s} {'cell-epoch s':>12s} "
          f"{'GPU cell-epoch s':>16s} {'15 trials, GPU h':>16s}")
    total_here = total_gpu = 0.0
    for name, ablation, epochs, batch_size, steps in grid:
        measured = args.measure_batch or (batch_size if on_gpu else 8)
        step_s, eval_s, flops = (value * batch_size / measured for value in
                                 measure(name, ablation, measured, args.device, args.seconds))
        train_batches, eval_batches = -(-train_size // batch_size), -(-evaluate_size // batch_size)
        epoch_here = train_batches * step_s + eval_batches * eval_s
        if on_gpu:
            epoch_gpu = epoch_here
        else:  # projection: FLOP-bound or step-latency-bound, whichever is slower; evaluation ~1/3 of a step
            step_gpu = max(flops / (args.gpu_tflops * 1e12), steps * args.step_us * 1e-6)
            epoch_gpu = (train_batches + eval_batches / 3) * step_gpu
        cell_gpu_h = epoch_gpu * epochs * FOLDS * SEEDS / 3600
        total_here += epoch_here * epochs * FOLDS * SEEDS
        total_gpu += cell_gpu_h
        print(f"{name + '/' + ablation:28s} {epochs:3d} {batch_size:5d} {step_s:7.3f} {flops / 1e9:7.1f} "
              f"{epoch_here:12.1f} {epoch_gpu:16.2f} {cell_gpu_h:16.2f}", flush=True)
    kind = "measured" if on_gpu else f"projected ({args.gpu_tflops:g} TFLOP/s sustained, {args.step_us:g} us/step)"
    print(f"{args.study}: {len(grid)} cells x {FOLDS} folds x {SEEDS} seeds = {len(grid) * FOLDS * SEEDS} trials")
    if not on_gpu:
        print(f"here, one trial at a time on this device: {total_here / 3600:.0f} h")
    print(f"one GPU, one trial at a time ({kind}): {total_gpu:.1f} h")
    print(f"{args.gpus} GPUs, trials spread evenly (the longest cell's trials bound it): {total_gpu / args.gpus:.1f} h")


if __name__ == "__main__":
    main()
