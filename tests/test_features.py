import numpy as np
import pytest
import torch

from ser_models.data.features import EXTRACTORS, KaldiFbank, LogMel, LogSpectrogram, Mfcc39, Waveform

SR = 16_000


def sine(freq=1000.0, seconds=1.0, amplitude=0.5):
    t = np.arange(int(SR * seconds)) / SR
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("name, shape", [
    ("waveform", (16_000,)), ("waveform_10s", (160_000,)), ("fbank40", (98, 40)), ("mfcc39", (98, 39)),
    ("mel512", (63, 128)), ("mel1024", (32, 256)), ("mel512_fixed", (230, 128)), ("mel1024_fixed", (120, 256)),
    ("spec257", (101, 257)),
])
def test_shapes_for_one_second(name, shape):
    features = EXTRACTORS[name](sine())
    assert tuple(features.shape) == shape
    assert torch.isfinite(features).all()


def test_fixed_length_waveform_crops_and_pads():
    long, short = Waveform(fixed_samples=8000)(sine(seconds=2)), Waveform(fixed_samples=24000)(sine())
    assert long.shape == (8000,) and short.shape == (24000,)
    assert torch.all(short[16000:] == 0) and torch.allclose(long, torch.from_numpy(sine()[:8000]))


def test_fbank_caps_frames_at_30_seconds():
    assert KaldiFbank()(np.zeros(SR * 31, np.float32) + 0.01).shape == (3000, 40)


def test_log_mel_matches_librosa_reference():
    librosa = pytest.importorskip("librosa")
    rng = np.random.default_rng(0)
    wave = (sine(440) + 0.05 * rng.standard_normal(SR)).astype(np.float32)
    for n_fft in (512, 1024):
        ours = LogMel(n_fft)(wave).numpy().T
        power = librosa.feature.melspectrogram(y=wave.astype(np.float64) * 32768, sr=SR, n_fft=n_fft,
                                               hop_length=n_fft // 2, n_mels=n_fft // 4,
                                               pad_mode="reflect")  # the authors' librosa; >=0.10 pads zeros
        reference = 10 * np.log10(power + 1e-10)
        assert ours.shape == reference.shape
        assert np.abs(ours - reference).max() < 0.05  # dB


def test_mfcc_energy_is_htk_raw_log_energy_and_deltas_follow():
    wave = sine(300, amplitude=0.2)
    features = Mfcc39()(wave).numpy()
    frames = np.lib.stride_tricks.sliding_window_view(wave.astype(np.float64) * 32768, 400)[::160][:98]
    frames = frames - frames.mean(axis=1, keepdims=True)  # Kaldi removes the DC offset before measuring energy
    assert np.allclose(features[:, 12], np.log((frames ** 2).sum(axis=1)), atol=1e-3)
    assert np.abs(features[20:70, 13:26]).max() < 0.1 * np.abs(features[20:70, :13]).max()  # steady tone: small deltas


def test_spectrogram_peak_at_the_tone():
    features = LogSpectrogram()(sine(1000)).numpy()
    assert features.shape[1] == 257
    assert np.bincount(features.argmax(axis=1)).argmax() == round(1000 / (SR / 512))


def test_extractors_run_on_a_torch_tensor():
    wave = torch.from_numpy(sine())
    for name, extractor in EXTRACTORS.items():
        assert extractor(wave).dtype == torch.float32, name
