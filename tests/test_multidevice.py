"""Multi-device on two logical CPUs: one replica per device, outputs identical to one device.

Two logical CPUs must be configured before TF's runtime starts, and this test process's TF is
already running (other tests made tensors), so the work happens in a subprocess that writes its
results to an npz file; they are compared here with the export's own signature.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from vggish_tf2 import params

WORKER = """
import json, sys, warnings
warnings.simplefilter("error")  # any degradation (device fallback, refused configuration) fails
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

from vggish_tf2 import Embedder

export_dir, inputs, outputs = sys.argv[1:4]
waveform = np.load(inputs)["waveform"]
pair = Embedder(export_dir, device="cpu", devices=[0, 1], batch_size=12, verify_model_hashes=False)
pair_big = Embedder(export_dir, device="cpu", devices=["CPU:0", "CPU:1"], batch_size=24, verify_model_hashes=False)
single = Embedder(export_dir, device="cpu", batch_size=12, verify_model_hashes=False)
results = {name: e.embed(waveform, sample_rate=16000) for name, e in
           [("pair", pair), ("pair_big", pair_big), ("single", single)]}
np.savez(outputs, **results)

# Where the replicas' ops were placed: the devices named in the traced step's graph.
graph = pair._runner._step.get_concrete_function(tf.TensorSpec([24, 15600], tf.float64)).graph
placed = sorted({op.device for op in graph.get_operations() if op.device})
print(json.dumps({
    "devices": {name: e.device for name, e in [("pair", pair), ("pair_big", pair_big), ("single", single)]},
    "rows_per_step": {"pair": pair._runner.rows_per_step, "pair_big": pair_big._runner.rows_per_step},
    "batches": {name: e._runner.stats.batches for name, e in [("pair", pair), ("pair_big", pair_big), ("single", single)]},
    "placed": placed,
    "logical_cpus": [d.name for d in tf.config.list_logical_devices("CPU")],
}))
"""


@pytest.fixture(scope="module")
def waveform():
    # 29 examples: one full two-device step of 24 rows and a 5-row tail.
    rng = np.random.default_rng(3)
    n = params.EXAMPLE_WINDOW_SAMPLES + 28 * params.EXAMPLE_HOP_SAMPLES
    t = np.arange(n) / params.SAMPLE_RATE
    signal = 0.2 * rng.standard_normal(n) + 0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t)
    return signal.astype(np.float32)


@pytest.fixture(scope="module")
def worker_run(exported_model, waveform, tmp_path_factory):
    work = tmp_path_factory.mktemp("multidevice")
    np.savez(work / "in.npz", waveform=waveform)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VGGISH_")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(WORKER), str(exported_model), str(work / "in.npz"), str(work / "out.npz")],
        capture_output=True, text=True, env=env, timeout=400, check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    with np.load(work / "out.npz") as data:
        outputs = {name: data[name] for name in data.files}
    return report, outputs


def test_two_logical_cpus_are_two_replicas(worker_run):
    report, _ = worker_run
    assert report["logical_cpus"] == ["/device:CPU:0", "/device:CPU:1"]
    assert report["devices"] == {
        "pair": "/device:CPU:0, /device:CPU:1",
        "pair_big": "/device:CPU:0, /device:CPU:1",
        "single": "/device:CPU:0",
    }
    assert report["rows_per_step"] == {"pair": 24, "pair_big": 48}
    assert report["batches"] == {"pair": 2, "pair_big": 1, "single": 3}  # 29 rows: 24 + 5; 29; 12 + 12 + 5
    assert {"/device:CPU:0", "/device:CPU:1"} <= {d.replace("/job:localhost/replica:0/task:0", "") for d in report["placed"]}


def test_two_devices_give_one_devices_outputs_in_input_order(worker_run, loaded_export, waveform):
    _, outputs = worker_run
    reference = loaded_export.module(waveform).numpy()  # the export's own signature
    assert reference.shape == (29, params.EMBEDDING_SIZE)
    # Every replica runs the same 12-row slices as one device and as the export's signature
    # (vggish_tf2.step), whatever the step size: the same numbers, bit for bit.
    np.testing.assert_array_equal(outputs["pair"], outputs["single"])
    np.testing.assert_array_equal(outputs["pair_big"], outputs["single"])
    np.testing.assert_array_equal(outputs["single"], reference)
