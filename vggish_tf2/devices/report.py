"""What a person reads: the device report (``vggish-tf2 devices``, ``python -m vggish_tf2.devices``)
and the INFO log of every device and of what "auto" picks."""
from __future__ import annotations

import logging

from vggish_tf2.config import get_settings
from vggish_tf2.devices import choice, inventory
from vggish_tf2.devices.inventory import DeviceInfo, DeviceType, _format_bytes
from vggish_tf2.errors import InvalidArgumentError

logger = logging.getLogger(__name__)


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
    infos = inventory.detect_available_devices()
    for info in infos:
        logger.info("device: %s", _describe(info))
    picked, reason = choice._auto_picks(infos)
    logger.info(
        'device preference "auto" selects %s (%s)', picked[0].type.value, ", ".join(str(d.tf_name) for d in picked)
    )
    if reason:
        logger.info("%s", reason)


def devices_report() -> str:
    """A human-readable report: TF build, Metal plugin, each device, and what "auto" picks."""
    version, build = inventory._tf_build()
    lines = [f"TensorFlow      {version}"]
    if build.get("is_cuda_build"):
        lines.append(
            f"CUDA build      yes (CUDA {build.get('cuda_version', '?')}, cuDNN {build.get('cudnn_version', '?')})"
        )
    else:
        lines.append("CUDA build      no")
    plugins = inventory._metal_plugin_versions()
    lines.append(
        "Metal plugin    " + (", ".join(f"{d} {v}" for d, v in plugins.items()) if plugins else "not installed")
    )
    system, machine = inventory._host_platform()
    lines.append(f"Platform        {system} {machine}")
    infos = inventory.detect_available_devices()
    lines.append("Devices")
    lines.extend(f"  {_describe(info)}" for info in infos)
    lines.extend(_auto_lines(infos))
    lines.extend(_settings_lines(infos))
    return "\n".join(lines)


def _auto_lines(infos: list[DeviceInfo]) -> list[str]:
    picked, reason = choice._auto_picks(infos)
    lines = [f'"auto" picks    {picked[0].type.value} ({", ".join(f"{d.tf_name}: {d.name}" for d in picked)})']
    if reason:
        lines.append(f"                {reason}")
    return lines


def _settings_lines(infos: list[DeviceInfo]) -> list[str]:
    """The settings (environment) and the device their preference resolves to here."""
    try:
        settings = get_settings()
        chosen, fallback = choice._choose(settings.device_preference, infos)
    except InvalidArgumentError as e:
        return [f"Settings        invalid: {e}"]
    lines = [
        f"Settings        device preference {settings.device_preference!r} -> {chosen.type.value}"
        f", memory fraction {settings.gpu_memory_fraction}, allow growth {settings.gpu_allow_growth}"
    ]
    if fallback:
        lines.append(f"                {fallback}")
    return lines


def main() -> int:
    """``python -m vggish_tf2.devices``: print the device report."""
    print(devices_report())
    return 0
