"""The exported network vs two independent readings of the spec, on the synthetic checkpoint:
the TF1 graph (convert.tf1_graph.TF1Reference: tf.compat.v1 ops, a Saver, a Session) and the
float64 NumPy forward pass (convert.reference_numpy.forward); and PCA post-processing vs NumPy.

Measured on this project's CI box (TF 2.21, x86-64), probe signals + an espeak-ng-like clip:
  export embed_log_mel vs TF1 graph:        max rel error 0 (identical float32 ops), uint8 mismatches 0
  export embed_log_mel vs NumPy float64:    max rel error 1.3e-6, 1 - min cosine < 1e-11
  export __call__ (float64 front end):      max rel error 1.3e-6, uint8 mismatches 0
  export __call__ (float32 front end):      max rel error 1.0e-5 (sine), uint8 mismatches 0
"Relative" is max |ours - ref| over the signal's max |ref| (as convert.verify computes it).
"""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from convert import reference_numpy
from convert.tf1_graph import TF1Reference
from vggish_tf2 import params
from vggish_tf2.network import VARIABLE_SHAPES, weights_of

SIGNAL_NAMES = ("sine", "noise", "silence", "chirp", "speech")


@pytest.fixture(scope="module")
def waveforms() -> dict[str, np.ndarray]:
    """Probe signals as float32 (what the export takes)."""
    return {name: np.asarray(x, dtype=np.float32) for name, x in reference_numpy.probe_signals().items()}


@pytest.fixture(scope="module")
def examples(waveforms) -> dict[str, np.ndarray]:
    """Reference float64 log-mel examples of each probe signal."""
    return {name: reference_numpy.waveform_to_examples(x.astype(np.float64)) for name, x in waveforms.items()}


@pytest.fixture(scope="module")
def numpy_embeddings(synthetic_weights, examples) -> dict[str, np.ndarray]:
    return {name: reference_numpy.forward(synthetic_weights, x) for name, x in examples.items()}


@pytest.fixture(scope="module")
def tf1_embeddings(synthetic_files, examples) -> dict[str, np.ndarray]:
    with TF1Reference(synthetic_files[0]) as reference:
        return {name: reference.embed(x) for name, x in examples.items()}


def _max_rel(ours: np.ndarray, ref: np.ndarray) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape and ours.shape[0] > 0
    return float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.min(np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


def test_synthetic_activations_are_not_degenerate(numpy_embeddings):
    # Comparisons below mean little if every embedding were zero or identical.
    for name, e in numpy_embeddings.items():
        assert np.all(np.isfinite(e)), name
        assert np.max(np.abs(e)) > 0.5, name
        assert np.std(e) > 0.1, name
    assert _min_cosine(numpy_embeddings["sine"][:1], numpy_embeddings["noise"][:1]) < 0.99


def test_restored_variables_are_the_checkpoint(loaded_export, synthetic_weights):
    restored = weights_of(loaded_export.module.network)
    assert set(restored) == set(VARIABLE_SHAPES)
    for name, variable in restored.items():
        assert variable.name == f"{name}:0"  # the checkpoint's own names survive the SavedModel
        assert variable.dtype == tf.float32
        np.testing.assert_array_equal(variable.numpy(), synthetic_weights[name], err_msg=name)


@pytest.mark.parametrize("name", SIGNAL_NAMES)
def test_export_matches_tf1_graph(name, loaded_export, examples, tf1_embeddings):
    ours = loaded_export.module.embed_log_mel(tf.constant(examples[name], tf.float32)).numpy()
    theirs = tf1_embeddings[name]
    assert ours.shape == theirs.shape == (examples[name].shape[0], params.EMBEDDING_SIZE)
    # Measured 0: the same float32 ops on the same inputs. The bound leaves room for a different
    # convolution algorithm (oneDNN/XLA picks) on another CPU, not for a different network.
    assert _max_rel(ours, theirs) <= 1e-5
    assert _min_cosine(ours, theirs) >= 1 - 1e-9


@pytest.mark.parametrize("name", SIGNAL_NAMES)
def test_export_matches_numpy_forward(name, loaded_export, examples, numpy_embeddings):
    ours = loaded_export.module.embed_log_mel(tf.constant(examples[name], tf.float32)).numpy()
    assert _max_rel(ours, numpy_embeddings[name]) <= 1e-5  # measured <= 1.3e-6 (float32 rounding)
    assert _min_cosine(ours, numpy_embeddings[name]) >= 1 - 1e-9


def test_tf1_graph_matches_numpy_forward(examples, numpy_embeddings, tf1_embeddings):
    # The two references agree with each other, so agreeing with both is not luck.
    for name in SIGNAL_NAMES:
        assert _max_rel(tf1_embeddings[name], numpy_embeddings[name]) <= 1e-5, name


@pytest.mark.parametrize("name", SIGNAL_NAMES)
def test_waveform_signature_matches_numpy_end_to_end(name, loaded_export, waveforms, numpy_embeddings):
    ours = loaded_export.module(tf.constant(waveforms[name])).numpy()
    assert ours.dtype == np.float32
    assert _max_rel(ours, numpy_embeddings[name]) <= 1e-5  # measured <= 1.3e-6
    assert _min_cosine(ours, numpy_embeddings[name]) >= 1 - 1e-9


@pytest.mark.parametrize("name", SIGNAL_NAMES)
def test_float32_front_end_export_matches_numpy(name, loaded_export_float32, waveforms, numpy_embeddings, synthetic_pca):
    assert loaded_export_float32.metadata["frontend_precision"] == "float32"
    ours = loaded_export_float32.module(tf.constant(waveforms[name])).numpy()
    assert _max_rel(ours, numpy_embeddings[name]) <= 5e-5  # measured <= 1.0e-5 (sine)
    assert _min_cosine(ours, numpy_embeddings[name]) >= 1 - 1e-8
    quantized = loaded_export_float32.module.postprocess(tf.constant(ours)).numpy().astype(np.int16)
    expected = reference_numpy.postprocess(numpy_embeddings[name], **synthetic_pca).astype(np.int16)
    assert np.count_nonzero(quantized != expected) <= 2  # measured 0
    assert np.max(np.abs(quantized - expected)) <= 1


# --- post-processing ----------------------------------------------------------------------------
def test_postprocess_matches_numpy_reference(loaded_export, waveforms, numpy_embeddings, synthetic_pca):
    total = mismatches = 0
    spread = []
    for name in SIGNAL_NAMES:
        embeddings = loaded_export.module(tf.constant(waveforms[name])).numpy()
        ours = loaded_export.module.postprocess(tf.constant(embeddings)).numpy()
        assert ours.dtype == np.uint8 and ours.shape == embeddings.shape
        expected = reference_numpy.postprocess(numpy_embeddings[name], **synthetic_pca)
        diff = np.abs(ours.astype(np.int16) - expected.astype(np.int16))
        assert diff.max() <= 1, name
        mismatches += int(np.count_nonzero(diff))
        total += diff.size
        spread.append(np.std(expected.astype(np.float64)))
    # Measured 0 of 1664: the float32 embedding gap (~1e-6) rarely moves a value across an integer.
    assert mismatches <= 2, f"{mismatches} of {total} uint8 values differ"
    assert min(spread) > 20  # the synthetic PCA spreads values over the uint8 range


def test_postprocess_on_identical_input_is_exact(loaded_export, synthetic_pca):
    # Same float32 embeddings on both sides: the float64 PCA is then the only difference.
    rng = np.random.default_rng(7)
    means = synthetic_pca["pca_means"]
    embeddings = (means + rng.standard_normal((256, 128)) * np.std(means) * 3).astype(np.float32)
    ours = loaded_export.module.postprocess(tf.constant(embeddings)).numpy()
    expected = reference_numpy.postprocess(embeddings.astype(np.float64), **synthetic_pca)
    assert np.count_nonzero(ours != expected) <= 2
    assert np.max(np.abs(ours.astype(np.int16) - expected.astype(np.int16))) <= 1


def test_postprocess_truncates_and_clips(loaded_export, synthetic_pca):
    # Choose embeddings whose PCA outputs are known: e = means + V^-1 p, so V (e - means) = p.
    v, means = synthetic_pca["pca_eigen_vectors"], synthetic_pca["pca_means"]
    targets = np.zeros((3, 128))
    targets[0, :] = -5.0  # clipped to -2 -> 0
    targets[1, :] = 5.0  # clipped to 2 -> 255
    targets[2, :] = np.linspace(-1.9, 1.9, 128)  # fractional parts of all sizes
    embeddings = (means + np.linalg.solve(v, targets.T).T).astype(np.float32)
    ours = loaded_export.module.postprocess(tf.constant(embeddings)).numpy()
    assert np.all(ours[0] == 0) and np.all(ours[1] == 255)
    scaled = (targets[2] + 2.0) * (255.0 / 4.0)
    fractional = scaled - np.floor(scaled)
    clear = (fractional > 0.01) & (fractional < 0.99)  # away from integers, float32 input cannot flip them
    assert np.count_nonzero(clear & (fractional > 0.5)) > 20  # cases where rounding would differ
    np.testing.assert_array_equal(ours[2][clear], np.floor(scaled[clear]).astype(np.uint8))


# --- flatten order ------------------------------------------------------------------------------
def test_flatten_order_is_nhwc(monkeypatch, loaded_export, synthetic_weights, examples):
    # The same network with an NCHW flatten gives very different embeddings for these weights, so
    # agreeing with the NHWC reference (above) pins the export's flatten order.
    x = examples["speech"]
    ours = loaded_export.module.embed_log_mel(tf.constant(x, tf.float32)).numpy()
    nhwc = reference_numpy.forward(synthetic_weights, x)
    assert _max_rel(ours, nhwc) <= 1e-5

    def flatten_nchw(net):
        return np.ascontiguousarray(np.transpose(net, (0, 3, 1, 2))).reshape(net.shape[0], -1)

    monkeypatch.setattr(reference_numpy, "flatten_nhwc", flatten_nchw)
    nchw = reference_numpy.forward(synthetic_weights, x)
    assert _max_rel(ours, nchw) > 0.1
    assert _min_cosine(ours, nchw) < 0.99


def test_fc1_rows_permuted_to_nchw_order_change_the_export_output(loaded_export, synthetic_weights, examples):
    # Equivalent check on the TF side: a network whose fc1_1 rows are laid out for an NCHW flatten
    # disagrees with the export, so the export's flatten is not order-agnostic by accident.
    from vggish_tf2.network import VGGishNetwork

    rows = np.arange(6 * 4 * 512).reshape(6, 4, 512)  # NHWC flat index of (h, w, c)
    nchw_order = np.transpose(rows, (2, 0, 1)).reshape(-1)  # flat index read in (c, h, w) order
    permuted = dict(synthetic_weights)
    permuted["vggish/fc1/fc1_1/weights"] = synthetic_weights["vggish/fc1/fc1_1/weights"][nchw_order]
    x = tf.constant(examples["sine"], tf.float32)
    ours = loaded_export.module.embed_log_mel(x).numpy()
    other = VGGishNetwork(permuted)(x).numpy()
    assert _max_rel(other, ours) > 0.1
