import numpy as np
import pytest
import torch

from ser_models.registry import INPUTS, IncompatibleInputs, all_models, build_model, check_corpus_supports, model_inputs

from .model_inputs import INPUT_SHAPES, VOCAB, batch_for, pad_more
from .tiny_encoders import finetunable

PAIRS = [(name, ablation) for name, spec in all_models().items() for ablation in spec.ablations]


def small(name: str) -> dict:
    defaults = all_models()[name].defaults
    return ({"vocab_size": VOCAB} if "vocab_size" in defaults else {}) | (
        {"input_shapes": INPUT_SHAPES} if "input_shapes" in defaults else {}) | (
        {"encoder": finetunable()} if "encoder" in defaults else {})


@pytest.mark.parametrize("name, ablation", PAIRS)
def test_forward_backward_and_padding(name, ablation):
    torch.manual_seed(0)
    model = build_model(name, ablation, **small(name))
    inputs = model_inputs(name, ablation)
    assert set(inputs) <= set(INPUTS)
    batch = batch_for(inputs, batch=3)
    loss, logits = model.training_loss(batch, batch["labels"])
    assert logits.shape == (3, 4) and torch.isfinite(logits).all() and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(g is None or torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad():
        plain, padded = model(batch), model(pad_more(batch))
    assert torch.allclose(plain, padded, atol=1e-4), (plain - padded).abs().max()


def test_unknown_names_are_clear_errors():
    with pytest.raises(KeyError, match="unknown model 'fgcme'.*fg_cme"):
        build_model("fgcme")
    with pytest.raises(KeyError, match="no ablation 'no_excite_both'"):
        build_model("fg_cme", "no_excite_both")
    with pytest.raises(KeyError, match="no option"):
        build_model("cma", hiddden=3)


def test_text_models_rejected_on_a_corpus_without_transcripts():
    from ser_models.data.corpus import Corpus
    from ser_models.data.schema import make_table

    table = make_table([{"utt_id": f"u{i}", "path": f"/data/u{i}.wav", "speaker": "s", "label": "sad",
                         "text": "" if i == 1 else "so sad"} for i in range(3)])
    corpus = Corpus("emodb-no-text", table, ["sad"])
    with pytest.raises(IncompatibleInputs, match=r"needs transcripts.*emodb-no-text.*1 utterance\(s\) without text "
                                                 r"\(e.g. \['/data/u1.wav'\]\)"):
        check_corpus_supports("fg_cme", "full", corpus)
    assert check_corpus_supports("cma", "audio_only", corpus) == ("waveform",)


def test_ds_lstm_parameter_count_matches_the_authors_logs():
    model = build_model("ds_lstm")
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 3_732_296


def test_ds_lstm_losses_are_separate_but_logits_averaged():
    torch.manual_seed(0)
    model = build_model("ds_lstm")
    batch = batch_for(model_inputs("ds_lstm"), batch=4)
    model.eval()
    spectral, mfcc = model.both(batch)
    assert torch.allclose(model(batch), 0.5 * spectral + 0.5 * mfcc)
    loss, _ = model.training_loss(batch, batch["labels"])
    expected = 0.5 * torch.nn.functional.cross_entropy(spectral, batch["labels"]) + \
        0.5 * torch.nn.functional.cross_entropy(mfcc, batch["labels"])
    assert torch.allclose(loss, expected)


def reference_sinc_filters(out_channels=80, kernel=251, sample_rate=16000, min_low=50.0, min_band=50.0):
    """SincConv_fast's filters at initialisation, written out in float64 numpy."""
    mel = np.linspace(2595 * np.log10(1 + 30 / 700), 2595 * np.log10(1 + (sample_rate / 2 - min_low - min_band) / 700),
                      out_channels + 1)
    hz = 700 * (10 ** (mel / 2595) - 1)
    low = min_low + np.abs(hz[:-1])[:, None]
    high = np.clip(low + min_band + np.abs(np.diff(hz))[:, None], min_low, sample_rate / 2)
    band = (high - low)[:, 0]
    n_lin = np.linspace(0, kernel / 2 - 1, int(kernel / 2))
    window = 0.54 - 0.46 * np.cos(2 * np.pi * n_lin / kernel)
    n = 2 * np.pi * np.arange(-(kernel - 1) / 2, 0)[None, :] / sample_rate
    left = (np.sin(high * n) - np.sin(low * n)) / (n / 2) * window
    filters = np.concatenate([left, 2 * band[:, None], left[:, ::-1]], axis=1) / (2 * band[:, None])
    return filters


def test_sincconv_matches_reference_formulation():
    from ser_models.models.sincnet import SincConv

    conv = SincConv()
    expected = reference_sinc_filters()
    actual = conv.filters().detach().double().numpy()[:, 0]
    assert actual.shape == (80, 251)
    assert np.allclose(actual, expected, atol=2e-5)
    assert np.allclose(actual[:, 125], 1.0)  # centre tap normalised to 1
    signal = np.random.default_rng(0).standard_normal(1000)
    output = conv(torch.tensor(signal, dtype=torch.float32)[None, None]).detach().double().numpy()[0]
    expected_output = np.stack([np.correlate(signal, f, mode="valid") for f in expected])
    assert np.allclose(output, expected_output, atol=1e-3)
    # first band: low = 50 + 30 Hz; its frequency response peaks inside the band
    response = np.abs(np.fft.rfft(expected[0], 16000))
    assert 50 <= response.argmax() <= 250


def test_mean_max_pool_is_memory_bounded_and_exact():
    from ser_models.blocks import alignment_mean_max_pool

    frames = torch.randn(2, 50, 8)
    alignment = torch.zeros(2, 3, 50)
    alignment[0, 0, 5:10] = alignment[0, 1, 8:20] = alignment[1, 2, 40:50] = 1
    pooled = alignment_mean_max_pool(frames, alignment, chunk_elements=100)  # forces one word per chunk
    reference_max = (frames.unsqueeze(1) * alignment.unsqueeze(-1) - 1e6 * (1 - alignment.unsqueeze(-1))).amax(2)
    assert torch.allclose(pooled[..., 8:], reference_max)
    assert torch.allclose(pooled[0, 1, :8], frames[0, 8:20].mean(0), atol=1e-5)
    assert torch.all(pooled[0, 2, 8:] == -1e6)  # a word with no frames, as the reference


OVERFIT_OVERRIDES = {"cma": {"fixed_samples": 16_000, "fixed_frames": 100}, "sdl": {"eval_hop_ms": 100}}


@pytest.mark.parametrize("name", sorted(all_models()))
def test_every_model_overfits_a_tiny_batch(name):
    torch.manual_seed(0)
    model = build_model(name, **small(name), **OVERFIT_OVERRIDES.get(name, {}))
    batch = batch_for(model_inputs(name), batch=8, seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for step in range(300):
        optimizer.zero_grad()
        loss, _ = model.training_loss(batch, batch["labels"])
        loss.backward()
        optimizer.step()
        if loss.item() < 0.05:
            break
    assert loss.item() < 0.05, f"{name}: loss {loss.item():.3f} after {step + 1} steps"


def test_masked_batch_norm_counts_only_valid_frames():
    """CMA's variable-length mode: padding must not enter the batch statistics (issue: training recipes)."""
    import torch.nn as nn

    from ser_models.blocks import MaskedBatchNorm1d, lengths_to_mask

    torch.manual_seed(0)
    x = torch.randn(2, 3, 5)
    x[1, :, 2:] = 1e3                                                  # whatever sits in the padding
    mask = lengths_to_mask(torch.tensor([5, 2]), 5)
    masked, reference = MaskedBatchNorm1d(3).train(), nn.BatchNorm1d(3).train()
    out = masked(x, mask)
    expected = reference(torch.cat([x[0], x[1, :, :2]], dim=1).unsqueeze(0))[0]   # the 7 valid frames alone
    assert torch.allclose(torch.cat([out[0], out[1, :, :2]], dim=1), expected, atol=1e-5)
    assert torch.allclose(masked.running_mean, reference.running_mean, atol=1e-6)
    assert torch.allclose(masked.running_var, reference.running_var, atol=1e-6)
    full = torch.ones(2, 5, dtype=torch.bool)                           # every frame valid: plain BatchNorm1d
    plain = nn.BatchNorm1d(3).train()
    assert torch.equal(MaskedBatchNorm1d(3).train()(x, full), plain(x))


def test_model_inputs_are_declared_once_and_each_has_a_source():
    from orchestration.run.task import FEATURE_INPUTS
    from ser_models.data.cache import WORD_SPANS
    from ser_models.data.features import CONFIGURED, EXTRACTORS
    from ser_models.registry import INPUTS, all_models, model_inputs

    assert FEATURE_INPUTS == set(INPUTS) - {"words"}
    assert FEATURE_INPUTS <= set(EXTRACTORS) | {WORD_SPANS} | set(CONFIGURED)
    used = {i for name, spec in all_models().items() for ablation in spec.ablations
            for i in model_inputs(name, ablation)}
    assert used <= set(INPUTS)
