"""Devices: the only part of vggish_tf2 that knows about CUDA or Metal. One module per role:

* ``inventory``: what TensorFlow and the host report (TF's device lists, NVML / nvidia-smi, host
  memory, platform); the only module that reads them, and the seams tests replace.
* ``choice``: a preference -> the devices to run on ("auto" = Metal > CUDA GPU > CPU; with
  several CUDA GPUs "auto" skips busy ones); ``devices=`` entries.
* ``configuration``: ``configure_devices`` (visible devices, memory growth, logical memory limits,
  TF_FORCE_GPU_ALLOW_GROWTH) -> a ``DevicePlan``.
* ``compute``: what the model step runs with on a plan: ``resolve_compute_options`` (front end
  precision and place, XLA), ``suggest_batch_size``, ``is_gpu_oom``.
* ``report``: ``devices_report`` (``vggish-tf2 devices``, ``python -m vggish_tf2.devices``) and
  ``log_device_info``.

Importing this package does not import TensorFlow.
"""
from vggish_tf2.devices.choice import BUSY_GPU_FREE_SHARE, select_device
from vggish_tf2.devices.compute import (
    ACTIVATION_BYTES_PER_EXAMPLE,
    ACTIVATION_MEMORY_SHARE,
    CPU_BATCH_SIZE,
    MAX_BATCH_SIZE,
    MIN_BATCH_SIZE,
    UNKNOWN_MEMORY_BATCH_SIZE,
    WEIGHTS_BYTES,
    ComputeOptions,
    is_gpu_oom,
    resolve_compute_options,
    suggest_batch_size,
)
from vggish_tf2.devices.configuration import FORCE_GROWTH_ENV, DevicePlan, configure_devices
from vggish_tf2.devices.inventory import (
    CPU_DEVICE_NAME,
    GIB,
    METAL_PLUGIN_DISTRIBUTIONS,
    MIB,
    NVIDIA_SMI_QUERY,
    DeviceInfo,
    DeviceType,
    detect_available_devices,
)
from vggish_tf2.devices.report import devices_report, log_device_info, main

__all__ = [
    "ACTIVATION_BYTES_PER_EXAMPLE",
    "ACTIVATION_MEMORY_SHARE",
    "BUSY_GPU_FREE_SHARE",
    "CPU_BATCH_SIZE",
    "CPU_DEVICE_NAME",
    "FORCE_GROWTH_ENV",
    "GIB",
    "MAX_BATCH_SIZE",
    "METAL_PLUGIN_DISTRIBUTIONS",
    "MIB",
    "MIN_BATCH_SIZE",
    "NVIDIA_SMI_QUERY",
    "UNKNOWN_MEMORY_BATCH_SIZE",
    "WEIGHTS_BYTES",
    "ComputeOptions",
    "DeviceInfo",
    "DevicePlan",
    "DeviceType",
    "configure_devices",
    "detect_available_devices",
    "devices_report",
    "is_gpu_oom",
    "log_device_info",
    "main",
    "resolve_compute_options",
    "select_device",
    "suggest_batch_size",
]
