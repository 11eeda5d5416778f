"""The eGeMAPS floor: openSMILE eGeMAPSv02 functionals (88 per utterance) into a linear SVM or a small MLP.

The baseline nkululeko users put into every comparison. The functionals are
standardised with the mean and standard deviation of the fold's training split
only (`fit_to_training`), stored as buffers so checkpoints carry them. The SVM
is the primal linear multi-class SVM (Weston-Watkins hinge, `multi_margin_loss`)
trained by the same loop as every other model, its L2 term being the
optimiser's weight decay; [RECON] choices, not from the seed papers.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..blocks import Standardize
from ..registry import ModelSpec, SERModel, register

DIMS = 88
RECIPE = {"optimizer": "adam", "lr": 1e-3, "batch_size": 32, "epochs": 50, "early_stop_patience": 10}
SVM_RECIPE = {**RECIPE, "lr": 1e-2, "weight_decay": 1e-3}
SOURCE = "[RECON] a floor, not a seed paper: Adam, batch 32, up to 50 epochs, early stop after 10 on validation"


class EgemapsModel(SERModel):
    def __init__(self, cfg, classifier: str):
        super().__init__()
        self.standardize = Standardize(DIMS)
        self.hinge = classifier == "svm"
        if self.hinge:
            self.net = nn.Linear(DIMS, cfg["num_classes"])
        else:
            self.net = nn.Sequential(nn.Linear(DIMS, cfg["hidden"]), nn.ReLU(), nn.Dropout(cfg["dropout"]),
                                     nn.Linear(cfg["hidden"], cfg["num_classes"]))

    @staticmethod
    def functionals(batch) -> torch.Tensor:
        return batch["egemaps"][:, 0]   # [B, 1, 88]: one frame per utterance

    def fit_to_training(self, batches) -> None:
        features = torch.cat([self.functionals(batch) for batch in batches])
        self.standardize.fit(features.to(self.standardize.mean.device))

    def forward(self, batch):
        return self.net(self.standardize(self.functionals(batch)))

    def classification_loss(self, logits, labels):
        if self.hinge:
            return F.multi_margin_loss(logits, labels, weight=self.class_weight)
        return super().classification_loss(logits, labels)


for name, classifier, description, recipe in [
        ("egemaps_svm", "svm", "eGeMAPSv02 functionals -> linear SVM (hinge loss)", SVM_RECIPE),
        ("egemaps_mlp", "mlp", "eGeMAPSv02 functionals -> MLP (one hidden layer)", RECIPE)]:
    register(ModelSpec(name=name, paper="floor (openSMILE eGeMAPS)", description=description,
                       builder=lambda cfg, c=classifier: EgemapsModel(cfg, c), inputs=lambda cfg: ("egemaps",),
                       defaults={"hidden": 64, "dropout": 0.2},
                       recipe=recipe, recipe_source=SOURCE))
