"""Reusable blocks shared by the models: masks, pooling, attention, recurrent encoders.

Masks are boolean [batch, time] with True on valid steps. Every pooling here
ignores padded steps, so padding a batch further never changes a sample's output.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


def lengths_to_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    max_len = int(max_len if max_len is not None else lengths.max())
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over dim 1 of [B, T, C] using mask [B, T]."""
    weights = mask.unsqueeze(-1).to(x.dtype)
    return (x * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def masked_std(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    mean = masked_mean(x, mask)
    weights = mask.unsqueeze(-1).to(x.dtype)
    variance = (((x - mean.unsqueeze(1)) ** 2) * weights).sum(1) / weights.sum(1).clamp_min(1.0)
    return (variance + eps).sqrt()


def masked_max(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return x.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)


def stats_pool(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[mean; std] over valid steps: [B, T, C] -> [B, 2C]."""
    return torch.cat([masked_mean(x, mask), masked_std(x, mask)], dim=-1)


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d over [B, C, T] whose batch statistics count only the valid frames of each sequence.

    In training, padding would otherwise pull every channel's mean towards the padding value by an amount
    that depends on how long the batch's longest utterance is. Same parameters and buffers as BatchNorm1d
    (checkpoints load either way); in evaluation, and when every frame is valid, it is BatchNorm1d.
    """

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None or not self.training or bool(mask.all()):
            return super().forward(x)
        weights = mask.unsqueeze(1).to(x.dtype)                      # [B, 1, T]
        count = weights.sum()
        mean = (x * weights).sum(dim=(0, 2)) / count
        var = (((x - mean[None, :, None]) ** 2) * weights).sum(dim=(0, 2)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                unbiased = var * count / (count - 1).clamp_min(1)
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(unbiased, self.momentum)
        normalised = (x - mean[None, :, None]) / torch.sqrt(var[None, :, None] + self.eps)
        return normalised * self.weight[None, :, None] + self.bias[None, :, None] if self.affine else normalised


def pooled_lengths(lengths: torch.Tensor, kernel: int, stride: int | None = None, padding: int = 0) -> torch.Tensor:
    """Output lengths of a conv/pool layer (no dilation)."""
    stride = stride or kernel
    return torch.div(lengths + 2 * padding - kernel, stride, rounding_mode="floor") + 1


def reverse_within_lengths(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence of [B, T, C] over its first `lengths[b]` steps; padding stays where it is."""
    steps = torch.arange(x.shape[1], device=x.device)[None, :]
    last = (lengths.to(x.device) - 1)[:, None]
    index = torch.where(steps <= last, last - steps, steps)
    return x.gather(1, index.unsqueeze(-1).expand_as(x))


class PackedLSTM(nn.Module):
    """An LSTM in which padding never enters the recurrence, at the speed of a padded nn.LSTM.

    A packed nn.LSTM leaves the CPU fast path (about 20x slower, docs/performance.md).
    Valid steps come first, so a forward direction run over the padded batch
    never sees padding before a valid step; the backward direction runs the
    same way over each sequence reversed within its own length. Each layer and
    direction is one padded call of a single-layer LSTM with this module's own
    weights (`torch.func.functional_call`), so parameters and checkpoints are
    those of the nn.LSTM below and outputs equal the packed ones (tests).

    Returns outputs [B, T, H*dirs] (zeros on padding) and the final hidden
    state of the last layer [B, H*dirs] (both directions concatenated).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bidirectional: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers, batch_first=True, bidirectional=bidirectional,
                            dropout=dropout if num_layers > 1 else 0.0)
        # shape-only templates (meta: no memory, not parameters of this module)
        self._runners = [nn.LSTM(input_size if layer == 0 else hidden_size * (2 if bidirectional else 1),
                                 hidden_size, batch_first=True, device="meta") for layer in range(num_layers)]

    def _direction(self, layer: int, suffix: str, x: torch.Tensor) -> torch.Tensor:
        weights = {f"{name}_l0": getattr(self.lstm, f"{name}_l{layer}{suffix}")
                   for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
        outputs, _ = torch.func.functional_call(self._runners[layer], weights, (x,))
        return outputs

    def forward(self, x: torch.Tensor, lengths: torch.Tensor):
        if x.is_cuda:  # cuDNN runs packed sequences natively and fast
            return self._packed(x, lengths)
        lengths = lengths.clamp_min(1).to(x.device)
        mask = lengths_to_mask(lengths, x.shape[1]).unsqueeze(-1)
        batch = torch.arange(x.shape[0], device=x.device)
        outputs, finals = x, []
        for layer in range(self.lstm.num_layers):
            if layer and self.lstm.dropout and self.training:
                outputs = F.dropout(outputs, self.lstm.dropout)
            forward = self._direction(layer, "", outputs)
            finals = [forward[batch, lengths - 1]]
            directions = [forward]
            if self.lstm.bidirectional:
                backward = reverse_within_lengths(
                    self._direction(layer, "_reverse", reverse_within_lengths(outputs, lengths)), lengths)
                finals.append(backward[:, 0])
                directions.append(backward)
            outputs = torch.cat(directions, dim=-1) * mask
        return outputs, torch.cat(finals, dim=-1)

    def _packed(self, x: torch.Tensor, lengths: torch.Tensor):
        packed = pack_padded_sequence(x, lengths.clamp_min(1).cpu(), batch_first=True, enforce_sorted=False)
        outputs, (h_n, _) = self.lstm(packed)
        outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=x.shape[1])
        dirs = 2 if self.lstm.bidirectional else 1
        final = h_n.view(self.lstm.num_layers, dirs, x.shape[0], -1)[-1]
        return outputs, torch.cat(list(final), dim=-1)


class AdditiveAttentionPool(nn.Module):
    """a_t = softmax_t(v . tanh(W h_t)); returns sum_t a_t h_t."""

    def __init__(self, dim: int, attention_dim: int = 128):
        super().__init__()
        self.project = nn.Linear(dim, attention_dim)
        self.score = nn.Linear(attention_dim, 1, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = self.score(torch.tanh(self.project(x))).squeeze(-1).masked_fill(~mask, float("-inf"))
        return torch.einsum("bt,btc->bc", scores.softmax(-1), x)


class VectorAttentionPool(nn.Module):
    """FG_CME's LSTM+Attn: score_t = h_t . u / sqrt(d) with a learned vector u (randn init)."""

    def __init__(self, dim: int):
        super().__init__()
        self.query = nn.Parameter(torch.randn(dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = (x @ self.query / math.sqrt(x.shape[-1])).masked_fill(~mask, float("-inf"))
        return torch.einsum("bt,btc->bc", scores.softmax(-1), x)


class WordEmbedding(nn.Module):
    """Word ids -> vectors, from a pretrained matrix (row 0 = padding) or randomly initialised."""

    def __init__(self, vocab_size: int, dim: int, embeddings=None, freeze: bool = False):
        super().__init__()
        if embeddings is not None:
            # a copy: training must never write into the caller's matrix (shared by every trial of a process)
            weights = torch.tensor(embeddings, dtype=torch.float32)
            self.table = nn.Embedding.from_pretrained(weights, freeze=freeze, padding_idx=0)
        else:
            self.table = nn.Embedding(vocab_size, dim, padding_idx=0)
            self.table.weight.requires_grad_(not freeze)

    @property
    def dim(self) -> int:
        return self.table.embedding_dim

    def forward(self, words: torch.Tensor) -> torch.Tensor:
        return self.table(words)


class TextLSTMEncoder(nn.Module):
    """Embeddings -> packed LSTM -> last hidden state (SincNet family's linguistic branch)."""

    def __init__(self, embedding: WordEmbedding, hidden: int = 128, bidirectional: bool = False):
        super().__init__()
        self.embedding = embedding
        self.lstm = PackedLSTM(embedding.dim, hidden, bidirectional=bidirectional)
        self.dim = hidden * (2 if bidirectional else 1)

    def forward(self, words: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        _, final = self.lstm(self.embedding(words), lengths)
        return final


def dilate_alignment(alignment: torch.Tensor, receptive_field: int) -> torch.Tensor:
    """Follow a valid conv stack's receptive field: frame t of the output sees input frames t..t+rf-1.

    Equals FG_CME's AvgPool2d chain followed by `> 0` (rf = 5 + 1 + 1 = 7).
    """
    batch, words, frames = alignment.shape
    dilated = F.max_pool1d(alignment.reshape(batch * words, 1, frames), receptive_field, stride=1)
    return dilated.reshape(batch, words, -1)


def alignment_mean_max_pool(frames: torch.Tensor, alignment: torch.Tensor, chunk_elements: int = 2**24):
    """Per-word mean and max of frame vectors: frames [B, T, C], alignment [B, W, T] in {0, 1}.

    Mean is one bmm. Max processes words in chunks so memory stays bounded by
    `chunk_elements` instead of the reference's [B, W, T, C] broadcast. Words
    without frames get mean 0 and max -1e6, as in the reference.
    """
    alignment = alignment.to(frames.dtype)
    mean = torch.bmm(alignment, frames) / (alignment.sum(-1, keepdim=True) + 1e-6)
    batch, words, length = alignment.shape
    step = max(1, chunk_elements // max(1, batch * length * frames.shape[-1]))
    maxima = []
    for start in range(0, words, step):
        block = alignment[:, start: start + step].unsqueeze(-1)            # [B, w, T, 1]
        maxima.append((frames.unsqueeze(1) * block - 1e6 * (1 - block)).amax(2))
    return torch.cat([mean, torch.cat(maxima, 1)], dim=-1)


class Standardize(nn.Module):
    """Per-dimension standardisation with the fold's training statistics, kept as buffers: checkpoints carry
    them. `dims` an int, or a shape ([layers, hidden] for an encoder's pooled layers)."""

    def __init__(self, dims: int | tuple[int, ...]):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dims))
        self.register_buffer("std", torch.ones(dims))

    @torch.no_grad()
    def fit(self, features: torch.Tensor) -> None:
        self.mean.copy_(features.mean(0))
        self.std.copy_(features.std(0, unbiased=False).clamp_min(1e-6))   # a constant functional stays 0

    @torch.no_grad()
    def fit_streaming(self, chunks) -> None:
        """fit over the rows of several [N, *dims] tensors, without holding them all (frame-level features)."""
        count, total, squares = 0, 0.0, 0.0
        for chunk in chunks:
            chunk = chunk.double()
            count, total, squares = count + len(chunk), total + chunk.sum(0), squares + (chunk ** 2).sum(0)
        mean = total / max(1, count)
        self.mean.copy_(mean)
        self.std.copy_((squares / max(1, count) - mean ** 2).clamp_min(0).sqrt().clamp_min(1e-6))

    def forward(self, x):
        return (x - self.mean) / self.std
