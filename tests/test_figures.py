"""The report's figures fit a two-column paper when the study is large: many cells with long names, 8 classes,
24 speakers. Layout is measured by matplotlib's own renderer (figures.layout_problems): no text box meets
another, no text under 8 pt, no figure wider than the page."""
import numpy as np
import pandas as pd
import pytest

from orchestration.results import figures

CELLS = [("fg_cme", "full"), ("fg_cme", "no_excite_acoustic"), ("fg_cme", "no_excite_semantic"),
         ("fg_cme", "paper_excitation"), ("ds_lstm", "two_lstms_mfcc"), ("ds_lstm", "lstm_mel512_mfcc"),
         ("cma", "variable_length"), ("egemaps_svm", "full"), ("lstm_attn_audio", "full")]
CLASSES8 = ["angry", "calm", "disgust", "fearful", "happy", "neutral", "sad", "surprised"]


@pytest.fixture(scope="module")
def study():
    """A study shaped like the committed RAVDESS ones, larger: 9 cells x 5 folds x 3 seeds, 8 classes."""
    rng = np.random.default_rng(0)
    folds, epochs, predictions = [], [], []
    for (model, ablation), fold, seed in ((c, f, s) for c in CELLS for f in range(5) for s in range(3)):
        trial = f"{model}-{ablation}-{fold}-{seed}"
        confusion = rng.integers(0, 40, (8, 8)) + np.eye(8, dtype=int) * 60
        folds.append({"trial_id": trial, "model": model, "ablation": ablation, "fold": fold, "seed": seed,
                      "status": "finished", "hparams": "{}", "test_ua": rng.uniform(0.4, 0.8), "classes": CLASSES8,
                      "test_confusion": confusion.tolist(), "selected_epoch": int(rng.integers(0, 30))})
        epochs += [{"trial_id": trial, "model": model, "ablation": ablation, "fold": fold, "epoch": e,
                    "val_ua": rng.uniform(0.3, 0.8), "train_loss": 2.0 / (1 + e)} for e in range(30)]
        predictions += [{"model": model, "ablation": ablation, "speaker": f"Actor_{s:02d}",
                         "label": CLASSES8[k % 8], "predicted": CLASSES8[(k * 7 + s) % 8]}
                        for s in range(fold * 5 + 1, fold * 5 + 6) for k in range(6)]
    return pd.DataFrame(folds), pd.DataFrame(epochs), pd.DataFrame(predictions)


def drawn(study):
    folds, epochs, predictions = study
    comparison = pd.DataFrame([{"model": m, "ablation": a, "ours_UA": 0.6, "ours_UA_std": 0.05,
                                "test_oracle_UA": 0.65, "paper_UA": 0.7} for m, a in CELLS[:5]])
    matrix = pd.DataFrame([{"model": m, "ablation": a, "train_corpus": train, "test_corpus": test, "mean": 0.5}
                           for m, a in CELLS[:5] for train in ("ravdess", "iemocap")
                           for test in ("ravdess", "iemocap", "msp-podcast")])
    return {"fold_bars": figures.fold_bars(folds), "intervals": figures.interval_bars(folds),
            "confusion": figures.confusion_matrices(folds), "learning_curves": figures.learning_curves(folds, epochs),
            "speakers": figures.speaker_accuracy(predictions), "published": figures.published_bars(comparison),
            "cross_corpus": figures.cross_corpus(matrix)}


def test_every_figure_of_a_large_study_fits_the_page_without_collisions(study, tmp_path):
    for name, figure in drawn(study).items():
        assert figures.save(figure, tmp_path / name) == [], name
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000 and (tmp_path / f"{name}.svg").exists()


def test_the_checker_finds_what_a_reader_would_trip_over():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 2))
    ax.set_xticks(range(3), ["a long label that runs into", "its neighbour on the axis", "x"], fontsize=6)
    ax.set_xlim(0, 30)          # three ticks a tenth of an inch apart
    problems = figures.layout_problems(fig)
    plt.close(fig)
    assert any("overlaps" in p for p in problems) and any("< 8" in p for p in problems)
    assert any("wide, more than the page" in p for p in problems)


def test_wrapping_breaks_names_where_a_reader_would():
    assert figures.wrap_label("fg_cme / no_excite_semantic", 12) == "fg_cme /\nno_excite_\nsemantic"
    assert figures.wrap_label("fold 3", 12) == "fold 3"
