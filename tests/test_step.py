"""An example's embedding depends on its own 15,600 samples and the model alone, bit for bit
(vggish_tf2.step): not on the batch size, its row, its neighbours, or the path that computed it.

Why a test and not a tolerance: oneDNN's float32 GEMM treats the rows of a tail block differently
(measured on a 2-core AMD EPYC, AVX2: in an 8-row matmul [8, 12288] x [12288, 4096], rows 6-7 came
out one ulp from the same row at rows 0-5; in a 32-row one, rows 30-31), and AVX-512 machines pick
other kernels. Every network call has one shape, 12 rows, so none of that can reach an example.
CI runs this file a second time under ONEDNN_MAX_CPU_ISA=AVX2 (.ci/run), so that an AVX-512 machine
also checks the kernels of an AVX2-only one.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from vggish_tf2 import params, step
from vggish_tf2.embedder import Embedder

WINDOW = params.EXAMPLE_WINDOW_SAMPLES


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    """60 windows (five slices): noise at several levels, a sine, silence, a click."""
    rng = np.random.default_rng(21)
    out = 0.3 * rng.standard_normal((60, WINDOW)) * rng.uniform(0.01, 1, (60, 1))
    out[7] = 0.5 * np.sin(2 * np.pi * 440 * np.arange(WINDOW) / params.SAMPLE_RATE)
    out[13] = 0.0
    out[29, 5000] = 1.0
    return out  # float64: the float64 front end's input


@pytest.fixture(scope="module")
def embedder(exported_model):
    return Embedder(exported_model, device="cpu", batch_size=24, verify_model_hashes=False)


@pytest.fixture(scope="module")
def reference(embedder, rows):
    return embedder.embed_windows(rows)


def test_padded_rows_are_whole_slices():
    assert step.STEP_EXAMPLES == 12
    assert [step.padded_rows(n) for n in (0, 1, 11, 12, 13, 24, 25)] == [0, 12, 12, 12, 24, 24, 36]


def test_a_row_alone_equals_the_row_in_a_full_batch(embedder, rows, reference):
    for i in (0, 7, 11, 12, 13, 29, 59):  # first, sine, last/first of slices 1 and 2, silence, click, last
        np.testing.assert_array_equal(embedder.embed_windows(rows[i:i + 1])[0], reference[i], err_msg=f"row {i}")


def test_rows_in_another_order_and_with_other_neighbours(embedder, rows, reference):
    order = np.random.default_rng(3).permutation(len(rows))
    shuffled = embedder.embed_windows(rows[order])
    np.testing.assert_array_equal(shuffled, reference[order])
    odd = embedder.embed_windows(rows[1::2])  # every other row: all move to other places
    np.testing.assert_array_equal(odd, reference[1::2])


def test_batch_size_does_not_change_a_bit(exported_model, rows, reference):
    bigger = Embedder(exported_model, device="cpu", batch_size=48, verify_model_hashes=False)
    assert bigger.batch_size == 48
    np.testing.assert_array_equal(bigger.embed_windows(rows), reference)


def test_every_export_signature_gives_the_embedders_bits(loaded_export, rows, reference):
    module = loaded_export.module
    np.testing.assert_array_equal(module.embed_windows(tf.constant(rows)).numpy(), reference)
    served = module.signatures["embed_windows"](windows=tf.constant(rows.astype(np.float32)))
    np.testing.assert_array_equal(next(iter(served.values())).numpy(), module.embed_windows(tf.constant(rows.astype(np.float32))).numpy())
    # A waveform whose windows are rows 0..2 laid end to end at the default hop.
    hop = params.EXAMPLE_HOP_SAMPLES
    waveform = np.zeros(2 * hop + WINDOW)
    for k in range(3):
        waveform[k * hop:k * hop + WINDOW] = rows[k]
    windows_of_waveform = np.stack([waveform[k * hop:k * hop + WINDOW] for k in range(3)])
    expected = module.embed_windows(tf.constant(windows_of_waveform)).numpy()
    np.testing.assert_array_equal(module(tf.constant(waveform)).numpy(), expected)
    np.testing.assert_array_equal(module.embed_batch(tf.constant(waveform[np.newaxis])).numpy()[0], expected)


def test_onednn_isa_cap_takes_effect(tmp_path):
    """ONEDNN_MAX_CPU_ISA=AVX2 (what .ci/run sets for its second pass) really caps oneDNN: its
    verbose log names the ISA it dispatches to."""
    script = "import tensorflow as tf; x = tf.random.normal([64, 256]); print(float(tf.reduce_sum(tf.matmul(x, x, transpose_b=True))))"
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX2", ONEDNN_VERBOSE="1", TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    isa_lines = [line for line in result.stdout.splitlines() if ",isa:" in line]
    if not isa_lines:
        pytest.skip("this TensorFlow build does not route matmul through oneDNN (no oneDNN verbose output)")
    assert "AVX2" in isa_lines[0] and "AVX-512" not in isa_lines[0] and "AVX512" not in isa_lines[0], isa_lines[0]
