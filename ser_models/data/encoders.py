"""Self-supervised speech encoders as features: the hidden layers of wav2vec2, HuBERT, WavLM or Whisper's
encoder, through Hugging Face `transformers` (extra: ssl).

`ssl_layers`: one utterance gives one frame per layer: [layers + 1, hidden] (the CNN or embedding output, then
each transformer layer), mean-pooled, or [layers + 1, 2 x hidden] with pooling mean_std. `ssl_frames` (when
the sweep's encoder.frame_layers names layers): those layers' frame-level outputs, [frames, chosen layers,
hidden], 50 frames per second, for heads that pool with their own attention. The encoder is frozen and
runs in eval mode (no dropout), so a feature is a pure function of the audio and the weights: the cache key
holds a digest of the weight files, and another checkpoint (or revision) never reads stale features.

Chunking: wav2vec2, HuBERT and WavLM take any length, but their attention is quadratic in it, so an utterance
longer than chunk_seconds is cut into chunk_seconds windows; the pooled statistics are the frame-weighted mean
of the windows' (the same as pooling all frames at once, up to the frames lost at window edges). Whisper's
encoder always sees 30 s windows (its positional table is fixed; the feature extractor pads): each window is
pooled over the frames that cover audio only (50 per second), never over the padding.

Batching (encoder.batch_seconds): extraction encodes the utterances a worker holds sorted by length, at most
batch_seconds of padded audio per call, and pools each over its own frames. Only where padding cannot reach an
utterance's output (batches_exactly: Whisper, and a wav2vec2-family front end with a per-frame layer norm): there
a batched feature equals the one-at-a-time feature up to float rounding (tests: within 1e-5). A group-norm front
end normalises each channel over the whole padded input (measured on a tiny one: up to 41 % of the largest
value moves), so those checkpoints always go one at a time, and their cache keys stay as they were.
"""
from __future__ import annotations

import functools
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SAMPLE_RATE = 16_000
WEIGHT_FILES = ("*.safetensors", "*.bin")
# where batching by length pays: on a CPU padding costs more than batching gains (measured: 1.17x slower, WavLM
# base size, 2 cores; docs/performance.md)
BATCH_DEVICES = {"cuda"}
WHISPER_FRAMES_PER_SECOND = 50       # 100 mel frames per second, halved by the encoder's strided convolution
_LOADED: dict[str, tuple] = {}
_LOADING = threading.Lock()


class EncoderError(ValueError):
    """A model that cannot be found or loaded here; the message ends with the fix."""


class EncoderFeature:
    """What both encoder features share: `many` encodes a worker's utterances together (encode_many), each
    turned into the feature by the subclass's `take`."""

    on_gpu = True                 # Ray Data extraction gives each actor a GPU where the cluster has some

    def many(self, waves: list) -> list[torch.Tensor]:
        return encode_many(self, waves, self.take)


@dataclass(frozen=True)
class SSLLayers(EncoderFeature):
    """The `ssl_layers` feature of one encoder checkpoint (a local folder) and pooling."""
    folder: str
    weights: str                  # digest of config.json and the weight files: the cache key's guard
    pooling: str = "mean"         # mean, or mean_std
    chunk_seconds: float = 30.0
    batch_seconds: float = 0.0    # padded audio per encoder call (0: one utterance at a time); see many()

    def identity(self) -> dict:
        """What the cache key holds: the weights and settings, not the folder (a copied checkpoint reuses it)."""
        return {"weights": self.weights, "pooling": self.pooling, "chunk_seconds": self.chunk_seconds,
                **batching(self)}

    def take(self, states: torch.Tensor) -> torch.Tensor:
        """One utterance's [layers + 1, frames, hidden] of a batch, pooled as __call__ pools."""
        return self.pooled(states.sum(1), (states ** 2).sum(1), states.shape[1])

    def __call__(self, wave) -> torch.Tensor:
        """[layers + 1, dims] for one waveform, encoded alone (no padding, so no masks to trust)."""
        model, processor, whisper = load_encoder(self.folder)
        device = next(model.parameters()).device
        return self._one(model, processor, whisper, np.asarray(wave, np.float32), device)

    def _one(self, model, processor, whisper: bool, wave: np.ndarray, device) -> torch.Tensor:
        total = first = second = None
        for states in windows(model, processor, whisper, wave, device, self.chunk_seconds):
            frames = states.shape[1]
            total = frames + (total or 0)
            first = states.sum(1) + (first if first is not None else 0)
            second = (states ** 2).sum(1) + (second if second is not None else 0)
        return self.pooled(first, second, total)

    def pooled(self, first: torch.Tensor, second: torch.Tensor, total: int) -> torch.Tensor:
        """The mean (and std) over `total` frames from their sum and sum of squares."""
        mean = first / total
        if self.pooling == "mean":
            return mean
        return torch.cat([mean, (second / total - mean ** 2).clamp_min(0).sqrt()], dim=-1)

    @property
    def shape(self) -> tuple[int, int]:
        """[layers + 1, dims] per utterance, from the config alone (no weights loaded)."""
        config = _config(self.folder)
        hidden = getattr(config, "d_model", None) or config.hidden_size
        layers = getattr(config, "encoder_layers", None) or config.num_hidden_layers
        return layers + 1, hidden * (2 if self.pooling == "mean_std" else 1)


@dataclass(frozen=True)
class SSLFrames(EncoderFeature):
    """The `ssl_frames` feature: the frame-level outputs of chosen layers, [frames, len(layers), hidden]."""
    folder: str
    weights: str
    layers: tuple[int, ...]
    chunk_seconds: float = 30.0
    batch_seconds: float = 0.0

    def identity(self) -> dict:
        return {"weights": self.weights, "layers": list(self.layers), "chunk_seconds": self.chunk_seconds,
                **batching(self)}

    def take(self, states: torch.Tensor) -> torch.Tensor:
        return states[list(self.layers)].transpose(0, 1).contiguous()

    def __call__(self, wave) -> torch.Tensor:
        model, processor, whisper = load_encoder(self.folder)
        device = next(model.parameters()).device
        pieces = [states[list(self.layers)] for states in windows(model, processor, whisper,
                                                                  np.asarray(wave, np.float32), device,
                                                                  self.chunk_seconds)]
        return torch.cat(pieces, dim=1).transpose(0, 1).contiguous()


def batching(feature) -> dict:
    """The cache key's batching entry: none where the utterances are encoded one at a time, so a cache written
    before batching existed, or by a checkpoint that cannot batch, keeps its key."""
    return {"batch_seconds": feature.batch_seconds} if batches_exactly(feature) else {}


def batches_exactly(feature) -> bool:
    """Whether batching leaves each utterance's output as it is alone (up to float rounding): Whisper pads every
    window to 30 s anyway, and a wav2vec2-family front end with a per-frame layer norm (feat_extract_norm:
    layer, the large checkpoints) never sees across frames, while the attention mask hides the padding above
    it. A group-norm front end (the base checkpoints: wav2vec2-base, HuBERT-base, WavLM-base-plus) normalises
    each channel over the whole input, padding included, so those encode one utterance at a time."""
    if feature.batch_seconds <= 0:
        return False
    config = _config(feature.folder)
    return bool(getattr(config, "is_encoder_decoder", False)) or getattr(config, "feat_extract_norm", "") == "layer"


def encode_many(feature, waves: list, take) -> list[torch.Tensor]:
    """Every utterance's feature, encoding utterances of similar length together: sorted by length, at most
    batch_seconds of padded audio per call (Whisper: batch_seconds / 30 windows). `take` turns one utterance's
    [layers + 1, frames, hidden] (its real frames only) into its feature. Utterances longer than one window, and
    every utterance of a checkpoint that cannot batch exactly, are encoded alone by the feature itself, and so
    is everything on a device outside BATCH_DEVICES."""
    waves = [np.asarray(wave, np.float32) for wave in waves]
    model, processor, whisper = load_encoder(feature.folder)
    device = next(model.parameters()).device
    if not batches_exactly(feature) or device.type not in BATCH_DEVICES:
        return [feature(wave) for wave in waves]
    window = int((30.0 if whisper else feature.chunk_seconds) * SAMPLE_RATE)
    out: list = [None] * len(waves)
    short = sorted((i for i, wave in enumerate(waves) if len(wave) <= window), key=lambda i: len(waves[i]))
    for group in length_groups(short, [window if whisper else len(wave) for wave in waves],
                               feature.batch_seconds * SAMPLE_RATE):
        states, frames = batch_states(model, processor, whisper, [waves[i] for i in group], device)
        for column, index in enumerate(group):
            out[index] = take(states[:, column, : frames[column]])
    for index in (i for i, value in enumerate(out) if value is None):
        out[index] = feature(waves[index])
    return out


def length_groups(order: list[int], cost: list[int], budget: float):
    """Consecutive runs of `order` (sorted by length) whose padded size (count x the longest) stays in budget."""
    group: list[int] = []
    for index in order:
        if group and (len(group) + 1) * cost[index] > budget:
            yield group
            group = []
        group.append(index)
    if group:
        yield group


@torch.no_grad()
def batch_states(model, processor, whisper: bool, pieces: list[np.ndarray], device) -> tuple[torch.Tensor, list]:
    """[layers + 1, batch, frames, hidden] for utterances of at most one window each, and each one's real frames."""
    lengths = torch.tensor([len(piece) for piece in pieces])
    if whisper:
        inputs = processor(pieces, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        values, mask = inputs["input_features"], None
        frames = whisper_frames(lengths)
    else:
        inputs = processor(pieces, sampling_rate=SAMPLE_RATE, return_tensors="pt", padding=True,
                           return_attention_mask=True)
        values, mask = inputs["input_values"], inputs["attention_mask"].to(device)
        frames = conv_frames(model.config, lengths)
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        output = model(values.to(device), **({} if whisper else {"attention_mask": mask}), output_hidden_states=True)
    return torch.stack(output.hidden_states).float().cpu(), frames.tolist()


def whisper_frames(lengths: torch.Tensor) -> torch.Tensor:
    """Whisper's encoder frames that cover audio: ceil(samples x 50 / 16000), in integers (float rounding gave a
    0.6-s utterance 31 frames alone and 30 in a batch)."""
    per = SAMPLE_RATE // WHISPER_FRAMES_PER_SECOND
    return torch.div(lengths + per - 1, per, rounding_mode="floor").clamp(min=1)


def conv_frames(config, lengths: torch.Tensor) -> torch.Tensor:
    """Frames a wav2vec2-family CNN front end gives for each waveform length (per layer: floor((n - kernel) /
    stride) + 1)."""
    frames = lengths.clone()
    for kernel, stride in zip(config.conv_kernel, config.conv_stride):
        frames = torch.div(frames - kernel, stride, rounding_mode="floor") + 1
    return frames.clamp(min=1)


def windows(model, processor, whisper: bool, wave: np.ndarray, device, chunk_seconds: float):
    """[layers + 1, frames, hidden] per window of the utterance (see the module's note on chunking); Whisper's
    frames past the audio (its padding to 30 s) are dropped."""
    step = int((30.0 if whisper else chunk_seconds) * SAMPLE_RATE)
    for start in range(0, max(1, len(wave)), step):
        piece = wave[start: start + step]
        states = _hidden_states(model, processor, whisper, piece, device)
        if whisper:
            states = states[:, : int(whisper_frames(torch.tensor(len(piece))))]
        yield states


@torch.no_grad()
def _hidden_states(model, processor, whisper: bool, piece: np.ndarray, device) -> torch.Tensor:
    inputs = processor(piece, sampling_rate=SAMPLE_RATE, return_tensors="pt")
    values = (inputs["input_features"] if whisper else inputs["input_values"]).to(device)
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        output = model(values, output_hidden_states=True)
    return torch.stack(output.hidden_states)[:, 0].float().cpu()


def _config(folder: str):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(folder)


def load_encoder(folder: str):
    """(model, feature extractor, is_whisper), once per process: trials of a pool reuse it."""
    with _LOADING:
        if folder not in _LOADED:
            model, processor, whisper = open_encoder(folder)
            model.eval().to("cuda" if torch.cuda.is_available() else "cpu")
            _LOADED[folder] = model, processor, whisper
        return _LOADED[folder]


def open_encoder(folder: str, **config_overrides):
    """A fresh (encoder, feature extractor, is_whisper) from a checkpoint folder: Whisper's encoder alone."""
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()   # one bar per loading process is noise beside extraction's own
    config = AutoConfig.from_pretrained(folder)
    for key, value in config_overrides.items():
        setattr(config, key, value)
    model = AutoModel.from_pretrained(folder, config=config)
    whisper = bool(getattr(model.config, "is_encoder_decoder", False))
    return (model.get_encoder() if whisper else model), AutoFeatureExtractor.from_pretrained(folder), whisper


def encoder_feature(model: str, revision: str = "main", pooling: str = "mean", chunk_seconds: float = 30.0,
                    batch_seconds: float = 0.0) -> SSLLayers:
    """The ssl_layers feature of an encoder: `model` a local folder or a Hugging Face hub id."""
    folder = local_folder(model, revision)
    return SSLLayers(str(folder), weights_digest(folder), pooling, float(chunk_seconds), float(batch_seconds))


def encoder_features(model: str, revision: str = "main", pooling: str = "mean", chunk_seconds: float = 30.0,
                     frame_layers: list[int] | None = None, batch_seconds: float = 0.0) -> dict:
    """The features a sweep's encoder: section sets up: ssl_layers, and ssl_frames when frame_layers is set."""
    layers = encoder_feature(model, revision, pooling, chunk_seconds, batch_seconds)
    features = {"ssl_layers": layers}
    if frame_layers:
        count = layers.shape[0]
        outside = [layer for layer in frame_layers if not -count <= layer < count]
        if outside:
            raise EncoderError(f"encoder.frame_layers {outside}: {model} has layers 0..{count - 1} (0: the CNN or "
                               f"embedding output). Fix: choose layers in that range, e.g. [{count // 2}, {count - 1}]")
        chosen = tuple(layer % count for layer in frame_layers)
        features["ssl_frames"] = SSLFrames(layers.folder, layers.weights, chosen, float(chunk_seconds),
                                           float(batch_seconds))
    return features


def is_local(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or Path(model).expanduser().is_dir()


def local_folder(model: str, revision: str) -> Path:
    """The checkpoint's folder: the path given, or the hub cache's snapshot (downloaded unless offline)."""
    try:
        import transformers  # noqa: F401 - the loading code needs it; say so before anything else
    except ImportError:
        raise EncoderError(f"encoder.model {model!r} needs Hugging Face transformers, which is not installed "
                           "here. Fix: pip install 'emosweep[ssl]' (on every node of a cluster)") from None
    if is_local(model):
        folder = Path(model).expanduser().resolve()
        if not (folder / "config.json").is_file():
            raise EncoderError(f"encoder.model {model!r}: no config.json in {folder}. Fix: point encoder.model at "
                               "a folder written by save_pretrained (or by `hf download`)")
        return folder
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    try:
        return Path(snapshot_download(model, revision=revision, local_files_only=True))
    except Exception:  # noqa: BLE001 - not in the hub cache: download it if this machine may
        if not offline:
            try:
                return Path(snapshot_download(model, revision=revision))
            except Exception as err:  # noqa: BLE001
                reason = f"it could not be downloaded ({type(err).__name__})"
        else:
            reason = "HF_HUB_OFFLINE is set and it is not in the hub cache"
    raise EncoderError(f"encoder.model {model!r} (revision {revision}): {reason}. Fix: on a machine with the "
                       f"internet run: hf download {model} --revision {revision} --local-dir <folder>, copy "
                       "<folder> here and set encoder.model: <folder>")


def weights_digest(folder: Path) -> str:
    """sha256 of config.json and every weight file's bytes: the same name with other weights is another key.
    Computed once per process and set of files (a base model's 380 MB take about a second)."""
    files = sorted(path for pattern in WEIGHT_FILES for path in folder.glob(pattern))
    stamps = tuple((str(path), path.stat().st_size, path.stat().st_mtime_ns)
                   for path in [folder / "config.json", *files])
    return _digest(folder, stamps)


@functools.lru_cache(maxsize=16)
def _digest(folder: Path, stamps: tuple) -> str:
    digest = hashlib.sha256((folder / "config.json").read_bytes())
    files = [Path(name) for name, _, _ in stamps[1:]]
    if not files:
        raise EncoderError(f"encoder.model {folder}: no weight file (*.safetensors or *.bin). Fix: download the "
                           "checkpoint's weights into it")
    for path in files:
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()[:20]
