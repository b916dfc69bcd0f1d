"""The Embedder's other modes: its device step under XLA, and a TF Hub handle as the model."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from vggish_tf2 import params
from vggish_tf2.errors import ModelError

RNG = np.random.default_rng(7)
WAVEFORM = RNG.uniform(-0.5, 0.5, params.SAMPLE_RATE * 3).astype(np.float32)  # 3 examples


@pytest.fixture(scope="module")
def embedders(exported_model):
    from vggish_tf2 import Embedder

    graph = Embedder(exported_model, device="cpu", batch_size=8)
    xla = Embedder(exported_model, device="cpu", batch_size=8, jit_compile=True)
    return graph, xla


def test_device_step_compiles_under_xla(embedders):
    _, xla = embedders
    windows = tf.zeros([8, params.EXAMPLE_WINDOW_SAMPLES], tf.float32)
    # The whole step (front end + network) lowers to one XLA module: no op left outside it.
    hlo = xla._runner.replica_functions[0].experimental_get_compiler_ir(windows)(stage="hlo")
    assert "fft" in hlo.lower() and "convolution" in hlo.lower()


def test_xla_step_agrees_with_the_graph_step(embedders):
    graph, xla = embedders
    a = graph.embed(WAVEFORM, sample_rate=params.SAMPLE_RATE)
    b = xla.embed(WAVEFORM, sample_rate=params.SAMPLE_RATE)
    assert a.shape == b.shape == (3, 128)
    # XLA's CPU convolutions and fusions round differently from oneDNN's: float32-level agreement.
    # Measured on the 2-core AVX2 EPYC (12-row slices): 4.9e-7 of max |a|; the bound leaves 20x
    # for CPUs whose kernels round otherwise.
    assert np.max(np.abs(a - b)) <= 1e-5 * np.max(np.abs(a))


def test_tf_hub_handle_runs_one_window_per_call(exported_model, monkeypatch):
    import tensorflow_hub as hub

    from vggish_tf2 import Embedder

    handle = "https://tfhub.dev/google/vggish/1"
    calls = []
    loaded = tf.saved_model.load(str(exported_model))  # same call signature as google/vggish/1

    def fake_hub_load(name):
        calls.append(name)

        def model(waveform):
            assert np.shape(waveform) == (params.EXAMPLE_WINDOW_SAMPLES,)  # one example per call
            return loaded(waveform)

        return model

    monkeypatch.setattr(hub, "load", fake_hub_load)
    embedder = Embedder(handle, device="cpu")
    assert calls == [handle] and embedder.model_path == handle
    out = embedder.embed(WAVEFORM, sample_rate=params.SAMPLE_RATE)
    np.testing.assert_allclose(out, loaded(WAVEFORM).numpy(), rtol=0, atol=1e-5)
    assert not embedder.has_pca
    with pytest.raises(ModelError, match="has no PCA parameters"):
        embedder.postprocess(out)
