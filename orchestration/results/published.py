"""Published numbers of the seed papers (shared docs/model_specs.md, evaluation_protocol.md), with their protocols.

Keys: (corpus, model, ablation) -> (WA, UA, protocol). None = not reported. Every number here is of a
4-class task (angry, happy with excited merged for IEMOCAP, neutral, sad): another task has no published
counterpart, whatever its corpus.
"""
from __future__ import annotations

FGCME_PROTOCOL = "LOSO / 5 folds, epoch chosen on the test fold (0.9 WA + 0.1 UA)"
FGCME_RAVDESS = ("5 folds of unknown construction, epoch chosen on the test fold, forced-aligned TextGrid words "
                 "(ours: actor folds, the proportional fallback alignment)")
PUBLISHED = {
    ("iemocap", "fg_cme", "full"): (0.727, 0.735, FGCME_PROTOCOL),
    ("iemocap", "fg_cme", "no_excite_acoustic"): (0.713, 0.722, FGCME_PROTOCOL),
    ("iemocap", "fg_cme", "no_excite_semantic"): (0.721, 0.732, FGCME_PROTOCOL),
    ("iemocap", "fg_cme", "no_excite"): (0.712, 0.720, FGCME_PROTOCOL),
    ("iemocap", "fg_cme", "ctc_align"): (0.657, 0.688, FGCME_PROTOCOL),
    ("iemocap", "cnn_lstm", "full"): (0.635, 0.588, FGCME_PROTOCOL),
    ("iemocap", "lstm_attn_audio", "full"): (0.573, 0.574, FGCME_PROTOCOL),
    ("iemocap", "lstm_attn_text", "full"): (0.640, 0.647, FGCME_PROTOCOL),
    ("iemocap", "utt_concat", "full"): (0.700, 0.677, FGCME_PROTOCOL),
    ("iemocap", "attn_fusion", "full"): (0.712, 0.725, FGCME_PROTOCOL),
    ("iemocap", "mha", "full"): (0.678, 0.688, FGCME_PROTOCOL),
    ("ravdess", "fg_cme", "full"): (0.720, 0.708, FGCME_RAVDESS),
    ("ravdess", "fg_cme", "no_excite_acoustic"): (0.703, 0.683, FGCME_RAVDESS),
    ("ravdess", "fg_cme", "no_excite_semantic"): (0.720, 0.696, FGCME_RAVDESS),
    ("ravdess", "fg_cme", "no_excite"): (0.718, 0.700, FGCME_RAVDESS),
    ("ravdess", "fg_cme", "ctc_align"): (0.582, 0.566, FGCME_RAVDESS),
    ("ravdess", "cnn_lstm", "full"): (0.640, 0.611, FGCME_RAVDESS),
    ("ravdess", "lstm_attn_audio", "full"): (0.665, 0.627, FGCME_RAVDESS),
    ("ravdess", "utt_concat", "full"): (0.629, 0.615, FGCME_RAVDESS),
    ("ravdess", "attn_fusion", "full"): (0.634, 0.593, FGCME_RAVDESS),
    ("ravdess", "mha", "full"): (0.615, 0.572, FGCME_RAVDESS),
    ("iemocap", "cma", "raw"): (None, 0.7282, "LOSO, selection not stated"),
    ("iemocap", "cma", "full"): (None, 0.7282, "LOSO, selection not stated"),
    ("iemocap", "cma", "spectrogram"): (None, 0.7224, "LOSO, selection not stated"),
    ("iemocap", "cma", "audio_only"): (None, 0.556, "LOSO, selection not stated"),
    ("iemocap", "cma", "text_only"): (None, 0.659, "LOSO, selection not stated"),
    ("iemocap", "ds_lstm", "full"): (0.727, 0.733, "random 5-fold (speaker-dependent), max test metric over epochs"),
    ("iemocap", "ds_lstm", "ds_only"): (0.694, 0.695, "random 5-fold (speaker-dependent), max test metric over epochs"),
    ("iemocap", "sdl", "full"): (0.701, 0.711, "protocol not stated"),
    ("iemocap", "sll", "full"): (0.753, 0.753, "protocol not stated"),
    ("iemocap", "sll", "conv_frontend"): (0.708, 0.697, "protocol not stated (the paper's CNN+LSTM)"),
    ("iemocap", "sll+ded", "full"): (0.853, 0.851, "protocol not stated, dialog context at test time"),
}
OURS = "speaker-disjoint folds, epoch chosen on a validation split of training speakers, test scored once"


PUBLISHED_CLASSES = 4


def published(corpus: str, classes: int, model: str, ablation: str) -> dict | None:
    return PUBLISHED.get((corpus, model, ablation)) if classes == PUBLISHED_CLASSES else None
