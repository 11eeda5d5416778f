"""Attentive statistics pooling over a frozen SSL encoder's frames: the frame-level probe of SUPERB and EmoBox.

Input: `ssl_frames`, the frame-level outputs of the layers the sweep's encoder.frame_layers names
([frames, layers, dims], ser_models/data/encoders.py). Each layer is standardised with the fold's training
frames; a learned softmax-weighted sum of the layers (SUPERB's weighted sum) is projected per frame, then
pooled by attentive statistics pooling (Okabe et al., Interspeech 2018: a small attention network scores each
frame, and the attention-weighted mean and standard deviation over the utterance's real frames, never its
padding, are the utterance's vector), then a linear classifier.

- ssl_asp/full: as above; ssl_asp/mean_pool: the same with uniform weights over frames (mean and std), to
  show what the attention adds.

Recipe: [RECON] SUPERB's ER probe on frames: Adam at 1e-4 for 30k steps, batch 32; on a corpus of a few
thousand utterances that is a few hundred epochs, so Adam 1e-3 (the head is small and starts from scratch),
batch 32, up to 50 epochs with early stop after 10 without a better validation UA, as ssl_probe.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..blocks import Standardize, lengths_to_mask
from ..registry import ModelSpec, SERModel, register

RECIPE = {"optimizer": "adam", "lr": 1e-3, "batch_size": 32, "epochs": 50, "early_stop_patience": 10}
SOURCE = ("[RECON] SUPERB ER's frame-level probe with EmoBox-style attentive statistics pooling: Adam 1e-3, "
          "batch 32, up to 50 epochs, early stop after 10 on validation")


def attentive_statistics(frames: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, T, D] frames, [B, T] scores, [B, T] True where a frame is real -> [B, 2D] weighted mean and std."""
    weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=1).unsqueeze(-1)
    mean = (weights * frames).sum(1)
    variance = (weights * frames ** 2).sum(1) - mean ** 2
    return torch.cat([mean, variance.clamp_min(1e-8).sqrt()], dim=-1)


class AttentiveStatisticsProbe(SERModel):
    def __init__(self, cfg):
        super().__init__()
        shapes = cfg.get("input_shapes") or {}
        if "ssl_frames" not in shapes:
            raise ValueError("ssl_asp is built from the cached ssl_frames feature's shape (input_shapes); build it "
                             "through a sweep or pass input_shapes={'ssl_frames': (frames, layers, dims)}")
        layers, dims = shapes["ssl_frames"][-2:]
        hidden = cfg["hidden"]
        self.standardize = Standardize((layers, dims))
        self.layer_logits = nn.Parameter(torch.zeros(layers))     # softmax(0): every layer alike at the start
        self.project = nn.Sequential(nn.Linear(dims, hidden), nn.ReLU(), nn.Dropout(cfg["dropout"]))
        self.attention = (nn.Sequential(nn.Linear(hidden, cfg["attention"]), nn.Tanh(),
                                        nn.Linear(cfg["attention"], 1)) if cfg["attend"] else None)
        self.classify = nn.Linear(2 * hidden, cfg["num_classes"])

    def fit_to_training(self, batches) -> None:
        self.standardize.fit_streaming(
            batch["ssl_frames"][mask] for batch in batches
            for mask in [lengths_to_mask(batch["ssl_frames_lengths"], batch["ssl_frames"].shape[1])])

    @property
    def layer_weights(self) -> torch.Tensor:
        return self.layer_logits.softmax(0)

    def forward(self, batch):
        frames = self.standardize(batch["ssl_frames"])                          # [B, T, layers, dims]
        frames = self.project(torch.einsum("l,btld->btd", self.layer_weights, frames))
        mask = lengths_to_mask(batch["ssl_frames_lengths"], frames.shape[1])
        scores = self.attention(frames).squeeze(-1) if self.attention is not None else torch.zeros_like(
            mask, dtype=frames.dtype)
        return self.classify(attentive_statistics(frames, scores, mask))


register(ModelSpec(
    name="ssl_asp", paper="SUPERB / EmoBox probe",
    description="a frozen SSL encoder's frames (encoder.frame_layers): weighted layers -> attentive statistics "
                "pooling -> linear",
    builder=AttentiveStatisticsProbe, inputs=lambda cfg: ("ssl_frames",),
    defaults={"input_shapes": None, "hidden": 128, "attention": 64, "attend": True, "dropout": 0.1},
    ablations={"full": {}, "mean_pool": {"attend": False}},
    recipe=RECIPE, recipe_source=SOURCE,
    listing={"input_shapes": {"ssl_frames": (1, 2, 768)}}))   # parameters listed for 2 layers of a base encoder
