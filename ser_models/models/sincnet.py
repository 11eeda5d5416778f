"""Seed 000: SincNet front end on raw audio, SDL (SincNet-DNN + text LSTM) and SLL
(Sinc -> LSTM -> self-attention + text LSTM), with feature-level fusion.

Only SincConv is exact ([CODE] mravanelli/SincNet SincConv_fast); the rest is
the documented reconstruction of shared docs/model_specs.md §1.4, behind
switches. The utterance is cut into 200 ms chunks taken only from its valid
samples, so batch padding never reaches the network.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..blocks import AdditiveAttentionPool, PackedLSTM, TextLSTMEncoder, WordEmbedding, lengths_to_mask
from ..registry import ModelSpec, SERModel, register

SAMPLE_RATE = 16_000


def to_mel(hz):
    return 2595 * math.log10(1 + hz / 700) if not torch.is_tensor(hz) else 2595 * torch.log10(1 + hz / 700)


def to_hz(mel):
    return 700 * (10 ** (mel / 2595) - 1)


class SincConv(nn.Module):
    """Band-pass filters parameterised by low cut-off and bandwidth (SincConv_fast, reference formulation)."""

    def __init__(self, out_channels: int = 80, kernel_size: int = 251, sample_rate: int = SAMPLE_RATE,
                 min_low_hz: float = 50.0, min_band_hz: float = 50.0):
        super().__init__()
        kernel_size += kernel_size % 2 == 0  # forced odd
        self.out_channels, self.kernel_size, self.sample_rate = out_channels, kernel_size, sample_rate
        self.min_low_hz, self.min_band_hz = min_low_hz, min_band_hz
        low_hz, high_hz = 30.0, sample_rate / 2 - (min_low_hz + min_band_hz)
        mel = torch.linspace(to_mel(low_hz), to_mel(high_hz), out_channels + 1, dtype=torch.float64)
        hz = to_hz(mel)
        self.low_hz_ = nn.Parameter(hz[:-1].view(-1, 1).float())
        self.band_hz_ = nn.Parameter(torch.diff(hz).view(-1, 1).float())
        # the reference's half window: K/2 points from 0 to K/2-1 (a non-integer step, kept for exactness)
        n_lin = torch.linspace(0, kernel_size / 2 - 1, steps=int(kernel_size / 2))
        self.register_buffer("window_", 0.54 - 0.46 * torch.cos(2 * math.pi * n_lin / kernel_size))
        half = (kernel_size - 1) / 2
        self.register_buffer("n_", 2 * math.pi * torch.arange(-half, 0).view(1, -1) / sample_rate)

    def filters(self) -> torch.Tensor:
        low = self.min_low_hz + torch.abs(self.low_hz_)
        high = torch.clamp(low + self.min_band_hz + torch.abs(self.band_hz_), self.min_low_hz, self.sample_rate / 2)
        band = (high - low)[:, 0]
        left = (torch.sin(high @ self.n_) - torch.sin(low @ self.n_)) / (self.n_ / 2) * self.window_
        center = 2 * band.view(-1, 1)
        band_pass = torch.cat([left, center, torch.flip(left, dims=[1])], dim=1) / (2 * band[:, None])
        return band_pass.view(self.out_channels, 1, self.kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.filters())


class SincLayerNorm(nn.Module):
    """SincNet's LayerNorm: statistics over the last axis, unbiased std, elementwise affine of `shape`."""

    def __init__(self, shape, eps: float = 1e-6):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(shape))
        self.beta = nn.Parameter(torch.zeros(shape))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = x.mean(-1, keepdim=True), x.std(-1, keepdim=True)
        return self.gamma * (x - mean) / (std + self.eps) + self.beta


class SincNetCNN(nn.Module):
    """[N, 3200] chunks -> [N, 6420]: Sinc (or plain conv) 80x251, conv 60x5, conv 60x5, each with
    max-pool 3, LayerNorm and LeakyReLU(0.2), as in SincNet_TIMIT.cfg."""

    def __init__(self, chunk_samples: int = 3200, frontend: str = "sinc", filters=(80, 60, 60),
                 kernels=(251, 5, 5), pool: int = 3):
        super().__init__()
        self.input_norm = SincLayerNorm(chunk_samples)
        first = SincConv(filters[0], kernels[0]) if frontend == "sinc" else nn.Conv1d(1, filters[0], kernels[0])
        self.convs = nn.ModuleList([first] + [nn.Conv1d(filters[i - 1], filters[i], kernels[i])
                                              for i in range(1, len(filters))])
        self.frontend, self.pool = frontend, pool
        length, norms = chunk_samples, []
        for channels, kernel in zip(filters, kernels):
            length = (length - kernel + 1) // pool
            norms.append(SincLayerNorm([channels, length]))
        self.norms = nn.ModuleList(norms)
        self.out_dim = filters[-1] * length

    def forward(self, chunks: torch.Tensor) -> torch.Tensor:
        x = self.input_norm(chunks).unsqueeze(1)
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            x = conv(x)
            if i == 0 and self.frontend == "sinc":
                x = x.abs()
            x = F.leaky_relu(norm(F.max_pool1d(x, self.pool)), 0.2)
        return x.flatten(1)


class SincNetDNN(nn.Module):
    """LayerNorm(input) then [Linear -> BatchNorm1d(momentum 0.05) -> LeakyReLU(0.2)] x len(sizes)."""

    def __init__(self, in_dim: int, sizes=(2048, 2048, 2048)):
        super().__init__()
        self.input_norm = nn.LayerNorm(in_dim)
        layers, previous = [], in_dim
        for size in sizes:
            linear = nn.Linear(previous, size)
            bound = math.sqrt(0.01 / (previous + size))
            nn.init.uniform_(linear.weight, -bound, bound)
            nn.init.zeros_(linear.bias)
            layers += [linear, nn.BatchNorm1d(size, momentum=0.05), nn.LeakyReLU(0.2)]
            previous = size
        self.layers = nn.Sequential(*layers)
        self.out_dim = previous

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.input_norm(x))


def chunk_starts(length: int, chunk: int, hop: int) -> list[int]:
    if length <= chunk:
        return [0]
    return list(range(0, length - chunk + 1, hop))


def cut_chunks(waveform: torch.Tensor, lengths: torch.Tensor, chunk: int, hop: int, max_chunks: int | None,
               random_pick: bool):
    """Chunks from each utterance's valid samples: [N, chunk] and the utterance index of each chunk."""
    pieces, owners = [], []
    for i, length in enumerate(lengths.tolist()):
        starts = chunk_starts(length, chunk, hop)
        if max_chunks and len(starts) > max_chunks:
            if random_pick:
                picked = torch.randperm(len(starts))[:max_chunks].sort().values.tolist()
            else:  # evenly spaced, deterministic
                picked = torch.linspace(0, len(starts) - 1, max_chunks).round().long().tolist()
            starts = [starts[k] for k in picked]
        valid = waveform[i, :length]
        for start in starts:
            piece = valid[start: start + chunk]
            pieces.append(F.pad(piece, (0, chunk - len(piece))))
            owners.append(i)
    return torch.stack(pieces), torch.tensor(owners, device=waveform.device)


class SincNetSER(SERModel):
    """SDL (`acoustic="dnn"`) or SLL (`acoustic="lstm"`), with or without the text branch."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = cfg
        self.chunk = int(cfg["chunk_ms"] * SAMPLE_RATE / 1000)
        self.cnn = SincNetCNN(self.chunk, cfg["frontend"], tuple(cfg["cnn_filters"]))
        if cfg["acoustic"] == "dnn":
            self.dnn = SincNetDNN(self.cnn.out_dim, tuple(cfg["dnn_sizes"]))
            acoustic_dim = self.dnn.out_dim
        else:
            self.project = nn.Linear(self.cnn.out_dim, cfg["chunk_embedding"])
            self.lstm = PackedLSTM(cfg["chunk_embedding"], cfg["lstm_hidden"], bidirectional=False)
            self.attention = AdditiveAttentionPool(cfg["lstm_hidden"])
            acoustic_dim = cfg["lstm_hidden"]
        self.text = None
        if cfg["modality"] == "audio+text":
            embedding = WordEmbedding(cfg["vocab_size"], cfg["embedding_dim"], cfg.get("embeddings"),
                                      freeze=cfg["freeze_embeddings"])
            self.text = TextLSTMEncoder(embedding, cfg["text_hidden"])
            acoustic_dim += self.text.dim
        self.head = nn.Sequential(nn.Linear(acoustic_dim, cfg["fusion_hidden"]), nn.ReLU(),
                                  nn.Dropout(cfg["dropout"]), nn.Linear(cfg["fusion_hidden"], cfg["num_classes"]))

    def _hop(self) -> int:
        hop_ms = self.cfg["hop_ms"] if self.cfg["acoustic"] == "lstm" or self.training else self.cfg["eval_hop_ms"]
        return int(hop_ms * SAMPLE_RATE / 1000)

    def acoustic(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        sequence = self.cfg["acoustic"] == "lstm"
        max_chunks = self.cfg["train_chunks"] if self.training and not sequence else None
        chunks, owners = cut_chunks(waveform, lengths, self.chunk, self._hop(), max_chunks, self.training)
        embedded = self.cnn(chunks)
        batch = waveform.shape[0]
        if not sequence:  # SDL: mean of chunk embeddings
            embedded = self.dnn(embedded)
            total = torch.zeros(batch, embedded.shape[1], device=embedded.device).index_add(0, owners, embedded)
            return total / torch.bincount(owners, minlength=batch).clamp_min(1)[:, None]
        counts = torch.bincount(owners, minlength=batch)
        steps = nn.utils.rnn.pad_sequence(torch.split(self.project(embedded), counts.tolist()), batch_first=True)
        outputs, _ = self.lstm(steps, counts)
        return self.attention(outputs, lengths_to_mask(counts, steps.shape[1]))

    def forward(self, batch: dict) -> torch.Tensor:
        features = [self.acoustic(batch["waveform"], batch["waveform_lengths"])]
        if self.text is not None:
            features.append(self.text(batch["words"], batch["words_lengths"]))
        return self.head(torch.cat(features, dim=-1))


COMMON = {
    "frontend": "sinc", "modality": "audio+text", "chunk_ms": 200, "hop_ms": 100, "eval_hop_ms": 10,
    "train_chunks": 8, "cnn_filters": (80, 60, 60), "dnn_sizes": (2048, 2048, 2048), "chunk_embedding": 256,
    "lstm_hidden": 256, "text_hidden": 128, "fusion_hidden": 256, "dropout": 0.3, "vocab_size": 2,
    "embedding_dim": 50, "freeze_embeddings": True,
}
ABLATIONS = {"full": {}, "audio_only": {"modality": "audio"}, "conv_frontend": {"frontend": "conv"},
             "conv_frontend_audio_only": {"frontend": "conv", "modality": "audio"}}


def _inputs(cfg: dict) -> tuple[str, ...]:
    return ("waveform", "words") if cfg["modality"] == "audio+text" else ("waveform",)


# SincNet's optimiser (one per sub-net there, one here); batch and epochs of SDL/SLL are not given [RECON]
SINCNET_RECIPE = {"optimizer": "rmsprop", "lr": 1e-3, "alpha": 0.95, "eps": 1e-8, "batch_size": 32, "epochs": 30}
SINCNET_RECIPE_SOURCE = "paper 000 / SincNet: RMSprop 1e-3, alpha 0.95, eps 1e-8; batch 32 and 30 epochs [RECON]"

register(ModelSpec(
    name="sdl", paper="000", builder=SincNetSER, inputs=_inputs,
    description="SincNet-DNN acoustic branch (mean of 200 ms chunk embeddings) + text LSTM, feature-level fusion",
    defaults={**COMMON, "acoustic": "dnn"}, ablations=ABLATIONS, recipe=SINCNET_RECIPE,
    recipe_source=SINCNET_RECIPE_SOURCE))
register(ModelSpec(
    name="sll", paper="000", builder=SincNetSER, inputs=_inputs,
    description="Sinc front end -> LSTM over 200 ms chunks -> self-attention, + text LSTM, feature-level fusion; "
                "conv_frontend = the paper's CNN+LSTM baseline",
    defaults={**COMMON, "acoustic": "lstm"}, ablations=ABLATIONS, recipe=SINCNET_RECIPE,
    recipe_source=SINCNET_RECIPE_SOURCE))
