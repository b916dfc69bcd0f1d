"""resampy's ``kaiser_best`` resampler, ours: the same filter and the same per-sample phases as
resampy 0.4, computed as a batched polyphase product in float64, streaming in blocks.

resampy interpolates each output sample ``k`` at input time ``t = k * time_step`` (float64) with
a windowed sinc read from a table: for the left wing, taps ``x[n - i]`` with weights
``win[o + i * step] + eta * delta[o + i * step]``, where ``n = int(t)`` and the table offset ``o``
and the fraction ``eta`` come from ``t - n``; the right wing likewise on ``x[n + 1 + i]``. Outputs
``g, g + G, g + 2G, ...`` share a phase (``G`` outputs span a whole number of inputs), so their
weights (resampy's, at the phase's first ``eta``) are one column of a matrix and a block of outputs
is ``X @ W``: input windows by filter columns. Where float64 ``t`` is not exact (44.1 kHz: the time
step 2.75625 is not a binary fraction), an output's ``eta`` differs slightly from its phase's, and
``(eta - eta_phase) * (X @ D)`` with the table's differences ``D`` adds the rest, so each output
uses the ``eta`` resampy computes for it, drift included. An output whose ``n`` or table offsets
differ from its phase's is computed on its own (none did over 3 hours at 11.025 or 44.1 kHz), as
are all outputs of rates with too many phases for a matrix of reasonable size (such as 22,051 Hz).

Results agree with resampy to rounding (summation order): see tests/test_kaiser.py for the
measured differences. Memory is flat in file length: a stream keeps a block of input and the
filter's half-width of history.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import numbers

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view

from vggish_tf2 import params
from vggish_tf2.errors import InvalidArgumentError, InvalidAudioError

# --- The filter: resampy's kaiser_best table, rebuilt from its parameters ------------------------
NUM_ZEROS = 50  # zero crossings of the sinc kept on each side
TABLE_STEPS_PER_ZERO = 2**13  # table entries per zero crossing (resampy's "precision" 13 -> 8192)
ROLLOFF = 0.9173473712608761  # cut-off as a fraction of Nyquist, as stored in resampy's kaiser_best.npz
# resampy stores the table, not beta, and prints it as 12.9846. This float64 is the one whose Kaiser
# window rebuilds the stored table bit for bit (solved from the table's last entry, 1 / I0(beta)).
KAISER_BETA = 12.984585247040012

# --- Blocking (speed and memory, never results) ------------------------------------------------------
BLOCK_OUTPUTS = 32768  # outputs per block, at least (~2 s at 16 kHz)
MIN_ROWS = 64  # rows (periods) per block matrix product, at least (measured: 16 was 30 % slower at 44,056 Hz)
PHASES_PER_PERIOD_MIN = 64  # periods are merged until a period has this many output phases
CHUNK_SPAN_TAPS = 0.5  # inputs spanned by one matrix's phases, in taps (sets the phases per matrix)
MATRIX_BYTES_MAX = 32 * 2**20  # larger filter matrices fall back to per-sample products
DIRECT_ELEMENTS = 2**18  # input-window elements gathered at a time by the per-sample path
MARGIN_SAMPLES = 4  # extra input kept around a block: float64 n may sit 1 below the rational one


@functools.lru_cache(maxsize=1)
def filter_table() -> np.ndarray:
    """resampy's kaiser_best right wing [NUM_ZEROS * TABLE_STEPS_PER_ZERO + 1], read-only.

    A sinc cut at ROLLOFF x Nyquist, sampled TABLE_STEPS_PER_ZERO times per zero crossing, times
    the right half of a Kaiser window of 2 * 409600 + 1 points: np.sinc's and np.i0's formulas,
    with each sin and exp from the C library (_libm), so the bits are the same on every CPU.
    """
    n = NUM_ZEROS * TABLE_STEPS_PER_ZERO
    x = np.pi * (ROLLOFF * np.linspace(0, NUM_ZEROS, num=n + 1, endpoint=True))
    x[0] = np.pi * 1.0e-20  # np.sinc's stand-in for 0: sin(x) / x is then 1.0
    sinc = ROLLOFF * (_libm(math.sin, x) / x)
    taper = _i0(KAISER_BETA * np.sqrt(1 - (np.arange(n + 1) / n) ** 2.0)) / _i0(np.array([KAISER_BETA]))[0]
    table = taper * sinc
    table.flags.writeable = False
    return table


def _libm(function, values: np.ndarray) -> np.ndarray:
    """``function`` (math.sin, math.exp: the C library's, one value at a time) of each value.
    NumPy's own vectorised sin and exp round differently by CPU (on an AVX-512 EPYC its exp gave
    3 % of the table's values one ulp off resampy's stored table; on an AVX2 one, none); ~0.1 s
    once for the table."""
    flat = np.fromiter(map(function, values.ravel().tolist()), np.float64, values.size)
    return flat.reshape(values.shape)


def _i0(x: np.ndarray) -> np.ndarray:
    """np.i0 (Cephes' Chebyshev series, NumPy's coefficients and evaluation, which are plain float64
    arithmetic) with exp from the C library."""
    numpy_i0 = getattr(np.i0, "__wrapped__", np.i0).__globals__  # the module of NumPy's i0 (it moved in 2.0)
    chbevl, small_coefficients, large_coefficients = numpy_i0["_chbevl"], numpy_i0["_i0A"], numpy_i0["_i0B"]
    x = np.abs(np.asarray(x, dtype=np.float64))
    out = np.empty_like(x)
    small = x <= 8.0
    out[small] = _libm(math.exp, x[small]) * chbevl(x[small] / 2.0 - 2, small_coefficients)
    large = ~small
    out[large] = _libm(math.exp, x[large]) * chbevl(32.0 / x[large] - 2.0, large_coefficients) / np.sqrt(x[large])
    return out


# --- Public API ---------------------------------------------------------------------------------------
def resample_kaiser_best(samples: np.ndarray, orig_sr: int, *, target_sr: int = params.SAMPLE_RATE) -> np.ndarray:
    """``samples`` (1-D, float) resampled from ``orig_sr`` to ``target_sr`` Hz, float64 [m].

    The same samples as ``resampy.resample(samples.astype(np.float64), orig_sr, target_sr,
    filter='kaiser_best')`` to rounding, and the same length ``int(len * target_sr / orig_sr)``;
    where resampy raises for input too short for one output sample this returns an empty array.
    Equal rates return a float64 copy. Equals the concatenated output of :class:`KaiserBestStream`.
    """
    stream = KaiserBestStream(orig_sr, target_sr=target_sr)
    head = stream.process(_check_samples(samples, "samples"))
    tail = stream.flush()
    return np.concatenate([head, tail]) if head.size and tail.size else (head if head.size else tail)


class KaiserBestStream:
    """:func:`resample_kaiser_best` chunk by chunk, in memory flat in the input's length.

    ``process(chunk)`` returns the outputs that chunk completes (often none: outputs come in blocks
    of ~2 s, once the input they need has arrived); ``flush()`` returns the rest, which depends on
    the total length. The concatenation equals the whole-signal function bit for bit, for any
    chunking. A stream is used once: ``process`` after ``flush`` is an error.
    """

    def __init__(self, orig_sr: int, *, target_sr: int = params.SAMPLE_RATE):
        self.orig_sr = _check_rate("orig_sr", orig_sr)
        self.target_sr = _check_rate("target_sr", target_sr)
        self._plan = None if self.orig_sr == self.target_sr else _plan(self.orig_sr, self.target_sr)
        history = 0 if self._plan is None else self._plan.taps + MARGIN_SAMPLES
        self._buffer = np.zeros(history)  # input x[start : start + len]; zeros before x[0]
        self._buffer_start = -history
        self._pending: list[np.ndarray] = []
        self._received = 0  # input samples so far
        self._next_output = 0  # first output not yet returned
        self._finished = False

    def process(self, chunk: np.ndarray) -> np.ndarray:
        """Feed the next input samples; returns the float64 outputs now complete (maybe none)."""
        if self._finished:
            raise InvalidArgumentError("process() after flush(): this KaiserBestStream is finished; make a new one")
        chunk = _check_samples(chunk, "chunk")
        if self._plan is None:
            return chunk.copy()
        if chunk.size:
            self._pending.append(chunk)
            self._received += chunk.size
        # Nothing to do until the next whole block's input is here (keeps tiny chunks O(1) each).
        k = self._next_output
        if self._plan.input_span(k, k + self._plan.block_outputs)[1] > self._received:
            return np.zeros(0)
        return self._run(final=False)

    def flush(self) -> np.ndarray:
        """The remaining float64 outputs (the input's end is zero padding); finishes the stream."""
        if self._finished:
            raise InvalidArgumentError("flush() called twice: this KaiserBestStream is finished")
        self._finished = True
        if self._plan is None:
            return np.zeros(0)
        return self._run(final=True)

    def _run(self, *, final: bool) -> np.ndarray:
        plan = self._plan
        # resampy's output length, computed as it does: int(len * float(new) / float(orig))
        available = int(self._received * float(self.target_sr) / float(self.orig_sr))
        first = self._next_output
        blocks = []
        if self._pending or final:
            buffer = np.concatenate([self._buffer, *self._pending])
            self._pending = []
            start = self._buffer_start
            if final:
                _, needed_end = plan.input_span(first, max(first, available) + plan.block_outputs)
                buffer = np.concatenate([buffer, np.zeros(max(0, needed_end - (start + buffer.size)))])
            k = first
            while k < available:
                end = min(k + plan.block_outputs, available)
                if not final and (end - k < plan.block_outputs or plan.input_span(k, end)[1] > self._received):
                    break
                with _one_blas_thread():
                    blocks.append(plan.block(buffer, start, k, end))
                k = end
            self._next_output = k
            keep_from = plan.input_span(k, k + 1)[0] - start
            self._buffer = buffer[keep_from:].copy()
            self._buffer_start = start + keep_from
        if not blocks:
            return np.zeros(0)
        return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


# --- The plan: filter tables and block matrices for one pair of rates -----------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class _Plan:
    time_step: float  # input samples per output sample, resampy's float64 1 / (new / orig)
    scale: float  # min(1, new / orig): the filter is stretched by 1 / scale when downsampling
    taps: int  # most taps on one wing
    left: np.ndarray  # [offsets, 2, taps]: win, delta at o + i * step, reversed (column taps-1-i <-> x[n - i])
    right: np.ndarray  # [offsets, 2, taps]: win, delta at o + i * step (column i <-> x[n + 1 + i])
    block_outputs: int  # outputs per block (a multiple of `period` on the matrix path)
    period: int  # G: outputs per group of phases; 0 on the per-sample path
    period_inputs: int  # input samples spanned by `period` outputs
    nominal: tuple[np.ndarray, ...]  # [G] n, left offset, left eta, right offset, right eta of each phase
    chunks: tuple[tuple[int, int, int, np.ndarray, np.ndarray], ...]  # (g0, g1, first input, weights, deltas)

    def input_span(self, first: int, end: int) -> tuple[int, int]:
        """[lo, hi): the input samples that outputs first..end-1 may read (margins included)."""
        return (int(first * self.time_step) - self.taps - MARGIN_SAMPLES,
                int(end * self.time_step) + self.taps + 1 + MARGIN_SAMPLES)

    def phases(self, first: int, end: int):
        """resampy's per-output arithmetic for outputs first..end-1, vectorized, same float64 ops."""
        t = np.arange(first, end, dtype=np.int64) * self.time_step
        n = t.astype(np.int64)
        frac = self.scale * (t - n)
        index = frac * TABLE_STEPS_PER_ZERO
        offset_left = index.astype(np.int64)
        eta_left = index - offset_left
        index = (self.scale - frac) * TABLE_STEPS_PER_ZERO
        offset_right = index.astype(np.int64)
        eta_right = index - offset_right
        return n, offset_left, eta_left, offset_right, eta_right

    def block(self, buffer: np.ndarray, start: int, first: int, end: int) -> np.ndarray:
        """Outputs first..end-1 from ``buffer`` = x[start : start + len] (zero beyond the signal)."""
        if not self.period:
            return self.direct(buffer, start, *self.phases(first, end))
        rows = -(-(end - first) // self.period)
        n, offset_left, eta_left, offset_right, eta_right = self.phases(first, first + rows * self.period)
        nominal_n, nominal_left, nominal_eta_left, nominal_right, nominal_eta_right = self.nominal
        # How far each output's eta is from its phase's: exactly 0 when time_step is a short binary
        # fraction (8, 24, 32, 48, 96, 192 kHz: t = k * time_step is exact), tiny otherwise.
        shift_left = eta_left.reshape(rows, -1) - nominal_eta_left  # [rows, G]
        shift_right = eta_right.reshape(rows, -1) - nominal_eta_right
        with_deltas = bool(shift_left.any() or shift_right.any())
        out = np.empty((rows, self.period))
        period0 = first // self.period  # first is a multiple of period
        for g0, g1, lo, weights, deltas in self.chunks:
            width = weights.shape[0]
            begin = (period0 * self.period_inputs + lo) - start
            assert begin >= 0 and begin + (rows - 1) * self.period_inputs + width <= buffer.size
            windows = as_strided(buffer[begin:], shape=(rows, width),
                                 strides=(self.period_inputs * buffer.itemsize, buffer.itemsize),
                                 writeable=False)  # [rows, width]
            if self.period_inputs < width:  # overlapping rows: BLAS wants lda >= width
                windows = np.ascontiguousarray(windows)
            out[:, g0:g1] = windows @ weights  # [rows, c]: resampy's weights at each phase's eta
            if with_deltas:
                c = g1 - g0
                product = windows @ deltas  # [rows, 2c]: delta left | delta right
                out[:, g0:g1] += shift_left[:, g0:g1] * product[:, :c] + shift_right[:, g0:g1] * product[:, c:]
        out = out.reshape(-1)
        # Outputs whose float64 time left their phase's n or table offsets: computed one by one.
        expected_n = (nominal_n[None, :] + (period0 + np.arange(rows))[:, None] * self.period_inputs).reshape(-1)
        odd = np.flatnonzero((n != expected_n) | (offset_left.reshape(rows, -1) != nominal_left).reshape(-1)
                             | (offset_right.reshape(rows, -1) != nominal_right).reshape(-1))
        if odd.size:
            out[odd] = self.direct(buffer, start, n[odd], offset_left[odd], eta_left[odd],
                                   offset_right[odd], eta_right[odd])
        return out[:end - first]

    def direct(self, buffer, start, n, offset_left, eta_left, offset_right, eta_right) -> np.ndarray:
        """One output at a time (vectorized over outputs): window x[n-taps+1 .. n+taps] . taps."""
        taps = self.taps
        windows = sliding_window_view(buffer, 2 * taps)  # row r: buffer[r : r + 2 taps]
        out = np.empty(n.size)
        step = max(1, DIRECT_ELEMENTS // (2 * taps))
        for a in range(0, n.size, step):
            b = min(a + step, n.size)
            x = windows[n[a:b] - (taps - 1) - start]  # [m, 2 taps]
            left = np.einsum("mt,mkt->mk", x[:, :taps], self.left[offset_left[a:b]])  # [m, 2]
            right = np.einsum("mt,mkt->mk", x[:, taps:], self.right[offset_right[a:b]])  # [m, 2]
            out[a:b] = (left[:, 0] + right[:, 0]) + eta_left[a:b] * left[:, 1] + eta_right[a:b] * right[:, 1]
        return out


@functools.lru_cache(maxsize=8)
def _plan(orig_sr: int, target_sr: int) -> _Plan:
    ratio = float(target_sr) / orig_sr  # resampy's sample_ratio
    table = filter_table()
    win = ratio * table if ratio < 1 else table  # resampy scales the table when downsampling
    delta = np.diff(win, append=win[-1])
    scale = min(1.0, ratio)
    time_step = 1.0 / ratio
    step = int(scale * TABLE_STEPS_PER_ZERO)  # table entries between taps
    taps = win.size // step  # taps of offset 0, the most (offsets run 0..step)

    offsets = np.arange(step + 1)[:, None]
    index = offsets + step * np.arange(taps)[None, :]
    valid = np.arange(taps)[None, :] < (win.size - offsets) // step  # resampy's tap count per offset
    index = np.where(valid, index, 0)
    right = np.stack([np.where(valid, win[index], 0.0), np.where(valid, delta[index], 0.0)], axis=1)
    left = np.ascontiguousarray(right[:, :, ::-1])  # [step + 1, 2, taps]
    right.flags.writeable = False
    left.flags.writeable = False

    common = dict(time_step=time_step, scale=scale, taps=taps, left=left, right=right)
    divisor = math.gcd(orig_sr, target_sr)
    phases, inputs = target_sr // divisor, orig_sr // divisor  # per exact period
    repeat = -(-PHASES_PER_PERIOD_MIN // phases)
    period, period_inputs = phases * repeat, inputs * repeat
    # Phases per matrix: CHUNK_SPAN_TAPS x taps inputs' worth, so windows are ~(2 + that) taps wide.
    per_chunk = max(1, min(period, int(CHUNK_SPAN_TAPS * taps * period / period_inputs)))
    width_max = int(per_chunk * period_inputs / period) + 2 * taps + 2
    if 3 * 8 * period * width_max > MATRIX_BYTES_MAX:
        return _Plan(**common, block_outputs=BLOCK_OUTPUTS, period=0, period_inputs=0,
                     nominal=(), chunks=())

    # Each phase's n and offsets as resampy computes them for its first output (k = g).
    probe = _Plan(**common, block_outputs=0, period=0, period_inputs=0, nominal=(), chunks=())
    n, offset_left, eta_left, offset_right, eta_right = probe.phases(0, period)
    left_taps = (win.size - offset_left) // step
    right_taps = (win.size - offset_right) // step
    chunks = []
    for g0 in range(0, period, per_chunk):
        g1 = min(g0 + per_chunk, period)
        lo = int(n[g0]) - taps + 1
        width = int(n[g1 - 1]) + taps + 1 - lo
        c = g1 - g0
        weights = np.zeros((width, c))  # rows: x[lo + r]; column: the phase's weights, as resampy's
        deltas = np.zeros((width, 2 * c))  # the table's differences: left wing | right wing
        for g in range(g0, g1):
            col = g - g0
            i = np.arange(left_taps[g])
            rows = int(n[g]) - i - lo  # x[n - i]
            weights[rows, col] = win[offset_left[g] + step * i] + eta_left[g] * delta[offset_left[g] + step * i]
            deltas[rows, col] = delta[offset_left[g] + step * i]
            i = np.arange(right_taps[g])
            rows = int(n[g]) + 1 + i - lo  # x[n + 1 + i]
            weights[rows, col] = win[offset_right[g] + step * i] + eta_right[g] * delta[offset_right[g] + step * i]
            deltas[rows, c + col] = delta[offset_right[g] + step * i]
        weights.flags.writeable = False
        deltas.flags.writeable = False
        chunks.append((g0, g1, lo, weights, deltas))
    rows = max(MIN_ROWS, -(-BLOCK_OUTPUTS // period))
    nominal = (n, offset_left, eta_left, offset_right, eta_right)
    for array in nominal:
        array.flags.writeable = False
    return _Plan(**common, block_outputs=rows * period, period=period, period_inputs=period_inputs,
                 nominal=nominal, chunks=tuple(chunks))


@functools.lru_cache(maxsize=1)
def _blas_controller():
    try:
        import threadpoolctl  # a declared dependency (pyproject); tolerated missing
    except ImportError:
        return None
    return threadpoolctl.ThreadpoolController()


def _one_blas_thread():
    """BLAS limited to one thread (process-wide, for the duration of one block; ~30 us).

    The block products are mid-sized (~500 x 350 x 75): OpenBLAS splits them over threads, which
    on a 2-core box shared with the model step (or other jobs) made them 2-10x slower in wall time
    than one thread (measured: 3.3 vs 38 GFLOP/s under load). Without threadpoolctl: no limit.
    """
    controller = _blas_controller()
    if controller is None:
        return contextlib.nullcontext()
    return controller.limit(limits=1, user_api="blas")


# --- Validation ---------------------------------------------------------------------------------------
def _check_rate(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidArgumentError(f"{name}={value!r} must be a positive integer (Hz)")
    if not (math.isfinite(value) and value == int(value) and value > 0):
        raise InvalidArgumentError(f"{name}={value!r} must be a positive integer (Hz)")
    return int(value)


def _check_samples(samples, name: str) -> np.ndarray:
    samples = np.asarray(samples)
    if samples.ndim != 1:
        raise InvalidArgumentError(f"{name}.shape={samples.shape} must be 1-D (mono); mix down first")
    if not np.issubdtype(samples.dtype, np.floating):
        raise InvalidArgumentError(f"{name}.dtype={samples.dtype} must be floating point; scale integer PCM first")
    samples = samples.astype(np.float64, copy=False)
    if not np.isfinite(samples).all():
        raise InvalidAudioError(f"{name} contains non-finite values (NaN or Inf)")
    return samples


__all__ = ["KaiserBestStream", "filter_table", "resample_kaiser_best"]
