"""Seed 003: FG_CME, fine-grained cross-modality excitation ([CODE] tal-ai/FG_CME, NeoMeanMaxExcite_v2).

Word-aligned mean-max pooling of a 3-layer acoustic CNN, excitation of each
modality by the other, BiLSTM over words, max over words. Switches: which
gates exist, the code's vs the paper's acoustic gate, the head depth, and the
CTC-alignment variant (NeoMeanMaxExciteCTC, additive excitation, + CTC loss).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..blocks import (PackedLSTM, WordEmbedding, alignment_mean_max_pool, dilate_alignment, lengths_to_mask,
                      masked_max)
from ..registry import ModelSpec, SERModel, register


class AcousticCNN(nn.Module):
    """Conv1d(40,64,k5) -> Conv1d(64,128,k2) -> Conv1d(128,C,k2): no padding, activation or BN (as released)."""

    def __init__(self, channels=(64, 128, 128), kernels=(5, 2, 2), activation: bool = False):
        super().__init__()
        sizes = (40,) + tuple(channels)
        self.convs = nn.ModuleList(nn.Conv1d(sizes[i], sizes[i + 1], kernels[i]) for i in range(len(kernels)))
        self.activation = activation
        self.receptive_field = sum(kernels) - len(kernels) + 1
        self.out_dim = sizes[-1]

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        """[B, T, 40] -> [B, T - receptive_field + 1, C]."""
        x = fbank.transpose(1, 2)
        for conv in self.convs:
            x = conv(x)
            if self.activation:
                x = F.relu(x)
        return x.transpose(1, 2)


class CTCAligner(nn.Module):
    """MulT-style CTCModule: LSTM over frames -> softmax over (blank + word positions) -> pseudo-aligned words."""

    def __init__(self, dim: int, max_words: int):
        super().__init__()
        self.lstm = nn.LSTM(dim, max_words + 1, num_layers=2, batch_first=True)

    def forward(self, frames: torch.Tensor, frame_mask: torch.Tensor):
        position_logits, _ = self.lstm(frames)                                   # [B, T, max_words + 1]
        probs = position_logits.softmax(-1).masked_fill(~frame_mask.unsqueeze(-1), 0.0)
        aligned = torch.bmm(probs[..., 1:].transpose(1, 2), frames)              # [B, max_words, C]
        return aligned, position_logits


class FGCME(SERModel):
    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg, hidden = cfg, cfg["hidden"]
        self.ctc = cfg["alignment"] == "ctc"
        self.embedding = WordEmbedding(cfg["vocab_size"], cfg["embedding_dim"], cfg.get("embeddings"),
                                       freeze=cfg["freeze_embeddings"])
        self.semantic = nn.Linear(self.embedding.dim, hidden)
        channels = (64, 128, hidden) if self.ctc else (64, 128, hidden // 2)
        self.cnn = AcousticCNN(channels)
        if self.ctc:
            self.aligner = CTCAligner(hidden, cfg["max_words"])
        # gate on the semantic stream, computed from the acoustic stream
        self.semantic_gate = nn.Linear(hidden, hidden) if cfg["excite_semantic"] else None
        # gate on the acoustic stream: per-word embedding (released code) or from the semantic stream (paper)
        self.acoustic_gate = None
        if cfg["excite_acoustic"]:
            self.acoustic_gate = (nn.Embedding(cfg["vocab_size"], hidden) if cfg["excitation"] == "code"
                                  else nn.Linear(hidden, hidden))
        self.lstm = PackedLSTM(2 * hidden, hidden)
        self.head = (nn.Linear(2 * hidden, cfg["num_classes"]) if cfg["head"] == "linear" else
                     nn.Sequential(nn.Linear(2 * hidden, 128), nn.ReLU(), nn.Linear(128, cfg["num_classes"])))

    def _acoustic_words(self, batch: dict, words: int):
        frames = self.cnn(batch["fbank40"])
        frame_lengths = (batch["fbank40_lengths"] - self.cnn.receptive_field + 1).clamp_min(1)
        frame_mask = lengths_to_mask(frame_lengths, frames.shape[1])
        if self.ctc:
            aligned, position_logits = self.aligner(frames, frame_mask)
            return aligned[:, :words], (position_logits, frame_lengths)
        alignment = dilate_alignment(batch["alignment"], self.cnn.receptive_field)[:, :words]
        alignment = alignment * frame_mask.unsqueeze(1)
        return alignment_mean_max_pool(frames, alignment), None

    def _excite(self, semantic, acoustic, words):
        gate_from_acoustic = self.semantic_gate(acoustic) if self.semantic_gate is not None else None
        if self.acoustic_gate is not None:
            source = words if self.cfg["excitation"] == "code" else semantic
            gate = self.acoustic_gate(source)
            acoustic = acoustic + gate if self.ctc else acoustic * torch.sigmoid(gate) + acoustic
        if gate_from_acoustic is not None:  # uses the acoustic stream before its own excitation
            semantic = semantic + gate_from_acoustic if self.ctc else \
                semantic * torch.sigmoid(gate_from_acoustic) + semantic
        return semantic, acoustic

    def _logits(self, batch: dict):
        limit = self.cfg["max_words"] if self.ctc else None
        words, lengths = batch["words"][:, :limit], batch["words_lengths"].clamp(1, limit)
        semantic = self.semantic(self.embedding(words))
        acoustic, ctc_outputs = self._acoustic_words(batch, words.shape[1])
        semantic, acoustic = self._excite(semantic, acoustic, words)
        outputs, _ = self.lstm(torch.cat([semantic, acoustic], -1), lengths)
        pooled = masked_max(outputs, lengths_to_mask(lengths, outputs.shape[1]))
        return self.head(pooled), ctc_outputs, lengths

    def forward(self, batch: dict) -> torch.Tensor:
        return self._logits(batch)[0]

    def training_loss(self, batch: dict, labels):
        logits, ctc_outputs, word_lengths = self._logits(batch)
        loss = self.classification_loss(logits, labels)
        if ctc_outputs is not None:
            # [RECON] as MulT: the frames should emit word positions 1..m in order
            position_logits, frame_lengths = ctc_outputs
            targets = torch.arange(1, word_lengths.max() + 1, device=logits.device).expand(len(labels), -1)
            log_probs = position_logits.log_softmax(-1).transpose(0, 1)
            ctc = F.ctc_loss(log_probs, targets, frame_lengths, word_lengths, blank=0, zero_infinity=True)
            loss = loss + self.cfg["ctc_weight"] * ctc
        return loss, logits


def _inputs(cfg: dict) -> tuple[str, ...]:
    return ("fbank40", "words") if cfg["alignment"] == "ctc" else ("fbank40", "words", "word_spans")


# the released code's argparse defaults; its baselines were trained the same way
FGCME_RECIPE = {"optimizer": "adam", "lr": 5e-4, "batch_size": 32, "epochs": 20, "schedule": "none", "clip_norm": 0.0}
FGCME_RECIPE_SOURCE = "paper 003 code: Adam 5e-4, batch 32, 20 epochs, no scheduler, no clipping"

register(ModelSpec(
    name="fg_cme", paper="003", builder=FGCME, inputs=_inputs,
    description="Word-aligned mean-max pooling of fbank CNN frames, cross-modality excitation, BiLSTM over words",
    defaults={"hidden": 256, "excite_semantic": True, "excite_acoustic": True, "excitation": "code",
              "head": "linear", "alignment": "forced", "max_words": 50, "ctc_weight": 1.0, "vocab_size": 2,
              "embedding_dim": 50, "freeze_embeddings": False},
    ablations={"full": {}, "no_excite_acoustic": {"excite_acoustic": False},
               "no_excite_semantic": {"excite_semantic": False},
               "no_excite": {"excite_acoustic": False, "excite_semantic": False},
               "paper_excitation": {"excitation": "paper"}, "fcn_head": {"head": "fcn"},
               "ctc_align": {"alignment": "ctc"}},
    recipe=FGCME_RECIPE, recipe_source=FGCME_RECIPE_SOURCE))
