"""Google's published sanity figures, with Google's real files (opt-in: marked ``weights``).

    VGGISH_REAL_CHECKPOINT=vggish_model.ckpt VGGISH_REAL_PCA=vggish_pca_params.npz \
        python -m pytest tests/test_real_weights.py

Skipped everywhere else: the real checkpoint cannot be downloaded where this project is built.
"""
from __future__ import annotations

import numpy as np
import pytest

from vggish_tf2 import params

pytestmark = pytest.mark.weights


@pytest.fixture(scope="module")
def real_export(real_weights_files, tmp_path_factory):
    from convert.checkpoint_to_savedmodel import convert

    checkpoint, pca = real_weights_files
    out = tmp_path_factory.mktemp("real") / "vggish"
    metadata = convert(checkpoint=checkpoint, pca_params=pca, output=out)
    assert metadata["synthetic_weights"] is False
    return out


@pytest.fixture(scope="module")
def embedder(real_export):
    from vggish_tf2 import Embedder

    return Embedder(real_export, device="cpu", batch_size=8)


def test_reference_smoke_test_figures(embedder):
    # Google's smoke test: 3 s of a 1 kHz sine at 16 kHz -> 3 examples with these statistics.
    t = np.arange(3 * params.SAMPLE_RATE) / params.SAMPLE_RATE
    raw = embedder.embed(np.sin(2 * np.pi * 1000 * t), sample_rate=params.SAMPLE_RATE)
    assert raw.shape == (3, 128)
    np.testing.assert_allclose([raw.mean(), raw.std()], [0.000657, 0.343], rtol=0.1)
    codes = embedder.postprocess(raw)
    np.testing.assert_allclose([codes.mean(), codes.std()], [126.0, 89.3], rtol=0.1)


def test_tf_hub_export_check_figures(embedder):
    # TF Hub's check: 1 kHz sine made at 44.1 kHz on np.linspace, resampled with resampy.
    pytest.importorskip("resampy")
    sample_rate = 44100
    t = np.linspace(0, 3, 3 * sample_rate, endpoint=False)
    raw = embedder.__class__(embedder.model_path, device="cpu", batch_size=8, resampler="kaiser_best").embed(
        np.sin(2 * np.pi * 1000 * t).astype(np.float32), sample_rate=sample_rate)
    # Published for TF Hub's own front end (tf.signal's mel matrix); ours is the reference's,
    # which differs by ~1e-14, far below these tolerances.
    np.testing.assert_allclose(raw.std(), 0.380, rtol=0.1)
    assert abs(raw.mean() - (-0.0333)) <= 0.1 * 0.380
