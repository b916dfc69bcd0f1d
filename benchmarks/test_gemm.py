"""The machine's ceiling: float32 GEMM (n x n, 2 n^3 FLOP) in numpy and in tf.matmul, in GFLOP/s.

The model stage is mostly convolutions and dense layers, i.e. GEMMs: its examples/s x 1.728 GFLOP
divided by this rate is the share of the machine's peak it reaches (see test_model.py).
"""
from __future__ import annotations

import numpy as np
import pytest


def _record(benchmark, figures, name: str, n: int) -> None:
    gflops = 2.0 * n**3 / benchmark.stats.stats.median / 1e9
    benchmark.extra_info.update({"n": n, "gflops": round(gflops, 2)})
    figures[name] = gflops


@pytest.mark.benchmark(group="gemm")
def test_gemm_numpy(benchmark, bench_settings, figures):
    n = bench_settings.gemm_n
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    benchmark.pedantic(np.matmul, args=(a, b), rounds=7, iterations=1, warmup_rounds=1)
    _record(benchmark, figures, "gemm_numpy_gflops", n)


@pytest.mark.benchmark(group="gemm")
def test_gemm_tf(benchmark, bench_settings, figures, device_plan):
    import tensorflow as tf

    n = bench_settings.gemm_n
    with tf.device(device_plan.primary_device):
        a = tf.random.stateless_normal((n, n), seed=(0, 1), dtype=tf.float32)
        b = tf.random.stateless_normal((n, n), seed=(0, 2), dtype=tf.float32)

        def product():
            return tf.matmul(a, b).numpy()  # .numpy() waits for the device

        benchmark.pedantic(product, rounds=7, iterations=1, warmup_rounds=1)
    benchmark.extra_info["device"] = device_plan.primary_device
    _record(benchmark, figures, "gemm_tf_gflops", n)
