"""Seed 002: cross-modal attention over a raw-waveform 1D CNN and GloVe text (Krishna & Patil 2020).

No public code; [PAPER] sizes with the [RECON] defaults of shared docs/model_specs.md §3:
max-pool 8 per block (x512 overall), pre-LN MHA with residuals, K/V from the other
modality's encoder in both layers, key-padding masks.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..blocks import MaskedBatchNorm1d, PackedLSTM, WordEmbedding, lengths_to_mask, pooled_lengths, stats_pool
from ..registry import ModelSpec, SERModel, register


class ConvEncoder(nn.Module):
    """ENC1: [Conv1d (same padding) -> BatchNorm -> ReLU -> MaxPool] x 3, then BiLSTM and a projection."""

    def __init__(self, in_channels: int, filters=(64, 100, 100), kernels=(3, 5, 7), pools=(8, 8, 8),
                 d_model: int = 100, dropout: float = 0.2):
        super().__init__()
        blocks, previous = [], in_channels
        for out, kernel, pool in zip(filters, kernels, pools):
            blocks.append(nn.ModuleDict({"conv": nn.Conv1d(previous, out, kernel, padding=kernel // 2),
                                         "norm": MaskedBatchNorm1d(out)}))
            previous = out
        self.blocks, self.pools = nn.ModuleList(blocks), pools
        self.lstm = PackedLSTM(previous, d_model)
        self.dropout = nn.Dropout(dropout)
        self.project = nn.Linear(2 * d_model, d_model)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor):
        """x [B, channels, T] -> H [B, T', d_model] and lengths T'."""
        for block, pool in zip(self.blocks, self.pools):
            # zero the padding before each conv so a sample's valid edge sees the same zeros however long the batch
            mask = lengths_to_mask(lengths, x.shape[-1])
            x = x * mask.unsqueeze(1)
            # batch statistics over valid frames only (same-padding convs keep the length)
            x = F.max_pool1d(F.relu(block["norm"](block["conv"](x), mask)), pool)
            lengths = pooled_lengths(lengths, pool).clamp_min(1)
        outputs, _ = self.lstm(x.transpose(1, 2), lengths)
        return self.project(self.dropout(outputs)), lengths


class TextEncoder(nn.Module):
    """ENC2: embeddings -> Conv1d(k=1) projection -> BiLSTM -> Linear."""

    def __init__(self, embedding: WordEmbedding, d_model: int = 100, dropout: float = 0.2):
        super().__init__()
        self.embedding = embedding
        self.conv = nn.Conv1d(embedding.dim, d_model, 1)
        self.lstm = PackedLSTM(d_model, d_model)
        self.dropout = nn.Dropout(dropout)
        self.project = nn.Linear(2 * d_model, d_model)

    def forward(self, words: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.embedding(words).transpose(1, 2)).transpose(1, 2)
        outputs, _ = self.lstm(x, lengths)
        return self.project(self.dropout(outputs))


class CrossAttentionLayer(nn.Module):
    """Pre-LN multi-head attention (query stream attends to a memory) + position-wise FFN, with residuals."""

    def __init__(self, d_model: int = 100, heads: int = 10, ffn: int = 100, dropout: float = 0.1):
        super().__init__()
        self.norm_query, self.norm_memory, self.norm_ffn = (nn.LayerNorm(d_model) for _ in range(3))
        self.attention = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(d_model, ffn), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn, d_model))
        self.dropout = nn.Dropout(dropout)

    def forward(self, query, memory, memory_mask):
        memory = self.norm_memory(memory)
        attended, _ = self.attention(self.norm_query(query), memory, memory, key_padding_mask=~memory_mask)
        query = query + self.dropout(attended)
        return query + self.dropout(self.ffn(self.norm_ffn(query)))


class CrossModalAttention(SERModel):
    """modality `audio+text` (CMA-1 and CMA-2), `audio` or `text` (self-attention); audio_input `raw` or `spec257`."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg, d = cfg, cfg["d_model"]
        self.use_audio, self.use_text = cfg["modality"] in ("audio+text", "audio"), cfg["modality"] != "audio"
        layer = lambda: CrossAttentionLayer(d, cfg["heads"], cfg["ffn"], cfg["attention_dropout"])  # noqa: E731
        pooled = 0
        if self.use_audio:
            raw = cfg["audio_input"] == "raw"
            self.audio = ConvEncoder(1 if raw else 257, cfg["filters"], cfg["kernels"],
                                     cfg["raw_pools"] if raw else cfg["spec_pools"], d, cfg["dropout"])
            self.audio_attention = nn.ModuleList(layer() for _ in range(cfg["layers"]))
            pooled += 2 * d
        if self.use_text:
            embedding = WordEmbedding(cfg["vocab_size"], cfg["embedding_dim"], cfg.get("embeddings"),
                                      freeze=cfg["freeze_embeddings"])
            self.text = TextEncoder(embedding, d, cfg["dropout"])
            self.text_attention = nn.ModuleList(layer() for _ in range(cfg["layers"]))
            pooled += 2 * d
        self.head = nn.Linear(pooled, cfg["num_classes"])

    def _audio(self, batch):
        if self.cfg["audio_input"] == "raw":
            wave, lengths = batch["waveform"], batch["waveform_lengths"]
            if self.cfg["fixed_samples"]:  # the paper's 10 s mode: first 10 s, zero-padded, all of it "valid"
                fixed = self.cfg["fixed_samples"]
                wave = F.pad(wave[:, :fixed], (0, max(0, fixed - wave.shape[1])))
                wave = wave * lengths_to_mask(lengths.clamp_max(fixed), fixed)
                lengths = torch.full_like(lengths, fixed)
            return self.audio(wave.unsqueeze(1), lengths)
        spec, lengths = batch["spec257"], batch["spec257_lengths"]
        if self.cfg["fixed_frames"]:
            fixed = self.cfg["fixed_frames"]
            spec = F.pad(spec[:, :fixed], (0, 0, 0, max(0, fixed - spec.shape[1])))
            spec = spec * lengths_to_mask(lengths.clamp_max(fixed), fixed).unsqueeze(-1)
            lengths = torch.full_like(lengths, fixed)
        return self.audio(spec.transpose(1, 2), lengths)

    def forward(self, batch: dict) -> torch.Tensor:
        pooled = []
        if self.use_audio:
            audio, audio_lengths = self._audio(batch)
            audio_mask = lengths_to_mask(audio_lengths, audio.shape[1])
        if self.use_text:
            max_words = self.cfg["max_words"]
            words, word_lengths = batch["words"][:, :max_words], batch["words_lengths"].clamp(1, max_words)
            text = self.text(words, word_lengths)
            text_mask = lengths_to_mask(word_lengths, text.shape[1])
        if self.use_audio:
            memory, memory_mask = (text, text_mask) if self.use_text and self.cfg["modality"] == "audio+text" \
                else (audio, audio_mask)
            stream = audio
            for layer in self.audio_attention:
                stream = layer(stream, memory, memory_mask)
            pooled.append(stats_pool(stream, audio_mask))
        if self.use_text:
            memory, memory_mask = (audio, audio_mask) if self.use_audio else (text, text_mask)
            stream = text
            for layer in self.text_attention:
                stream = layer(stream, memory, memory_mask)
            pooled.append(stats_pool(stream, text_mask))
        return self.head(torch.cat(pooled, -1))


def _inputs(cfg: dict) -> tuple[str, ...]:
    audio = ("waveform",) if cfg["audio_input"] == "raw" else ("spec257",)
    return {"audio+text": audio + ("words",), "audio": audio, "text": ("words",)}[cfg["modality"]]


register(ModelSpec(
    name="cma", paper="002", builder=CrossModalAttention, inputs=_inputs,
    description="Raw-waveform 1D CNN + GloVe text encoders, 2 cross-modal MHA layers each way, stats pooling",
    defaults={"modality": "audio+text", "audio_input": "raw", "fixed_samples": 160_000, "fixed_frames": 1000,
              "filters": (64, 100, 100), "kernels": (3, 5, 7), "raw_pools": (8, 8, 8), "spec_pools": (2, 2, 2),
              "d_model": 100, "heads": 10, "ffn": 100, "layers": 2, "dropout": 0.2, "attention_dropout": 0.1,
              "max_words": 50, "vocab_size": 2, "embedding_dim": 50, "freeze_embeddings": True},
    ablations={"raw": {}, "full": {}, "spectrogram": {"audio_input": "spec257"},
               "audio_only": {"modality": "audio"}, "text_only": {"modality": "text"},
               "variable_length": {"fixed_samples": None, "fixed_frames": None}},
    recipe={"optimizer": "adam", "lr": 1e-3, "batch_size": 32, "epochs": 50},
    recipe_source="paper 002: Adam 1e-3; batch and epochs not given [RECON: 32, 50]"))
