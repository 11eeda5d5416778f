"""Speaker-disjoint folds, each with train, validation and test.

Every strategy reduces to an ordered list of speaker groups: fold k tests on
group k, validates on group k+1 (a group of *training* speakers, never the
test fold), and trains on the rest. Every fold is checked for speaker leaks
when it is built.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


class SpeakerLeakError(AssertionError):
    pass


@dataclass(frozen=True)
class Fold:
    index: int
    name: str
    train: tuple[str, ...]        # utterance ids
    validation: tuple[str, ...]
    test: tuple[str, ...]
    test_speakers: tuple[str, ...]
    validation_speakers: tuple[str, ...]


def check_speaker_disjoint(table: pd.DataFrame, train, validation, test, name: str = "fold") -> None:
    """Raise SpeakerLeakError if any speaker is in test and also in train or validation."""
    speaker_of = table.set_index("utt_id")["speaker"]
    speakers = {part: set(speaker_of.loc[list(ids)]) for part, ids in
                (("train", train), ("validation", validation), ("test", test))}
    for part in ("train", "validation"):
        shared = speakers[part] & speakers["test"]
        if shared:
            raise SpeakerLeakError(f"{name}: speaker(s) {sorted(shared)} appear in both {part} and test. "
                                   f"Speaker-dependent splits are not allowed; regroup the folds by speaker")
    if not test or not train or not validation:
        raise SpeakerLeakError(f"{name}: empty split (train {len(train)}, validation {len(validation)}, "
                               f"test {len(test)})")


def folds_from_groups(table: pd.DataFrame, groups: list[list[str]], names: list[str] | None = None) -> list[Fold]:
    """Fold k: test = speakers of group k, validation = group k+1 (mod n), train = the rest."""
    if len(groups) < 3:
        raise ValueError(f"need at least 3 speaker groups for train, validation and test, got {len(groups)}. "
                         "Fix: a corpus needs at least 3 speakers (3 sessions for `sessions`)")
    names = names or [f"fold{k}" for k in range(len(groups))]
    folds = []
    for k, test_speakers in enumerate(groups):
        validation_speakers = groups[(k + 1) % len(groups)]
        in_test = table["speaker"].isin(test_speakers)
        in_validation = table["speaker"].isin(validation_speakers)
        test = tuple(table.loc[in_test, "utt_id"])
        validation = tuple(table.loc[in_validation, "utt_id"])
        train = tuple(table.loc[~in_test & ~in_validation, "utt_id"])
        check_speaker_disjoint(table, train, validation, test, names[k])
        folds.append(Fold(k, names[k], train, validation, test, tuple(test_speakers), tuple(validation_speakers)))
    return folds


def session_groups(table: pd.DataFrame) -> tuple[list[list[str]], list[str]]:
    """Leave-one-session-out (IEMOCAP: 5 sessions, 2 speakers each)."""
    sessions = sorted(table["session"].dropna().unique())
    speakers_by_session = [sorted(table.loc[table["session"] == s, "speaker"].unique()) for s in sessions]
    seen: dict[str, str] = {}
    for session, speakers in zip(sessions, speakers_by_session):
        for speaker in speakers:
            if speaker in seen:
                raise SpeakerLeakError(f"speaker {speaker} is in sessions {seen[speaker]} and {session}: "
                                       f"session folds would leak; use speaker folds instead")
            seen[speaker] = session
    return speakers_by_session, [f"test={s}" for s in sessions]


def speaker_groups(table: pd.DataFrame, k: int) -> tuple[list[list[str]], list[str]]:
    """k speaker-grouped folds, balanced in size and, where possible, in gender and label mix.

    Greedy: speakers sorted by utterance count go one by one to the group whose
    label histogram plus this speaker's is closest to an even share.
    """
    speakers = table.groupby("speaker")
    if speakers.ngroups < 3:
        raise ValueError(f"{speakers.ngroups} speaker(s) cannot make speaker-disjoint train, validation and test "
                         "splits. Fix: use a corpus with at least 3 speakers (no fold strategy splits fewer)")
    if not 3 <= k <= speakers.ngroups:
        raise ValueError(f"{speakers.ngroups} speakers cannot make {k} speaker-disjoint folds (train, validation "
                         f"and test each take one group). Fix: use speakers-K with 3 <= K <= {speakers.ngroups}")
    labels = table["label"].fillna("<none>")
    per_speaker = pd.crosstab(table["speaker"], labels)
    gender = table.groupby("speaker")["gender"].first().fillna("?")
    order = per_speaker.sum(axis=1).sort_values(ascending=False, kind="stable").index
    groups: list[list[str]] = [[] for _ in range(k)]
    totals = [per_speaker.iloc[0] * 0 for _ in range(k)]
    target = per_speaker.sum() / k
    for speaker in order:
        def cost(g):
            after = totals[g] + per_speaker.loc[speaker]
            same_gender = sum(gender[s] == gender[speaker] for s in groups[g])
            return float(((after - target).clip(lower=0) ** 2).sum()) + same_gender * 1e-3 + len(groups[g]) * 1e-6
        best = min(range(k), key=cost)
        groups[best].append(speaker)
        totals[best] = totals[best] + per_speaker.loc[speaker]
    return [sorted(g) for g in groups], [f"speakers{g}" for g in range(k)]


def make_folds(table: pd.DataFrame, strategy: str) -> list[Fold]:
    """Folds by name: `sessions`, `speakers-K` (e.g. speakers-5) or `loso-speaker`."""
    if strategy == "sessions":
        groups, names = session_groups(table)
    elif strategy.startswith("speakers-") and strategy.split("-", 1)[1].isdigit():
        groups, names = speaker_groups(table, int(strategy.split("-", 1)[1]))
    elif strategy == "loso-speaker":
        speakers = sorted(table["speaker"].unique())
        groups, names = [[s] for s in speakers], [f"test={s}" for s in speakers]
    else:
        raise ValueError(f"unknown fold strategy {strategy!r}; use sessions, speakers-K or loso-speaker")
    return folds_from_groups(table, groups, names)


def fold_summary(table: pd.DataFrame, folds: list[Fold]) -> pd.DataFrame:
    """One row per fold and split: utterances, speakers and class counts."""
    rows = []
    indexed = table.set_index("utt_id")
    for fold in folds:
        for split in ("train", "validation", "test"):
            part = indexed.loc[list(getattr(fold, split))]
            rows.append({"fold": fold.index, "name": fold.name, "split": split, "utterances": len(part),
                         "speakers": part["speaker"].nunique(),
                         **part["label"].value_counts().sort_index().to_dict()})
    return pd.DataFrame(rows)


def fold_warnings(table: pd.DataFrame, folds: list[Fold]) -> list[str]:
    """Folds that run but measure badly: one-voice validation, splits missing a class. One line per kind.

    `table` may hold fewer utterances than the folds name (quarantined audio): only those present count.
    """
    classes = sorted(table["label"].dropna().unique())
    label_of = table.set_index("utt_id")["label"]
    lonely = [fold.name for fold in folds if len(fold.validation_speakers) < 2]
    lines = []
    if lonely:
        lines.append(f"{len(lonely)} fold(s) validate on a single speaker ({', '.join(lonely[:3])}"
                     f"{', ...' if len(lonely) > 3 else ''}): epoch selection rests on one voice. Fix: fewer, "
                     "larger folds (speakers-K with a smaller K, or sessions)")
    for split in ("validation", "test"):
        gaps = {fold.name: sorted(set(classes) - set(label_of.reindex(list(getattr(fold, split))).dropna()))
                for fold in folds}
        gaps = {name: missing for name, missing in gaps.items() if missing}
        if gaps:
            shown = "; ".join(f"{name}: {missing}" for name, missing in list(gaps.items())[:3])
            lines.append(f"{len(gaps)} fold(s) have a {split} split without some class ({shown}): UA there "
                         "averages fewer classes. Fix: speakers-K with a smaller K groups more speakers per split")
    return lines
