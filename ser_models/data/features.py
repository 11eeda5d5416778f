"""Every acoustic feature extractor, and every torchaudio call in the project.

Extractors take a 16 kHz mono float32 waveform (numpy or torch, on any device)
and return a float32 tensor [frames, dims] (the waveform itself is [samples]).
Parameters follow shared docs/model_specs.md; each extractor is a frozen
dataclass so its configuration is hashable into the feature cache key.
"""
from __future__ import annotations

import threading
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio

SAMPLE_RATE = 16_000
INT16_SCALE = 32768.0


def _tensor(wave) -> torch.Tensor:
    return torch.as_tensor(np.asarray(wave, dtype=np.float32) if not torch.is_tensor(wave) else wave).float()


@dataclass(frozen=True)
class Waveform:
    """Raw samples; with fixed_samples, crop to the first N or zero-pad (CMA: 10 s = 160000)."""
    fixed_samples: int | None = None
    normalize: str | None = None  # None, "peak" or "std"

    def __call__(self, wave) -> torch.Tensor:
        wave = _tensor(wave)
        if self.normalize == "peak":
            wave = wave / wave.abs().max().clamp_min(1e-8)
        elif self.normalize == "std":
            wave = (wave - wave.mean()) / wave.std().clamp_min(1e-8)
        if self.fixed_samples:
            wave = F.pad(wave[: self.fixed_samples], (0, max(0, self.fixed_samples - len(wave))))
        return wave


@dataclass(frozen=True)
class KaldiFbank:
    """FG_CME input: Kaldi log fbank, 40 bins, 25/10 ms, on a +-1 waveform, no CMVN, capped frames."""
    num_mel_bins: int = 40
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    max_frames: int | None = 3000

    def __call__(self, wave) -> torch.Tensor:
        fbank = torchaudio.compliance.kaldi.fbank(
            _tensor(wave)[None], sample_frequency=SAMPLE_RATE, num_mel_bins=self.num_mel_bins,
            frame_length=self.frame_length_ms, frame_shift=self.frame_shift_ms, use_log_fbank=True, dither=0.0)
        return fbank[: self.max_frames] if self.max_frames else fbank


@dataclass(frozen=True)
class Mfcc39:
    """DS-LSTM M_LSTM input, as openSMILE MFCC12_E_D_A: c1..c12 + log energy, deltas, delta-deltas.

    HTK style: 26 mel bands 0-8 kHz, pre-emphasis 0.97, Hamming window,
    cepstral lifter 22, raw-frame log energy; delta window 2 (5 frames).
    """
    num_mel_bins: int = 26
    delta_window: int = 2

    def __call__(self, wave) -> torch.Tensor:
        static = torchaudio.compliance.kaldi.mfcc(
            _tensor(wave)[None] * INT16_SCALE, sample_frequency=SAMPLE_RATE, num_ceps=13,
            num_mel_bins=self.num_mel_bins, frame_length=25.0, frame_shift=10.0, preemphasis_coefficient=0.97,
            window_type="hamming", cepstral_lifter=22.0, low_freq=0.0, high_freq=SAMPLE_RATE / 2,
            use_energy=True, raw_energy=True, htk_compat=True, dither=0.0)  # htk_compat puts energy last
        win = 2 * self.delta_window + 1
        delta = torchaudio.functional.compute_deltas(static.T, win_length=win)
        delta2 = torchaudio.functional.compute_deltas(delta, win_length=win)
        return torch.cat([static, delta.T, delta2.T], dim=1)


@dataclass(frozen=True)
class LogMel:
    """DS-LSTM spectrogram branch: librosa-style mel (Slaney, Hann, centred), 10*log10.

    n_fft 512 -> hop 256, 128 mels; n_fft 1024 -> hop 512, 256 mels. The
    reference reads int16 samples without scaling, so we scale back to int16
    range. fixed_frames resizes time with nearest interpolation (230 / 120 in
    the paper) regardless of utterance length.
    """
    n_fft: int = 512
    fixed_frames: int | None = None

    def __call__(self, wave) -> torch.Tensor:
        mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=SAMPLE_RATE, n_fft=self.n_fft, hop_length=self.n_fft // 2, n_mels=self.n_fft // 4,
            f_min=0.0, f_max=SAMPLE_RATE / 2, center=True, pad_mode="reflect", power=2.0, norm="slaney",
            mel_scale="slaney")
        wave = _tensor(wave)
        power = mel.to(wave.device)(wave * INT16_SCALE)
        log_mel = 10 * torch.log10(power + 1e-10)
        if self.fixed_frames:
            log_mel = F.interpolate(log_mel[None], size=self.fixed_frames, mode="nearest")[0]
        return log_mel.T


@dataclass(frozen=True)
class LogSpectrogram:
    """CMA spectrogram variant: 257-bin log power spectrum, 25 ms window, 10 ms hop, 512-point FFT."""
    n_fft: int = 512
    win_ms: float = 25.0
    hop_ms: float = 10.0
    fixed_frames: int | None = None  # 1000 = 10 s, crop or zero-pad

    def __call__(self, wave) -> torch.Tensor:
        spec = torchaudio.transforms.Spectrogram(
            n_fft=self.n_fft, win_length=int(SAMPLE_RATE * self.win_ms / 1000),
            hop_length=int(SAMPLE_RATE * self.hop_ms / 1000), power=2.0)
        wave = _tensor(wave)
        log_spec = torch.log(spec.to(wave.device)(wave) + 1e-10).T
        if self.fixed_frames:
            log_spec = F.pad(log_spec[: self.fixed_frames], (0, 0, 0, max(0, self.fixed_frames - len(log_spec))))
        return log_spec


@dataclass(frozen=True)
class Egemaps:
    """openSMILE's eGeMAPSv02 functionals (88 values per utterance), as one frame [1, 88].

    The opensmile package (extra: egemaps) ships the SMILExtract library; one
    engine per thread, since extraction runs in a thread pool.
    """
    feature_set: str = "eGeMAPSv02"

    def __call__(self, wave) -> torch.Tensor:
        values = _smile(self.feature_set).process_signal(_tensor(wave).cpu().numpy(), SAMPLE_RATE)
        return torch.tensor(values.to_numpy(dtype=np.float32))


_SMILES = threading.local()


def _smile(feature_set: str):
    import opensmile

    engines = _SMILES.__dict__.setdefault("engines", {})
    if feature_set not in engines:
        engines[feature_set] = opensmile.Smile(feature_set=opensmile.FeatureSet[feature_set],
                                               feature_level=opensmile.FeatureLevel.Functionals)
    return engines[feature_set]


# features that need an optional package: name -> (module, the pip extra that installs it)
NEEDS_EXTRA = {"egemaps": ("opensmile", "egemaps")}


def missing_extra(name: str) -> str | None:
    """None when a feature can be extracted here, else the install command that makes it possible."""
    if name not in NEEDS_EXTRA:
        return None
    module, extra = NEEDS_EXTRA[name]
    try:
        __import__(module)
    except ImportError:
        return f"pip install 'emosweep[{extra}]'"
    return None


EXTRACTORS = {
    "waveform": Waveform(),
    "waveform_10s": Waveform(fixed_samples=10 * SAMPLE_RATE),
    "fbank40": KaldiFbank(),
    "mfcc39": Mfcc39(),
    "mel512": LogMel(512),
    "mel1024": LogMel(1024),
    "mel512_fixed": LogMel(512, fixed_frames=230),
    "mel1024_fixed": LogMel(1024, fixed_frames=120),
    "spec257": LogSpectrogram(),
    "egemaps": Egemaps(),
}


# features whose extractor a sweep file sets up (name -> its section): one encoder checkpoint of many
CONFIGURED = {"ssl_layers": "encoder", "ssl_frames": "encoder"}

# the features a model may name as inputs, and what each means (ser_models/registry.py lists them with the
# transcript's): a new input is an extractor above plus a line here, in this file alone
MEANINGS = {
    "waveform": "raw 16 kHz samples (variable length)",
    "fbank40": "Kaldi log fbank, 40 bins, 25/10 ms",
    "mfcc39": "HTK MFCC c1..c12 + log E with deltas and delta-deltas",
    "mel512_fixed": "log mel, n_fft 512, 128 mels, resized to 230 frames",
    "mel1024_fixed": "log mel, n_fft 1024, 256 mels, resized to 120 frames",
    "spec257": "257-bin log power spectrogram, 25/10 ms",
    "egemaps": "openSMILE eGeMAPSv02 functionals: 88 values per utterance (extra: egemaps)",
    "ssl_layers": "every hidden layer of the sweep's encoder (wav2vec2, HuBERT, WavLM, Whisper), pooled over the "
                  "utterance: [layers + 1, dims] (extra: ssl)",
    "ssl_frames": "the frame-level outputs of the layers encoder.frame_layers names: [frames, layers, dims], 50 "
                  "per second (extra: ssl)",
}


def get_extractor(name: str):
    if name not in EXTRACTORS:
        raise KeyError(f"unknown feature {name!r}; available: {sorted(EXTRACTORS)}")
    return EXTRACTORS[name]


def resolve(name: str, configured: dict | None = None):
    """The extractor of `name`: the sweep's own for a CONFIGURED feature, else the fixed one."""
    if name in CONFIGURED:
        if not (configured or {}).get(name):
            raise KeyError(f"feature {name!r} needs the sweep file's {CONFIGURED[name]}: section")
        return configured[name]
    return get_extractor(name)


def kept_seconds(name: str) -> float | None:
    """How much of an utterance a feature keeps (None: all of it). Longer utterances lose their end."""
    extractor = EXTRACTORS.get(name)
    if getattr(extractor, "max_frames", None):
        return extractor.max_frames / 100  # 10 ms frames
    if getattr(extractor, "fixed_samples", None):
        return extractor.fixed_samples / SAMPLE_RATE
    return None


def describe(name: str, configured: dict | None = None) -> dict:
    extractor = resolve(name, configured)
    fields = extractor.identity() if hasattr(extractor, "identity") else asdict(extractor)
    return {"name": name, "class": type(extractor).__name__, **fields}
