"""The machine a bench ran on: CPU model and the flags oneDNN dispatches on, cores, GPUs and their
memory (from :mod:`vggish_tf2.devices`), TensorFlow's build, and the device the preference chose.

Environment variables that change the speed (``ONEDNN_MAX_CPU_ISA`` above all: it caps the
instructions oneDNN uses, e.g. ``AVX2`` on an AVX-512 CPU) are reported as they are, not used.
"""
from __future__ import annotations

import dataclasses
import os
import platform
import subprocess
import sys

from vggish_tf2 import config, devices

# CPU features oneDNN's kernels are chosen by (x86 /proc/cpuinfo "flags", Arm "Features").
ONEDNN_CPU_FLAGS = (
    "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni",
    "avx512f", "avx512dq", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
    "amx_tile", "amx_bf16", "amx_int8",
    "asimd", "asimddp", "sve", "sve2", "bf16", "i8mm",
)
ONEDNN_ISA_ENV = "ONEDNN_MAX_CPU_ISA"
# Other variables a reader of the figures should know were set (threads, oneDNN on or off, GPUs).
SPEED_ENVIRONMENT = ("TF_ENABLE_ONEDNN_OPTS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
                     "OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "TF_FORCE_GPU_ALLOW_GROWTH")


@dataclasses.dataclass(frozen=True)
class Gpu:
    """A GPU TensorFlow lists (CUDA, or Apple's Metal device)."""

    name: str  # "NVIDIA GeForce RTX 3060"; "METAL"
    kind: str  # "gpu" (CUDA) or "metal"
    tf_name: str | None  # "/device:GPU:0"; None when hidden
    memory_bytes: int | None  # total; Metal: the host's unified memory
    free_memory_bytes: int | None  # CUDA, when NVML or nvidia-smi answers
    compute_capability: str | None  # CUDA: "8.6"
    used: bool  # the bench's device step ran on it


@dataclasses.dataclass(frozen=True)
class Machine:
    platform: str  # "Linux x86_64"
    python: str
    cpu_model: str
    cpu_flags: tuple[str, ...]  # those of ONEDNN_CPU_FLAGS the CPU has
    logical_cores: int | None
    usable_cores: int | None  # this process's affinity (a container's or taskset's share)
    host_memory_bytes: int | None
    tensorflow: str
    tensorflow_cuda: str | None  # the CUDA version of TF's build; None: not a CUDA build
    onednn_max_cpu_isa: str | None  # the cap, when set
    environment: dict  # the SPEED_ENVIRONMENT variables that are set
    device_preference: str  # as asked (--device, else VGGISH_DEVICE_PREFERENCE, else auto)
    device: str  # what it resolved to: cpu, gpu, metal
    device_names: tuple[str, ...]
    gpus: tuple[Gpu, ...]


def cpu_model_and_flags() -> tuple[str, tuple[str, ...]]:
    """The CPU's model name and its ONEDNN_CPU_FLAGS, from /proc/cpuinfo (Linux), sysctl (macOS),
    else the platform module (model only)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as stream:
            for line in stream:
                name, _, value = line.partition(":")
                fields.setdefault(name.strip(), value.strip())
                if "model name" in fields and ("flags" in fields or "Features" in fields):
                    break
    except OSError:
        pass  # not Linux
    model = (fields.get("model name") or _sysctl("machdep.cpu.brand_string") or platform.processor()
             or platform.machine())
    present = set((fields.get("flags") or fields.get("Features") or "").split())
    return model, tuple(flag for flag in ONEDNN_CPU_FLAGS if flag in present)


def _sysctl(name: str) -> str | None:
    if sys.platform != "darwin":
        return None
    try:
        return subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5,
                              check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _usable_cores() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS has no affinity
        return os.cpu_count()


def _tensorflow_build() -> tuple[str, str | None]:
    import tensorflow as tf

    try:
        build = dict(tf.sysconfig.get_build_info())
    except Exception:  # noqa: BLE001 - a description only: an odd build still benches
        build = {}
    return tf.__version__, (str(build.get("cuda_version")) if build.get("is_cuda_build") else None)


def _gpu(info: devices.DeviceInfo, used_names: tuple[str, ...]) -> Gpu:
    capability = info.details.get("compute_capability")
    return Gpu(name=info.name, kind=info.type.value, tf_name=info.tf_name, memory_bytes=info.memory_bytes,
               free_memory_bytes=info.free_memory_bytes,
               compute_capability=".".join(map(str, capability)) if capability else None,
               used=info.tf_name is not None and info.tf_name in used_names)


def describe_machine(*, device_preference: str | None = None, plan: devices.DevicePlan | None = None) -> Machine:
    """This machine; the device is ``plan``'s (what an Embedder configured), else what
    ``device_preference`` (default: the settings') selects now."""
    preference = config.validate_device_preference(device_preference or config.get_settings().device_preference)
    infos = devices.detect_available_devices()
    if plan is not None:
        device, names = plan.device_type.value, tuple(plan.device_names)
    else:
        chosen = devices.select_device(preference, devices=infos)
        device, names = chosen.type.value, (chosen.tf_name or devices.CPU_DEVICE_NAME,)
    model, flags = cpu_model_and_flags()
    tensorflow, cuda = _tensorflow_build()
    host_memory = next((info.memory_bytes for info in infos if info.type is devices.DeviceType.CPU), None)
    return Machine(
        platform=f"{platform.system()} {platform.machine()}", python=platform.python_version(), cpu_model=model,
        cpu_flags=flags, logical_cores=os.cpu_count(), usable_cores=_usable_cores(), host_memory_bytes=host_memory,
        tensorflow=tensorflow, tensorflow_cuda=cuda, onednn_max_cpu_isa=os.environ.get(ONEDNN_ISA_ENV) or None,
        environment={name: os.environ[name] for name in SPEED_ENVIRONMENT if os.environ.get(name)},
        device_preference=preference, device=device, device_names=names,
        gpus=tuple(_gpu(info, names) for info in infos if info.type is not devices.DeviceType.CPU),
    )


__all__ = ["Gpu", "Machine", "ONEDNN_CPU_FLAGS", "ONEDNN_ISA_ENV", "SPEED_ENVIRONMENT", "cpu_model_and_flags",
           "describe_machine"]
