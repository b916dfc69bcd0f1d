"""compute: what the model step runs with on a plan: the batch size from the plan's memory, which
TF errors are out of memory, and the front end's precision and place and XLA per device type.
Plans come from configure_devices on the fake host (conftest.py) or from ``fakes.plan_with``."""
from __future__ import annotations

import os
import sys
import warnings

import pytest

from vggish_tf2.devices.compute import ComputeOptions, is_gpu_oom, resolve_compute_options, suggest_batch_size
from vggish_tf2.devices.inventory import MIB, DeviceType
from vggish_tf2.errors import InvalidArgumentError

from .fakes import GIB, configure_quietly, cuda_host, metal_host, plan_with


# --- Batch size and OOM --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plan", "expected"),
    [
        (plan_with(DeviceType.CPU), 48),  # four 12-row slices (params.STEP_EXAMPLES)
        (plan_with(DeviceType.GPU, limit=int(0.8 * 24 * GIB)), 1008),  # (19.2 GiB - 292 MB) / 2 / 6 MiB = 1615: capped at 84 slices
        (plan_with(DeviceType.GPU, limit=int(0.8 * 12 * GIB)), 792),  # RTX 3060 at 0.8: 796 -> 66 slices
        (plan_with(DeviceType.GPU, limit=int(0.8 * 4 * GIB)), 240),  # 249 -> 20 slices
        (plan_with(DeviceType.GPU, total=2 * GIB), 144),  # no limit: the device's total, 147 -> 12 slices
        (plan_with(DeviceType.METAL, limit=int(0.8 * 8 * GIB)), 516),  # 523 -> 43 slices
        (plan_with(DeviceType.GPU, limit=400 * MIB), 12),  # barely fits the weights: the minimum, one slice
        (plan_with(DeviceType.GPU), 48),  # memory unknown
    ],
)
def test_suggest_batch_size(plan, expected):
    assert suggest_batch_size(plan) == expected


@pytest.fixture(scope="module")
def tf_errors():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    return tf.errors


@pytest.mark.parametrize(
    ("error", "message", "expected"),
    [
        ("ResourceExhaustedError", "OOM when allocating tensor with shape[1024,64,96,64]", True),
        ("ResourceExhaustedError", "anything", True),
        ("InternalError", "Dst tensor is not initialized.", True),
        ("InternalError", "CUDA_ERROR_OUT_OF_MEMORY: out of memory", True),
        ("UnknownError", "Insufficient Memory (00000008:kIOGPUCommandBufferCallbackErrorOutOfMemory)", True),
        ("InternalError", "cuDNN launch failure", False),
        ("InvalidArgumentError", "Incompatible shapes", False),
    ],
)
def test_is_gpu_oom(tf_errors, error, message, expected):
    exc = getattr(tf_errors, error)(None, None, message)
    assert is_gpu_oom(exc) is expected


def test_is_gpu_oom_ignores_non_tf_errors(tf_errors, monkeypatch):
    assert is_gpu_oom(MemoryError("out of memory")) is False
    assert is_gpu_oom(ValueError("OOM")) is False
    oom = tf_errors.ResourceExhaustedError(None, None, "OOM")
    assert is_gpu_oom(oom) is True
    # compute looks TF up in sys.modules at each call and never imports it: with TF gone from
    # there, nothing is one of its errors, not even a real one.
    monkeypatch.delitem(sys.modules, "tensorflow")
    assert is_gpu_oom(oom) is False
    assert is_gpu_oom(RuntimeError("OOM")) is False


# --- What runs where: float64 and XLA on Metal ---------------------------------------------------


def test_metal_runs_the_float64_front_end_on_the_cpu(host):
    metal_host(host)
    plan = configure_quietly("auto")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        options = resolve_compute_options(plan, frontend_precision=None, jit_compile=False)
    # Metal has no float64: the reference's front end stays float64, on the CPU.
    assert options == ComputeOptions("float64", "/device:CPU:0", False, ())
    explicit = resolve_compute_options(plan, frontend_precision="float64", jit_compile=False)
    assert explicit.frontend_device == "/device:CPU:0"
    assert resolve_compute_options(plan, frontend_precision="float32").frontend_device is None


def test_metal_turns_jit_compile_off_with_a_warning(host):
    metal_host(host)
    plan = configure_quietly("metal")
    with pytest.warns(UserWarning, match=r"jit_compile=True ignored on Metal: XLA has no compiler") as record:
        options = resolve_compute_options(plan, frontend_precision="float32", jit_compile=True)
    assert len(record) == 1
    assert (options.jit_compile, options.frontend_precision, options.frontend_device) == (False, "float32", None)
    assert options.warnings == (str(record[0].message),)


@pytest.mark.parametrize("preference", ["gpu", "cpu"])
@pytest.mark.parametrize("precision", [None, "float64", "float32"])
@pytest.mark.parametrize("jit", [False, True])
def test_cuda_and_cpu_run_as_asked(host, preference, precision, jit):
    cuda_host(host)
    plan = configure_quietly(preference)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        options = resolve_compute_options(plan, frontend_precision=precision, jit_compile=jit)
    assert options == ComputeOptions(precision or "float64", None, jit, ())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"frontend_precision": "float16"}, r"frontend_precision='float16' must be one of float64, float32 or None"),
        ({"jit_compile": 1}, r"jit_compile=1 must be True or False"),
    ],
)
def test_resolve_compute_options_rejects_invalid_values(kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        resolve_compute_options(plan_with(DeviceType.CPU), **kwargs)
