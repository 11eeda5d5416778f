"""Self-supervised encoders through the real loading code, on tiny random checkpoints written by save_pretrained
(no weights can be downloaded here): every family, the cache key, the hub cache offline, errors, a whole sweep."""
import os
import shutil
import subprocess

import numpy as np
import pytest

pytest.importorskip("transformers")

from .conftest import REPO  # noqa: E402
from .sweeps import run_sweep, table, write_sweep  # noqa: E402
from .tiny_encoders import save_tiny  # noqa: E402


@pytest.fixture(scope="session")
def tiny_wavlm(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("wavlm"), "wavlm")


def tone(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16_000)) / 16_000
    return (0.3 * np.sin(2 * np.pi * 180 * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.mark.parametrize("family", ["wav2vec2", "hubert", "wavlm", "whisper"])
def test_every_family_loads_offline_from_a_folder_and_gives_one_row_per_layer(tmp_path, family, monkeypatch):
    from ser_models.data.encoders import encoder_feature

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = save_tiny(tmp_path / family, family)
    mean = encoder_feature(str(folder))
    both = encoder_feature(str(folder), pooling="mean_std")
    out = mean(tone(2.0))
    assert tuple(out.shape) == mean.shape == (3, 32) and both.shape == (3, 64)     # CNN/embedding + 2 layers
    assert np.isfinite(out.numpy()).all() and out.std() > 0
    np.testing.assert_allclose(both(tone(2.0))[:, :32].numpy(), out.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(mean(tone(2.0)).numpy(), out.numpy())          # eval mode: no dropout
    assert tuple(mean(tone(31.0)).shape) == (3, 32)                               # past one 30 s window


def test_windows_pool_like_one_pass_up_to_the_frames_at_their_edges(tiny_wavlm):
    from ser_models.data.encoders import encoder_feature

    wave = tone(12.0)
    whole = encoder_feature(str(tiny_wavlm), chunk_seconds=30)(wave).numpy()
    windows = encoder_feature(str(tiny_wavlm), chunk_seconds=4)(wave).numpy()
    assert np.abs(whole - windows).max() < 0.1 * np.abs(whole).max()
    assert not np.array_equal(whole, windows)


def test_the_cache_key_follows_the_weights_not_the_name(tmp_path, tiny_wavlm):
    from ser_models.data.cache import feature_key
    from ser_models.data.encoders import encoder_feature

    other = shutil.copytree(tiny_wavlm, tmp_path / "same-name")
    key = lambda folder: feature_key("ssl_layers", "corpus", {"ssl_layers": encoder_feature(str(folder))})  # noqa
    assert key(tiny_wavlm) == key(other)          # where the checkpoint lies is not part of the key
    first = key(other)
    save_tiny(other, "wavlm", seed=1)              # other weights saved over the same folder
    assert key(other) != first
    assert feature_key("ssl_layers", "corpus", {"ssl_layers": encoder_feature(str(tiny_wavlm), pooling="mean_std")}) \
        != key(tiny_wavlm)


def hub_cache(root, repo: str, snapshots: dict[str, object], main: str):
    """Hugging Face's hub cache layout, filled by hand: what `hf download` leaves on a machine."""
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(main)
    for commit, source in snapshots.items():
        shutil.copytree(source, folder / "snapshots" / commit)
    return root


def test_a_hub_id_resolves_offline_in_the_hub_cache_and_the_revision_changes_the_key(tmp_path, tiny_wavlm):
    import json
    import sys

    second = save_tiny(tmp_path / "second", "wavlm", seed=1)
    commits = {"a" * 40: tiny_wavlm, "b" * 40: second}
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "HF_HUB_CACHE": str(hub_cache(tmp_path / "hub", "lab/tiny-wavlm", commits, "a" * 40))}
    program = ("import json, sys; from ser_models.data.cache import feature_key; "
               "from ser_models.data.encoders import encoder_feature; "
               "f = encoder_feature('lab/tiny-wavlm', revision=sys.argv[1]); "
               "print(json.dumps([f.folder, feature_key('ssl_layers', 'c', {'ssl_layers': f})]))")
    found = {}
    for revision in ("main", "b" * 40):
        done = subprocess.run([sys.executable, "-c", program, revision], capture_output=True, text=True, env=env,
                              timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        found[revision] = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["main"][0].endswith("a" * 40) and found["b" * 40][0].endswith("b" * 40)
    assert found["main"][1] != found["b" * 40][1]


def test_a_missing_model_is_exit_2_with_the_download_command(tmp_path, synthetic_root):
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty-hub")}
    for model, expected in [("lab/not-here", "hf download lab/not-here --revision v2 --local-dir"),
                            (str(tmp_path / "nowhere"), "no config.json in")]:
        path = write_sweep(tmp_path, synthetic_root, models={"ssl_probe": ["full"]},
                           encoder={"model": model, "revision": "v2"})
        done = subprocess.run([sys.executable, "-m", "orchestration.cli", "check", str(path)], capture_output=True,
                              text=True, env=env, timeout=300, cwd=REPO)
        assert done.returncode == 2 and expected in done.stderr, done.stderr[-2000:]
        assert "Traceback" not in done.stderr


@pytest.mark.parametrize("sections, message", [
    ({"models": {"ssl_probe": ["full"]}}, "ssl_probe/full reads the ssl_layers feature, which the encoder: "
                                          "section sets up"),
    ({"models": {"lstm_attn_text": ["full"]}, "encoder": {"model": "x"}}, "encoder: is set but no model reads"),
    ({"models": {"ssl_probe": ["full"]}, "encoder": {"modle": "x"}}, "encoder.modle: unknown key (did you mean "
                                                                     "'model'?)"),
    ({"models": {"ssl_probe": ["full"]}, "encoder": {"model": "x", "pooling": "max"}}, "encoder.pooling: 'max' "
                                                                                       "is not one of"),
    ({"models": {"ssl_asp": ["full"]}, "encoder": {"model": "x"}}, "ssl_asp/full reads ssl_frames, the frame-level "
                                                                   "outputs of the layers that encoder.frame_layers"),
    ({"models": {"ssl_probe": ["full"]}, "encoder": {"model": "x", "frame_layers": [1]}},
     "encoder.frame_layers is set but no model reads ssl_frames"),
])
def test_encoder_section_mistakes_are_named(sections, message):
    from orchestration.config.sweep_file import SweepError, parse_sweep
    from orchestration.config.checks import validate
    from ser_models.data.corpus import load_corpus

    with pytest.raises(SweepError) as caught:
        sweep = parse_sweep({"name": "t", "corpus": "synthetic", **sections}, "t.yaml")
        validate(sweep, load_corpus("synthetic", None))
    assert message in str(caught.value)


def test_a_sweep_of_every_probe_learns_the_synthetic_classes_then_resumes_from_the_cache(tmp_path, synthetic_root,
                                                                                          tiny_wavlm):
    path = write_sweep(tmp_path, synthetic_root, models={"ssl_probe": ["full", "mlp", "last_layer"]},
                       encoder={"model": str(tiny_wavlm), "pooling": "mean_std"}, fold_indices=[0, 1],
                       train={"epochs": 40, "batch_size": 16, "lr": 3e-3, "early_stop_patience": 0})
    done = run_sweep(path, env={"HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "features ['ssl_layers'] ready" in done.stdout
    folds = table(tmp_path)
    assert sorted(set(folds["ablation"])) == ["full", "last_layer", "mlp"] and set(folds["status"]) == {"finished"}
    assert folds["test_ua"].mean() > 0.45, folds[["ablation", "fold", "test_ua"]]       # chance: 0.25
    cache = list((tmp_path / "cache" / "ssl_layers").glob("*/meta.json"))
    assert len(cache) == 1
    again = run_sweep(path, env={"HF_HUB_OFFLINE": "1"})
    assert again.returncode == 0 and "features ['ssl_layers'] ready" in again.stdout
    assert list((tmp_path / "cache" / "ssl_layers").glob("*/meta.json")) == cache


def test_frame_layers_are_the_chosen_layers_frames_whose_mean_is_the_pooled_feature(tiny_wavlm):
    from ser_models.data.encoders import EncoderError, encoder_features

    features = encoder_features(str(tiny_wavlm), frame_layers=[1, -1])
    wave = tone(2.5)
    frames, pooled = features["ssl_frames"](wave).numpy(), features["ssl_layers"](wave).numpy()
    assert frames.shape == (frames.shape[0], 2, 32) and 120 <= frames.shape[0] <= 125    # 50 frames per second
    assert np.allclose(frames.mean(0), pooled[[1, 2]], atol=1e-5)
    with pytest.raises(EncoderError, match=r"encoder.frame_layers \[5\]: .* has layers 0..2"):
        encoder_features(str(tiny_wavlm), frame_layers=[5])


def test_attentive_statistics_pooling_over_frames_learns_the_synthetic_classes(tmp_path, synthetic_root, tiny_wavlm):
    path = write_sweep(tmp_path, synthetic_root, models={"ssl_asp": ["full", "mean_pool"]},
                       encoder={"model": str(tiny_wavlm), "frame_layers": [1, 2]}, fold_indices=[0],
                       train={"epochs": 30, "batch_size": 16, "lr": 3e-3, "early_stop_patience": 0})
    done = run_sweep(path, env={"HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "features ['ssl_frames'] ready" in done.stdout
    folds = table(tmp_path)
    assert sorted(set(folds["ablation"])) == ["full", "mean_pool"] and set(folds["status"]) == {"finished"}
    # chance: 0.25; a random 2-layer encoder's frames carry less than its pooled mean_std of every layer
    assert folds["test_ua"].min() > 0.4, folds[["ablation", "fold", "test_ua"]]


def test_one_cell_per_layer_draws_the_curve_and_each_fold_takes_its_layer_on_validation(tmp_path, synthetic_root,
                                                                                        tiny_wavlm):
    from orchestration.config.sweep_file import SweepError, parse_sweep
    from orchestration.config.checks import validate
    from orchestration.results.per_layer import best_layers, layer_rows

    layers = [f"layer_{k}" for k in range(3)]
    path = write_sweep(tmp_path, synthetic_root, models={"ssl_probe": layers, "ssl_svm": layers},
                       encoder={"model": str(tiny_wavlm)}, fold_indices=[0, 1],
                       train={"epochs": 8, "batch_size": 16, "lr": 3e-3, "early_stop_patience": 0})
    done = run_sweep(path, env={"HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    folds = table(tmp_path)
    rows = layer_rows(folds)
    assert len(rows) == 12 and sorted(set(rows["layer"])) == [0, 1, 2]
    chosen = best_layers(rows)
    for row in chosen.itertuples():       # each fold's layer is its best on validation, whatever test says
        same = rows[(rows["model"] == row.model) & (rows["fold"] == row.fold) & (rows["seed"] == row.seed)]
        assert row.val_ua == same["val_ua"].max() and row.layer == same.loc[same["val_ua"].idxmax(), "layer"]
    shuffled = rows.assign(test_ua=rows["test_ua"].sample(frac=1, random_state=0).to_numpy())
    assert best_layers(shuffled)["layer"].tolist() == chosen["layer"].tolist()
    sweep_dir = tmp_path / "results" / "t"
    report = (sweep_dir / "report.md").read_text()
    assert "## Per encoder layer" in report and "figures/per_layer.png" in report
    assert (sweep_dir / "figures" / "per_layer.svg").is_file()
    assert "layers chosen" in report

    beyond = parse_sweep({"name": "t", "corpus": "synthetic", "models": {"ssl_svm": ["layer_3"]},
                          "encoder": {"model": str(tiny_wavlm)}}, "t.yaml")
    with pytest.raises(SweepError, match="ssl_svm: layer_3 probes layer 3, and the encoder has layers 0..2"):
        validate(beyond)


@pytest.fixture
def batch_on_cpu(monkeypatch):
    """Batching by length runs on GPUs only (on a CPU it costs more than it gains): here, on the CPU too."""
    from ser_models.data import encoders

    monkeypatch.setattr(encoders, "BATCH_DEVICES", {"cuda", "cpu"})


def test_batching_by_length_equals_one_at_a_time_where_padding_cannot_reach(tmp_path, tiny_wavlm, batch_on_cpu):
    """Whisper and a layer-norm front end batch (their outputs equal those of each utterance alone, up to float
    rounding); a group-norm front end, whose outputs padding changes, goes one at a time and keeps its key."""
    from ser_models.data.encoders import batches_exactly, encoder_features

    from .tiny_encoders import finetunable

    waves = [tone(seconds, seed) for seed, seconds in enumerate([1.0, 2.7, 1.3, 0.6, 2.1])]
    whisper = save_tiny(tmp_path / "whisper", "whisper")
    for folder in (finetunable(), whisper, tiny_wavlm):
        one_by_one = encoder_features(str(folder), pooling="mean_std", frame_layers=[1, 2], batch_seconds=0)
        batched = encoder_features(str(folder), pooling="mean_std", frame_layers=[1, 2],
                                   batch_seconds=90 if folder == whisper else 5)     # 3 windows; or 2-3 utterances
        for name, feature in batched.items():
            alone = [one_by_one[name](wave) for wave in waves]
            for single, together in zip(alone, feature.many(waves)):
                assert single.shape == together.shape
                assert np.allclose(single, together, atol=1e-5), (folder, name)
            assert ("batch_seconds" in feature.identity()) == (folder != tiny_wavlm)
            assert one_by_one[name].identity() == {k: v for k, v in feature.identity().items() if k != "batch_seconds"}
    assert batches_exactly(encoder_features(str(whisper), batch_seconds=30)["ssl_layers"])
    assert not batches_exactly(encoder_features(str(tiny_wavlm), batch_seconds=60)["ssl_layers"])


def test_the_data_plane_batches_the_chunk_and_gives_the_same_features(tmp_path, synthetic_corpus, batch_on_cpu,
                                                                     monkeypatch):
    from ser_models.data.cache import extract
    from ser_models.data.encoders import encoder_features

    from .tiny_encoders import finetunable

    from ser_models.data import encoders

    calls = []
    monkeypatch.setattr(encoders, "batch_states", lambda *args, batch=encoders.batch_states: calls.append(
        len(args[3])) or batch(*args))
    table = synthetic_corpus.task.head(10).copy()
    stores = {}
    for seconds in (0, 20):
        configured = encoder_features(finetunable(), batch_seconds=seconds)
        stores[seconds] = extract(table, ["ssl_layers"], tmp_path / "cache", workers=1, progress=False,
                                  chunk=10, configured=configured).stores["ssl_layers"]
    assert sorted(stores[0].utt_ids) == sorted(stores[20].utt_ids) == sorted(table["utt_id"])
    for utt_id in table["utt_id"]:
        assert np.allclose(stores[0][utt_id], stores[20][utt_id], atol=1e-5)
    assert len(list((tmp_path / "cache" / "ssl_layers").glob("*/meta.json"))) == 2     # two keys: two entries
    assert sum(calls) == 10 and max(calls) > 1, calls                # the batched run encoded several per call


def test_ray_data_gives_each_encoder_actor_a_gpu_where_the_cluster_has_them(tmp_path, synthetic_corpus, tiny_wavlm):
    """On a cluster with GPUs an encoder's features run one actor per GPU, each holding it (here a GPU that Ray
    counts but this machine lacks: the encoder then runs on the CPU, as it would without one); other features
    keep one actor per CPU and hold none. The numbers are the threads path's."""
    import ray

    from ser_models.data.cache import extract
    from ser_models.data.encoders import encoder_features

    table = synthetic_corpus.task.head(12).copy()
    configured = encoder_features(str(tiny_wavlm))
    threads = extract(table, ["ssl_layers"], tmp_path / "threads", progress=False, configured=configured)
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, logging_level="ERROR")
    try:
        encoded = extract(table, ["ssl_layers"], tmp_path / "ray", progress=False, engine="ray",
                          configured=configured)
        fbank = extract(table, ["fbank40"], tmp_path / "ray", progress=False, engine="ray")
    finally:
        ray.shutdown()
    assert len(encoded.gpus) == 1 and encoded.gpus.pop().endswith(":0") and fbank.gpus == set()
    for utt_id in table["utt_id"]:
        assert np.allclose(threads.stores["ssl_layers"][utt_id], encoded.stores["ssl_layers"][utt_id], atol=1e-6)
