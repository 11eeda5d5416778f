"""What a sweep's features weigh, said before extraction (emosweep check), and a cache too small refused then."""
import subprocess
import sys
from pathlib import Path

import pytest

from ser_models.data.cache import extract
from ser_models.data.sizing import feature_bytes

from .conftest import REPO
from .sweeps import run_sweep, write_sweep

EMOSWEEP = str(Path(sys.executable).parent / "emosweep")
FEATURES = ["fbank40", "mfcc39", "spec257", "mel512_fixed", "waveform", "waveform_10s", "word_spans"]


def test_the_estimate_is_what_extraction_writes(synthetic_corpus, tmp_path):
    table = synthetic_corpus.table
    estimated = feature_bytes(table, FEATURES)
    report = extract(table, FEATURES, tmp_path / "cache", progress=False)
    for name in FEATURES:
        written = report.stores[name].nbytes
        assert estimated[name] == pytest.approx(written, rel=0.01), name


def test_check_prints_the_features_bytes_and_what_is_cached(tmp_path, synthetic_root):
    path = write_sweep(tmp_path, synthetic_root, models={"fg_cme": ["full"]})
    check = [EMOSWEEP, "check", str(path)]
    before = subprocess.run(check, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert before.returncode == 0, before.stderr[-2000:]
    line = next(text for text in before.stdout.splitlines() if text.startswith("features: "))
    assert "fbank40" in line and "word_spans" in line and "(cached)" not in line and "to extract into" in line
    assert run_sweep(path, "train.epochs=1", "fold_indices=[0]").returncode == 0
    after = subprocess.run(check, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert "fbank40" in after.stdout and "fbank40" in after.stdout.split("(cached)")[0] and "0 B to extract" in \
        after.stdout


def test_a_cache_that_cannot_hold_the_features_is_refused_before_extraction(small_disk, tmp_path, synthetic_root):
    (small_disk / "ballast").write_bytes(b"\0" * 63 * 2**20)    # a real disk with about 1 MB left
    path = write_sweep(tmp_path, synthetic_root, models={"cma": ["spectrogram"]}, cache=str(small_disk / "cache"))
    ran = run_sweep(path)
    checked = subprocess.run([EMOSWEEP, "check", str(path)], cwd=REPO, capture_output=True, text=True, timeout=300)
    for done in (ran, checked):
        assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
        assert "do not fit in the cache" in done.stderr and "Fix: point cache: (or EMOSWEEP_CACHE)" in done.stderr
        assert "spec257" in done.stderr
    assert not (small_disk / "cache").exists() and not (tmp_path / "results" / "t").exists()   # nothing started


def test_a_node_without_the_corpus_is_an_error_that_names_it_not_a_quarantine(tmp_path):
    """What a Ray Data extraction actor does with a file the driver saw and its node cannot read."""
    import pickle

    from ser_models.data.distributed import ExtractChunks

    actor = object.__new__(type("ExtractChunks", (ExtractChunks,), {"names": ("fbank40",)}))
    actor.node = "node-b"
    rows = [{"utt_id": "u1", "path": str(tmp_path / "elsewhere.wav"), "text": "", "align_words": None,
             "align_start": None, "align_end": None}]
    with pytest.raises(FileNotFoundError, match=r"node node-b cannot read .*elsewhere\.wav, which the driver can: "
                                                r"every node needs the corpus audio at the same path\. Fix: mount"):
        actor({"rows": [pickle.dumps(rows)]})
