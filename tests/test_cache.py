import os
import shutil
import time

import numpy as np
import pandas as pd
import pytest

from ser_models.data.audio import AudioError, load_audio
from ser_models.data.cache import extract
from ser_models.data.corpora.manifest import load

from .fixtures.audio import write


@pytest.fixture
def small_table(synthetic_corpus):
    return synthetic_corpus.task.head(12).copy()


def test_second_call_is_a_cache_hit(small_table, tmp_path):
    first = extract(small_table, ["fbank40", "word_spans"], tmp_path, progress=False)
    assert sorted(first.computed) == ["fbank40", "word_spans"] and not first.loaded
    shard = first.stores["fbank40"].local_path(0)
    stamp = os.stat(shard).st_mtime_ns
    second = extract(small_table, ["fbank40", "word_spans", "mfcc39"], tmp_path, progress=False)
    assert sorted(second.loaded) == ["fbank40", "word_spans"] and second.computed == ["mfcc39"]
    assert os.stat(shard).st_mtime_ns == stamp  # not rewritten
    utt = small_table["utt_id"].iloc[3]
    assert np.array_equal(first.stores["fbank40"][utt], second.stores["fbank40"][utt])
    assert not second.stores["fbank40"][utt].flags.writeable   # the cache is read, never written through


def test_changed_audio_invalidates_the_cache(small_table, tmp_path):
    extract(small_table, ["fbank40"], tmp_path, progress=False)
    path = small_table["path"].iloc[0]
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    again = extract(small_table, ["fbank40"], tmp_path, progress=False)
    assert again.computed == ["fbank40"]


def test_word_spans_use_alignment_or_fallback(small_table, tmp_path):
    table = small_table.copy()
    table.loc[1, ["align_words", "align_start", "align_end", "align_source"]] = [None, None, None, pd.NA]
    spans = extract(table, ["word_spans"], tmp_path, progress=False).stores["word_spans"]
    exact = table.iloc[0]
    assert np.allclose(spans[exact["utt_id"]], np.stack([exact["align_start"], exact["align_end"]], 1), atol=1e-6)
    fallback = spans[table.iloc[1]["utt_id"]]
    assert len(fallback) == len(table.iloc[1]["text"].split())
    assert np.all(np.diff(fallback[:, 0]) > 0) and fallback[-1, 1] <= table.iloc[1]["duration"] + 0.01


def test_bad_files_are_quarantined_not_fatal(tmp_path, capsys):
    good = [write(tmp_path / f"good{i}.wav", freq=200 + 50 * i) for i in range(3)]
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk" + os.urandom(64))
    empty = tmp_path / "empty.flac"
    empty.write_bytes(b"")
    silent = tmp_path / "silent.wav"
    import soundfile as sf
    sf.write(silent, np.zeros(16_000, np.float32), 16_000)
    short = tmp_path / "short.wav"
    sf.write(short, np.full(1, 0.5, np.float32), 16_000)     # one sample: passes decoding, no feature window fits
    rows = [{"path": p.name, "label": "angry", "speaker": "a"} for p in good + [corrupt, empty, silent, short]]
    rows.append({"path": "missing.wav", "label": "sad", "speaker": "b"})
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    table = load(tmp_path / "m.csv")
    report = extract(table, ["fbank40", "waveform"], tmp_path / "cache", progress=False)
    assert report.usable == {"good0", "good1", "good2"}
    reasons = report.quarantine.set_index("utt_id")["reason"].to_dict()
    assert set(reasons) == {"corrupt", "empty", "silent", "short", "missing"}
    assert "too short: 1 samples" in reasons["short"]
    assert "cannot decode" in reasons["corrupt"] and "empty" in reasons["empty"]
    assert "silent" in reasons["silent"] and "not found" in reasons["missing"]
    assert all("Fix:" in reason for reason in reasons.values())
    assert os.path.exists(report.quarantine_path)
    assert "5 utterance(s) skipped" in capsys.readouterr().err


def test_audio_error_names_the_file(tmp_path):
    with pytest.raises(AudioError, match=r"nothing\.wav: file not found"):
        load_audio(tmp_path / "nothing.wav")


def test_parallel_extraction_matches_serial(small_table, tmp_path):
    serial = extract(small_table, ["mfcc39"], tmp_path / "a", workers=1, progress=False).stores["mfcc39"]
    parallel = extract(small_table, ["mfcc39"], tmp_path / "b", workers=2, chunk=4, progress=False).stores["mfcc39"]
    for utt in small_table["utt_id"]:
        assert np.allclose(serial[utt], parallel[utt])
    shutil.rmtree(tmp_path / "b")


def test_a_feature_that_keeps_only_the_start_says_so(tmp_path, capsys):
    files = [write(tmp_path / "long.wav", seconds=31.0), write(tmp_path / "short.wav", seconds=1.0)]
    pd.DataFrame([{"path": p.name, "label": "angry", "speaker": "a"} for p in files]).to_csv(tmp_path / "m.csv",
                                                                                            index=False)
    report = extract(load(tmp_path / "m.csv"), ["fbank40"], tmp_path / "cache", progress=False)
    assert len(report.stores["fbank40"]["long"]) == 3000                      # 30 s of 10-ms frames
    err = capsys.readouterr().err
    assert "fbank40 keeps the first 30 s: 1 utterance(s) are longer (longest 31 s" in err and "long.wav" in err
