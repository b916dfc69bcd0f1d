"""Which devices a preference resolves to: "auto" = Metal > CUDA GPU > CPU.

A requested device that is missing falls back to the CPU with a warning that says why. With
several CUDA GPUs, "auto" skips a GPU that is busy with other work (the half-free-memory rule,
``BUSY_GPU_FREE_SHARE``). ``devices=`` entries (indices or names such as "GPU:1") are parsed here.
Everything this module knows about the host comes from ``inventory``.
"""
from __future__ import annotations

import dataclasses
import logging
import re
import warnings
from collections.abc import Sequence
from typing import Any

from vggish_tf2.config import validate_device_preference
from vggish_tf2.devices import inventory
from vggish_tf2.devices.inventory import CPU_DEVICE_NAME, DeviceInfo, DeviceType, _format_bytes
from vggish_tf2.errors import InvalidArgumentError

logger = logging.getLogger(__name__)

# "auto" with several CUDA GPUs skips a GPU that is busy: less free memory than this share of the
# freest GPU's. A GPU that another process fills would run out of memory first and, OOM halving
# being per step for all replicas, slow down the others; half keeps GPUs of one model, equally
# idle, together (free memory of idle boards differs by a few hundred MiB of driver context).
BUSY_GPU_FREE_SHARE = 0.5


@dataclasses.dataclass(frozen=True)
class Selection:
    """What ``configure_devices`` runs on, before any setting is applied."""

    device: DeviceInfo  # the chosen device (the first of its type)
    fallback: str | None  # the warning when the preferred device is missing
    devices: Sequence[object] | None  # the caller's devices=, or the GPUs "auto" keeps
    reason: str | None  # why "auto" left some GPUs out (busy), for reports


def _first(infos: Sequence[DeviceInfo], device_type: DeviceType) -> DeviceInfo | None:
    return next((d for d in infos if d.type is device_type and d.available), None)


def _choose(preference: str, infos: Sequence[DeviceInfo]) -> tuple[DeviceInfo, str | None]:
    """The device for a validated preference, and the fallback warning when it is missing."""
    cpu = _first(infos, DeviceType.CPU) or DeviceInfo(
        type=DeviceType.CPU, available=True, name="CPU", memory_bytes=inventory._host_memory_bytes(),
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
        if inventory._is_macos_arm64()
        else "Metal needs macOS on Apple silicon"
    )
    return cpu, f'device preference "metal" but TensorFlow lists no Metal GPU ({hint}); running on CPU'


def select_device(preference: str = "auto", *, devices: Sequence[DeviceInfo] | None = None) -> DeviceInfo:
    """The device a preference resolves to: "auto" = Metal > CUDA GPU > CPU.

    A requested device that is missing warns (``UserWarning``) and returns the CPU. ``devices``
    defaults to ``detect_available_devices()``; only available (visible) devices are chosen.
    """
    preference = validate_device_preference(preference)
    infos = inventory.detect_available_devices() if devices is None else list(devices)
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


def _select_for_configuration(
    preference: str, detected: Sequence[tuple[DeviceInfo, Any]], devices: Sequence[object] | None
) -> Selection:
    """The choice ``configure_devices`` applies, among every listed device, hidden or not.

    Hidden devices count: configuration sets visibility itself. "auto" on several CUDA GPUs,
    without ``devices``, keeps the GPUs that are not busy (``_auto_gpus``).
    """
    candidates = [dataclasses.replace(info, available=True) for info, _ in detected]
    chosen, fallback = _choose(preference, candidates)
    reason = None
    if preference == "auto" and chosen.type is DeviceType.GPU and devices is None:
        keep, reason = _auto_gpus(candidates)
        if reason is not None:
            logger.info("%s", reason)
            devices = [d.index for d in keep]
    return Selection(device=chosen, fallback=fallback, devices=devices, reason=reason)


# --- devices= entries --------------------------------------------------------------------------------


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


def _selected_gpus(
    detected: Sequence[tuple[DeviceInfo, Any]], device_type: DeviceType, devices: Sequence[object] | None
) -> list[tuple[DeviceInfo, Any]]:
    """The GPUs of ``device_type`` that ``devices`` names (all of them for None), in physical order."""
    pairs = sorted(
        ((info, phys) for info, phys in detected if info.type is device_type), key=lambda p: p[0].index
    )
    if devices is None:
        return pairs
    wanted = _parse_devices(devices, tf_type="GPU", count=max(i.index for i, _ in pairs) + 1)
    by_index = {info.index: (info, phys) for info, phys in pairs}
    missing = [i for i in wanted if i not in by_index]
    if missing:
        raise InvalidArgumentError(f"devices={list(devices)!r}: no {device_type.value} GPU {missing}")
    return [by_index[i] for i in wanted]


def _selected_cpu_names(devices: Sequence[object], *, count: int) -> tuple[str, ...]:
    """The logical CPU device names that ``devices`` names, among ``count`` logical CPUs."""
    indices = _parse_devices(devices, tf_type="CPU", count=count)
    return tuple(f"/device:CPU:{i}" for i in indices)
