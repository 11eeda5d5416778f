"""Word alignments: IEMOCAP .wdseg, Praat TextGrid, and a fallback without either.

A word alignment is (words, starts, ends) in seconds. Models consume it as a
binary word-by-frame matrix (`word_frame_matrix`) at a 10 ms frame rate.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .text import normalize_token

Alignment = tuple[list[str], list[float], list[float]]
FRAME_S = 0.01


def parse_wdseg(path: str | Path) -> Alignment:
    """Sphinx-3 word segmentation: rows `SFrm EFrm SegAScr Word`, 10 ms frames.

    A word spans [SFrm * 10 ms, (EFrm + 1) * 10 ms). Silence, sentence marks and
    noise words are dropped; `EXCUSE(8)` becomes `excuse`.
    """
    words, starts, ends = [], [], []
    for line in Path(path).read_text(errors="replace").splitlines():
        parts = line.split()
        if len(parts) != 4 or not parts[0].lstrip("-").isdigit():
            continue  # header, footer ("Total score") and blank lines
        word = normalize_token(parts[3])
        if word:
            words.append(word)
            starts.append(int(parts[0]) * FRAME_S)
            ends.append((int(parts[1]) + 1) * FRAME_S)
    return words, starts, ends


_TG_INDEX = re.compile(r"^\s*(item|intervals|points)\s*\[\d*\]\s*:?\s*$", re.MULTILINE)
_TG_TOKEN = re.compile(r'"((?:[^"]|"")*)"|(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)|(<exists>)')


def parse_textgrid(path: str | Path, tier: str = "words") -> Alignment:
    """Words of one interval tier of a Praat TextGrid (long or short text format).

    Both formats list the same strings and numbers in the same order, so we read
    the token stream and skip the labels of the long format.
    """
    raw = Path(path).read_bytes()
    text = raw.decode("utf-16") if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else raw.decode("utf-8", errors="replace")
    text = _TG_INDEX.sub("", text)
    tokens = [m.group(1) if m.group(1) is not None else (m.group(3) or float(m.group(2)))
              for m in _TG_TOKEN.finditer(text)]
    # "ooTextFile", "TextGrid", xmin, xmax, <exists>, n_tiers, then tiers
    pos, tiers = 6, {}
    while pos < len(tokens):
        kind, name, count = tokens[pos], tokens[pos + 1], int(tokens[pos + 4])
        pos += 5
        width = 3 if kind == "IntervalTier" else 2
        tiers[name] = (kind, tokens[pos: pos + width * count])
        pos += width * count
    if not tiers:
        raise ValueError(f"{path}: not a Praat TextGrid (no tiers found; cut short?). Fix: re-export it from Praat "
                         "as a text file, or leave the manifest's textgrid cell empty to use the fallback alignment")
    if tier not in tiers:
        raise ValueError(f"{path}: no tier named {tier!r} (tiers: {sorted(tiers)}). "
                         "Fix: name the word tier 'words', or name yours with corpus.tier")
    kind, flat = tiers[tier]
    if kind != "IntervalTier":
        raise ValueError(f"{path}: tier {tier!r} is a {kind}, not an IntervalTier. Fix: name the tier of word "
                         "intervals with corpus.tier")
    words, starts, ends = [], [], []
    for start, end, label in zip(flat[0::3], flat[1::3], flat[2::3]):
        word = normalize_token(str(label))
        if word:
            words.append(word)
            starts.append(float(start))
            ends.append(float(end))
    return words, starts, ends


def write_textgrid(path: str | Path, alignment: Alignment, duration: float, tier: str = "words") -> None:
    """Long-format TextGrid with one interval tier; gaps become empty intervals."""
    words, starts, ends = alignment
    intervals, cursor = [], 0.0
    for word, start, end in zip(words, starts, ends):
        if start > cursor + 1e-9:
            intervals.append((cursor, start, ""))
        intervals.append((start, end, word))
        cursor = end
    if duration > cursor + 1e-9:
        intervals.append((cursor, duration, ""))
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0", f"xmax = {duration}",
             "tiers? <exists>", "size = 1", "item []:", "    item [1]:", '        class = "IntervalTier"',
             f'        name = "{tier}"', "        xmin = 0", f"        xmax = {duration}",
             f"        intervals: size = {len(intervals)}"]
    for i, (start, end, label) in enumerate(intervals, start=1):
        lines += [f"        intervals [{i}]:", f"            xmin = {start}", f"            xmax = {end}",
                  f'            text = "{label}"']
    Path(path).write_text("\n".join(lines) + "\n")


def fallback_alignment(words: list[str], wave: np.ndarray, sample_rate: int = 16_000,
                       threshold_db: float = -35.0) -> Alignment:
    """Spread words over the voiced region, each span proportional to its letter count.

    The voiced region runs from the first to the last 10 ms frame whose energy is
    within `threshold_db` of the loudest frame. Crude, but it keeps words in
    order and inside speech, which is what word-level pooling needs.
    """
    if not words:
        return [], [], []
    hop = int(sample_rate * FRAME_S)
    n_frames = max(1, len(wave) // hop)
    frames = wave[: n_frames * hop].reshape(n_frames, hop) if len(wave) >= hop else wave[None, :]
    energy_db = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    voiced = np.flatnonzero(energy_db > energy_db.max() + threshold_db)
    first, last = (voiced[0], voiced[-1] + 1) if len(voiced) else (0, n_frames)
    weights = np.array([max(len(word), 1) for word in words], dtype=np.float64)
    edges = first + np.concatenate([[0], np.cumsum(weights) / weights.sum()]) * (last - first)
    return list(words), [float(e * FRAME_S) for e in edges[:-1]], [float(e * FRAME_S) for e in edges[1:]]


def word_frame_matrix(starts, ends, n_frames: int, frame_s: float = FRAME_S) -> np.ndarray:
    """Binary [n_words, n_frames]: row j is 1 on the frames word j covers (at least one frame)."""
    matrix = np.zeros((len(starts), n_frames), dtype=np.float32)
    for row, (start, end) in enumerate(zip(starts, ends)):
        first = min(int(start / frame_s), n_frames - 1)
        last = max(first + 1, min(int(np.ceil(end / frame_s)), n_frames))
        matrix[row, first:last] = 1.0
    return matrix
