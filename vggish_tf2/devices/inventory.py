"""What TensorFlow and the host report: devices, GPU memory, host memory, platform.

The only module of the package that reads ``tf.config``'s device lists, NVML, ``nvidia-smi``,
the host's memory and platform. It only lists, never configures, and never initializes TF's
runtime (``list_physical_devices``, ``get_device_details`` and ``get_visible_devices`` do not).

TF cannot tell a CUDA GPU's total memory before its runtime initializes, so totals and free
memory come from NVML (the optional ``pynvml`` module) or ``nvidia-smi``. On macOS arm64 any GPU
TF lists comes from a Metal PluggableDevice, which shares the host's unified memory.

The functions with a leading underscore below are the package's seams: tests replace them
(``monkeypatch.setattr(inventory, "_tf_config", ...)``), and the other modules of the package call
them as ``inventory._name()`` so that a replacement takes effect everywhere.
"""
from __future__ import annotations

import dataclasses
import enum
import importlib.metadata
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

logger = logging.getLogger(__name__)

MIB = 1 << 20
GIB = 1 << 30
CPU_DEVICE_NAME = "/device:CPU:0"

# Distributions that provide a Metal PluggableDevice: Apple's, and an unofficial one for TF 2.21.
METAL_PLUGIN_DISTRIBUTIONS = ("tensorflow-metal", "tensorflow-metal-plugin")

# One nvidia-smi call answers total and free memory per GPU (MiB, in NVML's order).
NVIDIA_SMI_QUERY = ("--query-gpu=name,memory.total,memory.free", "--format=csv,noheader,nounits")


class DeviceType(str, enum.Enum):
    """Where VGGish runs. ``GPU`` means a CUDA GPU; Apple's GPU is ``METAL``."""

    CPU = "cpu"
    GPU = "gpu"
    METAL = "metal"


@dataclasses.dataclass(frozen=True)
class DeviceInfo:
    """One physical device as TensorFlow lists it."""

    type: DeviceType
    available: bool  # visible to TF now (a GPU hidden by set_visible_devices is listed, not available)
    name: str  # human-readable: "NVIDIA GeForce RTX 3060", "METAL", "CPU"
    memory_bytes: int | None  # total device memory; host RAM for CPU and Metal (unified memory)
    details: Mapping[str, Any] = dataclasses.field(hash=False)  # tf get_device_details()
    tf_name: str | None  # logical device while visible, "/device:GPU:0"; None when hidden
    physical_name: str  # "/physical_device:GPU:0"
    index: int  # position among TF's physical devices of the same TF type
    free_memory_bytes: int | None = None  # CUDA: free now, from NVML/nvidia-smi; else None

    @property
    def device_type(self) -> DeviceType:
        """The original system's name for ``type`` (``device.device_type.value`` -> "gpu")."""
        return self.type


def _format_bytes(n: int | None) -> str:
    return "unknown" if n is None else f"{n / GIB:.1f} GiB"


# --- Seams that tests replace ------------------------------------------------------------------------


def _tf_module():
    import tensorflow as tf  # lazy: importing TF costs ~7 s and most callers never need it

    return tf


def _tf_config():
    """``tf.config``; every device listing and configuration call of the package goes through here."""
    return _tf_module().config


def _runtime_initialized() -> bool | None:
    """Whether TF's eager runtime exists already; None when this TF cannot tell.

    Used only where no setter would raise to tell us (an environment variable read at device
    creation). Reads a private attribute present in TF 2.18-2.21, hence the broad fallback.
    """
    if "tensorflow" not in sys.modules:
        return False  # no TF imported, no runtime
    try:
        from tensorflow.python.eager import context

        return context.context()._context_handle is not None
    except Exception:  # noqa: BLE001 - any failure just means "unknown"
        return None


def _host_platform() -> tuple[str, str]:
    return platform.system(), platform.machine()


def _run_nvidia_smi(args: Sequence[str]) -> str | None:
    """stdout of ``nvidia-smi *args``, or None when it is missing or fails."""
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return None
    try:
        result = subprocess.run(
            [executable, *args], capture_output=True, text=True, timeout=15, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        logger.debug("nvidia-smi failed: %s", e)
        return None
    if result.returncode != 0:
        logger.debug("nvidia-smi exited %d: %s", result.returncode, result.stderr.strip())
        return None
    return result.stdout


def _host_memory_bytes() -> int | None:
    """Physical RAM; on Apple silicon also what the GPU shares."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        pass
    if _host_platform()[0] == "Darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "hw.memsize"], capture_output=True, text=True, timeout=5, check=True
            ).stdout
            return int(out.strip())
        except (OSError, subprocess.SubprocessError, ValueError):
            pass
    return None


def _metal_plugin_versions() -> dict[str, str]:
    found = {}
    for dist in METAL_PLUGIN_DISTRIBUTIONS:
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


# --- The host and TF's build ---------------------------------------------------------------------------


def _is_macos_arm64() -> bool:
    system, machine = _host_platform()
    return system == "Darwin" and machine.lower() in ("arm64", "aarch64")


def _tf_build() -> tuple[str, dict[str, Any]]:
    """TF's version and build information (empty when this build cannot tell)."""
    tf = _tf_module()
    try:
        build = dict(tf.sysconfig.get_build_info())
    except Exception as e:  # noqa: BLE001 - a report must not die on an odd build
        build = {}
        logger.debug("get_build_info failed: %s", e)
    return tf.__version__, build


# --- CUDA GPU memory -----------------------------------------------------------------------------------


def _nvml_inventory() -> list[tuple[str, int, int | None]] | None:
    """(name, total bytes, free bytes) per GPU in NVML order, via the optional ``pynvml`` module."""
    try:
        import pynvml  # from nvidia-ml-py; optional
    except ImportError:
        return None
    nvml_error = getattr(pynvml, "NVMLError", Exception)
    try:
        pynvml.nvmlInit()
    except nvml_error as e:  # no driver or no libnvidia-ml
        logger.debug("NVML unavailable: %s", e)
        return None
    try:
        inventory = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            if isinstance(name, bytes):  # older pynvml returns bytes
                name = name.decode()
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            free = getattr(memory, "free", None)
            inventory.append((str(name), int(memory.total), None if free is None else int(free)))
        return inventory
    except nvml_error as e:
        logger.debug("NVML query failed: %s", e)
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except nvml_error:
            pass


def _nvidia_smi_number_mib(text: str) -> int | None:
    try:
        return int(float(text)) * MIB
    except ValueError:  # "[N/A]" (MIG instances, some drivers)
        return None


def _nvidia_smi_inventory() -> list[tuple[str, int, int | None]] | None:
    out = _run_nvidia_smi(NVIDIA_SMI_QUERY)
    if out is None:
        return None
    inventory = []
    for line in out.splitlines():
        if not line.strip():
            continue
        # "name, total, free": a name may hold a comma, the numbers never do.
        parts = line.split(",")
        name = ",".join(parts[:-2]).strip()
        total = _nvidia_smi_number_mib(parts[-2]) if len(parts) >= 3 else None
        if total is None or not name:
            logger.debug("unexpected nvidia-smi line: %r", line)
            return None
        inventory.append((name, total, _nvidia_smi_number_mib(parts[-1])))
    return inventory or None


def _cuda_visible_order() -> list[int] | None:
    # CUDA renumbers GPUs after CUDA_VISIBLE_DEVICES; NVML and nvidia-smi do not.
    text = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if not text:
        return None
    parts = [p.strip() for p in text.split(",")]
    return [int(p) for p in parts] if all(p.isdigit() for p in parts) else None  # UUIDs: by name


def _cuda_memory_readings(tf_gpu_names: Sequence[str | None]) -> list[tuple[int | None, int | None]]:
    """(total, free) bytes of each TF-listed CUDA GPU (in TF's order), None where unknown.

    One NVML (or nvidia-smi) query answers both. Best-effort mapping from TF's CUDA ordinal to
    NVML's index: through CUDA_VISIBLE_DEVICES, checked against the device name; when the names
    disagree (CUDA's default order is fastest first, NVML's is PCI bus), a name that has a single
    total among all GPUs still gives the total (its free memory, which differs per board, not).
    """
    inventory = _nvml_inventory() or _nvidia_smi_inventory()
    if not inventory:
        return [(None, None)] * len(tf_gpu_names)
    order = _cuda_visible_order()
    readings: list[tuple[int | None, int | None]] = []
    for tf_index, name in enumerate(tf_gpu_names):
        nvml_index = order[tf_index] if order is not None and tf_index < len(order) else tf_index
        reading: tuple[int | None, int | None] = (None, None)
        if 0 <= nvml_index < len(inventory) and name in (None, inventory[nvml_index][0]):
            reading = inventory[nvml_index][1:]
        else:
            same_name = [(t, f) for n, t, f in inventory if n == name]
            if len(same_name) == 1:
                reading = same_name[0]
            elif len({t for t, _ in same_name}) == 1:
                reading = (same_name[0][0], None)
        readings.append(reading)
    return readings


def _cuda_memory_totals_bytes(tf_gpu_names: Sequence[str | None]) -> list[int | None]:
    """Total memory of each TF-listed CUDA GPU (in TF's order), None where it cannot be read."""
    return [total for total, _ in _cuda_memory_readings(tf_gpu_names)]


# --- TF's devices --------------------------------------------------------------------------------------


def _physical_index(device: Any, fallback: int) -> int:
    match = re.search(r":(\d+)$", getattr(device, "name", ""))
    return int(match.group(1)) if match else fallback


def _device_details(cfg: Any, device: Any) -> dict[str, Any]:
    try:
        return dict(cfg.experimental.get_device_details(device) or {})
    except (ValueError, RuntimeError, NotImplementedError) as e:  # some plugins report nothing
        logger.debug("no details for %s: %s", getattr(device, "name", device), e)
        return {}


def _cpu_infos(cpus: Sequence[Any], host_bytes: int | None) -> list[tuple[DeviceInfo, Any]]:
    found = []
    for position, cpu in enumerate(cpus):
        index = _physical_index(cpu, position)
        info = DeviceInfo(
            type=DeviceType.CPU,
            available=True,
            name="CPU",
            memory_bytes=host_bytes,
            details={},
            tf_name=f"/device:CPU:{index}",
            physical_name=cpu.name,
            index=index,
        )
        found.append((info, cpu))
    return found


def _gpu_infos(cfg: Any, gpus: Sequence[Any], host_bytes: int | None) -> list[tuple[DeviceInfo, Any]]:
    visible_gpus = list(cfg.get_visible_devices("GPU"))
    details = [_device_details(cfg, gpu) for gpu in gpus]
    # On macOS arm64 there is no CUDA: any GPU TF lists comes from a Metal PluggableDevice
    # (tensorflow-metal reports device_name 'METAL').
    metal = _is_macos_arm64()
    if metal:
        readings: list[tuple[int | None, int | None]] = [(host_bytes, None)] * len(gpus)  # unified memory
    else:
        readings = _cuda_memory_readings([d.get("device_name") for d in details])
    found = []
    for position, (gpu, detail, (total, free)) in enumerate(zip(gpus, details, readings)):
        visible = gpu in visible_gpus
        info = DeviceInfo(
            type=DeviceType.METAL if metal else DeviceType.GPU,
            available=visible,
            name=str(detail.get("device_name") or gpu.name),
            memory_bytes=total,
            details=detail,
            tf_name=f"/device:GPU:{visible_gpus.index(gpu)}" if visible else None,
            physical_name=gpu.name,
            index=_physical_index(gpu, position),
            free_memory_bytes=free,
        )
        found.append((info, gpu))
    return found


def _detect(cfg: Any) -> list[tuple[DeviceInfo, Any]]:
    """DeviceInfos paired with TF's PhysicalDevice objects; never initializes the runtime."""
    cpus = cfg.list_physical_devices("CPU")
    gpus = cfg.list_physical_devices("GPU")
    host_bytes = _host_memory_bytes()
    found = _cpu_infos(cpus, host_bytes)
    if gpus:
        found += _gpu_infos(cfg, gpus, host_bytes)
    return found


def detect_available_devices() -> list[DeviceInfo]:
    """Every device TF lists (CPU first), with its memory; does not initialize the TF runtime."""
    return [info for info, _ in _detect(_tf_config())]


# --- After configuration -------------------------------------------------------------------------------


def _logical_cpu_count(cfg: Any, detected: Sequence[tuple[DeviceInfo, Any]]) -> int:
    """How many logical CPUs the program configured on the first CPU (1 when it configured none)."""
    cpus = [phys for info, phys in detected if info.type is DeviceType.CPU]
    # Logical CPUs exist only if the program configured them (e.g. two for multi-device tests);
    # reading that configuration does not initialize the runtime.
    logical = cfg.get_logical_device_configuration(cpus[0]) if cpus else None
    return len(logical) if logical else 1


def _visible_gpus(cfg: Any) -> list[Any]:
    """TF's visible GPUs (PhysicalDevice objects), in TF's order."""
    return list(cfg.get_visible_devices("GPU"))


def _logical_gpu_ids(cfg: Any) -> set[str]:
    """The logical GPU devices TF created ({"GPU:0", ...}); initializes the runtime if it is not yet."""
    return {d.name.rsplit("device:", 1)[-1] for d in cfg.list_logical_devices("GPU")}
