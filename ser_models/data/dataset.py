"""Utterances as model inputs: a Dataset over cached features and a padding collate.

A batch is a dict: for every sequence input `name`, `batch[name]` is padded
with zeros to [B, T_max, ...] and `batch[f"{name}_lengths"]` holds the true
lengths; `words` are int64 ids (0 = padding); `word_spans` become
`alignment`, a binary [B, W_max, T_fbank] word-by-frame matrix.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from .alignment import word_frame_matrix
from .text import Vocabulary, utterance_words


def speaker_statistics(table, stores: dict, inputs, pooled: bool = False) -> dict:
    """(feature, speaker) -> (mean, std) per dimension over all of that speaker's frames, for frame features.

    Label-free, from each speaker's own utterances in `table` (test speakers' too when the table holds them,
    as per-speaker normalisation in SER does: it needs their audio, never their labels). pooled: also
    (feature, None) over every speaker of the table, for speakers the table does not hold.
    """
    stats = {}
    for name in inputs:
        if name in ("words", "word_spans") or name not in stores:
            continue
        groups = [(speaker, list(utterances)) for speaker, utterances in table.groupby("speaker")["utt_id"]]
        if pooled:
            groups.append((None, list(table["utt_id"])))
        for speaker, utterances in groups:
            moments = frame_moments(name, [np.asarray(stores[name][u]) for u in utterances])
            if moments is None:
                break                              # waveforms and fixed vectors: left as they are
            stats[name, speaker] = moments
    return stats


# the order a speaker's utterances came in, where a corpus says (sessions, dialogs, turns, start times); the id last
SPOKEN_ORDER = ("session", "dialog", "turn", "start_s", "utt_id")


def online_statistics(table, stores: dict, inputs) -> dict:
    """(feature, speaker, utt_id) -> (mean, std) over that speaker's utterances in `table` spoken before it.

    What a deployed system knows of a new speaker: their audio so far, never the utterance at hand or later ones.
    A speaker's first utterance gets no entry (the dataset then takes the pooled statistics). Same moments as
    speaker_statistics over the same utterances."""
    from .features import CONFIGURED

    order = [column for column in SPOKEN_ORDER if column in table]
    ordered = table.sort_values(order, kind="stable", na_position="first")
    stats = {}
    for name in inputs:
        if name in ("words", "word_spans") or name not in stores:
            continue
        for speaker, utterances in ordered.groupby("speaker", sort=False)["utt_id"]:
            total = squares = None
            count = 0
            for utt_id in utterances:
                frames = np.asarray(stores[name][utt_id])
                if frames.ndim != 2:
                    break                              # waveforms and fixed vectors: left as they are
                if count:
                    mean = total / count
                    std = np.sqrt(np.maximum(squares / count - mean ** 2, 0.0))
                    stats[name, speaker, utt_id] = mean.astype(np.float32), np.maximum(std, 1e-5).astype(np.float32)
                rows = (frames[None] if name in CONFIGURED else frames).astype(np.float64)
                total = rows.sum(0) if total is None else total + rows.sum(0)
                squares = (rows ** 2).sum(0) if squares is None else squares + (rows ** 2).sum(0)
                count += len(rows)
    return stats


def frame_moments(name: str, frames: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
    from .features import CONFIGURED

    if frames[0].ndim != 2:
        return None
    # an encoder's rows are its layers, not frames: statistics per (layer, dimension)
    stacked = (np.stack if name in CONFIGURED else np.concatenate)(frames).astype(np.float64)
    return stacked.mean(0).astype(np.float32), np.maximum(stacked.std(0), 1e-5).astype(np.float32)


class UtteranceDataset(Dataset):
    def __init__(self, table, stores: dict, inputs, classes: list[str], vocab: Vocabulary | None = None,
                 speaker_stats: dict | None = None):
        missing = [name for name in inputs if name != "words" and name not in stores]
        if missing:
            raise KeyError(f"no cached features for inputs {missing}; extract them first")
        if "words" in inputs and vocab is None:
            raise ValueError("the input 'words' needs a Vocabulary")
        self.rows = table.to_dict("records")
        self.stores, self.inputs, self.vocab = stores, tuple(inputs), vocab
        self.label_index = {label: i for i, label in enumerate(classes)}
        self.speaker_stats = speaker_stats or {}

    def __len__(self) -> int:
        return len(self.rows)

    def frame_bytes(self) -> int:
        """The cached features' bytes of these utterances, before padding."""
        return sum(self.stores[name].utterance_bytes(row["utt_id"]) for name in self.inputs if name in self.stores
                   for row in self.rows)

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index]
        example = {"utt_id": row["utt_id"], "label": self.label_index.get(row["label"], -1)}
        for name in self.inputs:
            if name == "words":
                example["words"] = np.asarray(self.vocab.encode(utterance_words(row)), dtype=np.int64)
            else:
                example[name] = np.asarray(self.stores[name][row["utt_id"]])
                # the utterance's own (online: its speaker so far), else its speaker's, else the pooled ones
                moments = (self.speaker_stats.get((name, row["speaker"], row["utt_id"]))
                           or self.speaker_stats.get((name, row["speaker"])) or self.speaker_stats.get((name, None)))
                if moments is not None:
                    mean, std = moments
                    example[name] = (example[name] - mean) / std
        if "word_spans" in example and "fbank40" in self.stores and "fbank40" not in example:
            example["fbank40_frames"] = len(self.stores["fbank40"][row["utt_id"]])
        return example


def pad_stack(arrays: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(a) for a in arrays], dtype=torch.int64)
    first = arrays[0]
    out = torch.zeros((len(arrays), int(lengths.max()) if len(lengths) else 0, *first.shape[1:]),
                      dtype=torch.int64 if first.dtype == np.int64 else torch.float32)
    for i, array in enumerate(arrays):
        out[i, : len(array)] = torch.from_numpy(np.array(array))  # copy: cached arrays are read-only memmaps
    return out, lengths


def collate(examples: list[dict]) -> dict:
    batch = {"utt_id": [e["utt_id"] for e in examples],
             "labels": torch.tensor([e["label"] for e in examples], dtype=torch.int64)}
    for key in examples[0]:
        if key in ("utt_id", "label", "word_spans", "fbank40_frames"):
            continue
        batch[key], batch[f"{key}_lengths"] = pad_stack([e[key] for e in examples])
    if "word_spans" in examples[0]:
        batch["alignment"] = alignment_batch(examples, batch)
    return batch


def alignment_batch(examples: list[dict], batch: dict) -> torch.Tensor:
    """[B, W_max, T_max] word-by-frame matrix on the fbank frame grid (10 ms)."""
    if "fbank40" in batch:
        frames = batch["fbank40_lengths"].tolist()
    else:
        frames = [e.get("fbank40_frames") or int(np.ceil(e["word_spans"][:, 1].max(initial=0) / 0.01)) + 1
                  for e in examples]
    width = max(frames)
    words = max(1, max(len(e["word_spans"]) for e in examples))
    out = torch.zeros(len(examples), words, width)
    for i, (example, n_frames) in enumerate(zip(examples, frames)):
        spans = example["word_spans"]
        if len(spans):
            out[i, : len(spans), :n_frames] = torch.from_numpy(word_frame_matrix(spans[:, 0], spans[:, 1], n_frames))
    return out
