"""Checks that need a real GPU (marked ``gpu``): skipped by default, run with --run-gpu, where a
missing GPU is a failure. Everything GPU-specific is otherwise tested against a faked tf.config
(tests/test_devices.py); these confirm the fakes against the real thing."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.gpu

# A fresh process: device configuration must precede TF's runtime initialization, which the test
# process has long passed.
SCRIPT = r"""
import json, sys
import numpy as np
from vggish_tf2 import Embedder
gpu = Embedder(sys.argv[1], device=sys.argv[2], batch_size=16)
rng = np.random.default_rng(0)
waveform = rng.uniform(-0.5, 0.5, 16000 * 20).astype(np.float32)
on_gpu = gpu.embed(waveform, sample_rate=16000)
import tensorflow as tf
reference = tf.saved_model.load(sys.argv[1])
with tf.device("/device:CPU:0"):
    on_cpu = reference(waveform).numpy()
print(json.dumps({"device": gpu.device, "plan": gpu.plan.device_type.value,
                  "max_rel": float(np.abs(on_gpu - on_cpu).max() / np.abs(on_cpu).max()),
                  "examples": int(on_gpu.shape[0])}))
"""


def _run(exported_model, device: str) -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(exported_model), device],
                         capture_output=True, text=True, timeout=600, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_auto_picks_the_gpu_and_matches_the_cpu(exported_model):
    result = _run(exported_model, "auto")
    assert result["plan"] in ("gpu", "metal")
    assert "GPU" in result["device"]
    assert result["examples"] == 20
    # TF32/cuDNN convolution algorithms round differently from the CPU; float32 network either way.
    assert result["max_rel"] < 1e-2
