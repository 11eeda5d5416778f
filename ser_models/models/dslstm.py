"""Seed 001: Dual-Sequence LSTM on two mel resolutions + MFCC-LSTM, averaged heads
([CODE] diaoenmao/...Dual-Sequence-LSTM, final_model_random/model4.py and baselines).

Default: 3,732,296 trainable parameters, as printed in the authors' logs.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..blocks import lengths_to_mask, masked_mean
from ..registry import ModelSpec, SERModel, register


class LFLB(nn.Module):
    """Two blocks of Conv2d -> BatchNorm2d -> ReLU -> MaxPool2d(2); kernel layout (freq, time)."""

    def __init__(self, kernel: tuple[int, int], channels=(64, 16)):
        super().__init__()
        layers, previous = [], 1
        padding = ((kernel[0] - 1) // 2, (kernel[1] - 1) // 2)
        for out in channels:
            layers += [nn.Conv2d(previous, out, kernel, padding=padding), nn.BatchNorm2d(out), nn.ReLU(),
                       nn.MaxPool2d(2, 2)]
            previous = out
        self.layers = nn.Sequential(*layers)

    def forward(self, spectrogram: torch.Tensor) -> torch.Tensor:
        """[B, time, mels] -> [B, channels*freq, time']."""
        x = self.layers(spectrogram.transpose(1, 2).unsqueeze(1))
        return x.flatten(1, 2)


class SeparatedBatchNorm1d(nn.Module):
    """BatchNorm with running statistics per time step and shared affine (weight 0.1, bias 0)."""

    def __init__(self, features: int, max_length: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.full((features,), 0.1))
        self.bias = nn.Parameter(torch.zeros(features))
        self.register_buffer("running_mean", torch.zeros(max_length, features))
        self.register_buffer("running_var", torch.ones(max_length, features))
        self.momentum, self.eps = momentum, eps

    def forward(self, x: torch.Tensor, step: int) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean[step], self.running_var[step], self.weight, self.bias,
                            self.training, self.momentum, self.eps)


class DualSequenceCell(nn.Module):
    """FTLSTMCell: gates from [x; y; h], a time candidate from [x; h] and a frequency candidate from [y; h]."""

    def __init__(self, x_dim: int, y_dim: int, hidden: int, steps: int, batch_norm: bool = True):
        super().__init__()
        self.gates = nn.Linear(x_dim + y_dim + hidden, 4 * hidden)
        self.time_candidate = nn.Linear(x_dim + hidden, hidden)
        self.freq_candidate = nn.Linear(y_dim + hidden, hidden)
        self.gate_norm = SeparatedBatchNorm1d(4 * hidden, steps) if batch_norm else None
        self.hidden = hidden

    def forward(self, x, y, state, step: int):
        h, c = state
        gates = torch.sigmoid(self.gates(torch.cat([x, y, h], -1)))
        if self.gate_norm is not None:  # after the sigmoid, as in the authors' code
            gates = self.gate_norm(gates, step)
        forget, input_time, output, input_freq = gates.split(self.hidden, -1)
        candidate_time = torch.tanh(self.time_candidate(torch.cat([x, h], -1)))
        candidate_freq = torch.tanh(self.freq_candidate(torch.cat([y, h], -1)))
        c = forget * c + input_time * candidate_time + input_freq * candidate_freq
        h = output * torch.tanh(c)
        return h, c


class DualSequenceLSTM(nn.Module):
    """Stacked FTLSTM; every layer also sees y again; out_t = BatchNorm1d(h_t) feeds the next layer."""

    def __init__(self, x_dim: int, y_dim: int, hidden: int = 200, layers: int = 2, steps: int = 27,
                 batch_norm: bool = True):
        super().__init__()
        self.cells = nn.ModuleList([DualSequenceCell(x_dim if i == 0 else hidden, y_dim, hidden, steps, batch_norm)
                                    for i in range(layers)])
        self.out_norms = nn.ModuleList([nn.BatchNorm1d(hidden) if batch_norm else nn.Identity()
                                        for _ in range(layers)])
        self.hidden = hidden

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x [B, T, dx], y [B, T, dy] -> [B, T, hidden] of the last layer."""
        inputs = x
        for cell, norm in zip(self.cells, self.out_norms):
            h = c = x.new_zeros(x.shape[0], self.hidden)
            outputs = []
            for step in range(x.shape[1]):
                h, c = cell(inputs[:, step], y[:, step], (h, c), step)
                outputs.append(norm(h))
            inputs = torch.stack(outputs, 1)
        return inputs


def align_branches(x: torch.Tensor, y: torch.Tensor):
    """x [B, C, 56] -> mean over windows of 3 with stride 2; y [B, C, 29] -> first 56//2-1 steps; both [B, 27, C]."""
    steps = x.shape[-1] // 2 - 1
    x = F.avg_pool1d(x, 3, 2)[..., :steps]
    return x.transpose(1, 2), y[..., :steps].transpose(1, 2)


class DSLSTMModel(SERModel):
    """Heads: `both` (averaged logits, separate losses), `spectral` only, or `mfcc` only.
    Spectral branch: `ds` (dual-sequence LSTM), `lstm_x` / `lstm_y` (one spectrogram, plain LSTM),
    or `two_lstms` (one LSTM per spectrogram, concatenated)."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg, hidden, classes = cfg, cfg["hidden"], cfg["num_classes"]
        self.heads, spectral = cfg["heads"], cfg["spectral"]
        if self.heads in ("both", "spectral"):
            kernel = tuple(cfg["kernel"])
            self.cnn_x = LFLB(kernel) if spectral != "lstm_y" else None
            self.cnn_y = LFLB(kernel[::-1]) if spectral != "lstm_x" else None
            x_dim, y_dim = cfg["x_dim"], cfg["y_dim"]
            if spectral == "ds":
                self.spectral = DualSequenceLSTM(x_dim, y_dim, hidden, cfg["layers"], cfg["steps"], cfg["batch_norm"])
                spectral_dim = hidden
            elif spectral in ("lstm_x", "lstm_y"):
                self.spectral = nn.LSTM(x_dim if spectral == "lstm_x" else y_dim, hidden, cfg["layers"],
                                        batch_first=True)
                spectral_dim = hidden
            else:
                self.spectral = nn.ModuleList([nn.LSTM(d, hidden, cfg["layers"], batch_first=True)
                                               for d in (x_dim, y_dim)])
                spectral_dim = 2 * hidden
            self.spectral_head = nn.Linear(spectral_dim, classes)
        if self.heads in ("both", "mfcc"):
            self.mfcc_lstm = nn.LSTM(39, hidden, cfg["layers"], batch_first=True)
            self.mfcc_head = nn.Linear(hidden, classes)
        self.register_buffer("mix", torch.tensor(cfg["mix"]))  # p, fixed (requires_grad False in the code)

    def spectral_logits(self, batch: dict) -> torch.Tensor:
        kind = self.cfg["spectral"]
        x = self.cnn_x(batch["mel512_fixed"]) if self.cnn_x is not None else None
        y = self.cnn_y(batch["mel1024_fixed"]) if self.cnn_y is not None else None
        if kind == "ds":
            sequence = self.spectral(*align_branches(x, y))
        elif kind == "lstm_x":
            sequence, _ = self.spectral(x.transpose(1, 2))
        elif kind == "lstm_y":
            sequence, _ = self.spectral(y.transpose(1, 2))
        else:
            sequence = torch.cat([lstm(z.transpose(1, 2))[0].mean(1, keepdim=True)
                                  for lstm, z in zip(self.spectral, (x, y))], -1)
        return self.spectral_head(sequence.mean(1))

    def mfcc_logits(self, batch: dict) -> torch.Tensor:
        # zero-padded, not packed (as the reference); the mean covers valid frames only
        outputs, _ = self.mfcc_lstm(batch["mfcc39"])
        mask = lengths_to_mask(batch["mfcc39_lengths"], outputs.shape[1])
        return self.mfcc_head(masked_mean(outputs, mask))

    def both(self, batch: dict):
        return self.spectral_logits(batch), self.mfcc_logits(batch)

    def forward(self, batch: dict) -> torch.Tensor:
        if self.heads == "spectral":
            return self.spectral_logits(batch)
        if self.heads == "mfcc":
            return self.mfcc_logits(batch)
        spectral, mfcc = self.both(batch)
        return self.mix * spectral + (1 - self.mix) * mfcc

    def training_loss(self, batch: dict, labels):
        if self.heads != "both":
            return super().training_loss(batch, labels)
        spectral, mfcc = self.both(batch)
        loss = self.mix * self.classification_loss(spectral, labels) + \
            (1 - self.mix) * self.classification_loss(mfcc, labels)
        return loss, self.mix * spectral + (1 - self.mix) * mfcc


def _inputs(cfg: dict) -> tuple[str, ...]:
    inputs = []
    if cfg["heads"] in ("both", "spectral"):
        inputs += {"lstm_x": ["mel512_fixed"], "lstm_y": ["mel1024_fixed"]}.get(
            cfg["spectral"], ["mel512_fixed", "mel1024_fixed"])
    if cfg["heads"] in ("both", "mfcc"):
        inputs.append("mfcc39")
    return tuple(inputs)


register(ModelSpec(
    name="ds_lstm", paper="001", builder=DSLSTMModel, inputs=_inputs,
    description="Dual-sequence LSTM over mel 512/1024 CNN features + MFCC-LSTM, logits averaged (p = 0.5)",
    defaults={"heads": "both", "spectral": "ds", "batch_norm": True, "hidden": 200, "layers": 2, "steps": 27,
              "kernel": (4, 2), "x_dim": 496, "y_dim": 1008, "mix": 0.5},
    ablations={
        "full": {},                                                   # model4
        "ds_only": {"heads": "spectral"},                             # model10
        "mfcc_only": {"heads": "mfcc"},                               # base1
        "lstm_mel512": {"heads": "spectral", "spectral": "lstm_x"},   # base2
        "lstm_mel1024": {"heads": "spectral", "spectral": "lstm_y"},  # base3
        "two_lstms": {"heads": "spectral", "spectral": "two_lstms"},  # base4
        "two_lstms_mfcc": {"spectral": "two_lstms"},                  # base5
        "lstm_mel512_mfcc": {"spectral": "lstm_x"},                   # base6
        "no_bn": {"batch_norm": False},
    },
    recipe={"optimizer": "adam", "lr": 1e-3, "batch_size": 128, "epochs": 50, "schedule": "multistep",
            "milestones": [10, 20, 30], "gamma": 0.5, "clip_norm": 0.0},
    recipe_source="paper 001 code: Adam 1e-3, batch 128, 50 epochs, MultiStepLR [10, 20, 30] x 0.5, no clipping"))
