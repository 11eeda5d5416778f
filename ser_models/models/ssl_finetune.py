"""Fine-tuning a self-supervised encoder for emotion: the sweep's encoder (encoder: section; wav2vec2, HuBERT,
WavLM or Whisper's encoder) runs inside the model on the raw waveform, its top k transformer layers train
with the head, and the rest stays as pretrained.

Head: a learned softmax-weighted sum of every hidden layer (SUPERB's), mean-pooled over the utterance's real
frames (never the padding), dropout, then a linear classifier. The encoder's CNN front end always stays frozen
(and in eval mode), as in every partial fine-tuning recipe. Layer drop is switched off: DDP needs every
trainable parameter used in every step (and a layer skipped at random would make a step depend on more than
the seed).

- ssl_finetune/full: the top 2 transformer layers train; ssl_finetune/unfrozen_layers_<k>: the top k;
- ssl_finetune/all: every layer above the CNN trains;
- ssl_finetune/frozen: nothing of the encoder trains: the same head on the live, frozen encoder (the control
  that says what fine-tuning adds; ssl_probe/full is the same probe from the feature cache, far cheaper).

Input lengths: utterances longer than max_seconds (30 s) are cut there (Whisper's encoder sees at most 30 s;
attention is quadratic in length for the others). Whisper's inputs are its log-mel features padded to 30 s,
pooled over the frames that cover audio only (50 per second), as the cached ssl_layers feature is.

Cost: every step runs the encoder forward (and backward through the trained layers); on CPU that is orders of
magnitude slower than a probe on cached features, and `emosweep check`/`run` say so. Checkpoints hold the
whole encoder (about 380 MB for a base model).

Recipe: [RECON] after SpeechBrain's IEMOCAP wav2vec2 emotion recipe (Adam; head at lr 1e-4, encoder at 1e-5;
batch 4; 30 epochs; CNN frozen), with SUPERB's weighted sum of layers in place of the last layer alone and
early stopping after 10 epochs without a better validation UA. The encoder's rate is train.lr times the option
encoder_lr_scale (0.1).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..data.encoders import SAMPLE_RATE, conv_frames, local_folder, open_encoder, whisper_frames
from ..registry import ModelSpec, SERModel, register

RECIPE = {"optimizer": "adam", "lr": 1e-4, "batch_size": 4, "epochs": 30, "early_stop_patience": 10}
SOURCE = ("[RECON] SpeechBrain's IEMOCAP wav2vec2 recipe (Adam, head 1e-4, encoder 1e-5, batch 4, 30 epochs, "
          "CNN frozen) with SUPERB's weighted layers; early stop after 10 on validation")
NO_LAYERDROP = {"layerdrop": 0.0, "encoder_layerdrop": 0.0}


def checkpoint_folder(encoder) -> str:
    """The checkpoint folder of a sweep's encoder: section ({model, revision}) or of a folder given directly."""
    if isinstance(encoder, dict):
        return str(local_folder(encoder["model"], encoder.get("revision", "main")))
    return str(local_folder(str(encoder), "main"))


class FineTuned(SERModel):
    def __init__(self, cfg):
        super().__init__()
        if not cfg.get("encoder"):
            raise ValueError("ssl_finetune fine-tunes the sweep's encoder: run it in a sweep with an encoder: "
                             "section, or pass encoder='<a checkpoint folder>'")
        self.encoder, self.processor, self.whisper = open_encoder(checkpoint_folder(cfg["encoder"]), **NO_LAYERDROP)
        self.max_samples = int(cfg["max_seconds"] * SAMPLE_RATE)
        self.encoder_lr_scale = float(cfg["encoder_lr_scale"])
        unfreeze(self.encoder, cfg["unfrozen_layers"])
        config = self.encoder.config
        hidden = getattr(config, "d_model", None) or config.hidden_size
        layers = getattr(config, "encoder_layers", None) or config.num_hidden_layers
        self.layer_logits = nn.Parameter(torch.zeros(layers + 1))     # softmax(0): every layer alike at the start
        self.dropout = nn.Dropout(cfg["dropout"])
        self.classify = nn.Linear(hidden, cfg["num_classes"])

    def train(self, mode: bool = True) -> "FineTuned":
        """The front end stays in eval mode: in training mode the wav2vec2 family's marks its output as needing
        gradients even when frozen, and autograd then keeps the graph of every frozen layer above it (measured:
        a frozen step's backward took 5.5 s). It has no dropout, so eval mode computes the same."""
        super().train(mode)
        for module in front_end(self.encoder):
            module.eval()
        return self

    def parameter_groups(self, lr: float) -> list[dict]:
        head = [self.layer_logits, *self.classify.parameters()]
        trained = [p for p in self.encoder.parameters() if p.requires_grad]
        groups = [{"params": head, "lr": lr}]
        if trained:
            groups.append({"params": trained, "lr": lr * self.encoder_lr_scale, "lr_scale": self.encoder_lr_scale})
        return groups

    def forward(self, batch):
        states, mask = self.hidden_states(batch["waveform"], batch["waveform_lengths"])   # [L+1, B, T, H]
        weighted = torch.einsum("l,blth->bth", self.layer_logits.softmax(0), states.transpose(0, 1))
        mask = mask.unsqueeze(-1).to(weighted.dtype)
        pooled = (weighted * mask).sum(1) / mask.sum(1).clamp_min(1)
        return self.classify(self.dropout(pooled))

    def hidden_states(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every hidden layer [layers + 1, B, frames, hidden] and [B, frames] True on frames of real audio."""
        lengths = lengths.clamp(max=self.max_samples)
        waves = waves[:, : int(lengths.max())]
        if self.whisper:
            pieces = [wave[:n].float().cpu().numpy() for wave, n in zip(waves, lengths.tolist())]
            features = self.processor(pieces, sampling_rate=SAMPLE_RATE, return_tensors="pt")["input_features"]
            output = self.encoder(features.to(waves.device), output_hidden_states=True)
            frames = whisper_frames(lengths)
        else:
            real = torch.arange(waves.shape[1], device=waves.device)[None] < lengths[:, None].to(waves.device)
            values = standardize(waves.float(), real) if self.processor.do_normalize else waves.float() * real
            attention = real.long() if self.processor.return_attention_mask else None
            output = self.encoder(values, attention_mask=attention, output_hidden_states=True)
            frames = conv_frames(self.encoder.config, lengths)
        states = torch.stack(output.hidden_states)
        width = states.shape[2]
        mask = torch.arange(width, device=states.device)[None] < frames.to(states.device)[:, None]
        return states, mask


def standardize(waves: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Each waveform to zero mean, unit variance over its real samples, padding 0: what the checkpoint's feature
    extractor does (do_normalize), on the batch's device."""
    count = real.sum(1, keepdim=True).clamp_min(1)
    mean = (waves * real).sum(1, keepdim=True) / count
    variance = (((waves - mean) * real) ** 2).sum(1, keepdim=True) / count
    return (waves - mean) / torch.sqrt(variance + 1e-7) * real


def front_end(encoder: nn.Module) -> list[nn.Module]:
    """The CNN front end: the wav2vec2 family's feature extractor, or Whisper's two convolutions."""
    if hasattr(encoder, "feature_extractor"):
        return [encoder.feature_extractor]
    return [encoder.conv1, encoder.conv2]


def unfreeze(encoder: nn.Module, top: int | str) -> None:
    """Freeze the encoder, then let its top `top` transformer layers train ("all": everything above the CNN)."""
    layers = getattr(encoder, "encoder", encoder).layers       # wav2vec2 family: model.encoder; Whisper: itself
    encoder.requires_grad_(top == "all")
    for module in front_end(encoder):
        module.requires_grad_(False)
    if top == "all":
        return
    if not isinstance(top, int) or not 0 <= top <= len(layers):
        raise ValueError(f"ssl_finetune: unfrozen_layers {top!r}: the encoder has {len(layers)} transformer "
                         f"layers. Fix: a number from 0 to {len(layers)}, or 'all'")
    for layer in layers[len(layers) - top:]:
        layer.requires_grad_(True)


register(ModelSpec(
    name="ssl_finetune", paper="SpeechBrain / SUPERB",
    description="fine-tunes the top layers of the sweep's SSL encoder (encoder: section) on the waveform, with a "
                "weighted-layer mean-pooled linear head",
    builder=FineTuned, inputs=lambda cfg: ("waveform",),
    defaults={"encoder": None, "unfrozen_layers": 2, "encoder_lr_scale": 0.1, "dropout": 0.1, "max_seconds": 30.0},
    ablations={"full": {}, "all": {"unfrozen_layers": "all"}, "frozen": {"unfrozen_layers": 0}},
    numbered=("unfrozen_layers",), recipe=RECIPE, recipe_source=SOURCE))

