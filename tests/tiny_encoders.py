"""Tiny random self-supervised encoders written by save_pretrained (no weights can be downloaded here), for the
real loading code to read."""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(32,) * 7)


def save_tiny(folder, family: str, seed: int = 0, **options):
    import torch
    from transformers import (HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model,
                              WavLMConfig, WavLMModel, WhisperConfig, WhisperFeatureExtractor, WhisperModel)

    torch.manual_seed(seed)
    if family == "whisper":
        config = WhisperConfig(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
                               decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64, num_mel_bins=80,
                               vocab_size=100, max_target_positions=32, pad_token_id=0, bos_token_id=1,
                               eos_token_id=2, decoder_start_token_id=1)
        WhisperModel(config).save_pretrained(folder)
        WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    else:
        config, model = {"wav2vec2": (Wav2Vec2Config, Wav2Vec2Model), "hubert": (HubertConfig, HubertModel),
                         "wavlm": (WavLMConfig, WavLMModel)}[family]
        model(config(**SMALL, **options)).save_pretrained(folder)
        Wav2Vec2FeatureExtractor(return_attention_mask=options.get("feat_extract_norm") == "layer")\
            .save_pretrained(folder)
    return folder


@functools.lru_cache(maxsize=None)
def finetunable() -> str:
    """A tiny WavLM whose front end normalises per frame (feat_extract_norm: layer) and whose feature extractor
    returns attention masks, as large checkpoints do: a batch's padding does not change an utterance's output."""
    folder = tempfile.mkdtemp(prefix="emosweep-wavlm-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return str(save_tiny(folder, "wavlm", feat_extract_norm="layer", do_stable_layer_norm=True))
