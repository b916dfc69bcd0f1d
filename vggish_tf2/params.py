"""VGGish constants, named as in Google's vggish_params.py so the two can be read side by side.

Nothing here is mutable: values that travel together are frozen dataclasses.
"""
from __future__ import annotations

import dataclasses

# --- Audio front end -------------------------------------------------------------------------
SAMPLE_RATE = 16000  # Hz; every waveform is resampled to this before framing.
STFT_WINDOW_LENGTH_SECONDS = 0.025  # 400 samples per STFT frame.
STFT_HOP_LENGTH_SECONDS = 0.010  # 160 samples between frame starts.
NUM_MEL_BINS = 64  # Mel bands in the log-mel spectrogram.
MEL_MIN_HZ = 125.0  # Lower edge of the lowest mel band.
MEL_MAX_HZ = 7500.0  # Upper edge of the highest mel band.
LOG_OFFSET = 0.01  # log(mel + LOG_OFFSET) keeps silence finite.
EXAMPLE_WINDOW_SECONDS = 0.96  # One example covers 96 frames.
EXAMPLE_HOP_SECONDS = 0.96  # No overlap between examples by default.

STFT_WINDOW_LENGTH_SAMPLES = 400  # round(SAMPLE_RATE * STFT_WINDOW_LENGTH_SECONDS)
STFT_HOP_LENGTH_SAMPLES = 160  # round(SAMPLE_RATE * STFT_HOP_LENGTH_SECONDS)
FFT_LENGTH = 512  # Next power of two >= 400.
NUM_SPECTROGRAM_BINS = FFT_LENGTH // 2 + 1  # 257 rfft bins.
NUM_FRAMES = 96  # Frames per example: round(EXAMPLE_WINDOW_SECONDS / STFT_HOP_LENGTH_SECONDS).
NUM_BANDS = NUM_MEL_BINS  # Upstream's name for the feature width.

# One example depends only on these samples: frames 0..95 start at 160*i and span 400.
EXAMPLE_WINDOW_SAMPLES = (NUM_FRAMES - 1) * STFT_HOP_LENGTH_SAMPLES + STFT_WINDOW_LENGTH_SAMPLES  # 15600
EXAMPLE_HOP_SAMPLES = NUM_FRAMES * STFT_HOP_LENGTH_SAMPLES  # 15360 = 0.96 s

# Rows of every network call (vggish_tf2.step): one shape, so an example's float32 roundings never
# depend on its batch. 12 is a multiple of AVX2's GEMM row block (6: rows of a 2-row tail block came
# out one ulp off), and on AVX-512 every even row count measured consistent. Measured on the 2-core
# AVX2 EPYC, 96 rows under load: 26.6 ex/s in 12-row slices, 24.6 in 48-row slices; a lone example
# costs a 12-row slice (0.41 s there, 1.83 s with 48 rows), so a 10-s clip computes 12 rows, not 48.
STEP_EXAMPLES = 12

# --- Network and post-processing -------------------------------------------------------------
EMBEDDING_SIZE = 128  # Width of the fc2 output ('vggish/embedding').
PCA_EIGEN_VECTORS_NAME = "pca_eigen_vectors"  # [128, 128] in vggish_pca_params.npz
PCA_MEANS_NAME = "pca_means"  # [128] in vggish_pca_params.npz
QUANTIZE_MIN_VAL = -2.0  # PCA output is clipped to [-2, 2] ...
QUANTIZE_MAX_VAL = +2.0  # ... then mapped to 0..255 and truncated to uint8.

# --- Names in Google's graph -----------------------------------------------------------------
VGGISH_SCOPE = "vggish"
INPUT_TENSOR_NAME = "vggish/input_features:0"
OUTPUT_TENSOR_NAME = "vggish/embedding:0"


@dataclasses.dataclass(frozen=True)
class FrontendParams:
    """Everything that decides the log-mel features; recorded in every export and output."""

    sample_rate_hz: int = SAMPLE_RATE
    stft_window_samples: int = STFT_WINDOW_LENGTH_SAMPLES
    stft_hop_samples: int = STFT_HOP_LENGTH_SAMPLES
    fft_length: int = FFT_LENGTH
    num_mel_bins: int = NUM_MEL_BINS
    mel_min_hz: float = MEL_MIN_HZ
    mel_max_hz: float = MEL_MAX_HZ
    log_offset: float = LOG_OFFSET
    num_frames: int = NUM_FRAMES

    @property
    def example_window_samples(self) -> int:
        return (self.num_frames - 1) * self.stft_hop_samples + self.stft_window_samples

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


FRONTEND = FrontendParams()


def example_hop_samples(hop_seconds: float = EXAMPLE_HOP_SECONDS) -> int:
    """Samples between example starts for a hop in seconds.

    Examples are made of whole STFT frames, so a hop must be a whole number of frames
    (a multiple of 10 ms); anything else would change which frames an example holds.
    """
    from vggish_tf2.errors import InvalidArgumentError  # local: params has no other imports

    import math

    if isinstance(hop_seconds, bool) or not isinstance(hop_seconds, (int, float)):
        raise InvalidArgumentError(f"hop_seconds={hop_seconds!r} must be a number of seconds")
    if not (math.isfinite(hop_seconds) and hop_seconds > 0):
        raise InvalidArgumentError(f"hop_seconds={hop_seconds!r} must be finite and > 0")
    frames = hop_seconds / STFT_HOP_LENGTH_SECONDS
    if abs(frames - round(frames)) > 1e-6:
        raise InvalidArgumentError(
            f"hop_seconds={hop_seconds!r} must be a multiple of {STFT_HOP_LENGTH_SECONDS} s (one STFT hop)"
        )
    return int(round(frames)) * STFT_HOP_LENGTH_SAMPLES
