"""From a 16 kHz mono signal to VGGish example windows (NumPy only, no TF).

Example k depends only on samples [hop * k, hop * k + 15600): its 96 STFT frames start at
160 i inside that window and span 400 samples. So a signal can be cut into these windows first
and each window embedded on its own, which is what lets long files stream and many files share a
batch. The count, 0 if N < 15600 else floor((N - 15600) / hop) + 1, is the reference's count
(96-frame patches, hop 96 frames, trailing partial patch dropped) for the default hop.

Short clips (the whole clip shorter than one window) follow ``short_clips``:
``"drop"`` gives no example (the reference), ``"pad"`` zero-pads to one window, ``"repeat"``
tiles the clip until it fills one window.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from vggish_tf2 import params
from vggish_tf2.errors import InvalidArgumentError, InvalidAudioError

WINDOW_SAMPLES = params.EXAMPLE_WINDOW_SAMPLES  # 15600
SHORT_CLIP_POLICIES = ("drop", "pad", "repeat")


def count_examples(num_samples: int, *, hop_samples: int = params.EXAMPLE_HOP_SAMPLES, short_clips: str = "drop") -> int:
    """Number of examples for ``num_samples`` samples at 16 kHz."""
    _check_hop(hop_samples)
    _check_policy(short_clips)
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 0:
        raise InvalidArgumentError(f"num_samples={num_samples!r} must be an integer >= 0")
    if num_samples < WINDOW_SAMPLES:
        return 1 if (short_clips != "drop" and num_samples > 0) else 0
    return (int(num_samples) - WINDOW_SAMPLES) // hop_samples + 1


def example_start_seconds(count: int, *, hop_samples: int = params.EXAMPLE_HOP_SAMPLES) -> np.ndarray:
    """Start time in seconds of each of ``count`` examples: float64 [count]."""
    _check_hop(hop_samples)
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise InvalidArgumentError(f"count={count!r} must be an integer >= 0")
    # Integer sample offsets first, one division last: k * 0.96 accumulated in floats drifts.
    return np.arange(count, dtype=np.int64) * hop_samples / float(params.SAMPLE_RATE)


def iter_windows(
    chunks: Iterable[np.ndarray],
    *,
    hop_samples: int = params.EXAMPLE_HOP_SAMPLES,
    short_clips: str = "drop",
    dtype: type = np.float32,
) -> Iterator[np.ndarray]:
    """Yield [15600] windows of ``dtype`` from consecutive 1-D chunks of one 16 kHz mono signal.

    ``dtype`` is float64 for the float64 front end: the reference's samples are float64 all the
    way to its log-mel, and a float32 cast on the way moves embeddings by up to 4e-5 x max|e|.

    Memory stays bounded whatever the signal length: only samples that a later window still
    needs are kept (the 240-sample overlap at the default hop), plus the current chunk.
    Each window is a fresh array, so callers may keep or modify it.
    """
    _check_hop(hop_samples)
    _check_policy(short_clips)
    dtype = check_sample_dtype(dtype)
    pieces: list[np.ndarray] = []  # pending samples, joined only once a window is complete
    pending = 0  # samples in pieces
    buffer_start = 0  # absolute index of the first pending sample in the signal
    next_start = 0  # absolute index where the next window starts
    emitted = 0
    for chunk in chunks:
        chunk = np.asarray(chunk)
        if chunk.ndim != 1:
            raise InvalidAudioError(f"chunk.shape={chunk.shape} must be 1-D (mono samples)")
        if chunk.size == 0:
            continue
        pieces.append(np.array(chunk, dtype=dtype))  # a copy: callers may reuse their buffer
        pending += len(chunk)
        if next_start + WINDOW_SAMPLES > buffer_start + pending:
            continue  # joining now would cost a copy per tiny chunk
        buffer = np.concatenate(pieces)
        while next_start + WINDOW_SAMPLES <= buffer_start + len(buffer):
            offset = next_start - buffer_start
            yield buffer[offset:offset + WINDOW_SAMPLES].copy()
            emitted += 1
            next_start += hop_samples
        # Keep only what a later window needs (the 240-sample overlap at the default hop); with
        # a hop longer than a window, the gap between windows goes too.
        keep_from = min(next_start - buffer_start, len(buffer))
        rest = buffer[keep_from:].copy()  # copy: do not pin the whole joined chunk in memory
        pieces, pending = [rest], len(rest)
        buffer_start += keep_from
    if emitted == 0:
        # Nothing was ever dropped before the first window, so the pieces are the whole clip.
        clip = np.concatenate(pieces) if pieces else np.zeros(0, dtype)
        short = _short_window(clip, short_clips, dtype)
        if short is not None:
            yield short


def frame_windows(
    samples: np.ndarray,
    *,
    hop_samples: int = params.EXAMPLE_HOP_SAMPLES,
    short_clips: str = "drop",
    dtype: type = np.float32,
) -> np.ndarray:
    """All windows of a whole 1-D 16 kHz signal: [N, 15600] of ``dtype``, equal to stacking :func:`iter_windows`."""
    _check_hop(hop_samples)
    _check_policy(short_clips)
    dtype = check_sample_dtype(dtype)
    samples = np.asarray(samples)
    if samples.ndim != 1:
        raise InvalidAudioError(f"samples.shape={samples.shape} must be 1-D (mono samples)")
    samples = samples.astype(dtype, copy=False)
    if len(samples) < WINDOW_SAMPLES:
        short = _short_window(samples, short_clips, dtype)
        return np.zeros((0, WINDOW_SAMPLES), dtype) if short is None else short[np.newaxis]
    view = np.lib.stride_tricks.sliding_window_view(samples, WINDOW_SAMPLES)[::hop_samples]
    return np.ascontiguousarray(view)


def _short_window(clip: np.ndarray, policy: str, dtype: type) -> np.ndarray | None:
    if policy == "drop":
        return None
    if len(clip) == 0:
        raise InvalidAudioError(f"0 samples: nothing to {policy} (short_clips={policy!r})")
    if policy == "pad":
        window = np.zeros(WINDOW_SAMPLES, dtype)
        window[:len(clip)] = clip
        return window
    repeats = -(-WINDOW_SAMPLES // len(clip))  # ceil division
    return np.tile(clip.astype(dtype, copy=False), repeats)[:WINDOW_SAMPLES].copy()


SAMPLE_DTYPES = (np.float32, np.float64)  # float64 keeps the reference's precision up to the front end


def check_sample_dtype(dtype) -> type:
    """``dtype`` as a NumPy scalar type, float32 or float64 (the dtypes samples and windows travel in)."""
    resolved = np.dtype(dtype).type
    if resolved not in SAMPLE_DTYPES:
        raise InvalidArgumentError(f"dtype={dtype!r} must be float32 or float64")
    return resolved


def _check_hop(hop_samples: int) -> None:
    step = params.STFT_HOP_LENGTH_SAMPLES
    if isinstance(hop_samples, bool) or not isinstance(hop_samples, (int, np.integer)):
        raise InvalidArgumentError(f"hop_samples={hop_samples!r} must be an integer")
    # Windows must start on the STFT frame grid, or an example would hold different frames.
    if hop_samples <= 0 or hop_samples % step:
        raise InvalidArgumentError(f"hop_samples={hop_samples} must be a positive multiple of {step}")


def _check_policy(short_clips: str) -> None:
    if short_clips not in SHORT_CLIP_POLICIES:
        raise InvalidArgumentError(f"short_clips={short_clips!r} must be one of {', '.join(SHORT_CLIP_POLICIES)}")


__all__ = [
    "SAMPLE_DTYPES",
    "SHORT_CLIP_POLICIES",
    "WINDOW_SAMPLES",
    "check_sample_dtype",
    "count_examples",
    "example_start_seconds",
    "frame_windows",
    "iter_windows",
]
