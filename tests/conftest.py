import os
from pathlib import Path

import pytest

from ser_models.data.synthetic import SyntheticConfig

REPO = Path(__file__).resolve().parents[1]
SMALL_SYNTHETIC = SyntheticConfig(sessions=5, dialogs_per_session=2, turns_per_dialog=8, seed=3)


def shared_data_dir() -> Path | None:
    """SER_DATA_DIR, else ../shared/data beside the checkout; None when neither exists."""
    candidate = Path(os.environ.get("SER_DATA_DIR", REPO.parent / "shared" / "data"))
    return candidate if candidate.is_dir() else None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    found = shared_data_dir()
    if found is None:
        pytest.skip("real corpora not found: set SER_DATA_DIR to the folder holding ravdess16k/")
    return found


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    from ser_models.data.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic")
    generate(root, SMALL_SYNTHETIC)
    return root


@pytest.fixture(scope="session")
def synthetic_corpus(synthetic_root):
    from ser_models.data.corpus import load_corpus

    return load_corpus("synthetic", synthetic_root, **SMALL_SYNTHETIC.__dict__)


@pytest.fixture(scope="session")
def grid_sweep(tmp_path_factory, synthetic_root):
    """One real grid sweep (2 cells x 2 folds) shared by the sweep and results tests."""
    from .sweeps import run_sweep, write_sweep

    tmp_path = tmp_path_factory.mktemp("grid")
    path = write_sweep(tmp_path, synthetic_root, models={"lstm_attn_text": ["full"], "fg_cme": ["no_excite"]})
    return tmp_path, run_sweep(path)
