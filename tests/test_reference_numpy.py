"""The float64 NumPy reference (convert.reference_numpy) checked against the spec and against tf.nn ops."""
from __future__ import annotations

import numpy as np
import pytest

from convert import reference_numpy as ref
from vggish_tf2 import params
from vggish_tf2.errors import CheckpointError, InvalidArgumentError, InvalidAudioError


# --- Mel matrix ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mel():
    return ref.mel_matrix()


def test_mel_matrix_shape_dtype_and_dc_row(mel):
    assert mel.shape == (257, 64) and mel.dtype == np.float64
    assert np.all(mel[0] == 0.0)
    assert mel.min() >= 0.0 and mel.max() <= 1.0


def test_mel_matrix_columns_are_triangles_in_mel_around_their_centre(mel):
    bins_mel = 1127.0 * np.log(1.0 + np.linspace(0.0, 8000.0, 257) / 700.0)
    edges = np.linspace(1127.0 * np.log(1.0 + 125.0 / 700.0), 1127.0 * np.log(1.0 + 7500.0 / 700.0), 66)
    for i in range(64):
        column = mel[:, i]
        support = np.flatnonzero(column)
        assert support.size > 0, f"band {i} is empty"
        assert np.all(np.diff(support) == 1), f"band {i} support is not contiguous"
        assert np.all(bins_mel[support] > edges[i]) and np.all(bins_mel[support] < edges[i + 2])
        peak = support[np.argmax(column[support])]
        assert peak == np.argmin(np.abs(bins_mel - edges[i + 1])), f"band {i} peaks away from its centre"
        rising, falling = column[support[0] : peak + 1], column[peak:support[-1] + 1]
        assert np.all(np.diff(rising) > 0) and np.all(np.diff(falling) < 0)
        # linear in mel on each side: slope 1 / (centre - lower) and -1 / (upper - centre)
        below = support[bins_mel[support] <= edges[i + 1]]
        np.testing.assert_allclose(column[below], (bins_mel[below] - edges[i]) / (edges[i + 1] - edges[i]), rtol=1e-12)
        above = support[bins_mel[support] >= edges[i + 1]]
        np.testing.assert_allclose(column[above], (edges[i + 2] - bins_mel[above]) / (edges[i + 2] - edges[i + 1]), rtol=1e-12)


def test_mel_matrix_is_close_to_but_not_librosa_htk(mel):
    # librosa draws its triangles in Hz between mel-spaced edges; the reference draws them in mel.
    # Measured: they differ by at most 0.0044 (same edges, same bins), so only a loose match holds.
    librosa = pytest.importorskip("librosa")
    theirs = librosa.filters.mel(
        sr=16000, n_fft=512, n_mels=64, fmin=125.0, fmax=7500.0, htk=True, norm=None, dtype=np.float64
    ).T
    difference = np.abs(theirs - mel).max()
    assert 0.0 < difference < 0.005
    np.testing.assert_array_equal(theirs > 0, mel > 0)  # the same support in every band


def test_mel_matrix_rejects_edges_beyond_nyquist():
    with pytest.raises(InvalidArgumentError, match="upper_edge_hz=9000.0"):
        ref.mel_matrix(upper_edge_hz=9000.0)


# --- Framing and log-mel ------------------------------------------------------------------------
def test_periodic_hann_is_the_first_400_of_a_symmetric_401():
    np.testing.assert_allclose(ref.periodic_hann(), np.hanning(401)[:400], rtol=0, atol=1e-15)
    assert ref.periodic_hann()[0] == 0.0


@pytest.mark.parametrize(
    "num_samples, frames, examples",
    [
        (0, 0, 0),
        (239, 0, 0),  # the reference raises here; we give nothing
        (240, 0, 0),
        (399, 0, 0),
        (400, 1, 0),
        (15599, 95, 0),
        (15600, 96, 1),
        (15760, 97, 1),
        (31000, 192, 2),
        (15360 * 2 + 240, 192, 2),  # exactly 2 examples
        (15360 * 2 + 400, 193, 2),  # 2 examples + 1 frame
        (15360 * 2 + 15600, 288, 3),
    ],
)
def test_frame_and_example_counts(num_samples, frames, examples):
    waveform = np.random.default_rng(num_samples).uniform(-1, 1, num_samples)
    assert ref.num_frames(num_samples) == frames
    assert ref.num_examples(num_samples) == examples
    assert ref.log_mel(waveform).shape == (frames, 64)
    assert ref.waveform_to_examples(waveform).shape == (examples, 96, 64)


def test_log_mel_frame_is_the_window_at_160j_through_a_full_fft():
    waveform = np.random.default_rng(1).uniform(-1, 1, 4000)
    features = ref.log_mel(waveform)
    j = 7
    segment = waveform[160 * j : 160 * j + 400] * (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400))
    magnitude = np.abs(np.fft.fft(np.concatenate([segment, np.zeros(112)])))[:257]
    np.testing.assert_allclose(features[j], np.log(magnitude @ ref.mel_matrix() + 0.01), rtol=1e-12)


def test_silence_is_log_offset_everywhere():
    assert np.all(ref.log_mel(np.zeros(16000)) == np.log(0.01))


def test_examples_are_consecutive_96_frame_patches_and_each_needs_only_its_window():
    waveform = np.random.default_rng(2).uniform(-1, 1, 16000 * 3)
    features, examples = ref.log_mel(waveform), ref.waveform_to_examples(waveform)
    assert examples.shape == (3, 96, 64)
    for k in range(3):
        np.testing.assert_array_equal(examples[k], features[96 * k : 96 * k + 96])
        window = waveform[15360 * k : 15360 * k + 15600]
        np.testing.assert_allclose(ref.waveform_to_examples(window)[0], examples[k], rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "waveform, message",
    [
        (np.zeros((2, 16000)), r"shape \(2, 16000\); expected a 1-D"),
        (np.zeros(16000, dtype=np.int16), "dtype int16"),
        (np.array([0.0, np.nan] * 8000), "NaN or infinite"),
    ],
)
def test_bad_waveforms_are_refused(waveform, message):
    with pytest.raises(InvalidAudioError, match=message):
        ref.waveform_to_examples(waveform)


# --- Network building blocks vs tf.nn -----------------------------------------------------------
@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("tensorflow")


@pytest.mark.parametrize("shape", [(2, 6, 8, 3), (1, 5, 7, 2), (3, 1, 1, 4)])
def test_conv_matches_tf_nn_conv2d_same(tf, shape):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape)
    w = rng.standard_normal((3, 3, shape[-1], 5))
    b = rng.standard_normal(5)
    expected = tf.nn.bias_add(tf.nn.conv2d(x, w, strides=1, padding="SAME"), b).numpy()
    np.testing.assert_allclose(ref.conv2d_3x3_same(x, w, b), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(2, 6, 8, 3), (1, 5, 7, 2), (2, 1, 3, 1)])
def test_max_pool_matches_tf_nn_max_pool2d_same(tf, shape):
    # float32 (TF's CPU max-pool has no float64 kernel); all negative: padding must never win
    x = (np.random.default_rng(4).standard_normal(shape) - 5.0).astype(np.float32)
    expected = tf.nn.max_pool2d(x, ksize=2, strides=2, padding="SAME").numpy()
    np.testing.assert_array_equal(ref.max_pool_2x2_same(x), expected)


def test_flatten_is_nhwc_row_major_as_tf_reshape(tf):
    x = np.random.default_rng(5).standard_normal((2, 6, 4, 3))
    np.testing.assert_array_equal(ref.flatten_nhwc(x), tf.reshape(x, [2, -1]).numpy())
    assert ref.flatten_nhwc(x)[1, 3 * 4 * 1 + 3 * 2 + 1] == x[1, 1, 2, 1]  # (h=1, w=2, c=1), channels fastest


# --- Variables and forward ----------------------------------------------------------------------
def test_variable_table_matches_the_spec_and_the_runtime():
    from vggish_tf2.network import VARIABLE_SHAPES

    shapes = ref.expected_variable_shapes()
    assert shapes == {name: tuple(shape) for name, shape in VARIABLE_SHAPES.items()}
    assert len(shapes) == 18  # weights and biases of 9 layers
    assert shapes["vggish/conv3/conv3_1/weights"] == (3, 3, 128, 256)
    assert shapes["vggish/fc1/fc1_1/weights"] == (12288, 4096)
    assert shapes["vggish/fc2/weights"] == (4096, 128)
    assert sum(int(np.prod(s)) for s in shapes.values()) == 72_141_184


def _zero_weights():
    return {name: np.zeros(shape, np.float32) for name, shape in ref.expected_variable_shapes().items()}


def test_forward_names_missing_and_misshaped_variables():
    weights = _zero_weights()
    del weights["vggish/fc2/biases"]
    weights["vggish/conv2/weights"] = np.zeros((3, 3, 64, 64), np.float32)
    weights["vggish/extra"] = np.zeros(1, np.float32)
    examples = np.zeros((1, 96, 64))
    with pytest.raises(CheckpointError, match=r"missing \['vggish/fc2/biases'\].*unexpected \['vggish/extra'\].*"
                       r"vggish/conv2/weights: \(3, 3, 64, 64\) \(expected \(3, 3, 64, 128\)\)"):
        ref.forward(weights, examples)


def test_forward_refuses_examples_of_the_wrong_shape():
    with pytest.raises(InvalidArgumentError, match=r"shape \(2, 64, 96\)"):
        ref.forward(_zero_weights(), np.zeros((2, 64, 96)))


def test_forward_of_a_network_that_only_has_biases_is_the_bias_path():
    # With zero weights every layer outputs relu(bias) (fc2: its bias), whatever the input.
    weights = _zero_weights()
    weights["vggish/fc2/biases"] = np.arange(128, dtype=np.float32) - 64
    out = ref.forward(weights, np.random.default_rng(6).standard_normal((3, 96, 64)))
    assert out.shape == (3, 128) and out.dtype == np.float64
    np.testing.assert_array_equal(out, np.tile(np.arange(128.0) - 64, (3, 1)))
    assert ref.forward(weights, np.zeros((0, 96, 64))).shape == (0, 128)


# --- Post-processing ----------------------------------------------------------------------------
def test_postprocess_clips_scales_and_truncates():
    values = np.array([-3.0, -2.0, -1.0, 0.0, 0.5, 1.99, 2.0, 5.0])
    embeddings = np.zeros((1, 128))
    embeddings[0, :8] = values
    out = ref.postprocess(embeddings, np.eye(128), np.zeros(128))
    assert out.dtype == np.uint8 and out.shape == (1, 128)
    assert out[0, :8].tolist() == [0, 0, 63, 127, 159, 254, 255, 255]  # (x + 2) * 63.75, truncated
    assert np.all(out[0, 8:] == 127)


def test_postprocess_applies_means_then_eigenvectors():
    rng = np.random.default_rng(7)
    embeddings, means = rng.uniform(-1, 1, (4, 128)), rng.uniform(-1, 1, 128)
    permutation = np.eye(128)[rng.permutation(128)]
    expected = ((np.clip(permutation @ (embeddings - means).T, -2, 2).T + 2) * 63.75).astype(np.uint8)
    np.testing.assert_array_equal(ref.postprocess(embeddings, permutation, means), expected)
    with pytest.raises(InvalidArgumentError, match=r"PCA parameters have shapes \(128, 127\)"):
        ref.postprocess(embeddings, np.eye(128)[:, :127], means)


# --- Probe signals ------------------------------------------------------------------------------
def test_probe_signals_are_deterministic_bounded_and_of_the_stated_lengths():
    first, second = ref.probe_signals(), ref.probe_signals()
    assert list(first) == ["sine", "noise", "silence", "chirp", "speech"]
    lengths = {name: x.size / params.SAMPLE_RATE for name, x in first.items()}
    assert lengths == {"sine": 3.0, "noise": 2.5, "silence": 2.0, "chirp": 3.0, "speech": 3.0}
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])
        assert first[name].dtype == np.float64 and np.max(np.abs(first[name])) <= 1.0
    assert [ref.num_examples(x.size) for x in first.values()] == [3, 2, 2, 3, 3]
    assert ref.probe_examples().shape == (13, 96, 64)


def test_probe_signals_have_their_energy_where_stated():
    signals = ref.probe_signals()
    freqs = np.fft.rfftfreq(48000, 1 / 16000)
    sine_spectrum = np.abs(np.fft.rfft(signals["sine"]))
    assert freqs[np.argmax(sine_spectrum)] == 1000.0
    speech_spectrum = np.abs(np.fft.rfft(signals["speech"])) ** 2
    assert speech_spectrum[freqs < 4000].sum() > 0.95 * speech_spectrum.sum()
    chirp_features = ref.log_mel(signals["chirp"])
    peaks = np.argmax(chirp_features, axis=1)
    assert peaks[10] < 10 and peaks[-10] > 55 and np.all(np.diff(peaks[::20]) >= 0)  # sweeps upward
    assert np.all(signals["silence"] == 0.0)
