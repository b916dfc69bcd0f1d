"""Device detection, selection and configuration: the only module that knows about CUDA or Metal.

TF2 has no ConfigProto for a device preference, a memory fraction and memory growth, so this
module builds them on ``tf.config``, within what TF allows:

* Everything is configured before TF initializes its runtime (the first tensor, tf.function
  call or SavedModel load). ``detect_available_devices`` and ``configure_devices`` only use
  calls that do not initialize it (``list_physical_devices``, ``get_device_details``,
  ``get_visible_devices``, the setters).
* A memory fraction on CUDA becomes one logical device per GPU with
  ``memory_limit = fraction x total memory``; TF cannot tell a GPU's total memory before it
  initializes, so the total comes from NVML (the optional ``pynvml`` module) or ``nvidia-smi``.
* TF refuses memory growth together with a logical memory limit through its API (limit then
  growth raises; growth then limit silently drops growth, tensorflow#38367). The one way TF does
  allow "grow up to the limit" is the ``TF_FORCE_GPU_ALLOW_GROWTH=true`` environment variable,
  read by the GPU allocator when the device is created (exactly "true" or "false"; anything
  else is ignored by TF). So with a fraction below 1 and growth on, this module sets that
  variable in ``os.environ`` next to the logical limit, unless the user set it: a user's value
  is never changed, and the plan reports (and warns about) what TF will do with it. A fraction
  of 1.0 with growth is plain ``set_memory_growth`` and no limit.
* Metal (Apple's tensorflow-metal PluggableDevice) shares the host's unified memory. TF's
  PluggableDevice factory ignores logical-device settings, so on Metal the fraction is a
  best-effort *budget* (fraction x physical RAM) used for batch sizing, not a limit TF enforces;
  memory growth is applied with ``set_memory_growth``, which pluggable devices accept.
* If the runtime is already initialized, TF raises RuntimeError for any changed setting. This
  module then applies what still can be applied, warns once saying what could not, and returns
  a plan that still places work on the chosen device (``tf.device(plan.device_names[i])``).

Every ``tf.config`` call goes through ``_tf_config()`` so that tests can substitute a recorder.
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
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from vggish_tf2.config import (
    get_settings,
    validate_allow_growth,
    validate_device_preference,
    validate_memory_fraction,
)
from vggish_tf2 import params
from vggish_tf2.errors import InvalidArgumentError

logger = logging.getLogger(__name__)

MIB = 1 << 20
GIB = 1 << 30
CPU_DEVICE_NAME = "/device:CPU:0"

# Read by TF's GPU allocator when a GPU device is created; "true" forces on-demand allocation
# even when a logical memory_limit is set (which the Python API refuses to combine with growth).
FORCE_GROWTH_ENV = "TF_FORCE_GPU_ALLOW_GROWTH"

# Distributions that provide a Metal PluggableDevice: Apple's, and an unofficial one for TF 2.21.
METAL_PLUGIN_DISTRIBUTIONS = ("tensorflow-metal", "tensorflow-metal-plugin")

# One nvidia-smi call answers total and free memory per GPU (MiB, in NVML's order).
NVIDIA_SMI_QUERY = ("--query-gpu=name,memory.total,memory.free", "--format=csv,noheader,nounits")

# "auto" with several CUDA GPUs skips a GPU that is busy: less free memory than this share of the
# freest GPU's. A GPU that another process fills would run out of memory first and, OOM halving
# being per step for all replicas, slow down the others; half keeps GPUs of one model, equally
# idle, together (free memory of idle boards differs by a few hundred MiB of driver context).
BUSY_GPU_FREE_SHARE = 0.5

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

# Module state, on purpose: the variable belongs to the process, and we must know whether we set
# it (and may remove it) or the user did (and it wins over allow_growth=False).
_force_growth_env_set_by_us = False


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


@dataclasses.dataclass(frozen=True)
class DevicePlan:
    """What ``configure_devices`` decided and applied; run replica i under ``tf.device(device_names[i])``."""

    device_type: DeviceType
    device_names: tuple[str, ...]  # TF logical device names, one replica per device
    memory_limit_bytes: int | None  # per replica (smallest over replicas); Metal: budget only
    memory_limit_enforced: bool  # True only when TF itself enforces memory_limit_bytes
    allow_growth: bool  # whether TF's allocator will grow on demand (config and TF_FORCE_GPU_ALLOW_GROWTH)
    warnings: tuple[str, ...] = ()  # every degradation, as also sent to warnings.warn
    device_memory_bytes: int | None = None  # total memory per replica device (smallest), if known
    selection_reason: str | None = None  # why "auto" left some GPUs out (busy), for reports

    @property
    def num_replicas(self) -> int:
        return len(self.device_names)

    @property
    def primary_device(self) -> str:
        return self.device_names[0]


# --- Indirections that tests replace ---------------------------------------------------------------


def _tf_module():
    import tensorflow as tf  # lazy: importing TF costs ~7 s and most callers never need it

    return tf


def _tf_config():
    """``tf.config``; every configuration call in this module goes through here."""
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


# --- Memory ------------------------------------------------------------------------------------------


def _is_macos_arm64() -> bool:
    system, machine = _host_platform()
    return system == "Darwin" and machine.lower() in ("arm64", "aarch64")


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


# --- Detection and selection ------------------------------------------------------------------------


def _physical_index(device: Any, fallback: int) -> int:
    match = re.search(r":(\d+)$", getattr(device, "name", ""))
    return int(match.group(1)) if match else fallback


def _device_details(cfg: Any, device: Any) -> dict[str, Any]:
    try:
        return dict(cfg.experimental.get_device_details(device) or {})
    except (ValueError, RuntimeError, NotImplementedError) as e:  # some plugins report nothing
        logger.debug("no details for %s: %s", getattr(device, "name", device), e)
        return {}


def _detect(cfg: Any) -> list[tuple[DeviceInfo, Any]]:
    """DeviceInfos paired with TF's PhysicalDevice objects; never initializes the runtime."""
    cpus = cfg.list_physical_devices("CPU")
    gpus = cfg.list_physical_devices("GPU")
    visible_gpus = list(cfg.get_visible_devices("GPU")) if gpus else []
    host_bytes = _host_memory_bytes()
    found: list[tuple[DeviceInfo, Any]] = []
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
    if not gpus:
        return found
    details = [_device_details(cfg, gpu) for gpu in gpus]
    # On macOS arm64 there is no CUDA: any GPU TF lists comes from a Metal PluggableDevice
    # (tensorflow-metal reports device_name 'METAL').
    metal = _is_macos_arm64()
    if metal:
        readings: list[tuple[int | None, int | None]] = [(host_bytes, None)] * len(gpus)  # unified memory
    else:
        readings = _cuda_memory_readings([d.get("device_name") for d in details])
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


def detect_available_devices() -> list[DeviceInfo]:
    """Every device TF lists (CPU first), with its memory; does not initialize the TF runtime."""
    return [info for info, _ in _detect(_tf_config())]


def _first(infos: Sequence[DeviceInfo], device_type: DeviceType) -> DeviceInfo | None:
    return next((d for d in infos if d.type is device_type and d.available), None)


def _choose(preference: str, infos: Sequence[DeviceInfo]) -> tuple[DeviceInfo, str | None]:
    """The device for a validated preference, and the fallback warning when it is missing."""
    cpu = _first(infos, DeviceType.CPU) or DeviceInfo(
        type=DeviceType.CPU, available=True, name="CPU", memory_bytes=_host_memory_bytes(),
        details={}, tf_name=CPU_DEVICE_NAME, physical_name="/physical_device:CPU:0", index=0,
    )  # TF always lists a CPU; this only keeps a faked empty list from crashing
    metal, cuda = _first(infos, DeviceType.METAL), _first(infos, DeviceType.GPU)
    if preference == "auto":
        return metal or cuda or cpu, None
    if preference == "cpu":
        return cpu, None
    if preference == "gpu":
        if cuda is not None:
            return cuda, None
        hint = (
            'this Mac has a Metal GPU: use device "metal" or "auto"'
            if metal is not None
            else "check the driver and that TF is a CUDA build: python -m vggish_tf2.devices"
        )
        return cpu, f'device preference "gpu" but TensorFlow lists no CUDA GPU ({hint}); running on CPU'
    # "metal"
    if metal is not None:
        return metal, None
    hint = (
        'install the "metal" extra (tensorflow-metal)'
        if _is_macos_arm64()
        else "Metal needs macOS on Apple silicon"
    )
    return cpu, f'device preference "metal" but TensorFlow lists no Metal GPU ({hint}); running on CPU'


def select_device(preference: str = "auto", *, devices: Sequence[DeviceInfo] | None = None) -> DeviceInfo:
    """The device a preference resolves to: "auto" = Metal > CUDA GPU > CPU.

    A requested device that is missing warns (``UserWarning``) and returns the CPU. ``devices``
    defaults to ``detect_available_devices()``; only available (visible) devices are chosen.
    """
    preference = validate_device_preference(preference)
    infos = detect_available_devices() if devices is None else list(devices)
    chosen, fallback = _choose(preference, infos)
    if fallback is not None:
        warnings.warn(fallback, stacklevel=2)
    return chosen


def _auto_gpus(infos: Sequence[DeviceInfo]) -> tuple[list[DeviceInfo], str | None]:
    """The CUDA GPUs "auto" runs on, and why when it leaves some out (None: all of them).

    With several GPUs, "auto" takes those with the most free memory (NVML or nvidia-smi, read
    when the devices are detected): a GPU with less than BUSY_GPU_FREE_SHARE of the freest GPU's
    free memory is busy with other work and is skipped. Unknown free memory skips nothing.
    """
    gpus = [d for d in infos if d.type is DeviceType.GPU and d.available]
    frees = [d.free_memory_bytes for d in gpus]
    if len(gpus) < 2 or any(f is None for f in frees):
        return gpus, None
    most = max(frees)
    keep = [d for d in gpus if d.free_memory_bytes >= BUSY_GPU_FREE_SHARE * most]
    if len(keep) == len(gpus):
        return gpus, None
    skipped = ", ".join(
        f"GPU:{d.index} ({_format_bytes(d.free_memory_bytes)} free of {_format_bytes(d.memory_bytes)})"
        for d in gpus if d not in keep
    )
    reason = (
        f"auto uses the GPUs with the most free memory ({', '.join(f'GPU:{d.index}' for d in keep)}); "
        f"skipped as busy: {skipped}, less than {BUSY_GPU_FREE_SHARE:.0%} of the freest GPU's "
        f"{_format_bytes(most)}"
    )
    return keep, reason


def _auto_picks(infos: Sequence[DeviceInfo]) -> tuple[list[DeviceInfo], str | None]:
    """What "auto" runs on (one device, or the CUDA GPUs it takes) and why, for reports."""
    chosen, _ = _choose("auto", infos)
    if chosen.type is DeviceType.GPU:
        return _auto_gpus(infos)
    return [chosen], None


def _format_bytes(n: int | None) -> str:
    return "unknown" if n is None else f"{n / GIB:.1f} GiB"


def _describe(info: DeviceInfo) -> str:
    where = info.tf_name or f"{info.physical_name} (hidden)"
    memory = _format_bytes(info.memory_bytes)
    if info.free_memory_bytes is not None:
        memory += f" ({_format_bytes(info.free_memory_bytes)} free)"
    if info.type is DeviceType.METAL:
        memory += " unified (host RAM)"
    elif info.type is DeviceType.CPU:
        memory += " host RAM"
    extra = ""
    if "compute_capability" in info.details:
        major, minor = info.details["compute_capability"]
        extra = f", compute capability {major}.{minor}"
    return f"{info.type.value:<5} {where:<16} {info.name}, {memory}{extra}"


def log_device_info() -> None:
    """Log (INFO) every device TF lists and what "auto" selects."""
    infos = detect_available_devices()
    for info in infos:
        logger.info("device: %s", _describe(info))
    picked, reason = _auto_picks(infos)
    logger.info(
        'device preference "auto" selects %s (%s)', picked[0].type.value, ", ".join(str(d.tf_name) for d in picked)
    )
    if reason:
        logger.info("%s", reason)


# --- Configuration ---------------------------------------------------------------------------------


class _Applier:
    """Runs tf.config setters, collecting what TF refused instead of raising."""

    def __init__(self) -> None:
        self.refused: list[str] = []
        self.runtime_initialized = False  # learnt from a setter's RuntimeError
        self.last_error: type[Exception] | None = None  # what the last refused setter raised

    def __call__(self, what: str, setter: Any, *args: Any) -> bool:
        try:
            setter(*args)
            return True
        except RuntimeError as e:  # "... cannot be modified after being initialized"
            self.runtime_initialized = True
            self.last_error = RuntimeError
            self.refused.append(f"{what}: {e}")
        except ValueError as e:  # e.g. growth on a device that already has a logical config
            self.last_error = ValueError
            self.refused.append(f"{what}: {e}")
        return False


def _parse_device_spec(spec: object, *, tf_type: str) -> int:
    """An index from 1, "1", "GPU:1", "/device:GPU:1", "/physical_device:GPU:1" or a DeviceInfo."""
    if isinstance(spec, DeviceInfo):
        spec_type = "CPU" if spec.type is DeviceType.CPU else "GPU"
        if spec_type != tf_type:
            raise InvalidArgumentError(f"devices entry {spec.physical_name!r} is not a {tf_type}")
        return spec.index
    if isinstance(spec, int) and not isinstance(spec, bool):
        if spec < 0:
            raise InvalidArgumentError(f"devices entry {spec!r} must be >= 0")
        return spec
    if isinstance(spec, str):
        text = spec.strip()
        if text.isdigit():
            return int(text)
        match = re.fullmatch(r"(?:.*/)?(?:physical_)?(?:device:)?(CPU|GPU):(\d+)", text, re.IGNORECASE)
        if match:
            if match.group(1).upper() != tf_type:
                raise InvalidArgumentError(f"devices entry {spec!r} is not a {tf_type}")
            return int(match.group(2))
    raise InvalidArgumentError(
        f"devices entry {spec!r} must be an index or a name like '{tf_type}:0' or '/device:{tf_type}:0'"
    )


def _parse_devices(devices: Sequence[object], *, tf_type: str, count: int) -> list[int]:
    if isinstance(devices, (str, bytes)) or not isinstance(devices, Sequence):
        raise InvalidArgumentError(f"devices={devices!r} must be a list of indices or device names")
    if not devices:
        raise InvalidArgumentError("devices=[] selects nothing; pass None for all devices")
    indices = [_parse_device_spec(spec, tf_type=tf_type) for spec in devices]
    if len(set(indices)) != len(indices):
        raise InvalidArgumentError(f"devices={list(devices)!r} names a device twice")
    for spec, index in zip(devices, indices):
        if index >= count:
            raise InvalidArgumentError(
                f"devices entry {spec!r}: there {'is' if count == 1 else 'are'} only {count} {tf_type} device(s)"
            )
    return sorted(indices)


def _tf_allow_growth(config_growth: bool, env_value: str | None) -> bool:
    """Whether TF's GPU allocator grows on demand, given the growth TF's config asks for.

    TF's own rule, read from its source (tensorflow/core/common_runtime/gpu/gpu_bfc_allocator.cc,
    GetAllowGrowthValue, TF 2.x; the PluggableDevice allocator has the same rule unless the plugin
    itself forces growth): the variable is read with getenv when each GPU allocator is created;
    exactly "true" forces growth on, exactly "false" forces it off (both override the config),
    and any other value, "" and "True" included, is logged as unparsable and ignored, so the
    config's value stands. The config asks for growth only through set_memory_growth; a GPU with
    a logical memory_limit has allow_growth False in the config.
    """
    if env_value == "true":
        return True
    if env_value == "false":
        return False
    return config_growth


def _growth_tf_will_use(
    *, requested: bool, config_growth: bool, may_set_env: bool, notes: list[str], applier: _Applier
) -> bool:
    """Set TF_FORCE_GPU_ALLOW_GROWTH if it is ours to set and needed; return TF's real growth.

    ``may_set_env``: only with a memory limit, where the variable is the one way TF allows growth
    up to the limit. A value the user set is never changed: a warning says what TF will do.
    """
    global _force_growth_env_set_by_us
    current = os.environ.get(FORCE_GROWTH_ENV)
    if current is not None and not _force_growth_env_set_by_us:  # the user's: it wins
        effective = _tf_allow_growth(config_growth, current)
        does = "allocate GPU memory on demand" if effective else "allocate its GPU memory up front"
        if current not in ("true", "false"):
            notes.append(
                f"{FORCE_GROWTH_ENV}={current!r} in the environment is not a value TensorFlow reads "
                f"(only exactly 'true' or 'false'): TF ignores it and will {does}"
                + ("" if effective == requested else f" despite allow_growth={requested}")
                + "; left unchanged"
            )
        elif effective != requested:
            notes.append(
                f"{FORCE_GROWTH_ENV}={current} in the environment makes TF {does} despite "
                f"allow_growth={requested}; left unchanged"
            )
        return effective
    wanted = "true" if may_set_env and requested and not config_growth else None
    if wanted == current:
        return _tf_allow_growth(config_growth, current)
    if applier.runtime_initialized or _runtime_initialized():
        # The allocators read the variable when the GPUs were created; changing it now changes
        # nothing. What they read is assumed to be today's value (it is ours, unchanged since).
        effective = _tf_allow_growth(config_growth, current)
        if wanted == "true":
            applier.refused.append(f"{FORCE_GROWTH_ENV}=true (GPU devices already exist)")
        elif effective != requested:
            applier.refused.append(f"allow_growth={requested} (GPU devices already exist with growth {effective})")
        return effective
    if wanted is None:
        del os.environ[FORCE_GROWTH_ENV]  # set by an earlier plan of this process: undo
        _force_growth_env_set_by_us = False
    else:
        os.environ[FORCE_GROWTH_ENV] = wanted
        _force_growth_env_set_by_us = True
    return _tf_allow_growth(config_growth, wanted)


def _config_growth_after(applied: Sequence[bool], requested: bool, applier: _Applier) -> bool:
    """The growth TF's config holds after set_memory_growth(requested) on each selected device."""
    if all(applied):
        return requested
    # RuntimeError: TF refuses only a *changed* value, so the config holds the other one;
    # ValueError: the device has a logical configuration, which excludes growth.
    return (not requested) if applier.last_error is RuntimeError else False


def _cpu_plan(
    cfg: Any,
    detected: list[tuple[DeviceInfo, Any]],
    *,
    devices: Sequence[object] | None,
    devices_name_cpus: bool,
    applier: _Applier,
) -> tuple[str, ...]:
    """Hide the GPUs; the CPU device names to run on."""
    gpus = [phys for info, phys in detected if info.type is not DeviceType.CPU]
    if gpus:
        # Hidden GPUs cannot take ops by soft placement nor reserve memory at initialization.
        applier(
            "hide the GPUs (set_visible_devices([], 'GPU'); they stay visible and TF may hold their memory)",
            cfg.set_visible_devices, [], "GPU",
        )
    if devices is None:
        return (CPU_DEVICE_NAME,)
    if not devices_name_cpus:
        # With "auto", "gpu" or "metal", devices= names GPUs, and there are none to use: a script
        # written for a GPU machine must still run on a CPU-only one.
        logger.info("devices=%r ignored: no GPU to use, running on CPU", devices)
        return (CPU_DEVICE_NAME,)
    cpus = [phys for info, phys in detected if info.type is DeviceType.CPU]
    # Logical CPUs exist only if the program configured them (e.g. two for multi-device tests);
    # reading that configuration does not initialize the runtime.
    logical = cfg.get_logical_device_configuration(cpus[0]) if cpus else None
    count = len(logical) if logical else 1
    indices = _parse_devices(devices, tf_type="CPU", count=count)
    return tuple(f"/device:CPU:{i}" for i in indices)


def configure_devices(
    preference: str = "auto",
    *,
    memory_fraction: float = 0.8,
    allow_growth: bool = True,
    devices: Sequence[int | str | DeviceInfo] | None = None,
) -> DevicePlan:
    """Choose the device(s) and configure TF for them; call before any other TF work.

    ``preference``: "auto" (Metal > CUDA GPU > CPU), "cpu", "gpu" (CUDA) or "metal"; a missing
    device warns and falls back to CPU. ``devices`` restricts the replicas to some GPUs (indices
    as TF lists them, or names such as "GPU:1"); by default every GPU of the chosen type is a
    replica. Unselected GPUs are hidden, so selected ones are renumbered from /device:GPU:0. On
    CPU, ``devices`` can name logical CPUs the program configured itself.

    ``memory_fraction`` in (0, 1]: on CUDA, a logical device per GPU with ``memory_limit =
    fraction x total`` (total from NVML or nvidia-smi; without either the fraction cannot be
    applied and a warning says so). With ``allow_growth`` as well, TF's API would refuse the
    combination, so ``TF_FORCE_GPU_ALLOW_GROWTH=true`` is set in ``os.environ`` for the GPU
    allocator to grow on demand up to the limit; 1.0 with growth is ``set_memory_growth`` only.
    On Metal the fraction of physical RAM is a budget for batch sizing, not enforced by TF.

    If TF's runtime is already initialized, settings TF refuses are skipped with one warning;
    the returned plan still names the device(s) to place work on.
    """
    preference = validate_device_preference(preference)
    fraction = validate_memory_fraction(memory_fraction)
    growth = validate_allow_growth(allow_growth)

    cfg = _tf_config()
    detected = _detect(cfg)
    # Choose among every listed device, hidden or not: this function sets visibility itself.
    candidates = [dataclasses.replace(info, available=True) for info, _ in detected]
    chosen, fallback = _choose(preference, candidates)
    if fallback is not None:
        warnings.warn(fallback, stacklevel=2)
    selection_reason = None
    if preference == "auto" and chosen.type is DeviceType.GPU and devices is None:
        keep, selection_reason = _auto_gpus(candidates)
        if selection_reason is not None:
            logger.info("%s", selection_reason)
            devices = [d.index for d in keep]
    notes: list[str] = []  # degradations other than the fallback, warned together at the end
    applier = _Applier()

    if chosen.type is DeviceType.CPU:
        names = _cpu_plan(cfg, detected, devices=devices, devices_name_cpus=preference == "cpu", applier=applier)
        plan = DevicePlan(
            device_type=DeviceType.CPU,
            device_names=names,
            memory_limit_bytes=None,
            memory_limit_enforced=False,
            allow_growth=False,
            device_memory_bytes=chosen.memory_bytes,
        )
    else:
        plan = _configure_accelerators(
            cfg, detected, chosen.type, devices=devices, fraction=fraction, growth=growth,
            notes=notes, applier=applier,
        )

    if applier.refused:
        cause = (
            "TensorFlow's runtime was already initialized (a tensor, tf.function or model was "
            "created before the device configuration)"
            if applier.runtime_initialized
            else "TensorFlow refused part of the device configuration"
        )
        message = (
            f"{cause}; not applied: {'; '.join(applier.refused)}. "
            f"Work is placed on {', '.join(plan.device_names)}."
        )
        notes.append(message)
    plan_warnings = [fallback] if fallback is not None else []
    if notes:
        degraded = " ".join(notes)
        warnings.warn(degraded, stacklevel=2)  # one warning for everything not applied
        plan_warnings.append(degraded)
    plan = dataclasses.replace(plan, warnings=tuple(plan_warnings), selection_reason=selection_reason)
    logger.info(
        "device plan: %s on %s, memory limit %s (%s), growth %s",
        plan.device_type.value, ", ".join(plan.device_names), _format_bytes(plan.memory_limit_bytes),
        "enforced" if plan.memory_limit_enforced else "not enforced", plan.allow_growth,
    )
    return plan


def _configure_accelerators(
    cfg: Any,
    detected: list[tuple[DeviceInfo, Any]],
    device_type: DeviceType,
    *,
    devices: Sequence[object] | None,
    fraction: float,
    growth: bool,
    notes: list[str],
    applier: _Applier,
) -> DevicePlan:
    pairs = sorted(
        ((info, phys) for info, phys in detected if info.type is device_type), key=lambda p: p[0].index
    )
    if devices is not None:
        wanted = _parse_devices(devices, tf_type="GPU", count=max(i.index for i, _ in pairs) + 1)
        by_index = {info.index: (info, phys) for info, phys in pairs}
        missing = [i for i in wanted if i not in by_index]
        if missing:
            raise InvalidArgumentError(f"devices={list(devices)!r}: no {device_type.value} GPU {missing}")
        pairs = [by_index[i] for i in wanted]
    selected = [phys for _, phys in pairs]
    totals = [info.memory_bytes for info, _ in pairs]
    device_memory = min(totals) if all(t is not None for t in totals) else None

    visible_ok = applier("select the GPUs (set_visible_devices)", cfg.set_visible_devices, selected, "GPU")

    limit_bytes: int | None = None
    enforced = False
    growth_applied = False
    if device_type is DeviceType.METAL:
        # PluggableDevices ignore logical-device settings: the fraction is a budget only.
        if device_memory is not None:
            limit_bytes = int(fraction * device_memory)
        logger.info(
            "Metal shares host memory; memory_fraction=%s is a budget of %s, not enforced by TF",
            fraction, _format_bytes(limit_bytes),
        )
        applied = [
            applier(f"set_memory_growth({p.name}, {growth})", cfg.experimental.set_memory_growth, p, growth)
            for p in selected
        ]
        # The PluggableDevice allocator reads TF_FORCE_GPU_ALLOW_GROWTH like the CUDA one.
        growth_applied = _growth_tf_will_use(
            requested=growth, config_growth=_config_growth_after(applied, growth, applier),
            may_set_env=False, notes=notes, applier=applier,
        )
    else:
        use_limit = fraction < 1.0
        if use_limit and device_memory is None:
            notes.append(
                f"memory_fraction={fraction} not applied: the total memory of the GPU(s) could not be "
                "read (install nvidia-ml-py, or put nvidia-smi on PATH)"
            )
            use_limit = False
        if use_limit:
            limits = [int(fraction * t) for t in totals]
            applied = [
                applier(
                    f"memory_limit={b // MIB} MiB on {p.name} (set_logical_device_configuration)",
                    cfg.set_logical_device_configuration, p,
                    [cfg.LogicalDeviceConfiguration(memory_limit=b // MIB)],  # TF takes MiB
                )
                for p, b in zip(selected, limits)
            ]
            enforced = all(applied)
            if enforced:
                limit_bytes = min(b // MIB * MIB for b in limits)
                # With a logical device the config's allow_growth is False: only the variable
                # can turn growth (up to the limit) on. Setters succeed silently when nothing
                # changes, even after initialization, but the allocator read the variable when
                # the GPUs were created: _growth_tf_will_use checks for that.
                growth_applied = _growth_tf_will_use(
                    requested=growth, config_growth=False, may_set_env=True, notes=notes, applier=applier
                )
        else:
            applied = [
                applier(f"set_memory_growth({p.name}, {growth})", cfg.experimental.set_memory_growth, p, growth)
                for p in selected
            ]
            growth_applied = _growth_tf_will_use(
                requested=growth, config_growth=_config_growth_after(applied, growth, applier),
                may_set_env=False, notes=notes, applier=applier,
            )

    names = _accelerator_names(cfg, pairs, visible_ok=visible_ok, applier=applier)
    if not names:
        message = f"none of the selected {device_type.value} GPUs is visible to the initialized runtime; running on CPU"
        notes.append(message)
        return DevicePlan(
            device_type=DeviceType.CPU, device_names=(CPU_DEVICE_NAME,), memory_limit_bytes=None,
            memory_limit_enforced=False, allow_growth=False,
            device_memory_bytes=_host_memory_bytes(),
        )
    return DevicePlan(
        device_type=device_type,
        device_names=names,
        memory_limit_bytes=limit_bytes,
        memory_limit_enforced=enforced,
        allow_growth=growth_applied,
        device_memory_bytes=device_memory,
    )


def _accelerator_names(
    cfg: Any, pairs: list[tuple[DeviceInfo, Any]], *, visible_ok: bool, applier: _Applier
) -> tuple[str, ...]:
    """Logical names of the selected GPUs, in physical order."""
    if visible_ok and not applier.runtime_initialized:
        # Exactly the selected GPUs will be visible; TF numbers them in physical order.
        return tuple(f"/device:GPU:{k}" for k in range(len(pairs)))
    # The runtime exists: the selected GPUs keep their position among the visible ones, checked
    # against the logical devices TF actually created.
    visible = list(cfg.get_visible_devices("GPU"))
    names = [f"/device:GPU:{visible.index(phys)}" for _, phys in pairs if phys in visible]
    if applier.runtime_initialized and names:
        # Only now is listing logical devices safe: it would otherwise initialize the runtime.
        existing = {d.name.rsplit("device:", 1)[-1] for d in cfg.list_logical_devices("GPU")}
        names = [n for n in names if n.rsplit("device:", 1)[-1] in existing]
    return tuple(names)


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


# --- Report -------------------------------------------------------------------------------------------


def _metal_plugin_versions() -> dict[str, str]:
    found = {}
    for dist in METAL_PLUGIN_DISTRIBUTIONS:
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def devices_report() -> str:
    """A human-readable report: TF build, Metal plugin, each device, and what "auto" picks."""
    tf = _tf_module()
    lines = [f"TensorFlow      {tf.__version__}"]
    try:
        build = dict(tf.sysconfig.get_build_info())
    except Exception as e:  # noqa: BLE001 - a report must not die on an odd build
        build = {}
        logger.debug("get_build_info failed: %s", e)
    if build.get("is_cuda_build"):
        lines.append(
            f"CUDA build      yes (CUDA {build.get('cuda_version', '?')}, cuDNN {build.get('cudnn_version', '?')})"
        )
    else:
        lines.append("CUDA build      no")
    plugins = _metal_plugin_versions()
    lines.append(
        "Metal plugin    " + (", ".join(f"{d} {v}" for d, v in plugins.items()) if plugins else "not installed")
    )
    system, machine = _host_platform()
    lines.append(f"Platform        {system} {machine}")
    infos = detect_available_devices()
    lines.append("Devices")
    lines.extend(f"  {_describe(info)}" for info in infos)
    picked, reason = _auto_picks(infos)
    lines.append(
        f'"auto" picks    {picked[0].type.value} ({", ".join(f"{d.tf_name}: {d.name}" for d in picked)})'
    )
    if reason:
        lines.append(f"                {reason}")
    try:
        settings = get_settings()
        chosen, fallback = _choose(settings.device_preference, infos)
        lines.append(
            f"Settings        device preference {settings.device_preference!r} -> {chosen.type.value}"
            f", memory fraction {settings.gpu_memory_fraction}, allow growth {settings.gpu_allow_growth}"
        )
        if fallback:
            lines.append(f"                {fallback}")
    except InvalidArgumentError as e:
        lines.append(f"Settings        invalid: {e}")
    return "\n".join(lines)


def main() -> int:
    """``python -m vggish_tf2.devices``: print the device report."""
    print(devices_report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
