"""Model-only throughput: the Embedder's device step (front end + network, DeviceRunner.run) on
pre-made example windows, across batch sizes, with and without XLA (jit_compile).

Each round embeds the same `model_rows_per_round` windows (256: several steps for small batches),
after one warm-up call that traces (and for XLA compiles) the step. extra_info holds examples/s and
the share of the numpy GEMM rate measured just before and just after the rounds (their mean):
ex/s x 1.728 GFLOP / GEMM GFLOP/s.
"""
from __future__ import annotations

import pytest

from conftest import GFLOP_PER_EXAMPLE, SETTINGS, numpy_gemm_gflops


@pytest.mark.benchmark(group="model")
@pytest.mark.parametrize("batch_size", SETTINGS.batch_sizes)
@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_model_only(benchmark, loaded_export, device_plan, example_windows, figures, jit_compile, batch_size):
    from vggish_tf2 import devices
    from vggish_tf2.runner import DeviceRunner

    precision = loaded_export.metadata.get("frontend_precision", "float64")
    if device_plan.device_type is devices.DeviceType.METAL:
        precision = "float32"  # Metal has no float64 (the Embedder's default there)
    runner = DeviceRunner(loaded_export.module.network, device_names=device_plan.device_names,
                          batch_size=batch_size, frontend_precision=precision, jit_compile=jit_compile)
    rows = example_windows[: SETTINGS.model_rows_per_round]
    runner.run(rows[: runner.rows_per_step])  # trace / compile the full-batch step
    # The ceiling is measured right before and right after this benchmark's rounds, so that the
    # ratio compares like with like on a box whose load changes from minute to minute.
    gemm_before = numpy_gemm_gflops(SETTINGS.gemm_n, repeats=3)
    benchmark.pedantic(runner.run, args=(rows,), rounds=SETTINGS.model_rounds, iterations=1, warmup_rounds=1)
    gemm_after = numpy_gemm_gflops(SETTINGS.gemm_n, repeats=3)
    gemm_gflops = (gemm_before + gemm_after) / 2

    ex_per_s = len(rows) / benchmark.stats.stats.median
    share = ex_per_s * GFLOP_PER_EXAMPLE / gemm_gflops
    benchmark.extra_info.update({
        "examples_per_round": len(rows), "ex_per_s": round(ex_per_s, 2), "gflops": round(ex_per_s * GFLOP_PER_EXAMPLE, 2),
        "gemm_gflops": round(gemm_gflops, 2), "gemm_gflops_before_after": [round(gemm_before, 1), round(gemm_after, 1)],
        "pct_of_gemm": round(100 * share, 1),
        "frontend_precision": precision, "device": ", ".join(device_plan.device_names),
    })
    figures[f"model_ex_per_s[{'xla' if jit_compile else 'graph'}-{batch_size}]"] = ex_per_s
    figures[f"model_pct_of_adjacent_gemm[{'xla' if jit_compile else 'graph'}-{batch_size}]"] = 100 * share
    if not jit_compile and batch_size == devices.suggest_batch_size(device_plan):
        figures["model_ex_per_s_default"] = ex_per_s  # the Embedder's default configuration
