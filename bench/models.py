"""Forward + backward time per batch for every registered model (default ablation).

    python bench/models.py                    # CPU, batch 8, 3 s utterances
    python bench/models.py --device cuda --batch 32

Inputs are random but shaped like real ones: 3 s of audio (fbank/MFCC 298
frames, 12 words); CMA takes its fixed 10 s.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from orchestration.run.loaders import to_device  # noqa: E402
from ser_models.registry import all_models, build_model, model_inputs  # noqa: E402
from tests.model_inputs import VOCAB, batch_for  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="*", default=None)
    args = parser.parse_args()
    print(f"device={args.device} batch={args.batch} utterances of {args.seconds} s, "
          f"torch threads={torch.get_num_threads()}")
    print(f"{'model':16s} {'params':>11s} {'fwd+bwd ms/batch':>17s} {'peak MB':>8s}")
    for name in args.models or sorted(all_models()):
        torch.manual_seed(0)
        overrides = {"vocab_size": VOCAB} if "vocab_size" in all_models()[name].defaults else {}
        model = build_model(name, **overrides).to(args.device)
        batch = to_device(batch_for(model_inputs(name), batch=args.batch,
                                    seconds=tuple(args.seconds * f for f in (1.0, 0.8, 0.9, 1.1))), args.device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        times = []
        for repeat in range(args.repeats + 1):  # first run warms up
            started = time.perf_counter()
            optimizer.zero_grad()
            loss, _ = model.training_loss(batch, batch["labels"].to(args.device))
            loss.backward()
            optimizer.step()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            if repeat:
                times.append(time.perf_counter() - started)
        peak = torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda") else float("nan")
        params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"{name:16s} {params:11,d} {1000 * min(times):17.1f} {peak:8.0f}")


if __name__ == "__main__":
    main()
