"""ssl_finetune: the sweep's encoder trained inside the model, through the real loading code, on a tiny random
checkpoint written by save_pretrained: which layers train and at which rate, a sweep that learns, its checks and
warnings, and (slow) the same cell under 2 DDP workers."""
import pytest
import torch

pytest.importorskip("transformers")

from .model_inputs import batch_for  # noqa: E402
from .sweeps import run_sweep, table, write_sweep  # noqa: E402
from .tiny_encoders import finetunable  # noqa: E402


def changed_after_one_step(ablation: str) -> dict[str, bool]:
    """Which of the model's parameters one Adam step on a batch changes, by name."""
    from ser_models.registry import build_model

    torch.manual_seed(0)
    model = build_model("ssl_finetune", ablation, encoder=finetunable())
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.Adam(model.parameter_groups(1e-3), lr=1e-3)
    batch = batch_for(("waveform",), batch=4)
    loss, _ = model.training_loss(batch, batch["labels"])
    loss.backward()
    optimizer.step()
    return {name: not torch.equal(p, before[name]) for name, p in model.named_parameters()}


def test_the_top_k_layers_train_and_the_cnn_never_does():
    top = changed_after_one_step("unfrozen_layers_1")          # the tiny encoder has 2 transformer layers
    assert any(top[n] for n in top if n.startswith("encoder.encoder.layers.1."))
    assert not any(top[n] for n in top if n.startswith("encoder.encoder.layers.0."))
    assert top["layer_logits"] and top["classify.weight"]
    every = changed_after_one_step("all")
    assert any(every[n] for n in every if n.startswith("encoder.encoder.layers.0."))
    assert every["encoder.feature_projection.projection.weight"]
    for changed in (top, every, changed_after_one_step("frozen")):
        assert not any(changed[n] for n in changed if n.startswith("encoder.feature_extractor."))
    frozen = changed_after_one_step("frozen")
    assert not any(frozen[n] for n in frozen if n.startswith("encoder."))


def test_a_frozen_encoder_keeps_no_graph_in_training():
    """Frozen layers must not hold autograd's graph: HF's front end marks its output as needing gradients in
    training unless it is in eval mode (a frozen step's backward took 5.5 s at base size)."""
    from ser_models.registry import build_model

    model = build_model("ssl_finetune", "frozen", encoder=finetunable()).train()
    batch = batch_for(("waveform",), batch=2)
    states, _ = model.hidden_states(batch["waveform"], batch["waveform_lengths"])
    assert not states.requires_grad


def test_the_encoder_trains_at_its_scaled_rate_and_a_refit_replays_it():
    from ser_models.registry import build_model

    model = build_model("ssl_finetune", encoder=finetunable(), encoder_lr_scale=0.1)
    head, encoder = model.parameter_groups(1e-3)
    assert head["lr"] == 1e-3 and encoder["lr"] == pytest.approx(1e-4) and encoder["lr_scale"] == 0.1
    assert sum(p.numel() for p in encoder["params"]) == sum(
        p.numel() for layer in model.encoder.encoder.layers[-2:] for p in layer.parameters())
    assert len(build_model("ssl_finetune", "frozen", encoder=finetunable()).parameter_groups(1e-3)) == 1
    with pytest.raises(ValueError, match="unfrozen_layers 3: the encoder has 2 transformer layers"):
        build_model("ssl_finetune", "unfrozen_layers_3", encoder=finetunable())
    with pytest.raises(ValueError, match="run it in a sweep with an encoder: section"):
        build_model("ssl_finetune")


def test_a_sweep_fine_tunes_learns_the_synthetic_classes_and_warns_of_its_cpu_cost(tmp_path, synthetic_root):
    path = write_sweep(tmp_path, synthetic_root, models={"ssl_finetune": ["full", "frozen"]},
                       encoder={"model": finetunable()}, fold_indices=[0],
                       train={"epochs": 12, "batch_size": 8, "lr": 3e-3, "early_stop_patience": 0})
    done = run_sweep(path, env={"HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "[sweep] warning: ssl_finetune/full, ssl_finetune/frozen run " in done.stdout
    assert "inside the model without a GPU" in done.stdout
    folds = table(tmp_path)
    assert sorted(folds["ablation"]) == ["frozen", "full"] and set(folds["status"]) == {"finished"}
    assert folds["test_ua"].min() > 0.4, folds[["ablation", "test_ua"]]      # chance: 0.25
    assert not (tmp_path / "cache" / "ssl_layers").exists()                  # it reads the waveform, not features


@pytest.mark.parametrize("sweep, message", [
    ({"models": {"ssl_finetune": ["full"]}}, "ssl_finetune/full fine-tunes the encoder: section's checkpoint, and "
                                             "there is none"),
    ({"models": {"ssl_finetune": ["unfrozen_layers_5"]}, "encoder": "TINY"},
     "unfrozen_layers_5 trains the top 5 layers, and the encoder has 2 transformer layers"),
])
def test_fine_tuning_mistakes_are_named(sweep, message):
    from orchestration.config.checks import validate
    from orchestration.config.sweep_file import SweepError, parse_sweep

    if sweep.get("encoder") == "TINY":
        sweep = {**sweep, "encoder": {"model": finetunable()}}
    with pytest.raises(SweepError) as caught:
        validate(parse_sweep({"name": "t", "corpus": "synthetic", **sweep}, "t.yaml"))
    assert message in str(caught.value)


@pytest.mark.slow
def test_fine_tuning_runs_under_two_ddp_workers(tmp_path, synthetic_root):
    path = write_sweep(tmp_path, synthetic_root, models={"ssl_finetune": ["full"]},
                       encoder={"model": finetunable()}, fold_indices=[0],
                       train={"epochs": 3, "batch_size": 8, "lr": 3e-3},
                       resources={"mode": "ddp", "workers_per_trial": 2, "cpus_per_worker": 1})
    done = run_sweep(path, env={"HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    folds = table(tmp_path)
    assert len(folds) == 1 and folds.loc[0, "status"] == "finished" and folds.loc[0, "world_size"] == 2
    assert folds.loc[0, "test_ua"] > 0.25


@pytest.mark.parametrize("family", ["wav2vec2", "hubert", "wavlm", "whisper"])
def test_every_family_fine_tunes_from_its_folder(tmp_path, family):
    """Each family's checkpoint, through the real loading code: a step trains the head and the top layer, and
    frames past an utterance's audio (Whisper's 30-s padding included) never enter its pooled vector."""
    from ser_models.registry import build_model

    from .tiny_encoders import save_tiny

    torch.manual_seed(0)
    model = build_model("ssl_finetune", "unfrozen_layers_1", encoder=str(save_tiny(tmp_path / family, family)))
    batch = batch_for(("waveform",), batch=3)
    loss, logits = model.training_loss(batch, batch["labels"])
    loss.backward()
    assert logits.shape == (3, 4) and torch.isfinite(loss)
    trained = [name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert "classify.weight" in trained and any(".layers.1." in name for name in trained)
    assert not any(".layers.0." in name for name in trained)
    states, mask = model.eval().hidden_states(batch["waveform"], batch["waveform_lengths"])
    seconds = batch["waveform_lengths"] / 16_000
    assert (mask.sum(1) <= torch.ceil(seconds * 50) + 1).all() and (mask.sum(1) >= torch.floor(seconds * 50) - 1).all()
