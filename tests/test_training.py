import json

import pytest

from orchestration.config.sweep_file import train_for
from orchestration.run.session import LocalSession
from orchestration.run.training import train_loop

from .conftest import SMALL_SYNTHETIC
from .sweeps import prediction_files
from .plugins.emosweep_faults import with_faults


def trial_config(synthetic_root, tmp_path, model="fg_cme", ablation="full", epochs=3, **train):
    return {"model": model, "ablation": ablation, "fold": 0, "seed": 0, "hparams": {},
            "corpus": {"name": "synthetic", "root": str(synthetic_root), **SMALL_SYNTHETIC.__dict__},
            "folds": "sessions", "cache": str(tmp_path / "cache"), "vectors": "glove-6b-50d",
            "predictions_dir": str(tmp_path / "predictions"),
            "train": train_for(model, {"epochs": epochs, "batch_size": 8, "lr": 2e-3, "weight_decay": 0.0,
                                       "select_on": "val_ua", "num_workers": 0, **train})}


def test_loop_reports_selects_on_validation_and_scores_test_once(synthetic_root, tmp_path):
    session = LocalSession(tmp_path / "run")
    final = train_loop(trial_config(synthetic_root, tmp_path), session)
    epochs = [r for r in session.reports if not r["final"]]
    assert [r["epoch"] for r in epochs] == [0, 1, 2]
    assert all("test_wa" not in r for r in epochs)                       # test is never looked at per epoch
    assert not any(k.startswith("oracle_test") for r in epochs for k in r)  # unless test_oracle is asked for
    best = max(epochs, key=lambda r: r["val_ua"])
    assert final["selected_epoch"] == best["epoch"] and final["objective"] == best["val_ua"]
    assert final["selected_val_ua"] == best["val_ua"]
    assert 0 <= final["test_ua"] <= 1 and len(final["test_confusion"]) == 4
    assert sum(map(sum, final["test_confusion"])) == final["n_test"]
    assert (tmp_path / "predictions" / "fg_cme-full-None-f0-s0-50940b78.parquet").exists()   # named by identity
    assert [row["epoch"] for row in final["history"]] == [0, 1, 2]        # every epoch's row rides with the final
    assert [row["val_ua"] for row in final["history"]] == [r["val_ua"] for r in epochs]


def inject_failure(monkeypatch, *specs):
    """The loop, failing where the specs say (tests/plugins/emosweep_faults.py: sweeps' trials get it there)."""
    monkeypatch.setenv("EMOSWEEP_INJECT_FAILURE", json.dumps(list(specs)))
    return with_faults(train_loop)


def test_loop_resumes_from_its_checkpoint(synthetic_root, tmp_path, monkeypatch):
    config = trial_config(synthetic_root, tmp_path, epochs=4)
    failing = inject_failure(monkeypatch, {"epoch": 2, "times": 1, "marker_dir": str(tmp_path / "faults")})
    session = LocalSession(tmp_path / "run")
    with pytest.raises(RuntimeError, match="injected failure"):
        failing(config, session)
    assert [r["epoch"] for r in session.reports] == [0, 1]
    resumed = LocalSession(tmp_path / "run")
    final = train_loop(config, resumed)
    assert [r["epoch"] for r in resumed.reports if not r["final"]] == [2, 3]
    assert final["resumed_from"] == 2
    predictions = prediction_files(tmp_path / "predictions")[0]
    written = predictions.read_bytes()
    predictions.unlink()                                    # lost in a kill, say
    again = LocalSession(tmp_path / "run")
    assert train_loop(config, again) == final               # finished: nothing is trained again ...
    assert [r["final"] for r in again.reports] == [True]    # ... only the outputs are written again, the same
    assert predictions.read_bytes() == written


def test_same_seed_same_result(synthetic_root, tmp_path):
    first = train_loop(trial_config(synthetic_root, tmp_path, model="cnn_lstm", epochs=2),
                       LocalSession(tmp_path / "a"))
    second = train_loop(trial_config(synthetic_root, tmp_path, model="cnn_lstm", epochs=2),
                        LocalSession(tmp_path / "b"))
    assert first["test_confusion"] == second["test_confusion"] and first["objective"] == second["objective"]


def test_a_split_too_large_to_keep_is_read_again_each_epoch_with_the_same_result(synthetic_root, tmp_path,
                                                                                  monkeypatch):
    """Evaluation batches kept in memory would grow a trial with the corpus: past the budget they stream."""
    import orchestration.run.loaders as loaders

    config = trial_config(synthetic_root, tmp_path, model="lstm_attn_audio", epochs=2)
    kept = train_loop(config, LocalSession(tmp_path / "kept"))
    streamed_types = []
    original = loaders.evaluation_batches
    monkeypatch.setattr(loaders, "EVALUATION_KEPT_BYTES", 0)
    monkeypatch.setattr(loaders, "evaluation_batches",
                        lambda *args: streamed_types.append(type(batches := original(*args))) or batches)
    streamed = train_loop(config, LocalSession(tmp_path / "streamed"))
    assert streamed_types == [loaders.DataLoader, loaders.DataLoader]
    assert streamed["test_confusion"] == kept["test_confusion"] and streamed["test_loss"] == kept["test_loss"]
    assert streamed["objective"] == kept["objective"]


def test_a_reused_process_gives_each_trial_the_result_of_a_fresh_one(synthetic_root, tmp_path):
    """Tune reuses trial processes: nothing a trial trains may leak into the next (e.g. shared GloVe rows)."""
    fold_1 = {**trial_config(synthetic_root, tmp_path, epochs=2), "fold": 1}
    first = train_loop(fold_1, LocalSession(tmp_path / "a"))
    train_loop(trial_config(synthetic_root, tmp_path, epochs=2), LocalSession(tmp_path / "b"))  # another fold between
    again = train_loop(fold_1, LocalSession(tmp_path / "c"))
    assert again["test_confusion"] == first["test_confusion"] and again["objective"] == first["objective"]
    assert again["test_loss"] == first["test_loss"]


def test_bf16_autocast_trains_and_fp32_is_the_cpu_default(synthetic_root, tmp_path):
    """The GPU's bf16 path runs on CPU too where the CPU has bf16 kernels (torch.autocast supports bf16 there), and
    is a clear error where it has not; `auto` stays fp32 on CPU."""
    import torch

    from orchestration.run.training import autocast, cpu_bf16_problem

    assert not torch.is_autocast_enabled("cpu")
    with autocast(torch.device("cpu"), "auto"):
        assert not torch.is_autocast_enabled("cpu")
    auto = train_loop(trial_config(synthetic_root, tmp_path, epochs=2), LocalSession(tmp_path / "auto"))
    fp32 = train_loop(trial_config(synthetic_root, tmp_path, epochs=2, precision="fp32"), LocalSession(tmp_path / "f"))
    assert auto["test_confusion"] == fp32["test_confusion"] and auto["test_loss"] == fp32["test_loss"]
    session = LocalSession(tmp_path / "bf16")
    if cpu_bf16_problem():      # e.g. an AVX2 CPU: a clear error naming the key, before the first batch
        with pytest.raises(ValueError, match=r"train.precision: bf16 cannot run on this CPU .*Fix: train.precision"):
            train_loop(trial_config(synthetic_root, tmp_path, epochs=2, precision="bf16"), session)
        pytest.skip(f"bf16 does not run on this CPU ({cpu_bf16_problem()}); its error was checked")
    with autocast(torch.device("cpu"), "bf16"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    bf16 = train_loop(trial_config(synthetic_root, tmp_path, epochs=2, precision="bf16"), session)
    assert bf16["test_loss"] != fp32["test_loss"]  # it really ran in bf16
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in session.reports if not r["final"])
    assert 0 <= bf16["test_ua"] <= 1 and sum(map(sum, bf16["test_confusion"])) == bf16["n_test"]


def test_a_checkpoint_that_would_run_code_is_refused(synthetic_root, tmp_path):
    import torch

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))   # any callable: loading this file would call it

    (tmp_path / "run" / "latest").mkdir(parents=True)
    torch.save({"epoch": 0, "model": {}, "evil": Payload()}, tmp_path / "run" / "latest" / "state.pt")
    with pytest.raises(RuntimeError, match="refused to load a checkpoint holding Python objects.*Fix: delete"):
        train_loop(trial_config(synthetic_root, tmp_path, epochs=1), LocalSession(tmp_path / "run"))
    assert not marker.exists()


def test_a_resumed_trial_is_bit_identical_to_the_uninterrupted_one(synthetic_root, tmp_path, monkeypatch):
    """Model, optimizer and every random stream (dropout draws from torch's) continue from the checkpoint."""
    model = {"model": "cma", "ablation": "text_only"}           # dropout: draws from torch's stream every step
    straight = LocalSession(tmp_path / "a")
    uninterrupted = train_loop(trial_config(synthetic_root, tmp_path, epochs=4, **model), straight)
    config = trial_config(synthetic_root, tmp_path, epochs=4, **model)
    failing = inject_failure(monkeypatch, {"epoch": 2, "times": 1, "marker_dir": str(tmp_path / "faults")})
    with pytest.raises(RuntimeError, match="injected failure"):
        failing(config, LocalSession(tmp_path / "b"))
    resumed = LocalSession(tmp_path / "b")
    final = train_loop(config, resumed)
    assert final["resumed_from"] == 2
    for key in ("test_ua", "test_wa", "test_loss", "objective", "selected_epoch", "test_confusion"):
        assert final[key] == uninterrupted[key], key
    after = [(r["train_loss"], r["val_loss"]) for r in resumed.reports if not r["final"]]
    assert after == [(r["train_loss"], r["val_loss"]) for r in straight.reports if not r["final"]][2:]


def test_a_damaged_checkpoint_restarts_the_trial_with_the_same_result(synthetic_root, tmp_path, capsys):
    """A kill or a full disk can leave state.pt cut short: the trial starts over (seeded) instead of failing."""
    config = trial_config(synthetic_root, tmp_path, epochs=3, model="cma", ablation="text_only")
    straight = train_loop(config, LocalSession(tmp_path / "a"))
    damaged = tmp_path / "b" / "latest" / "state.pt"
    train_loop({**config, "train": {**config["train"], "epochs": 2}}, LocalSession(tmp_path / "b"))
    damaged.write_bytes(damaged.read_bytes()[:1000])
    again_session = LocalSession(tmp_path / "b")
    again = train_loop(config, again_session)
    out = capsys.readouterr().out
    assert f"{damaged}: unreadable checkpoint" in out and "set aside as state.pt.damaged" in out
    session_notes = [r.get("notes") for r in again_session.reports]
    assert session_notes[0] == [line[len("[trial] "):] for line in out.splitlines() if line.startswith("[trial]")]
    assert session_notes[1:] == [None] * (len(session_notes) - 1)          # said once, on the first report
    assert "restarts from epoch 0" in out and "Traceback" not in out
    assert again["resumed_from"] == 0
    assert again["test_confusion"] == straight["test_confusion"] and again["test_loss"] == straight["test_loss"]
    assert (damaged.parent / "state.pt.damaged").stat().st_size == 1000          # kept for a look, not deleted


def test_random_bytes_in_a_checkpoint_are_damage_and_the_previous_checkpoint_is_used(tmp_path, capsys):
    """The audit's case: state.pt overwritten with random bytes of its size is unreadable, not an attack."""
    import os

    import torch

    from orchestration.run.session import earlier_state

    trial = tmp_path / "s" / "experiment" / "run_trial_ab_1_2026-12-04_10-00-00"
    config = {"model": "cma", "ablation": "full", "fold": 0, "seed": 0, "group": "g", "hparams": {}}
    for epoch in (0, 1):
        (trial / f"checkpoint_00000{epoch}").mkdir(parents=True)
        torch.save({"epoch": epoch, "history": []}, trial / f"checkpoint_00000{epoch}" / "state.pt")
    (trial / "params.json").write_text(json.dumps(config))
    newest = trial / "checkpoint_000001" / "state.pt"
    newest.write_bytes(os.urandom(newest.stat().st_size))
    notes = []
    state = earlier_state({**config, "storage_path": str(tmp_path / "s")}, notes)
    assert state["epoch"] == 0
    assert notes[0].startswith(f"{newest}: unreadable checkpoint") and "set aside" in notes[0]
    assert notes[1] == f"continuing from {newest.parent.with_name('checkpoint_000000')}, the newest intact checkpoint"
    assert capsys.readouterr().out.splitlines() == [f"[trial] {note}" for note in notes]
    assert not newest.exists() and newest.with_name("state.pt.damaged").exists()


def test_a_batch_goes_to_the_device_whole_lengths_included():
    """Lengths stay beside what they measure: masks built from them meet the features on one device (an H200
    run failed every masking model while lengths stayed on the CPU)."""
    import torch

    from orchestration.run.loaders import to_device

    batch = {"fbank40": torch.zeros(2, 5, 40), "fbank40_lengths": torch.tensor([5, 3]), "utt_id": ["a", "b"]}
    moved = to_device(batch, torch.device("meta"))
    assert moved["fbank40"].device.type == "meta" and moved["fbank40_lengths"].device.type == "meta"
    assert moved["utt_id"] == ["a", "b"]


def test_a_diverged_trial_fails_naming_the_epoch_and_is_never_finished(synthetic_root, tmp_path):
    """lr .inf once trained to NaN and was recorded finished at chance UA; the loop now stops at the epoch."""
    from orchestration.run.training import Diverged

    session = LocalSession(tmp_path / "run")
    with pytest.raises(Diverged, match=r"epoch 0: the training loss is nan .*Fix: lower train.lr"):
        train_loop(trial_config(synthetic_root, tmp_path, model="lstm_attn_text", epochs=2, lr=float("inf")), session)
    assert not any(r.get("final") for r in session.reports) and not (tmp_path / "predictions").exists()
