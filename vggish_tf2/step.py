"""The device step in graph form: example windows [n, 15600] -> embeddings [n, 128].

Every network call has one shape, [STEP_EXAMPLES, 15600], whoever calls it: the Embedder's
runner (any batch size, any number of devices, after an OOM halving) and every signature of the
export. The windows are zero-padded to a multiple of STEP_EXAMPLES and run slice by slice in a
graph loop. Why: oneDNN picks its kernels, and so its float32 roundings, by CPU and by shape, and
its matrix-product kernels treat the rows of a tail block differently from the others (measured
on an AVX2 EPYC: rows 6-7 of an 8-row batch and rows 30-31 of a 32-row batch come out one ulp
apart from the same row elsewhere). With one shape whose row count is a multiple of every
kernel's row block, an example's embedding is a function of its own 15,600 samples and the
model alone, bit for bit on a given machine: its batch, its row, its neighbours, the device
count and the resume point cannot change it.
"""
from __future__ import annotations

import tensorflow as tf

from vggish_tf2 import frontend, params
from vggish_tf2.network import forward

STEP_EXAMPLES = params.STEP_EXAMPLES  # 12 rows per network call (see params)


def padded_rows(count: int) -> int:
    """Rows actually computed for `count` rows: the next multiple of STEP_EXAMPLES (0 stays 0)."""
    return -(-count // STEP_EXAMPLES) * STEP_EXAMPLES


def map_fixed_slices(fn, rows, out_shape: list, out_dtype):
    """`fn` over [STEP_EXAMPLES, ...] slices of `rows` [n, ...] (zero-padded), -> [n, *out_shape].

    A graph loop, one slice at a time, so memory is that of one slice whatever n is.
    """
    n = tf.shape(rows)[0]
    padded_n = (n + STEP_EXAMPLES - 1) // STEP_EXAMPLES * STEP_EXAMPLES
    padding = tf.concat([[[0, padded_n - n]], tf.zeros([tf.rank(rows) - 1, 2], tf.int32)], 0)
    slices = tf.reshape(tf.pad(rows, padding), tf.concat([[padded_n // STEP_EXAMPLES, STEP_EXAMPLES], tf.shape(rows)[1:]], 0))
    spec = tf.TensorSpec([STEP_EXAMPLES] + out_shape, out_dtype)
    out = tf.map_fn(fn, slices, fn_output_signature=spec, parallel_iterations=1)  # [S, STEP, *out_shape]
    return tf.reshape(out, [-1] + out_shape)[:n]


def embed_windows(network, windows, *, precision: str, compute_dtype: str | None = None, frontend_device: str | None = None):
    """Embeddings float32 [n, 128] of windows [n, 15600] (float32 or float64), in fixed-shape slices.

    `frontend_device` places the log-mel elsewhere than the network (Metal has no float64: the
    float64 front end runs on the CPU, see devices.resolve_compute_options).
    """

    def one_slice(slice_windows):  # [STEP, 15600] -> [STEP, 128]
        with tf.device(frontend_device):
            features = tf.cast(frontend.log_mel_windows(slice_windows, precision=precision), tf.float32)  # [STEP, 96, 64]
        return forward(network, features, compute_dtype=compute_dtype)

    return map_fixed_slices(one_slice, windows, [params.EMBEDDING_SIZE], tf.float32)


def embed_log_mel(network, log_mel):
    """Embeddings float32 [n, 128] of log-mel examples [n, 96, 64], in fixed-shape slices."""
    return map_fixed_slices(lambda features: forward(network, features), log_mel, [params.EMBEDDING_SIZE], tf.float32)


def log_mel(windows, *, precision: str):
    """Log-mel float32 [n, 96, 64] of windows [n, 15600], in fixed-shape slices."""

    def one_slice(slice_windows):
        return tf.cast(frontend.log_mel_windows(slice_windows, precision=precision), tf.float32)

    return map_fixed_slices(one_slice, windows, [params.NUM_FRAMES, params.NUM_BANDS], tf.float32)
