"""Session fixtures shared by every test file: a seeded synthetic checkpoint and its conversions.

No real weights, no network. A conversion costs ~10 s on a small CPU box, so each export is made
once per session and shared (read-only: tests that modify an export copy it first).

Options and markers:
  --run-slow   run tests marked ``slow`` (skipped otherwise)
  --run-gpu    run tests marked ``gpu``; on a machine without a GPU they then FAIL, not skip
  ``weights``  runs only when VGGISH_REAL_CHECKPOINT and VGGISH_REAL_PCA point at Google's files
"""
from __future__ import annotations

import os

# Before TensorFlow is imported anywhere in the session: keep its C++ logging quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# The library's per-user caches (tuning rates, verified exports; vggish_tf2.tuning.cache_dir) go to
# a folder of this session: the tests neither read a user's cache nor leave one behind.
import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

_CACHE_HOME = tempfile.mkdtemp(prefix="vggish-tf2-test-cache-")
os.environ["XDG_CACHE_HOME"] = _CACHE_HOME
atexit.register(shutil.rmtree, _CACHE_HOME, True)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

SYNTHETIC_SEED = 1234


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False, help="run tests marked slow")
    parser.addoption(
        "--run-gpu", action="store_true", default=False,
        help="run tests marked gpu; without a visible GPU they fail instead of being skipped",
    )


def _real_weights_paths() -> tuple[str | None, str | None]:
    return os.environ.get("VGGISH_REAL_CHECKPOINT"), os.environ.get("VGGISH_REAL_PCA")


def pytest_collection_modifyitems(config, items):
    run_slow = config.getoption("--run-slow")
    run_gpu = config.getoption("--run-gpu")
    checkpoint, pca = _real_weights_paths()
    skip_slow = pytest.mark.skip(reason="slow test: run with --run-slow")
    skip_gpu = pytest.mark.skip(reason="needs a GPU: run with --run-gpu on a machine that has one")
    skip_weights = pytest.mark.skip(
        reason="needs Google's real files: set VGGISH_REAL_CHECKPOINT and VGGISH_REAL_PCA"
    )
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not run_gpu:
            item.add_marker(skip_gpu)
        if "weights" in item.keywords and not (checkpoint and pca):
            item.add_marker(skip_weights)


def pytest_runtest_setup(item):
    # With --run-gpu a machine is declared to have a GPU: a missing one is a failure, not a skip.
    if "gpu" in item.keywords and item.config.getoption("--run-gpu"):
        import tensorflow as tf

        if not tf.config.list_physical_devices("GPU"):
            pytest.fail("--run-gpu was given but TensorFlow sees no GPU", pytrace=False)


@pytest.fixture(scope="session")
def real_weights_files() -> tuple[Path, Path]:
    """(checkpoint, pca npz) of Google's released files, for tests marked ``weights``."""
    checkpoint, pca = _real_weights_paths()
    if not (checkpoint and pca):
        pytest.skip("set VGGISH_REAL_CHECKPOINT and VGGISH_REAL_PCA")
    return Path(checkpoint), Path(pca)


@pytest.fixture(scope="session")
def synthetic_files(tmp_path_factory) -> tuple[Path, Path]:
    """(vggish_model.ckpt V1, vggish_pca_params.npz) written from seed 1234. Do not modify them."""
    from convert.synthetic import write_synthetic_checkpoint

    out_dir = tmp_path_factory.mktemp("synthetic_checkpoint")
    checkpoint, pca = write_synthetic_checkpoint(out_dir, seed=SYNTHETIC_SEED)
    return Path(checkpoint), Path(pca)


@pytest.fixture(scope="session")
def synthetic_weights(synthetic_files) -> dict:
    """The synthetic checkpoint's variables, as convert.checkpoint.read_checkpoint reads them."""
    from convert.checkpoint import read_checkpoint

    return read_checkpoint(synthetic_files[0])


@pytest.fixture(scope="session")
def synthetic_pca(synthetic_files) -> dict:
    """The synthetic PCA parameters (float64), as convert.checkpoint.read_pca_params reads them."""
    from convert.checkpoint import read_pca_params

    return read_pca_params(synthetic_files[1])


def _convert(tmp_path_factory, synthetic_files, precision: str) -> Path:
    from convert.checkpoint_to_savedmodel import convert

    checkpoint, pca = synthetic_files
    output = tmp_path_factory.mktemp(f"export_{precision}") / "vggish"
    convert(checkpoint=checkpoint, pca_params=pca, output=output,
            frontend_precision=precision, synthetic_weights=True)
    return output


@pytest.fixture(scope="session")
def exported_model(tmp_path_factory, synthetic_files) -> Path:
    """Export dir converted once per session from the synthetic files, float64 front end. Read-only."""
    return _convert(tmp_path_factory, synthetic_files, "float64")


@pytest.fixture(scope="session")
def exported_model_float32(tmp_path_factory, synthetic_files) -> Path:
    """Like exported_model with the float32 front end; converted only if a test asks for it."""
    return _convert(tmp_path_factory, synthetic_files, "float32")


@pytest.fixture(scope="session")
def loaded_export(exported_model):
    """vggish_tf2.model.load_export(exported_model): .module (signatures), .metadata, .path."""
    from vggish_tf2.model import load_export

    return load_export(exported_model)


@pytest.fixture(scope="session")
def loaded_export_float32(exported_model_float32):
    from vggish_tf2.model import load_export

    return load_export(exported_model_float32)


# --- Ray (tests/corpus/test_ray_*.py) -----------------------------------------------------------------
# Here, not in a tests/corpus/conftest.py: a second module named conftest would shadow this one for
# `from conftest import ...` (tests/ is on sys.path in pytest's prepend import mode).
@pytest.fixture(scope="module")
def ray_session():
    """A local Ray instance (2 CPUs) for the module, shut down after it; one already running
    (another module's, or the user's) is used as it is and left running. Ray is imported and
    started only by a test that asks for it."""
    ray = pytest.importorskip("ray")

    if ray.is_initialized():
        yield ray
        return
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        yield ray
    finally:
        ray.shutdown()
