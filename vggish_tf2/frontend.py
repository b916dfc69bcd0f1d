"""The VGGish front end in TensorFlow ops: 16 kHz waveform -> log-mel examples [N, 96, 64].

It reproduces Google's NumPy front end (mel_features.py), not tf.signal's mel code: the mel
matrix is the reference's own (built here in float64 from the spec; tf.signal's
linear_to_mel_weight_matrix differs from it), frames are 400 samples every 160 with no padding,
and a trailing partial example is dropped.

One example depends only on its own 15,600 samples (96 frames x 160 + 240), so the front end
works on *windows* [B, 15600]: example k of a signal is the log-mel of samples
[hop*k, hop*k + 15600). Computing it window by window equals framing the whole signal (to the
last float64 ulp), keeps every device step one fixed shape, and lets windows of many files share
a batch.

Precision: "float64" reproduces the reference's float64 log-mel on CPU (measured gap in README);
"float32" is for devices without float64 (Apple Metal).
"""
from __future__ import annotations

import functools

import numpy as np

from vggish_tf2 import params
from vggish_tf2.errors import InvalidArgumentError

FRONTEND_PRECISIONS = ("float64", "float32")


def hertz_to_mel(frequencies_hz: np.ndarray) -> np.ndarray:
    """HTK mel scale, as the reference uses: 1127 ln(1 + f / 700)."""
    return 1127.0 * np.log(1.0 + np.asarray(frequencies_hz, dtype=np.float64) / 700.0)


@functools.lru_cache(maxsize=None)
def _mel_matrix_cached() -> np.ndarray:
    p = params.FRONTEND
    nyquist_hz = p.sample_rate_hz / 2.0
    bin_mel = hertz_to_mel(np.linspace(0.0, nyquist_hz, params.NUM_SPECTROGRAM_BINS))  # [257]
    edges_mel = np.linspace(hertz_to_mel(p.mel_min_hz), hertz_to_mel(p.mel_max_hz), p.num_mel_bins + 2)
    lower, center, upper = edges_mel[:-2], edges_mel[1:-1], edges_mel[2:]  # [64] each
    rising = (bin_mel[:, None] - lower) / (center - lower)  # [257, 64]
    falling = (upper - bin_mel[:, None]) / (upper - center)  # [257, 64]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    # The reference zeroes the DC bin: it would otherwise leak into the lowest band.
    weights[0, :] = 0.0
    weights.setflags(write=False)
    return weights


def mel_matrix() -> np.ndarray:
    """The reference's mel weight matrix, float64 [257, 64] (read-only)."""
    return _mel_matrix_cached()


def periodic_hann(window_samples: int = params.STFT_WINDOW_LENGTH_SAMPLES) -> np.ndarray:
    """Periodic Hann window, float64: 0.5 - 0.5 cos(2 pi n / N), n = 0..N-1."""
    n = np.arange(window_samples, dtype=np.float64)
    # (2 pi / N) * n, in this order, is the reference's rounding; 2 pi n / N differs by an ulp.
    return 0.5 - 0.5 * np.cos(2.0 * np.pi / window_samples * n)


def check_precision(precision: str) -> str:
    if precision not in FRONTEND_PRECISIONS:
        raise InvalidArgumentError(
            f"frontend precision {precision!r} must be one of {', '.join(FRONTEND_PRECISIONS)}"
        )
    return precision


def log_mel_windows(windows, *, precision: str = "float64"):
    """Log-mel of example windows: [B, 15600] waveform -> [B, 96, 64] in `precision`."""
    import tensorflow as tf

    dtype = tf.dtypes.as_dtype(check_precision(precision))
    windows = tf.cast(windows, dtype)  # [B, 15600]
    frames = tf.signal.frame(
        windows, params.STFT_WINDOW_LENGTH_SAMPLES, params.STFT_HOP_LENGTH_SAMPLES
    )  # [B, 96, 400]
    frames = frames * tf.constant(periodic_hann(), dtype)  # [B, 96, 400]
    spectrum = tf.abs(tf.signal.rfft(frames, fft_length=[params.FFT_LENGTH]))  # [B, 96, 257]
    mel = tf.tensordot(spectrum, tf.constant(mel_matrix(), dtype), axes=1)  # [B, 96, 64]
    return tf.math.log(mel + tf.constant(params.LOG_OFFSET, dtype))  # [B, 96, 64]


def waveform_to_windows(waveform, *, hop_samples: int = params.EXAMPLE_HOP_SAMPLES):
    """Cut a 1-D waveform into example windows [N, 15600]; N = vggish_tf2.windows.count_examples(len(waveform))."""
    import tensorflow as tf

    return tf.signal.frame(waveform, params.EXAMPLE_WINDOW_SAMPLES, hop_samples, axis=-1)  # [N, 15600]
