"""Probes of a frozen self-supervised encoder, the way SUPERB and EmoBox evaluate one for emotion.

Input: `ssl_layers`, every hidden layer of the sweep's encoder mean-pooled over the utterance ([layers + 1,
dims], ser_models/data/encoders.py). Pooling first and weighting after is SUPERB's weighted sum of layers
followed by mean pooling, reordered: both are linear, so they commute. The layers are standardised with the
fold's training statistics (the encoders' layers differ in scale by orders of magnitude).

- ssl_probe/full: a learned softmax-weighted sum of the layers -> linear classifier (SUPERB's ER probe);
- ssl_probe/mlp: the same sum -> one hidden layer (EmoBox-style light head);
- ssl_probe/last_layer: the last layer alone -> linear (what "take the encoder's output" gives);
- ssl_probe/layer_<k> (or the option `layer: k`) probes layer k alone (0 = the CNN or embedding output):
  one cell per layer draws the report's per-layer figure, the one SSL-for-SER papers draw;
- ssl_svm: a linear SVM (hinge loss, as egemaps_svm) on one layer, the last by default; with one cell per
  layer (ssl_svm/layer_<k>) the report picks each fold's layer on validation UA and scores that fold's test
  with it (EmoBox and nkululeko's "SVM on the best layer"), never looking at test to choose.

Recipe: [RECON] SUPERB's ER probe trains on frame features for 30k steps at lr 1e-4; on pooled vectors an
epoch is a few steps, so Adam at 1e-3, batch 32, up to 50 epochs, early stop after 10 without a better
validation UA.
"""
from __future__ import annotations

import torch
import torch.nn as nn

import torch.nn.functional as F

from ..blocks import Standardize
from ..registry import ModelSpec, SERModel, register
from .egemaps import SVM_RECIPE   # egemaps_svm's: the same primal SVM, its L2 term the optimiser's decay

RECIPE = {"optimizer": "adam", "lr": 1e-3, "batch_size": 32, "epochs": 50, "early_stop_patience": 10}
SVM_SOURCE = "[RECON] as egemaps_svm: the primal multi-class hinge, Adam 1e-2, weight decay 1e-3, batch 32"
SOURCE = ("[RECON] SUPERB ER's probe (weighted layers, mean pooling, linear) on pooled vectors: Adam 1e-3, "
          "batch 32, up to 50 epochs, early stop after 10 on validation")


class LayerProbe(SERModel):
    def __init__(self, cfg):
        super().__init__()
        if not cfg.get("input_shapes") or "ssl_layers" not in cfg["input_shapes"]:
            raise ValueError("ssl_probe is built from the cached ssl_layers feature's shape (input_shapes); "
                             "build it through a sweep or pass input_shapes={'ssl_layers': (layers, dims)}")
        layers, dims = cfg["input_shapes"]["ssl_layers"]
        self.layer = cfg["layer"]
        if self.layer is not None and not -layers <= self.layer < layers:
            raise ValueError(f"ssl_probe: layer {self.layer} does not exist; the encoder has layers 0..{layers - 1}")
        self.standardize = Standardize((layers, dims))
        # softmax(0): every layer alike at the start; a probe of one layer has no weights (DDP wants every
        # parameter used)
        self.layer_logits = nn.Parameter(torch.zeros(layers)) if self.layer is None else None
        classes = cfg["num_classes"]
        self.hinge = cfg.get("hinge", False)
        self.net = (nn.Linear(dims, classes) if not cfg["hidden"] else
                    nn.Sequential(nn.Linear(dims, cfg["hidden"]), nn.ReLU(), nn.Dropout(cfg["dropout"]),
                                  nn.Linear(cfg["hidden"], classes)))

    def fit_to_training(self, batches) -> None:
        layers = torch.cat([batch["ssl_layers"] for batch in batches])
        self.standardize.fit(layers.to(self.standardize.mean.device))

    @property
    def layer_weights(self) -> torch.Tensor:
        return self.layer_logits.softmax(0)

    def forward(self, batch):
        layers = self.standardize(batch["ssl_layers"])                 # [B, layers, dims]
        if self.layer is not None:
            return self.net(layers[:, self.layer])
        return self.net(torch.einsum("l,bld->bd", self.layer_weights, layers))

    def classification_loss(self, logits, labels):
        if self.hinge:
            return F.multi_margin_loss(logits, labels, weight=self.class_weight)
        return super().classification_loss(logits, labels)


register(ModelSpec(
    name="ssl_probe", paper="SUPERB / EmoBox probe",
    description="a frozen SSL encoder's layers (encoder: section): weighted sum -> linear or MLP",
    builder=LayerProbe, inputs=lambda cfg: ("ssl_layers",),
    defaults={"input_shapes": None, "layer": None, "hidden": 0, "dropout": 0.1},
    ablations={"full": {}, "mlp": {"hidden": 256}, "last_layer": {"layer": -1}}, numbered=("layer",),
    recipe=RECIPE, recipe_source=SOURCE,
    listing={"input_shapes": {"ssl_layers": (13, 768)}}))    # parameters listed at WavLM-base-plus's size

register(ModelSpec(
    name="ssl_svm", paper="EmoBox / nkululeko",
    description="one layer of a frozen SSL encoder (encoder: section) -> linear SVM (hinge loss)",
    builder=LayerProbe, inputs=lambda cfg: ("ssl_layers",),
    defaults={"input_shapes": None, "layer": -1, "hidden": 0, "dropout": 0.0, "hinge": True},
    numbered=("layer",),
    recipe=SVM_RECIPE, recipe_source=SVM_SOURCE,
    listing={"input_shapes": {"ssl_layers": (13, 768)}}))
