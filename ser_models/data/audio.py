"""Decode any audio file to 16 kHz mono float32, or say exactly why not.

soundfile detects the container from the header, so AIFF files named .wav,
WAV files with extra RIFF chunks (RAVDESS originals) and FLAC all load.
Resampling uses scipy's polyphase filter so this module needs no torchaudio.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf

TARGET_SR = 16_000
SILENCE_PEAK = 1e-4  # below -80 dBFS everywhere: nothing to learn from
# every extractor needs a few analysis windows (25-64 ms each): shorter files cannot become features
MIN_SECONDS = 0.1


class AudioError(Exception):
    """A file that cannot be used; carries the file, a short reason and the fix."""

    def __init__(self, path: str | Path, reason: str, fix: str):
        self.path, self.reason, self.fix = str(path), reason, fix
        super().__init__(f"{path}: {reason}. Fix: {fix}")


def load_audio(path: str | Path, target_sr: int = TARGET_SR) -> np.ndarray:
    """Return a mono float32 waveform in [-1, 1] at target_sr; raise AudioError on bad input."""
    path = Path(path)
    if not path.exists():
        raise AudioError(path, "file not found", "check the corpus root or the manifest path column")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)", "re-copy the file from the original corpus")
    try:
        samples, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:  # libsndfile reports corrupt headers with several exception types
        raise AudioError(path, f"cannot decode ({err})", "re-copy or re-encode the file as WAV/FLAC") from None
    if samples.shape[0] == 0:
        raise AudioError(path, "no audio frames", "re-copy the file; it holds a header but no samples")
    wave = samples.mean(axis=1)
    if not np.isfinite(wave).all():
        raise AudioError(path, "NaN or infinite samples", "re-encode the file")
    if np.abs(wave).max() < SILENCE_PEAK:
        raise AudioError(path, "all-silent (peak below -80 dBFS)", "check the recording; drop it from the manifest")
    if len(wave) < MIN_SECONDS * sample_rate:
        raise AudioError(path, f"too short: {len(wave)} samples ({len(wave) / sample_rate:.3f} s); the features "
                               f"need at least {MIN_SECONDS} s",
                         "re-export the whole utterance, or drop it from the corpus")
    if sample_rate != target_sr:
        from scipy.signal import resample_poly  # here: 0.6 s of import that every sweep driver paid at start

        ratio = Fraction(target_sr, sample_rate)
        wave = resample_poly(wave, ratio.numerator, ratio.denominator).astype(np.float32)
    return np.ascontiguousarray(wave, dtype=np.float32)


def audio_info(path: str | Path) -> tuple[float, int]:
    """(duration seconds, sample rate) from the header only; (nan, 0) when unreadable."""
    try:
        info = sf.info(str(path))
        return info.frames / info.samplerate, int(info.samplerate)
    except Exception:
        return float("nan"), 0
