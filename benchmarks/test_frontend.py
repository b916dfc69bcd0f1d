"""Front end alone: example windows [B, 15600] -> log-mel [B, 96, 64], in the TF graph at float64
(the default on CPU/CUDA) and float32 (Metal's), and the float64 NumPy reference, in examples/s."""
from __future__ import annotations

import pytest

from conftest import SETTINGS


@pytest.mark.benchmark(group="frontend")
@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_frontend_tf(benchmark, device_plan, example_windows, precision):
    import tensorflow as tf

    from vggish_tf2 import devices, frontend

    if precision == "float64" and device_plan.device_type is devices.DeviceType.METAL:
        pytest.skip("Metal has no float64")
    rows = example_windows[: SETTINGS.model_rows_per_round]
    with tf.device(device_plan.primary_device):
        batch = tf.constant(rows)
        step = tf.function(lambda w: frontend.log_mel_windows(w, precision=precision))
        run = lambda: step(batch).numpy()  # noqa: E731
        run()
        benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    ex_per_s = len(rows) / benchmark.stats.stats.median
    benchmark.extra_info.update({"examples_per_round": len(rows), "ex_per_s": round(ex_per_s, 1)})


@pytest.mark.benchmark(group="frontend")
def test_frontend_numpy_reference(benchmark, example_windows):
    """The baseline's front end (convert.reference_numpy, float64), one window at a time."""
    from convert import reference_numpy

    rows = example_windows[: SETTINGS.model_rows_per_round]
    benchmark.pedantic(lambda: [reference_numpy.log_mel(w) for w in rows], rounds=3, iterations=1, warmup_rounds=1)
    ex_per_s = len(rows) / benchmark.stats.stats.median
    benchmark.extra_info.update({"examples_per_round": len(rows), "ex_per_s": round(ex_per_s, 1)})
