"""The TF front end (vggish_tf2.frontend and the export's waveform_to_log_mel) vs the float64 NumPy
reference written from the spec (convert.reference_numpy).

Measured on this project's CI box (TF 2.21, NumPy 2.4, x86-64), max abs log-mel error vs the
NumPy reference:
  signal    float64 front end   float32 front end
  sine      8.9e-16             2.2e-4
  noise     8.9e-16             1.4e-6
  silence   0 (bit-exact)       6.4e-8
  chirp     8.9e-16             3.8e-4
  speech    8.9e-16             1.8e-4
  espeak    8.9e-16             4.4e-5
float64 is within 3 ulps of max(|log-mel|, 1) but NOT bit for bit: TF's rfft and its tensordot round
differently from NumPy's pocketfft and BLAS dot (the Hann window and mel matrix are bit-exact; before
the Hann window used the reference's operation order, 0c63042, the gap was 1.3e-12). The float32
errors come from the FFT's rounding, which is relative to a frame's loudest bin, landing in quiet bins.
"""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from convert import reference_numpy
from vggish_tf2 import frontend, params, windows
from vggish_tf2.errors import InvalidArgumentError

SAMPLE_RATE = params.SAMPLE_RATE


def _signals() -> dict[str, np.ndarray]:
    """The probe signals, as the float32 samples an export sees (widened back to float64 exactly)."""
    return {
        name: np.asarray(x, dtype=np.float32).astype(np.float64)
        for name, x in reference_numpy.probe_signals().items()
    }


SIGNALS = _signals()


@pytest.fixture(scope="module")
def espeak_recording(tmp_path_factory) -> np.ndarray:
    """A real recording: espeak-ng speech, read as the reference reads WAVs (int16 / 32768, mono),
    resampled to 16 kHz. The resampler does not matter here: both front ends get the same samples."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng): no real recording to test on")
    import soundfile as sf
    import soxr

    wav = tmp_path_factory.mktemp("espeak") / "speech.wav"
    text = "The quick brown fox jumps over the lazy dog. Audio embeddings need real clips to be tested."
    subprocess.run([exe, "-w", str(wav), text], check=True, capture_output=True, timeout=60)
    samples, rate = sf.read(wav, dtype="int16", always_2d=True)
    waveform = samples.mean(axis=1) / 32768.0
    if rate != SAMPLE_RATE:
        waveform = soxr.resample(waveform, rate, SAMPLE_RATE)
    waveform = np.asarray(waveform, dtype=np.float32).astype(np.float64)
    assert waveform.size > 3 * SAMPLE_RATE, "espeak-ng produced a suspiciously short clip"
    return waveform


def _tf_log_mel(waveform: np.ndarray, precision: str) -> np.ndarray:
    windows = frontend.waveform_to_windows(tf.constant(waveform))  # [N, 15600]
    return frontend.log_mel_windows(windows, precision=precision).numpy()


def _reference(waveform: np.ndarray) -> np.ndarray:
    return reference_numpy.waveform_to_examples(waveform)  # [N, 96, 64] float64


# Float64 gap bounds (measured max in brackets), both asserted:
#  - per element, in ulps of the reference value itself: |ours - ref| <= K * spacing(|ref|).
#    Large where log-mel is near 0 (mel ~ 0.99, spacing tiny) [max 4097 ulps, espeak and noise].
FLOAT64_ULPS_OF_VALUE = 8192
#  - in ulps of max(|ref|, 1), i.e. of the log-mel's own scale [max 3; 8.9e-16 abs].
FLOAT64_ULPS_OF_SCALE = 8
# Float32 bounds on the max abs log-mel error, per signal (~2.5x the measured value in brackets).
FLOAT32_MAX_ABS = {
    "sine": 6e-4,  # [2.2e-4]
    "noise": 5e-6,  # [1.4e-6]
    "silence": 2e-7,  # [6.4e-8]
    "chirp": 1e-3,  # [3.8e-4]
    "speech": 4e-4,  # [1.8e-4]
    "espeak": 1.2e-4,  # [4.4e-5]
}


def _check_float64(ours: np.ndarray, ref: np.ndarray) -> None:
    assert ours.dtype == np.float64
    assert ours.shape == ref.shape
    gap = np.abs(ours - ref)
    worst_value_ulps = float(np.max(gap / np.spacing(np.abs(ref)), initial=0.0))
    worst_scale_ulps = float(np.max(gap / np.spacing(np.maximum(np.abs(ref), 1.0)), initial=0.0))
    assert worst_value_ulps <= FLOAT64_ULPS_OF_VALUE, f"max abs {gap.max():.3g}, {worst_value_ulps} ulps of value"
    assert worst_scale_ulps <= FLOAT64_ULPS_OF_SCALE, f"max abs {gap.max():.3g}, {worst_scale_ulps} ulps of scale"


@pytest.mark.parametrize("name", sorted(SIGNALS))
def test_float64_front_end_matches_reference(name):
    waveform = SIGNALS[name]
    ref = _reference(waveform)
    assert ref.shape[0] >= 2
    _check_float64(_tf_log_mel(waveform, "float64"), ref)


def test_float64_front_end_silence_is_bit_exact():
    # All-zero frames: every op is exact, so anything but log(0.01) everywhere is a real bug.
    ours = _tf_log_mel(SIGNALS["silence"], "float64")
    np.testing.assert_array_equal(ours, np.full_like(ours, np.log(params.LOG_OFFSET)))
    np.testing.assert_array_equal(ours, _reference(SIGNALS["silence"]))


def test_float64_front_end_on_a_real_recording(espeak_recording):
    _check_float64(_tf_log_mel(espeak_recording, "float64"), _reference(espeak_recording))


@pytest.mark.parametrize("name", sorted(SIGNALS))
def test_float32_front_end_within_stated_bound(name):
    waveform = SIGNALS[name]
    ref = _reference(waveform)
    ours = _tf_log_mel(waveform, "float32")
    assert ours.dtype == np.float32
    assert ours.shape == ref.shape
    gap = float(np.max(np.abs(ours.astype(np.float64) - ref)))
    assert gap <= FLOAT32_MAX_ABS[name], f"{name}: float32 log-mel max abs error {gap:.3g}"


def test_float32_front_end_on_a_real_recording(espeak_recording):
    ref = _reference(espeak_recording)
    ours = _tf_log_mel(espeak_recording, "float32").astype(np.float64)
    assert ours.shape == ref.shape
    gap = float(np.max(np.abs(ours - ref)))
    assert gap <= FLOAT32_MAX_ABS["espeak"], f"float32 log-mel max abs error {gap:.3g}"


def test_float32_is_worse_than_float64_so_the_precision_switch_is_real():
    ref = _reference(SIGNALS["chirp"])
    gap64 = np.max(np.abs(_tf_log_mel(SIGNALS["chirp"], "float64") - ref))
    gap32 = np.max(np.abs(_tf_log_mel(SIGNALS["chirp"], "float32") - ref))
    assert gap32 > 1000 * gap64


def test_unknown_precision_is_refused():
    with pytest.raises(InvalidArgumentError, match=r"'float16' must be one of float64, float32"):
        frontend.log_mel_windows(np.zeros((1, params.EXAMPLE_WINDOW_SAMPLES), np.float32), precision="float16")


# --- mel matrix and window --------------------------------------------------------------------
def test_mel_matrix_is_the_reference_matrix_exactly():
    ours = frontend.mel_matrix()
    assert ours.shape == (257, 64) and ours.dtype == np.float64
    np.testing.assert_array_equal(ours, reference_numpy.mel_matrix())
    assert not np.any(ours[0]), "the DC row must be zero"
    assert not ours.flags.writeable


def test_mel_matrix_is_not_tf_signal_matrix():
    # tf.signal.linear_to_mel_weight_matrix builds the same HTK triangles in another operation
    # order. Measured: in float64 it differs from the reference in 153 of 16448 entries, by at most
    # 2.3e-14 (entry [195, 58]); its float32 default differs by up to 8.2e-6 in 461 entries. Small,
    # but it would break bit-level agreement, so the front end must not use it.
    theirs = tf.signal.linear_to_mel_weight_matrix(
        num_mel_bins=params.NUM_MEL_BINS, num_spectrogram_bins=params.NUM_SPECTROGRAM_BINS,
        sample_rate=params.SAMPLE_RATE, lower_edge_hertz=params.MEL_MIN_HZ,
        upper_edge_hertz=params.MEL_MAX_HZ, dtype=tf.float64,
    ).numpy()
    ours = frontend.mel_matrix()
    assert not np.array_equal(ours, theirs)
    diff = np.abs(ours - theirs)
    assert 0 < diff.max() < 1e-12  # same triangles, different rounding


def test_periodic_hann_matches_reference_bitwise():
    # 2*pi*n/N and (2*pi/N)*n differ by up to 7.8e-16; the reference uses the latter (fixed in 0c63042).
    np.testing.assert_array_equal(frontend.periodic_hann(), reference_numpy.periodic_hann())


def test_periodic_hann_is_periodic():
    window = frontend.periodic_hann()
    assert window.shape == (400,)
    assert window[0] == 0.0 and window[200] == 1.0  # periodic: peak at N/2, no trailing zero
    np.testing.assert_allclose(window[1:200], window[399:200:-1], rtol=0, atol=1e-15)


# --- framing: window by window equals the whole signal ----------------------------------------
@pytest.mark.parametrize("name", ["sine", "speech", "noise"])
def test_window_by_window_equals_whole_signal_framing(name):
    waveform = SIGNALS[name]
    ours = _tf_log_mel(waveform, "float64")  # [N, 96, 64], one window per example
    n = ours.shape[0]
    # The same TF ops over the whole signal's frames, then cut into patches of 96 frames.
    frames = tf.signal.frame(tf.constant(waveform), 400, 160) * frontend.periodic_hann()  # [F, 400]
    spectrum = tf.abs(tf.signal.rfft(frames, [params.FFT_LENGTH]))  # [F, 257]
    whole = tf.math.log(tf.tensordot(spectrum, tf.constant(frontend.mel_matrix()), 1) + params.LOG_OFFSET).numpy()
    assert whole.shape[0] >= n * 96
    np.testing.assert_array_equal(ours, whole[: n * 96].reshape(n, 96, 64))
    # ... and the reference frames the whole signal (its own framing, its own patching).
    _check_float64(ours, _reference(waveform))


def test_windows_are_cut_at_the_example_hop():
    waveform = np.arange(3 * params.EXAMPLE_HOP_SAMPLES + params.EXAMPLE_WINDOW_SAMPLES, dtype=np.float64)
    windows = frontend.waveform_to_windows(tf.constant(waveform)).numpy()
    assert windows.shape == (4, params.EXAMPLE_WINDOW_SAMPLES)
    for k in range(4):
        start = k * params.EXAMPLE_HOP_SAMPLES  # 15360 = 96 frames, not 15600
        np.testing.assert_array_equal(windows[k], waveform[start : start + params.EXAMPLE_WINDOW_SAMPLES])


def test_export_log_mel_equals_front_end(loaded_export):
    # The export's waveform_to_log_mel (float64 front end, cast to float32 at the end).
    waveform = SIGNALS["speech"]
    ours = loaded_export.module.waveform_to_log_mel(tf.constant(waveform, tf.float32)).numpy()
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, _tf_log_mel(waveform, "float64").astype(np.float32))
    ref = _reference(waveform)
    # A float64 front end rounded once to float32: within one float32 ulp of the reference.
    assert np.all(np.abs(ours - ref) <= np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64))


# --- edge lengths -------------------------------------------------------------------------------
LONG_SAMPLES = 65 * params.EXAMPLE_HOP_SAMPLES + params.EXAMPLE_WINDOW_SAMPLES + 1000  # 66 examples > one batch of 64
EDGE_LENGTHS = [0, 239, 240, 399, 400, 15599, 15600, 15760, 2 * 15360 + 239, LONG_SAMPLES]


def _noise(num_samples: int) -> np.ndarray:
    return np.random.default_rng(num_samples).uniform(-0.5, 0.5, num_samples).astype(np.float32)


@pytest.mark.parametrize("num_samples", EDGE_LENGTHS)
def test_example_counts_match_reference(num_samples, loaded_export):
    waveform = _noise(num_samples)
    expected = reference_numpy.num_examples(num_samples)
    assert windows.count_examples(num_samples) == expected
    if num_samples >= 240:  # the reference itself raises below 240 samples
        assert reference_numpy.waveform_to_examples(waveform.astype(np.float64)).shape[0] == expected
    log_mel = loaded_export.module.waveform_to_log_mel(tf.constant(waveform)).numpy()
    assert log_mel.shape == (expected, 96, 64)
    if num_samples != LONG_SAMPLES:  # the long case's embeddings are checked below
        embeddings = loaded_export.module(tf.constant(waveform)).numpy()
        assert embeddings.shape == (expected, 128) and embeddings.dtype == np.float32


def test_known_counts():
    # Spelled out, so a shared mistake in both count functions still shows.
    assert [reference_numpy.num_examples(n) for n in (0, 239, 15599, 15600, 30959, 30960, 16000 * 3)] == [0, 0, 0, 1, 1, 2, 3]


def test_long_input_crosses_signature_batches(loaded_export):
    # 66 examples: the 1-D signatures run 64 rows at a time, so rows 64 and 65 come from a padded
    # second batch; they must be the right rows, in order, and equal to the reference log-mel.
    waveform = _noise(LONG_SAMPLES)
    module = loaded_export.module
    log_mel = module.waveform_to_log_mel(tf.constant(waveform)).numpy()
    ref = _reference(waveform.astype(np.float64))
    assert log_mel.shape == ref.shape == (66, 96, 64)
    np.testing.assert_allclose(log_mel, ref, rtol=0, atol=1e-6)
    embeddings = module(tf.constant(waveform)).numpy()
    assert embeddings.shape == (66, 128)
    direct = module.embed_log_mel(tf.constant(log_mel[60:])).numpy()
    np.testing.assert_allclose(embeddings[60:], direct, rtol=1e-5, atol=1e-6)
    assert not np.allclose(embeddings[64], embeddings[65])


# --- XLA ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_xla_compiled_front_end_gives_same_result(precision):
    waveform = SIGNALS["speech"]
    windows = frontend.waveform_to_windows(tf.constant(waveform))
    eager = frontend.log_mel_windows(windows, precision=precision).numpy()
    compiled = tf.function(lambda w: frontend.log_mel_windows(w, precision=precision), jit_compile=True)
    xla = compiled(windows).numpy()
    assert xla.dtype == eager.dtype and xla.shape == eager.shape
    # XLA fuses and reorders: measured at most 4 ulps of max(|x|, 1) in float64 (8.9e-16), 1 ulp of
    # the value in float32 (4.8e-7).
    scale = np.maximum(np.abs(eager), 1.0).astype(eager.dtype)
    assert np.all(np.abs(xla - eager) <= 8 * np.spacing(scale))
