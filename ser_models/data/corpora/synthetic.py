"""A deterministic synthetic emotional-speech corpus for demos and tests.

Ten speakers in five sessions (one F and one M each, like IEMOCAP) hold
dialogs whose emotions persist across turns. Each word is a harmonic tone
whose pitch level and range, speaking rate and energy depend on the emotion,
and whose vowel colour depends on the word and the speaker. Wording depends on
the emotion too, with shared filler words so that text alone is not perfect.
Alignments are exact. The corpus is written as WAV + TextGrid + manifest.csv,
so loading it goes through the same manifest path a user's corpus does.
"""
from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from ..alignment import write_textgrid
from ..corpus import CorpusKind, register
from .manifest import load

SR = 16_000
EMOTIONS = ("angry", "happy", "neutral", "sad")
# pitch factor, pitch range (fraction), speaking rate, loudness, contour slope,
# spectral tilt (harmonic roll-off: tense voices are bright, breathy voices dark)
PROSODY = {
    "angry":   (1.25, 0.20, 1.25, 1.8, -0.10, 0.2),
    "happy":   (1.30, 0.40, 1.15, 1.3, 0.25, 0.6),
    "neutral": (1.00, 0.08, 1.00, 1.0, 0.00, 1.0),
    "sad":     (0.85, 0.05, 0.75, 0.5, -0.20, 1.8),
}
WORDS = {
    "angry": ["stop", "never", "enough", "hate", "now", "wrong", "leave"],
    "happy": ["great", "love", "wonderful", "yes", "fun", "amazing", "party"],
    "neutral": ["okay", "table", "meeting", "today", "report", "number", "street"],
    "sad": ["miss", "sorry", "alone", "lost", "tired", "gone", "cry"],
}
FILLERS = ["i", "the", "you", "that", "it", "is", "we", "so", "well", "just"]


@dataclass(frozen=True)
class SyntheticConfig:
    sessions: int = 5
    dialogs_per_session: int = 4
    turns_per_dialog: int = 12
    emotion_persistence: float = 0.8   # probability a speaker keeps their emotion on their next turn
    emotional_word_rate: float = 0.5   # share of words drawn from the emotion's list
    seed: int = 0

    def __post_init__(self):
        counts = ("sessions", "dialogs_per_session", "turns_per_dialog")
        for name in counts + ("seed",):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (name in counts):
                raise ValueError(f"corpus.{name} {value!r} must be an integer of at least {int(name in counts)}. "
                                 f"Fix: set corpus.{name}: {SyntheticConfig.__dataclass_fields__[name].default}")
        for name in ("emotion_persistence", "emotional_word_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"corpus.{name} {value!r} must be a probability from 0 to 1. "
                                 f"Fix: set corpus.{name}: {SyntheticConfig.__dataclass_fields__[name].default}")

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def _speaker_voice(session: int, gender: str) -> dict:
    rng = np.random.default_rng(1000 + 2 * session + (gender == "M"))
    base = rng.uniform(185, 235) if gender == "F" else rng.uniform(95, 135)
    return {"f0": base, "timbre": rng.uniform(0.85, 1.2), "breath": rng.uniform(0.002, 0.01)}


def _vowel_formants(word: str, timbre: float) -> tuple[float, float]:
    code = zlib.crc32(word.encode())
    return (300 + (code % 500)) * timbre, (900 + (code // 500) % 1500) * timbre


def _synth_word(word: str, emotion: str, voice: dict, rng: np.random.Generator) -> np.ndarray:
    pitch, spread, rate, loudness, slope, tilt = PROSODY[emotion]
    seconds = (0.14 + 0.045 * len(word)) / rate
    t = np.arange(int(seconds * SR)) / SR
    progress = t / seconds
    f0 = voice["f0"] * pitch * (1 + spread * np.sin(np.pi * progress + rng.uniform(0, np.pi))
                                + slope * (progress - 0.5))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    f1, f2 = _vowel_formants(word, voice["timbre"])
    wave = np.zeros_like(t)
    for harmonic in range(1, 30):
        freq = harmonic * f0.mean()
        if freq > SR / 2 - 500:
            break
        formants = np.exp(-((freq - f1) / 180) ** 2) + 0.6 * np.exp(-((freq - f2) / 250) ** 2) + 0.05
        gain = formants * harmonic ** -tilt
        wave += gain * np.sin(harmonic * phase)
    envelope = np.minimum(1, np.minimum(t, seconds - t) / 0.02)
    wave = wave / (np.abs(wave).max() + 1e-9) * envelope * 0.25 * loudness
    return wave + rng.normal(0, voice["breath"], len(t))


def _sentence(emotion: str, cfg: SyntheticConfig, rng: np.random.Generator) -> list[str]:
    length = int(rng.integers(3, 8))
    return [str(rng.choice(WORDS[emotion])) if rng.random() < cfg.emotional_word_rate else str(rng.choice(FILLERS))
            for _ in range(length)]


def _utterance(words: list[str], emotion: str, voice: dict, rng: np.random.Generator):
    rate = PROSODY[emotion][2]
    pieces, starts, ends = [np.zeros(int(0.15 * SR))], [], []
    cursor = len(pieces[0])
    for word in words:
        audio = _synth_word(word, emotion, voice, rng)
        starts.append(cursor / SR)
        cursor += len(audio)
        ends.append(cursor / SR)
        gap = np.zeros(int(rng.uniform(0.04, 0.12) / rate * SR))
        pieces += [audio, gap]
        cursor += len(gap)
    pieces.append(np.zeros(int(0.15 * SR)))
    wave = np.concatenate(pieces)
    wave += rng.normal(0, voice["breath"] * 0.3, len(wave))
    return wave.astype(np.float32), starts, ends


def generate(out_dir: str | Path, cfg: SyntheticConfig = SyntheticConfig()) -> Path:
    """Write the corpus under out_dir (skipped when already there) and return its manifest path."""
    out_dir = Path(out_dir)
    manifest = out_dir / "manifest.csv"
    stamp = out_dir / "config.json"
    if manifest.exists() and stamp.exists() and json.loads(stamp.read_text()).get("digest") == cfg.digest():
        return manifest
    rng = np.random.default_rng(cfg.seed)
    rows = []
    for session in range(1, cfg.sessions + 1):
        voices = {g: _speaker_voice(session, g) for g in "FM"}
        for dialog_index in range(cfg.dialogs_per_session):
            dialog = f"syn{session:02d}_d{dialog_index:02d}"
            # starting moods rotate through the emotions so every session has every class
            first = (session + dialog_index) % len(EMOTIONS)
            mood = {"F": EMOTIONS[first], "M": EMOTIONS[(first + 2) % len(EMOTIONS)]}
            speaker = str(rng.choice(["F", "M"]))
            start_s = 0.0
            for turn in range(cfg.turns_per_dialog):
                if rng.random() > cfg.emotion_persistence:
                    mood[speaker] = str(rng.choice(EMOTIONS))
                emotion, voice = mood[speaker], voices[speaker]
                words = _sentence(emotion, cfg, rng)
                wave, starts, ends = _utterance(words, emotion, voice, rng)
                utt_id = f"{dialog}_{speaker}{turn:03d}"
                wav_path = out_dir / "wav" / dialog / f"{utt_id}.wav"
                grid_path = out_dir / "textgrid" / dialog / f"{utt_id}.TextGrid"
                wav_path.parent.mkdir(parents=True, exist_ok=True)
                grid_path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(wav_path, wave, SR, subtype="PCM_16")
                write_textgrid(grid_path, (words, starts, ends), len(wave) / SR)
                rows.append({"utt_id": utt_id, "path": str(wav_path.relative_to(out_dir)), "label": emotion,
                             "speaker": f"syn{session:02d}{speaker}", "session": f"syn{session:02d}",
                             "gender": speaker, "text": " ".join(words),
                             "textgrid": str(grid_path.relative_to(out_dir)), "dialog": dialog, "turn": turn,
                             "start_s": round(start_s, 3)})
                start_s += len(wave) / SR + 0.3
                speaker = "M" if speaker == "F" else "F"
                if rng.random() < 0.2:  # sometimes the same speaker talks twice
                    speaker = "M" if speaker == "F" else "F"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    stamp.write_text(json.dumps({"digest": cfg.digest(), "config": asdict(cfg)}, indent=2))
    return manifest


@register
class Synthetic(CorpusKind):
    name = "synthetic"
    help = "a generated, deterministic 4-emotion corpus with transcripts, alignments and dialogs (root optional)"
    needs_root = False
    default_folds = "sessions"
    options = {field.name: f"generator setting (default {field.default})" for field in fields(SyntheticConfig)}

    def read(self, root, classes, **options):
        config = SyntheticConfig(**options)
        out = root or default_root(config)
        if Path(out).exists() and not Path(out).is_dir():
            raise ValueError(f"corpus root {out} is a file: the synthetic corpus is generated into a folder. Fix: "
                             "give a folder (it is created), or drop root for the default")
        return load(generate(out, config), classes, corpus="synthetic")


def default_root(config: SyntheticConfig) -> Path:
    from ..cache import DEFAULT_CACHE

    return DEFAULT_CACHE.parent / "synthetic" / config.digest()
