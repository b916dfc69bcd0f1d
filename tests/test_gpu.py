"""The verdict for a machine with a GPU, in one command:

    .venv/bin/python -m pytest tests/test_gpu.py --run-gpu -v

Marked ``gpu``: skipped by default; with --run-gpu a machine without a GPU fails (conftest.py).
Everything GPU-specific is otherwise tested against a faked tf.config (tests/devices/);
these check the real thing. Each check runs in a fresh process, because TF's device configuration
must precede its runtime's initialization, and in each, the library's warnings (UserWarning:
degraded settings; RuntimeWarning: CPU fallback) are errors, so a refused setting fails its check
instead of passing quietly. Checks:

* the memory limit: TF's GPU device is created with memory_limit = fraction x total;
* memory growth, as the plan reports it: with growth, the process holds far less than the limit
  after a small batch; without, TF's allocator takes the whole limit at once; and a user's
  TF_FORCE_GPU_ALLOW_GROWTH=false wins, with a warning (TF's allocator reads the variable);
* replicas: with several GPUs, each one computes part of every batch (skipped with one GPU);
* OOM halving on the device: a memory limit too small for batch 256 halves the batch on the GPU,
  never falling back to the CPU, and the outputs still match;
* accuracy and throughput: outputs within TOLERANCE of the CPU's, the measured figure and the
  examples per second printed on the terminal, for the record.

Memory is measured with NVML (nvidia-ml-py) or nvidia-smi as the device's used memory before and
after: run this on an otherwise idle GPU. On Metal, the CUDA memory checks are skipped.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

# First estimate, to be replaced by the first GPU run's measured figure (printed by
# test_outputs_match_the_cpu_and_throughput): max |gpu - cpu| / max |cpu| over the embeddings.
# - Ampere and later (compute capability >= 8.0): TF enables TensorFloat-32 for float32
#   convolutions and matmuls by default (tf.config.experimental.enable_tensor_float_32_execution);
#   TF32 rounds inputs to a 10-bit mantissa (relative 2^-11 = 4.9e-4 per operand), and VGGish
#   stacks 6 convolutions and 3 dense layers with K up to 4,608 (conv4) and 12,288 (fc1): a
#   random-walk estimate of ~1e-3 of the output scale; 5e-3 leaves a margin for the synthetic weights.
# - Before Ampere, and on Metal: float32 throughout, only cuDNN's / MPS's summation order differs
#   from oneDNN's: ~1e-6 relative per layer on the CPU box (issue 8: 1.1e-6 between batch shapes),
#   5e-5 with a margin.
TOLERANCE_TF32 = 5e-3
TOLERANCE_FLOAT32 = 5e-5

# A fresh interpreter for each check: helpers, then the check's body, which prints one JSON line.
PRELUDE = r'''
import json, os, sys, time, warnings
import numpy as np
import tensorflow as tf  # first: its own import-time warnings are not the library's
warnings.simplefilter("error", UserWarning)  # the library's degraded settings
warnings.simplefilter("error", RuntimeWarning)  # the library's CPU fallback
from vggish_tf2 import Embedder, devices
warnings.filterwarnings("error", category=UserWarning, module=r"vggish_tf2\b.*")
warnings.filterwarnings("error", category=RuntimeWarning, module=r"vggish_tf2\b.*")
from vggish_tf2 import Embedder, devices
MODEL = sys.argv[1]

def waveform(seconds, seed=0):
    return np.random.default_rng(seed).uniform(-0.5, 0.5, int(16000 * seconds)).astype(np.float32)

def used_bytes(index=0):
    """Device memory in use on CUDA GPU `index` (NVML order), or None."""
    try:
        import pynvml
        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index)).used)
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        out = devices.inventory._run_nvidia_smi(["--query-gpu=memory.used", "--format=csv,noheader,nounits"])
        return None if out is None else int(float(out.splitlines()[index])) << 20

def tf_memory_limits():
    """memory_limit of each GPU device TF created, in bytes."""
    from tensorflow.python.client import device_lib
    return [d.memory_limit for d in device_lib.list_local_devices() if d.device_type == "GPU"]

def report(**values):
    print(json.dumps(values))
'''


def run_check(exported_model, body: str, *args: object, env: dict | None = None) -> dict:
    """Run PRELUDE + body in a fresh interpreter (argv: the export, then args); its JSON line."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("VGGISH_")}
    child_env.pop("TF_FORCE_GPU_ALLOW_GROWTH", None)
    child_env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    child_env.update(env or {})
    code = PRELUDE + textwrap.dedent(body)
    result = subprocess.run([sys.executable, "-c", code, str(exported_model), *map(str, args)],
                            capture_output=True, text=True, timeout=1200, env=child_env, check=False)
    assert result.returncode == 0, f"check failed:\n{result.stderr[-4000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def say(request, text: str) -> None:
    """A line on the terminal even under output capture: these figures are the point of the run."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"[gpu] {text}")


@pytest.fixture(scope="module")
def accelerator(exported_model) -> dict:
    """What "auto" picks here, with the GPUs' count and compute capability."""
    return run_check(exported_model, """
        infos = devices.detect_available_devices()
        gpus = [d for d in infos if d.type is not devices.DeviceType.CPU]
        report(kind=gpus[0].type.value if gpus else "cpu", count=len(gpus),
               capability=list(gpus[0].details.get("compute_capability", (0, 0))) if gpus else None,
               names=[d.name for d in gpus], totals=[d.memory_bytes for d in gpus])
    """)


def needs_cuda(accelerator):
    if accelerator["kind"] != "gpu":
        pytest.skip(f"CUDA memory check; this machine's accelerator is {accelerator['kind']}")


def test_memory_limit_takes_effect(exported_model, accelerator, request):
    needs_cuda(accelerator)
    out = run_check(exported_model, """
        e = Embedder(MODEL, device="gpu", memory_fraction=0.5, allow_growth=True, batch_size=16)
        e.embed(waveform(5), sample_rate=16000)
        report(plan=e.plan.device_type.value, warnings=list(e.plan.warnings), limit=e.plan.memory_limit_bytes,
               enforced=e.plan.memory_limit_enforced, tf_limits=tf_memory_limits())
    """)
    say(request, f"memory limit: plan {out['limit']} B, TF's devices {out['tf_limits']}")
    assert out["plan"] == "gpu" and out["warnings"] == [] and out["enforced"] is True
    # TF creates the device with the limit asked (MiB-rounded), give or take its own reserve.
    for tf_limit in out["tf_limits"]:
        assert abs(tf_limit - out["limit"]) <= 64 << 20, (tf_limit, out["limit"])


@pytest.mark.parametrize(
    ("growth", "env"),
    [(True, {}), (False, {}), (True, {"TF_FORCE_GPU_ALLOW_GROWTH": "false"})],
    ids=["growth", "no-growth", "user-false-wins"],
)
def test_memory_growth_is_what_the_plan_reports(exported_model, accelerator, request, growth, env):
    needs_cuda(accelerator)
    out = run_check(exported_model, f"""
        before = used_bytes(0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            e = Embedder(MODEL, device="gpu", devices=[0], memory_fraction=0.9, allow_growth={growth}, batch_size=48)
        e.embed(waveform(2), sample_rate=16000)
        after = used_bytes(0)
        report(reported=e.plan.allow_growth, limit=e.plan.memory_limit_bytes, before=before, after=after,
               warnings=[str(w.message) for w in caught], env=os.environ.get("TF_FORCE_GPU_ALLOW_GROWTH"))
    """, env=env)
    if out["before"] is None:
        pytest.fail("cannot read the GPU's used memory: install nvidia-ml-py or put nvidia-smi on PATH")
    held = out["after"] - out["before"]
    say(request, f"growth asked {growth}, env {env or 'unset'}: reported {out['reported']}, "
                 f"process holds {held >> 20} MiB of a {out['limit'] >> 20} MiB limit")
    if env:
        assert out["env"] == "false"  # the user's value is never changed
        assert len(out["warnings"]) == 1 and "TF_FORCE_GPU_ALLOW_GROWTH=false" in out["warnings"][0]
    else:
        assert out["warnings"] == []
    if out["reported"]:
        assert held < 0.5 * out["limit"], "growth reported on, yet TF took most of the limit up front"
    else:
        assert held > 0.9 * out["limit"], "growth reported off, yet TF did not take the limit up front"
    assert out["reported"] is (growth and not env)


def test_every_gpu_is_a_replica(exported_model, accelerator, request):
    if accelerator["count"] < 2:
        pytest.skip(f"one {accelerator['kind']} GPU here: replicas need two")
    out = run_check(exported_model, """
        e = Embedder(MODEL, device="gpu", batch_size=16)
        e.embed(waveform(60), sample_rate=16000)
        peaks = [tf.config.experimental.get_memory_info(f"GPU:{i}")["peak"] for i in range(e.plan.num_replicas)]
        report(replicas=e.plan.num_replicas, names=list(e.plan.device_names), peaks=peaks, device=e.device)
    """)
    say(request, f"replicas: {out['replicas']} on {out['device']}, peak bytes {out['peaks']}")
    assert out["replicas"] == accelerator["count"]
    assert all(p > 0 for p in out["peaks"]), "a replica's GPU did no work"


def test_oom_halves_the_batch_on_the_gpu(exported_model, accelerator, request):
    needs_cuda(accelerator)
    total = min(accelerator["totals"])
    # ~0.9 GiB: the weights (292 MB) and batch 32 fit, batch 256 (~1.5 GiB of activations) does not.
    fraction = (900 << 20) / total
    out = run_check(exported_model, f"""
        e = Embedder(MODEL, device="gpu", devices=[0], memory_fraction={fraction!r}, batch_size=256)
        x = waveform(400)
        got = e.embed(x, sample_rate=16000)
        stats = e._runner.stats
        small = Embedder(MODEL, device="gpu", devices=[0], memory_fraction={fraction!r}, batch_size=48)
        ref = small.embed(x, sample_rate=16000)  # same device, batches that fit from the start
        report(device=e.device, batch=e.batch_size, retries=stats.oom_retries, fallbacks=stats.cpu_fallbacks,
               rows=int(got.shape[0]), max_rel=float(np.abs(got - ref).max() / np.abs(ref).max()))
    """)
    say(request, f"OOM halving: batch 256 -> {out['batch']} after {out['retries']} retries on {out['device']}")
    assert out["retries"] >= 1, "the limit was not small enough to force an OOM: lower it"
    assert out["fallbacks"] == 0 and "GPU" in out["device"]
    assert out["rows"] == 416
    # Every network call has 12 rows (vggish_tf2.step): an OOM halving changes no bit on the same device.
    assert out["max_rel"] == 0.0


def test_outputs_match_the_cpu_and_throughput(exported_model, accelerator, request):
    body = """
        e = Embedder(MODEL, device=sys.argv[2])
        x = waveform(20)
        got = e.embed(x, sample_rate=16000)
        long = waveform(600, seed=1)
        e.embed(long[: 16000 * 30], sample_rate=16000)  # warm-up: trace the full batch shape
        started = time.perf_counter()
        n = e.embed(long, sample_rate=16000).shape[0]
        seconds = time.perf_counter() - started
        np.save(sys.argv[3], got)
        report(device=e.device, plan=e.plan.device_type.value, warnings=list(e.plan.warnings), batch=e.batch_size,
               examples_per_second=n / seconds, visible_gpus=len(tf.config.get_visible_devices("GPU")))
    """
    outputs = {}
    for device in ("cpu", "auto"):
        path = request.config.cache.mkdir("gpu_check") / f"{device}.npy"
        out = run_check(exported_model, body, device, path)
        outputs[device] = (out, path)
    cpu, gpu = outputs["cpu"][0], outputs["auto"][0]
    assert cpu["plan"] == "cpu" and cpu["visible_gpus"] == 0  # device="cpu" hides the GPUs
    assert gpu["plan"] in ("gpu", "metal") and gpu["warnings"] == []
    ref, got = (np.load(outputs[d][1]) for d in ("cpu", "auto"))
    max_rel = float(np.abs(got - ref).max() / np.abs(ref).max())
    tf32 = accelerator["kind"] == "gpu" and accelerator["capability"][0] >= 8
    tolerance = TOLERANCE_TF32 if tf32 else TOLERANCE_FLOAT32
    say(request, f"{accelerator['names']} (capability {accelerator['capability']}): max |gpu - cpu| / max |cpu| "
                 f"= {max_rel:.3g} (tolerance {tolerance:g}, first estimate: record this figure)")
    say(request, f"throughput: {gpu['examples_per_second']:.1f} examples/s on {gpu['device']} at batch "
                 f"{gpu['batch']}; CPU {cpu['examples_per_second']:.1f} examples/s at batch {cpu['batch']}")
    assert max_rel <= tolerance
