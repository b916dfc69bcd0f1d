"""What the fixed-shape device step costs (issue 8): every network call runs STEP_EXAMPLES (12)
rows (vggish_tf2.step), so an example's embedding never depends on its batch.

Two comparisons on the same windows, each against the variable-shape call it replaced (front end
+ network on exactly the rows given, one tf.function per shape):
- full batches: 96 rows as eight fixed 12-row slices in a graph loop vs one 96-row call;
- a lone example: one row padded to a 12-row slice vs a 1-row call (what a 1-example `embed`
  pays now).
"""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from conftest import SETTINGS


def _functions(loaded_export, precision):
    from vggish_tf2 import frontend, step
    from vggish_tf2.network import forward

    network = loaded_export.module.network

    @tf.function
    def variable_shape(windows):
        return forward(network, tf.cast(frontend.log_mel_windows(windows, precision=precision), tf.float32))

    @tf.function
    def fixed_shape(windows):
        return step.embed_windows(network, windows, precision=precision)

    return {"variable": variable_shape, "fixed": fixed_shape}


@pytest.mark.benchmark(group="step-shape")
@pytest.mark.parametrize("rows_per_call", [1, 96])
@pytest.mark.parametrize("kind", ["variable", "fixed"])
def test_step_shape_cost(benchmark, loaded_export, example_windows, figures, kind, rows_per_call):
    precision = loaded_export.metadata.get("frontend_precision", "float64")
    fn = _functions(loaded_export, precision)[kind]
    rows = tf.constant(np.asarray(example_windows[:rows_per_call], dtype=np.float64 if precision == "float64" else np.float32))
    fn(rows)  # trace
    benchmark.pedantic(lambda: fn(rows).numpy(), rounds=SETTINGS.model_rounds, iterations=1, warmup_rounds=1)
    seconds = benchmark.stats.stats.median
    benchmark.extra_info.update({"rows": rows_per_call, "seconds_per_call": round(seconds, 4),
                                 "ex_per_s": round(rows_per_call / seconds, 2)})
    figures[f"step_seconds[{kind}-{rows_per_call}]"] = seconds
