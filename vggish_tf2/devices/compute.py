"""What the model step runs with on a plan's devices: where and at what precision the front end
runs, XLA or not, how many examples a batch holds, and which errors mean "out of device memory".

``configuration`` sets TF's devices up (visibility, memory) before the runtime starts and returns
a ``DevicePlan``; this module only reads a plan and changes no TF setting, so it can be called at
any time, also once the runtime is initialized, and knows nothing of how the devices were set up:

* ``resolve_compute_options``: on Metal, the float64 front end on the CPU and no XLA (MPS has no
  float64, XLA no compiler for PluggableDevices); elsewhere, as asked.
* ``suggest_batch_size``: examples per replica from the plan's memory (the constants below, with
  the figures they come from).
* ``is_gpu_oom``: whether an error is TF running out of device memory, which the runner answers
  with a smaller batch, then the CPU.

Importing it does not import TensorFlow.
"""
from __future__ import annotations

import dataclasses
import logging
import re
import sys
import warnings

from vggish_tf2 import params
from vggish_tf2.devices.configuration import DevicePlan
from vggish_tf2.devices.inventory import CPU_DEVICE_NAME, MIB, DeviceType
from vggish_tf2.errors import InvalidArgumentError

logger = logging.getLogger(__name__)

# --- Batch sizing (see suggest_batch_size) -------------------------------------------------------
# Batch sizes are whole slices of params.STEP_EXAMPLES (12) rows: every network call has that shape.
# Measured on the 2-core EPYC box, quiet, TF 2.21: 118.8, 119.5, 122.3, 119.1 ex/s at batch 32, 64,
# 128, 256, with peak RSS 1162, 1259, 1493, 1809 MB. Throughput is flat, memory is not: 48.
CPU_BATCH_SIZE = 4 * params.STEP_EXAMPLES  # 48
MIN_BATCH_SIZE = params.STEP_EXAMPLES
MAX_BATCH_SIZE = 84 * params.STEP_EXAMPLES  # 1008
UNKNOWN_MEMORY_BATCH_SIZE = 4 * params.STEP_EXAMPLES  # accelerator whose memory could not be read: stay small
WEIGHTS_BYTES = 73_000_000 * 4  # ~72.9 M float32 parameters incl. biases and PCA
# conv1 alone outputs 96x64x64 float32 = 1.5 MiB per example; with the front end's STFT,
# the later convolutions and cuDNN's copies, ~6 MiB per example at float32.
ACTIVATION_BYTES_PER_EXAMPLE = 6 * MIB
# Share of the memory left after the weights that activations may take: the rest is cuDNN
# workspace, allocator fragmentation and XLA scratch space.
ACTIVATION_MEMORY_SHARE = 0.5


# --- What runs where -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ComputeOptions:
    """How the device step runs on a plan's devices: from ``resolve_compute_options``."""

    frontend_precision: str  # "float64" (the reference's) or "float32"
    frontend_device: str | None  # where the front end runs; None: on each replica's device
    jit_compile: bool  # XLA-compile the device step
    warnings: tuple[str, ...] = ()  # each also sent to warnings.warn


def resolve_compute_options(
    plan: DevicePlan, *, frontend_precision: str | None = None, jit_compile: bool = False
) -> ComputeOptions:
    """What the device step can run on ``plan``'s devices, given what the caller asked.

    ``frontend_precision`` None means "float64", the reference's precision, on every device.

    Metal (tensorflow-metal, a PluggableDevice on Apple's MPS) has no float64: MPS has no fp64
    type (Apple's jax-metal answers the same; jax-ml/jax#16435), and TF would either fail to place
    the float64 ops or move them to the CPU one by one. Of the two ways out, forcing the float32
    front end and running the front end on the CPU, this takes the CPU: the reference's numbers
    (float64 log-mel, bit for bit the CPU's) stay the same on every machine, and it costs little:
    the front end is ~2 MFLOP per example against the network's ~1,730 MFLOP, and what crosses
    to the GPU is the [96, 64] float32 log-mel (24 KiB) instead of the 15,600-sample window
    (61 KiB). An explicit "float32" stays on Metal.

    ``jit_compile`` on Metal is turned off with a warning: XLA has no compiler for PluggableDevice
    platforms ("could not find registered compiler for platform METAL"; the same for DirectML,
    microsoft/tensorflow-directml-plugin#332), so a script written for CUDA still runs on a Mac.
    On CUDA and the CPU both settings run as asked. Invalid values raise InvalidArgumentError.
    """
    from vggish_tf2.frontend import FRONTEND_PRECISIONS  # numpy only, no TensorFlow

    if frontend_precision is not None and frontend_precision not in FRONTEND_PRECISIONS:
        raise InvalidArgumentError(
            f"frontend_precision={frontend_precision!r} must be one of {', '.join(FRONTEND_PRECISIONS)} or None"
        )
    if not isinstance(jit_compile, bool):
        raise InvalidArgumentError(f"jit_compile={jit_compile!r} must be True or False")
    precision = frontend_precision or "float64"
    frontend_device = None
    notes: list[str] = []
    if plan.device_type is DeviceType.METAL:
        if precision == "float64":
            frontend_device = CPU_DEVICE_NAME
            logger.info("Metal has no float64: the float64 front end runs on %s, the network on Metal", CPU_DEVICE_NAME)
        if jit_compile:
            notes.append(
                "jit_compile=True ignored on Metal: XLA has no compiler for the Metal PluggableDevice; "
                "running without XLA"
            )
            jit_compile = False
    for note in notes:
        warnings.warn(note, stacklevel=2)
    return ComputeOptions(
        frontend_precision=precision, frontend_device=frontend_device, jit_compile=jit_compile,
        warnings=tuple(notes),
    )


# --- Runtime helpers --------------------------------------------------------------------------------

_OOM_MESSAGE = re.compile(
    r"\bOOM\b|out of memory|CUDA_ERROR_OUT_OF_MEMORY|failed to allocate|Dst tensor is not initialized"
    r"|Insufficient Memory|ErrorOutOfMemory",
    re.IGNORECASE,
)


def is_gpu_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is TF running out of device memory (worth retrying with a smaller batch).

    ResourceExhaustedError always; other TF op errors (InternalError, UnknownError, ...) when the
    message is one TF, CUDA or Metal uses for an allocation failure.
    """
    tf = sys.modules.get("tensorflow")
    if tf is None:  # TF not imported: the exception cannot be one of its errors
        return False
    errors = tf.errors
    if isinstance(exc, errors.ResourceExhaustedError):
        return True
    return isinstance(exc, errors.OpError) and bool(_OOM_MESSAGE.search(str(exc)))


def suggest_batch_size(plan: DevicePlan) -> int:
    """Examples per batch *per replica* for ``plan``: whole 12-row slices, 12 to 1008.

    CPU: 48. GPU/Metal: what fits in half the memory left after VGGish's ~292 MB of weights at
    ~6 MiB per example, from the memory limit (or the device's total when there is none).
    """
    if plan.device_type is DeviceType.CPU:
        return CPU_BATCH_SIZE
    budget = plan.memory_limit_bytes or plan.device_memory_bytes
    if budget is None:
        return UNKNOWN_MEMORY_BATCH_SIZE
    fits = int((budget - WEIGHTS_BYTES) * ACTIVATION_MEMORY_SHARE) // ACTIVATION_BYTES_PER_EXAMPLE
    return max(MIN_BATCH_SIZE, min(fits, MAX_BATCH_SIZE) // params.STEP_EXAMPLES * params.STEP_EXAMPLES)
