"""The FG_CME paper's baselines ([CODE] tal-ai/FG_CME where present, [RECON] otherwise)."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..blocks import PackedLSTM, VectorAttentionPool, WordEmbedding, lengths_to_mask, masked_max, masked_mean
from ..registry import ModelSpec, SERModel, register
from .fgcme import FGCME_RECIPE, FGCME_RECIPE_SOURCE, AcousticCNN

TEXT = {"vocab_size": 2, "embedding_dim": 50, "freeze_embeddings": False}


def _embedding(cfg):
    return WordEmbedding(cfg["vocab_size"], cfg["embedding_dim"], cfg.get("embeddings"),
                         freeze=cfg["freeze_embeddings"])


def _fbank(batch):
    return batch["fbank40"], batch["fbank40_lengths"]


def _words(batch):
    return batch["words"], batch["words_lengths"].clamp_min(1)


class CNNLSTM(SERModel):
    """CNN+LSTM^a (Satt et al. 2017): FG_CME's conv stack with ReLU -> BiLSTM -> mean -> Linear."""

    def __init__(self, cfg):
        super().__init__()
        self.cnn = AcousticCNN(activation=True)
        self.lstm = PackedLSTM(self.cnn.out_dim, cfg["hidden"])
        self.head = nn.Linear(2 * cfg["hidden"], cfg["num_classes"])

    def forward(self, batch):
        fbank, lengths = _fbank(batch)
        lengths = (lengths - self.cnn.receptive_field + 1).clamp_min(1)
        outputs, _ = self.lstm(self.cnn(fbank), lengths)
        return self.head(masked_mean(outputs, lengths_to_mask(lengths, outputs.shape[1])))


class LSTMAttention(SERModel):
    """LSTM+Attn^a on fbank or LSTM+Attn^s on words: BiLSTM -> attention with a learned vector -> Linear."""

    def __init__(self, cfg):
        super().__init__()
        self.modality = cfg["modality"]
        self.embedding = _embedding(cfg) if self.modality == "text" else None
        self.lstm = PackedLSTM(self.embedding.dim if self.embedding else 40, cfg["hidden"])
        self.attention = VectorAttentionPool(2 * cfg["hidden"])
        self.head = nn.Linear(2 * cfg["hidden"], cfg["num_classes"])

    def forward(self, batch):
        if self.embedding is not None:
            words, lengths = _words(batch)
            x = self.embedding(words)
        else:
            x, lengths = _fbank(batch)
        outputs, _ = self.lstm(x, lengths)
        return self.head(self.attention(outputs, lengths_to_mask(lengths, outputs.shape[1])))


class TwoEncoders(SERModel):
    """Word embeddings, an fbank BiLSTM and a word BiLSTM (256 x 2 each), shared by the bimodal baselines."""

    def __init__(self, cfg):
        super().__init__()
        self.embedding = _embedding(cfg)
        self.acoustic = PackedLSTM(40, cfg["hidden"])
        self.semantic = PackedLSTM(self.embedding.dim, cfg["hidden"])


class UttConcat(TwoEncoders):
    """UttConcat^m (Yoon et al. 2018, [RECON]): final states of an fbank BiLSTM and a word BiLSTM, concatenated."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.head = nn.Linear(4 * cfg["hidden"], cfg["num_classes"])

    def forward(self, batch):
        _, acoustic = self.acoustic(*_fbank(batch))
        words, lengths = _words(batch)
        _, semantic = self.semantic(self.embedding(words), lengths)
        return self.head(torch.cat([acoustic, semantic], -1))


class AttnFusion(TwoEncoders):
    """AttnFusion^m (Xu et al. 2019, NeoDiDi): words attend to audio frames, then a BiLSTM over words.

    The reference passes no key-padding mask; we mask padded frames (switch `mask_frames`)."""

    def __init__(self, cfg):
        super().__init__(cfg)
        hidden = cfg["hidden"]
        self.attention = nn.MultiheadAttention(2 * hidden, cfg["heads"], dropout=cfg["dropout"], batch_first=True)
        self.fusion = PackedLSTM(4 * hidden, hidden)
        self.head = nn.Linear(2 * hidden, cfg["num_classes"])
        self.mask_frames = cfg["mask_frames"]

    def forward(self, batch):
        fbank, frame_lengths = _fbank(batch)
        frames, _ = self.acoustic(fbank, frame_lengths)
        words, word_lengths = _words(batch)
        text, _ = self.semantic(self.embedding(words), word_lengths)
        mask = ~lengths_to_mask(frame_lengths, frames.shape[1]) if self.mask_frames else None
        attended, _ = self.attention(text, frames, frames, key_padding_mask=mask)
        fused, _ = self.fusion(torch.cat([text, attended], -1), word_lengths)
        return self.head(masked_max(fused, lengths_to_mask(word_lengths, fused.shape[1])))


class MultiHopAttention(TwoEncoders):
    """MHA^m (Yoon et al. 2019, NeoMHA2) with the reference's sample-mixing bug fixed:
    the final state is cat(h_n forward, h_n backward) per sample, not a view across the batch."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.head = nn.Linear(6 * cfg["hidden"], cfg["num_classes"])

    @staticmethod
    def _hop(query, keys, mask):
        scores = torch.einsum("bc,btc->bt", query, keys).masked_fill(~mask, float("-inf"))
        return torch.einsum("bt,btc->bc", scores.softmax(-1), keys)

    def forward(self, batch):
        fbank, frame_lengths = _fbank(batch)
        frames, acoustic_final = self.acoustic(fbank, frame_lengths)
        words, word_lengths = _words(batch)
        text, _ = self.semantic(self.embedding(words), word_lengths)
        text_summary = self._hop(acoustic_final, text, lengths_to_mask(word_lengths, text.shape[1]))
        audio_summary = self._hop(text_summary, frames, lengths_to_mask(frame_lengths, frames.shape[1]))
        return self.head(torch.cat([acoustic_final, text_summary, audio_summary], -1))


AUDIO, BIMODAL = ("fbank40",), ("fbank40", "words")
for name, builder, inputs, description, defaults in [
    ("cnn_lstm", CNNLSTM, AUDIO, "CNN+LSTM^a: FG_CME's conv stack + ReLU -> BiLSTM -> mean", {}),
    ("lstm_attn_audio", LSTMAttention, AUDIO, "LSTM+Attn^a: BiLSTM on fbank, vector attention",
     {"modality": "audio"}),
    ("lstm_attn_text", LSTMAttention, ("words",), "LSTM+Attn^s: BiLSTM on GloVe words, vector attention",
     {"modality": "text", **TEXT}),
    ("utt_concat", UttConcat, BIMODAL, "UttConcat^m: concatenated final states of audio and text BiLSTMs", TEXT),
    ("attn_fusion", AttnFusion, BIMODAL, "AttnFusion^m: words attend to frames (8 heads), BiLSTM, max over words",
     {**TEXT, "heads": 8, "dropout": 0.5, "mask_frames": True}),
    ("mha", MultiHopAttention, BIMODAL, "MHA^m: two-hop attention audio -> text -> audio (mixing bug fixed)", TEXT),
]:
    register(ModelSpec(name=name, paper="003 baseline", builder=builder, inputs=lambda cfg, i=inputs: i,
                       description=description, defaults={"hidden": 256, **defaults}, recipe=FGCME_RECIPE,
                       recipe_source=FGCME_RECIPE_SOURCE))
