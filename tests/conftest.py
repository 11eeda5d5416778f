import os
import subprocess
from pathlib import Path

import pytest

from ser_models.data.corpora.synthetic import SyntheticConfig

REPO = Path(__file__).resolve().parents[1]
SMALL_SYNTHETIC = SyntheticConfig(sessions=5, dialogs_per_session=2, turns_per_dialog=8, seed=3)
# fault injection (plugins/emosweep_faults.py) reaches the sweeps the tests start, and their Ray trial processes,
# through Python's start-up hook sitecustomize: every child process inherits this PYTHONPATH
PLUGINS = REPO / "tests" / "plugins"
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PLUGINS), os.environ.get("PYTHONPATH")]))


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
    from ser_models.data.corpora.synthetic import generate

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


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible HTTP server (moto) on a free local port, with one bucket.

    Yields the environment a process needs to use it: pyarrow, boto3 and Ray's
    storage layer all read AWS_ENDPOINT_URL and the AWS_* credentials.
    """
    import socket
    import subprocess
    import sys
    import time

    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("moto")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                boto3.client("s3").create_bucket(Bucket="emosweep-test")
                break
            except Exception:  # noqa: BLE001 - the server is still starting
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.3)
        yield {**env, "bucket": "emosweep-test"}
    finally:
        server.kill()
        server.wait()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def small_disk(tmp_path):
    """A real 64 MB filesystem (tmpfs), to fill up (needs root: skipped elsewhere)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): the disk-full test needs root")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)
