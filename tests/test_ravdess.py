import numpy as np
import pytest

from ser_models.data.corpora import ravdess
from ser_models.data.audio import load_audio
from ser_models.data.cache import extract
from ser_models.data.corpus import load_corpus
from ser_models.data.features import EXTRACTORS

from .fixtures.audio import write


@pytest.fixture
def small_ravdess(tmp_path):
    """Two actors per fold group, neutral/calm/happy/angry, in every format users have."""
    root = tmp_path / "ravdess"
    for actor in (1, 2, 6, 7, 11, 12, 16, 17, 21, 22):
        for emotion in ("01", "02", "03", "05"):
            write(root / f"Actor_{actor:02d}" / f"03-01-{emotion}-01-01-01-{actor:02d}.flac")
    write(root / "Actor_01" / "03-01-04-02-02-01-01.wav", sample_rate=48_000, channels=2)  # stereo 48 kHz original
    write(root / "Actor_02" / "03-01-04-01-01-01-02.wav", fmt="AIFF")                    # AIFF named .wav
    write(root / "Actor_02" / "03-02-04-01-01-01-02.wav")                                # song: not speech
    (root / "Actor_02" / "notes.txt").write_text("not audio")
    return root


def test_parse_names_and_labels(small_ravdess):
    table = load_corpus("ravdess", small_ravdess, "8").table
    assert len(table) == 42  # 10 actors x 4 + the two extra speech files; the song file is ignored
    row = table.set_index("utt_id").loc["03-01-04-01-01-01-02"]
    assert (row["emotion"], row["speaker"], row["gender"]) == ("sad", "Actor_02", "F")
    assert row["text"] == "Dogs are sitting by the door" or row["text"] == "Kids are talking by the door"
    assert table.set_index("utt_id").loc["03-01-04-02-02-01-01", "sample_rate"] == 48_000
    assert set(table.loc[table["speaker"] == "Actor_01", "gender"]) == {"M"}


def test_four_class_map_drops_calm(small_ravdess):
    corpus = load_corpus("ravdess", small_ravdess)
    assert corpus.classes == ["angry", "happy", "neutral", "sad"]
    assert "calm" not in set(corpus.task["label"])
    assert len(corpus.task) == 10 * 3 + 2


def test_actor_folds_are_disjoint(small_ravdess):
    corpus = load_corpus("ravdess", small_ravdess)
    folds = corpus.folds("actors-5")
    assert [f.test_speakers for f in folds][0] == ("Actor_01", "Actor_02")
    for fold in folds:
        speakers = corpus.task.set_index("utt_id")["speaker"]
        assert not set(speakers[list(fold.test)]) & set(speakers[list(fold.train) + list(fold.validation)])


def test_48k_stereo_and_aiff_decode_to_16k_mono(small_ravdess):
    stereo = load_audio(small_ravdess / "Actor_01" / "03-01-04-02-02-01-01.wav")
    aiff = load_audio(small_ravdess / "Actor_02" / "03-01-04-01-01-01-02.wav")
    assert stereo.ndim == 1 and len(stereo) == 16_000
    assert aiff.ndim == 1 and len(aiff) == 16_000


def test_wrong_root_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="Actor_01"):
        ravdess.read(tmp_path)


# ---- the real corpus (skipped when ../shared/data is absent) ----

@pytest.fixture(scope="module")
def real_ravdess(data_dir):
    root = data_dir / "ravdess16k"
    if not root.exists():
        pytest.skip("ravdess16k not present")
    return root


@pytest.mark.corpus
def test_real_ravdess_counts_and_folds(real_ravdess):
    everything = load_corpus("ravdess", real_ravdess, "8")
    assert len(everything.table) == 1440
    corpus = load_corpus("ravdess", real_ravdess)
    assert len(corpus.task) == 672
    assert corpus.task["label"].value_counts().to_dict() == {"happy": 192, "sad": 192, "angry": 192, "neutral": 96}
    folds = corpus.folds()
    assert len(folds) == 5
    tested = [s for fold in folds for s in fold.test_speakers]
    assert sorted(tested) == sorted(set(tested)) and len(tested) == 24


@pytest.mark.corpus
def test_real_ravdess_every_extractor_on_every_file(real_ravdess, tmp_path_factory):
    table = load_corpus("ravdess", real_ravdess, "8").task
    names = sorted(EXTRACTORS) + ["word_spans"]
    report = extract(table, names, tmp_path_factory.mktemp("ravcache"), progress=False)
    assert report.quarantine.empty
    for name in names:
        assert len(report.stores[name]) == 1440, name
    fbank = report.stores["fbank40"][table["utt_id"].iloc[0]]
    assert fbank.shape[1] == 40 and np.isfinite(fbank).all()
    assert report.stores["mel512_fixed"][table["utt_id"].iloc[0]].shape == (230, 128)


@pytest.mark.corpus
def test_48k_originals_match_16k_twins(data_dir, real_ravdess):
    originals = sorted((data_dir / "ravdess48k_sample" / "Actor_01").glob("*.wav"))
    if not originals:
        pytest.skip("no 48 kHz originals")
    assert len(originals) == 6
    import soundfile as sf
    assert sum(sf.info(str(p)).channels == 2 for p in originals) == 2
    for original in originals:
        twin = real_ravdess / "Actor_01" / f"{original.stem}.flac"
        wave48, wave16 = load_audio(original), load_audio(twin)
        assert abs(len(wave48) - len(wave16)) <= 1
        for name in ("fbank40", "mfcc39", "mel512", "mel1024", "spec257", "waveform_10s", "mel512_fixed"):
            extractor = EXTRACTORS[name]
            assert extractor(wave48).shape == extractor(wave16[: len(wave48)]).shape, (original.name, name)
        # same signal, two resamplers: the waveforms agree closely
        n = min(len(wave48), len(wave16))
        assert np.corrcoef(wave48[:n], wave16[:n])[0, 1] > 0.95
