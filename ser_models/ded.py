"""Dialogical emotion decoding (DED; Yeh, Lin & Lee, ICASSP 2020), as in the reference code
(30stomercury/Dialogical-Emotion-Decoding: ded/beam_search.py, ded/utils.py).

A post-processing step over any model's per-utterance scores in dialog order:
beam search whose cost is -score[state] plus an emotion-shift prior (p0,
estimated on training dialogs only) and a Chinese-restaurant-process prior.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


def speaker_sequences(dialogs: dict[str, list[str]], speaker_of: dict[str, str]) -> list[list[str]]:
    """Each dialog split into its speakers' own utterance sequences, order kept."""
    sequences = []
    for utterances in dialogs.values():
        by_speaker: dict[str, list[str]] = {}
        for utt in utterances:
            by_speaker.setdefault(speaker_of[utt], []).append(utt)
        sequences.extend(by_speaker.values())
    return sequences


def transition_bias(dialogs: dict[str, list[str]], emotion_of: dict[str, str], speaker_of: dict[str, str]) -> float:
    """p0 = (number of consecutive same-speaker pairs whose emotions differ + 1) / number of pairs.

    Pass only the training dialogs. Emotions are the raw annotations (all
    turns, fru/xxx included), with hap and exc merged as in the reference.
    """
    changes = pairs = 0
    for sequence in speaker_sequences(dialogs, speaker_of):
        changes += sum(emotion_of[a] != emotion_of[b] for a, b in zip(sequence, sequence[1:]))
        pairs += len(sequence) - 1
    if pairs == 0:
        raise ValueError("no consecutive same-speaker turns to estimate the transition bias from")
    return (changes + 1) / pairs


@dataclass
class Beam:
    speakers: list = field(default_factory=list)
    states: list = field(default_factory=list)
    cost: float = 0.0
    block_counts: list = field(default_factory=list)

    def extend(self, speaker, state: int, scores: np.ndarray, p0: float, alpha: float) -> "Beam":
        counts = list(self.block_counts)
        cost = -float(scores[state])
        if state in self.states and speaker in self.speakers:
            last = self.states[len(self.speakers) - 1 - self.speakers[::-1].index(speaker)]
            if state == last:
                cost -= math.log(1 - p0)
            else:
                cost -= math.log(p0) + math.log(counts[state]) - math.log(sum(counts) + alpha)
                counts[state] += 1
        else:
            cost -= math.log(p0) + math.log(alpha) - math.log(sum(counts) + alpha)
            counts[state] += 1
        return Beam(self.speakers + [speaker], self.states + [state], self.cost + cost, counts)


def decode_dialog(utterances: list[str], scores: dict[str, np.ndarray], speaker_of: dict[str, str], p0: float,
                  beam_size: int = 5, crp_alpha: float = 1.0, test_iteration: int = 2) -> list[int]:
    """Best state sequence for one dialog (utterances in dialog order).

    The dialog is tiled `test_iteration` times and the states of the last copy
    are returned. Scores are used as given (the reference feeds raw logits).
    """
    num_states = len(next(iter(scores.values())))
    beams = [Beam(block_counts=[0] * num_states) for _ in range(beam_size)]
    for step, utt in enumerate(list(utterances) * test_iteration):
        candidates = [beam.extend(speaker_of[utt], state, np.asarray(scores[utt]), p0, crp_alpha)
                      for beam in (beams if step > 0 else beams[:1]) for state in range(num_states)]
        order = np.argsort([candidate.cost for candidate in candidates], kind="stable")[:beam_size]
        beams = [candidates[i] for i in order]
    return beams[0].states[-len(utterances):]


def decode(dialogs: dict[str, list[str]], scores: dict[str, np.ndarray], speaker_of: dict[str, str], p0: float,
           **options) -> dict[str, int]:
    """DED over many dialogs: utterance id -> decoded class index."""
    decoded = {}
    for utterances in dialogs.values():
        decoded.update(zip(utterances, decode_dialog(utterances, scores, speaker_of, p0, **options)))
    return decoded
