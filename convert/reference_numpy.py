"""An independent float64 NumPy implementation of VGGish, written from the spec
(../shared/reference/VGGISH_SPEC.md), used to verify exports and in tests.

It shares only constants with the runtime (``vggish_tf2.params``) and imports no TensorFlow:
the network below is its own reading of the spec, so a mistake in the runtime's graph code
cannot hide by being repeated here.

    waveform (16 kHz, float64) --log_mel--> [frames, 64] --waveform_to_examples--> [N, 96, 64]
    examples [B, 96, 64] --forward(weights)--> embeddings [B, 128] float64
    embeddings --postprocess(V, means)--> [B, 128] uint8
"""
from __future__ import annotations

import logging
from typing import Mapping

import numpy as np

from vggish_tf2 import params
from vggish_tf2.errors import CheckpointError, InvalidArgumentError, InvalidAudioError

logger = logging.getLogger(__name__)

_MEL_BREAK_FREQUENCY_HZ = 700.0  # HTK mel: 1127 ln(1 + f / 700)
_MEL_HIGH_FREQUENCY_Q = 1127.0

# The network as the spec describes it: (kind, checkpoint prefix, output channels).
# conv: 3x3, stride 1, SAME, ReLU; pool: 2x2, stride 2, SAME; fc: ReLU unless it is the last.
ARCHITECTURE: tuple[tuple[str, str | None, int | None], ...] = (
    ("conv", "vggish/conv1", 64),
    ("pool", None, None),
    ("conv", "vggish/conv2", 128),
    ("pool", None, None),
    ("conv", "vggish/conv3/conv3_1", 256),
    ("conv", "vggish/conv3/conv3_2", 256),
    ("pool", None, None),
    ("conv", "vggish/conv4/conv4_1", 512),
    ("conv", "vggish/conv4/conv4_2", 512),
    ("pool", None, None),
    ("flatten", None, None),
    ("fc", "vggish/fc1/fc1_1", 4096),
    ("fc", "vggish/fc1/fc1_2", 4096),
    ("fc", "vggish/fc2", params.EMBEDDING_SIZE),  # linear: the embedding
)

# Rows of the fully connected weights cast to float64 at a time (fc1_1 alone is 400 MB in float64).
_FC_ROW_CHUNK = 2048
# Examples through the conv stack at a time (conv2's im2col buffer is ~7 MB per example).
_CONV_BATCH_CHUNK = 8


# --- Front end ---------------------------------------------------------------------------------
def hz_to_mel(frequencies_hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: 1127 ln(1 + f / 700)."""
    return _MEL_HIGH_FREQUENCY_Q * np.log(1.0 + (np.asarray(frequencies_hz, dtype=np.float64) / _MEL_BREAK_FREQUENCY_HZ))


def mel_matrix(
    *,
    num_mel_bins: int = params.NUM_MEL_BINS,
    num_spectrogram_bins: int = params.NUM_SPECTROGRAM_BINS,
    sample_rate_hz: float = params.SAMPLE_RATE,
    lower_edge_hz: float = params.MEL_MIN_HZ,
    upper_edge_hz: float = params.MEL_MAX_HZ,
) -> np.ndarray:
    """The reference's mel weights, float64 [num_spectrogram_bins, num_mel_bins] ([257, 64]).

    Bin centres linspace(0, sr/2, 257) mapped to mel; 66 band edges evenly spaced in mel from
    mel(125) to mel(7500); band i is the triangle over edges i, i+1, i+2 with both slopes taken in
    the mel domain, clipped at 0. Row 0 (DC) is zeroed.
    """
    nyquist_hz = sample_rate_hz / 2.0
    if not 0.0 <= lower_edge_hz < upper_edge_hz <= nyquist_hz:
        raise InvalidArgumentError(
            f"mel edges lower_edge_hz={lower_edge_hz!r}, upper_edge_hz={upper_edge_hz!r} must satisfy "
            f"0 <= lower < upper <= nyquist ({nyquist_hz} Hz)"
        )
    bins_mel = hz_to_mel(np.linspace(0.0, nyquist_hz, num_spectrogram_bins))  # [257]
    edges_mel = np.linspace(hz_to_mel(lower_edge_hz), hz_to_mel(upper_edge_hz), num_mel_bins + 2)  # [66]
    weights = np.empty((num_spectrogram_bins, num_mel_bins), dtype=np.float64)
    for i in range(num_mel_bins):
        lower, center, upper = edges_mel[i : i + 3]
        rising = (bins_mel - lower) / (center - lower)
        falling = (upper - bins_mel) / (upper - center)
        weights[:, i] = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0  # DC carries no mel energy, whatever the lower edge
    return weights


def periodic_hann(window_samples: int = params.STFT_WINDOW_LENGTH_SAMPLES) -> np.ndarray:
    """Periodic Hann window 0.5 - 0.5 cos(2 pi n / N), n = 0..N-1, float64.

    Evaluated as cos((2 pi / N) * n), the order the reference uses, so it agrees to the last bit.
    """
    return 0.5 - (0.5 * np.cos(2.0 * np.pi / window_samples * np.arange(window_samples)))


def num_frames(num_samples: int) -> int:
    """STFT frames (400 samples, hop 160, no padding) in a signal of ``num_samples``."""
    win, hop = params.STFT_WINDOW_LENGTH_SAMPLES, params.STFT_HOP_LENGTH_SAMPLES
    return 0 if num_samples < win else 1 + (num_samples - win) // hop


def num_examples(num_samples: int) -> int:
    """Examples (96 frames, hop 96, trailing partial dropped) in a signal of ``num_samples``."""
    frames = num_frames(num_samples)
    return 0 if frames < params.NUM_FRAMES else 1 + (frames - params.NUM_FRAMES) // params.NUM_FRAMES


def _as_waveform(waveform: np.ndarray) -> np.ndarray:
    x = np.asarray(waveform)
    if x.ndim != 1:
        raise InvalidAudioError(f"waveform has shape {x.shape}; expected a 1-D array of 16 kHz samples")
    if not np.issubdtype(x.dtype, np.floating):
        raise InvalidAudioError(f"waveform has dtype {x.dtype}; expected floating-point samples in [-1, 1]")
    x = x.astype(np.float64, copy=False)
    if not np.all(np.isfinite(x)):
        raise InvalidAudioError("waveform holds NaN or infinite samples")
    return x


def _frame(x: np.ndarray, window: int, hop: int) -> np.ndarray:
    """[n] -> [num_frames, window] views, no padding (zero frames if n < window)."""
    count = 0 if x.shape[0] < window else 1 + (x.shape[0] - window) // hop
    if count == 0:
        return np.zeros((0, window), dtype=x.dtype)
    return np.lib.stride_tricks.as_strided(
        x, shape=(count, window) + x.shape[1:], strides=(x.strides[0] * hop,) + x.strides, writeable=False
    )


def log_mel(waveform: np.ndarray) -> np.ndarray:
    """16 kHz float waveform [n] -> float64 log-mel [num_frames(n), 64].

    Frames of 400 samples every 160 (no padding), periodic Hann, |rfft| of length 512,
    @ mel_matrix(), log(x + 0.01).
    """
    x = _as_waveform(waveform)
    frames = _frame(x, params.STFT_WINDOW_LENGTH_SAMPLES, params.STFT_HOP_LENGTH_SAMPLES)  # [F, 400]
    spectrum = np.abs(np.fft.rfft(frames * periodic_hann(), params.FFT_LENGTH))  # [F, 257]
    mel = np.dot(spectrum, mel_matrix())  # [F, 64]
    return np.log(mel + params.LOG_OFFSET)


def waveform_to_examples(waveform: np.ndarray) -> np.ndarray:
    """16 kHz float waveform [n] -> float64 examples [num_examples(n), 96, 64].

    Patches of 96 frames with hop 96; a trailing partial patch is dropped. Unlike the reference,
    which raises below 240 samples, short input gives zero examples.
    """
    features = log_mel(waveform)  # [F, 64]
    patches = _frame(features, params.NUM_FRAMES, params.NUM_FRAMES)  # [N, 96, 64]
    return np.array(patches, dtype=np.float64).reshape(-1, params.NUM_FRAMES, params.NUM_MEL_BINS)


# --- Network -----------------------------------------------------------------------------------
def expected_variable_shapes() -> dict[str, tuple[int, ...]]:
    """Checkpoint names and shapes implied by ARCHITECTURE (this module's reading of the spec)."""
    shapes: dict[str, tuple[int, ...]] = {}
    height, width, channels = params.NUM_FRAMES, params.NUM_MEL_BINS, 1
    features = None
    for kind, prefix, out in ARCHITECTURE:
        if kind == "conv":
            shapes[f"{prefix}/weights"] = (3, 3, channels, out)
            shapes[f"{prefix}/biases"] = (out,)
            channels = out
        elif kind == "pool":
            height, width = -(-height // 2), -(-width // 2)
        elif kind == "flatten":
            features = height * width * channels
        else:
            shapes[f"{prefix}/weights"] = (features, out)
            shapes[f"{prefix}/biases"] = (out,)
            features = out
    return shapes


def check_weights(weights: Mapping[str, np.ndarray]) -> None:
    """Raise CheckpointError listing every missing, unexpected or mis-shaped variable."""
    expected = expected_variable_shapes()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    misshaped = sorted(
        f"{name}: {tuple(np.shape(weights[name]))} (expected {shape})"
        for name, shape in expected.items()
        if name in weights and tuple(np.shape(weights[name])) != shape
    )
    problems = []
    if missing:
        problems.append(f"missing {missing}")
    if unexpected:
        problems.append(f"unexpected {unexpected}")
    if misshaped:
        problems.append(f"wrong shape {misshaped}")
    if problems:
        raise CheckpointError("VGGish weights do not match the spec: " + "; ".join(problems))


def conv2d_3x3_same(x: np.ndarray, weights: np.ndarray, biases: np.ndarray) -> np.ndarray:
    """3x3 stride-1 SAME convolution (cross-correlation, as tf.nn.conv2d), NHWC, via im2col.

    x [B, H, W, C], weights [3, 3, C, O] (HWIO), biases [O] -> [B, H, W, O] float64 (no activation).
    """
    b, h, w, c = x.shape
    kh, kw, kc, out = weights.shape
    if (kh, kw, kc) != (3, 3, c):
        raise InvalidArgumentError(f"conv weights shape {weights.shape} do not fit input channels {c}")
    padded = np.pad(np.asarray(x, dtype=np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))  # [B, H+2, W+2, C]
    columns = np.empty((b, h, w, 3, 3, c), dtype=np.float64)
    for dy in range(3):
        for dx in range(3):
            columns[:, :, :, dy, dx, :] = padded[:, dy : dy + h, dx : dx + w, :]
    kernel = np.asarray(weights, dtype=np.float64).reshape(9 * c, out)  # rows in (dy, dx, c) order
    result = columns.reshape(b * h * w, 9 * c) @ kernel + np.asarray(biases, dtype=np.float64)
    return result.reshape(b, h, w, out)


def max_pool_2x2_same(x: np.ndarray) -> np.ndarray:
    """2x2 stride-2 SAME max-pool, NHWC: [B, H, W, C] -> [B, ceil(H/2), ceil(W/2), C].

    SAME pads at the end only (2x2 kernel, stride 2), with -inf so padding never wins.
    """
    b, h, w, c = x.shape
    out_h, out_w = -(-h // 2), -(-w // 2)
    padded = np.pad(
        np.asarray(x, dtype=np.float64),
        ((0, 0), (0, 2 * out_h - h), (0, 2 * out_w - w), (0, 0)),
        constant_values=-np.inf,
    )
    return padded.reshape(b, out_h, 2, out_w, 2, c).max(axis=(2, 4))


def flatten_nhwc(x: np.ndarray) -> np.ndarray:
    """[B, H, W, C] -> [B, H*W*C], channels fastest (row-major NHWC), as the reference flattens."""
    return np.ascontiguousarray(x).reshape(x.shape[0], -1)


def _dense(x: np.ndarray, weights: np.ndarray, biases: np.ndarray) -> np.ndarray:
    """x [B, K] @ weights [K, O] + biases, float64, casting the weights a block of rows at a time."""
    result = np.zeros((x.shape[0], weights.shape[1]), dtype=np.float64)
    for start in range(0, weights.shape[0], _FC_ROW_CHUNK):
        block = np.asarray(weights[start : start + _FC_ROW_CHUNK], dtype=np.float64)
        result += x[:, start : start + block.shape[0]] @ block
    return result + np.asarray(biases, dtype=np.float64)


def forward(weights: Mapping[str, np.ndarray], examples: np.ndarray) -> np.ndarray:
    """The VGGish network in float64: examples [B, 96, 64] -> raw embeddings [B, 128] float64.

    ``weights`` maps checkpoint names ('vggish/conv1/weights', ...) to arrays of any float dtype.
    """
    check_weights(weights)
    x = np.asarray(examples)
    if x.ndim != 3 or x.shape[1:] != (params.NUM_FRAMES, params.NUM_MEL_BINS):
        raise InvalidArgumentError(
            f"examples have shape {x.shape}; expected [batch, {params.NUM_FRAMES}, {params.NUM_MEL_BINS}]"
        )
    x = x.astype(np.float64, copy=False)
    flat = [_conv_stack(weights, x[i : i + _CONV_BATCH_CHUNK]) for i in range(0, x.shape[0], _CONV_BATCH_CHUNK)]
    net = np.concatenate(flat, axis=0) if flat else np.zeros((0, _flat_size()), dtype=np.float64)
    fc_layers = [(prefix) for kind, prefix, _ in ARCHITECTURE if kind == "fc"]
    for index, prefix in enumerate(fc_layers):
        net = _dense(net, weights[f"{prefix}/weights"], weights[f"{prefix}/biases"])
        if index < len(fc_layers) - 1:
            net = np.maximum(net, 0.0)
    return net


def _flat_size() -> int:
    return expected_variable_shapes()["vggish/fc1/fc1_1/weights"][0]


def _conv_stack(weights: Mapping[str, np.ndarray], examples: np.ndarray) -> np.ndarray:
    """[b, 96, 64] -> flattened pool4 output [b, 12288]."""
    net = examples[..., np.newaxis]  # [b, 96, 64, 1]
    for kind, prefix, _ in ARCHITECTURE:
        if kind == "conv":
            net = np.maximum(conv2d_3x3_same(net, weights[f"{prefix}/weights"], weights[f"{prefix}/biases"]), 0.0)
        elif kind == "pool":
            net = max_pool_2x2_same(net)
        elif kind == "flatten":
            return flatten_nhwc(net)  # [b, 6*4*512]
    raise AssertionError("ARCHITECTURE has no flatten step")


# --- Post-processing ---------------------------------------------------------------------------
def postprocess(embeddings: np.ndarray, pca_eigen_vectors: np.ndarray, pca_means: np.ndarray) -> np.ndarray:
    """AudioSet's 8-bit features: V @ (e - means), clip to [-2, 2], (x + 2) * (255 / 4), truncate.

    embeddings [B, 128] -> uint8 [B, 128], computed in float64.
    """
    e = np.asarray(embeddings, dtype=np.float64)
    v = np.asarray(pca_eigen_vectors, dtype=np.float64)
    means = np.asarray(pca_means, dtype=np.float64).reshape(-1)
    size = params.EMBEDDING_SIZE
    if e.ndim != 2 or e.shape[1] != size:
        raise InvalidArgumentError(f"embeddings have shape {e.shape}; expected [batch, {size}]")
    if v.shape != (size, size) or means.shape != (size,):
        raise InvalidArgumentError(
            f"PCA parameters have shapes {v.shape} and {means.shape}; expected ({size}, {size}) and ({size},)"
        )
    pca = (v @ (e.T - means[:, np.newaxis])).T  # [B, 128]
    clipped = np.clip(pca, params.QUANTIZE_MIN_VAL, params.QUANTIZE_MAX_VAL)
    scaled = (clipped - params.QUANTIZE_MIN_VAL) * (255.0 / (params.QUANTIZE_MAX_VAL - params.QUANTIZE_MIN_VAL))
    return scaled.astype(np.uint8)


# --- Probe signals -----------------------------------------------------------------------------
def probe_signals(sample_rate: int = params.SAMPLE_RATE) -> dict[str, np.ndarray]:
    """Deterministic float64 test signals in [-1, 1]: sine, noise, silence, chirp, speech.

    - ``sine``: 1 kHz, amplitude 1, 3 s (the reference's smoke-test signal);
    - ``noise``: white noise, uniform in [-0.3, 0.3] (seed 0), 2.5 s;
    - ``silence``: zeros, 2 s;
    - ``chirp``: linear sweep 100 Hz -> 7 kHz, amplitude 0.5, 3 s;
    - ``speech``: speech-like, 3 s: a harmonic series on a gliding ~120 Hz pitch, with a 4 Hz
      syllabic envelope, plus noise shaped by three formant-like bands.
    """
    if sample_rate <= 2 * 7000:
        raise InvalidArgumentError(f"sample_rate={sample_rate!r} must be > 14000 Hz for the 7 kHz chirp")
    rng = np.random.default_rng(0)

    def seconds(duration: float) -> np.ndarray:
        return np.arange(int(round(duration * sample_rate)), dtype=np.float64) / sample_rate

    t = seconds(3.0)
    sine = np.sin(2.0 * np.pi * 1000.0 * t)

    noise = 0.3 * rng.uniform(-1.0, 1.0, int(round(2.5 * sample_rate)))

    silence = np.zeros(int(round(2.0 * sample_rate)))

    f0, f1, duration = 100.0, 7000.0, 3.0
    chirp = 0.5 * np.sin(2.0 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2.0 * duration)))

    pitch_hz = 120.0 + 20.0 * np.sin(2.0 * np.pi * 0.7 * t)  # slow intonation
    phase = 2.0 * np.pi * np.cumsum(pitch_hz) / sample_rate
    harmonics = sum((1.0 / k) * np.sin(k * phase) for k in range(1, 31) if k * 140.0 < sample_rate / 2)
    envelope = 0.5 - 0.5 * np.cos(2.0 * np.pi * 4.0 * t)  # 4 syllables a second
    freqs = np.fft.rfftfreq(t.size, 1.0 / sample_rate)
    formants = sum(
        np.exp(-0.5 * ((freqs - center) / width) ** 2) for center, width in ((500, 80), (1500, 120), (2500, 160))
    )
    shaped = np.fft.irfft(np.fft.rfft(rng.standard_normal(t.size)) * formants, t.size)
    voiced = harmonics / np.max(np.abs(harmonics))
    breath = shaped / np.max(np.abs(shaped))
    speech = envelope * (0.6 * voiced + 0.3 * breath)

    return {"sine": sine, "noise": noise, "silence": silence, "chirp": chirp, "speech": speech}


def probe_examples() -> np.ndarray:
    """All probe signals' examples stacked, in probe_signals() order: float64 [13, 96, 64]."""
    return np.concatenate([waveform_to_examples(x) for x in probe_signals().values()], axis=0)
