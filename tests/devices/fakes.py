"""A recording fake of ``tf.config`` and fake hosts, shared by the tests of ``vggish_tf2.devices``.

The fake mimics what TF 2.21's eager context does (read from its source and PLATFORM_FACTS):
setters are silent when the value does not change and raise RuntimeError for a change once the
runtime is initialized; growth on a device with a logical configuration raises ValueError; and
``list_logical_devices`` initializes the runtime, so the fake fails the test if it is called
before initialization. The ``host`` fixture (conftest.py) puts it in place of ``inventory``'s seams.
"""
from __future__ import annotations

import collections
import dataclasses
import types
import warnings

from vggish_tf2.devices.configuration import DevicePlan, configure_devices
from vggish_tf2.devices.inventory import DeviceInfo, DeviceType

GIB = 1 << 30
HOST_RAM_BYTES = 16 * GIB
RTX_3060 = {"compute_capability": (8, 6), "device_name": "NVIDIA GeForce RTX 3060"}
METAL = {"device_name": "METAL"}

# Same shape as TF's namedtuples, so equality and hashing behave the same.
PhysicalDevice = collections.namedtuple("PhysicalDevice", ["name", "device_type"])
LogicalDevice = collections.namedtuple("LogicalDevice", ["name", "device_type"])


@dataclasses.dataclass(frozen=True)
class LogicalDeviceConfiguration:
    memory_limit: int | None = None


def gpu(i: int) -> PhysicalDevice:
    return PhysicalDevice(name=f"/physical_device:GPU:{i}", device_type="GPU")


CPU0 = PhysicalDevice(name="/physical_device:CPU:0", device_type="CPU")


class FakeTFConfig:
    """Records every call as (method, *args) with devices shortened to 'GPU:0'."""

    def __init__(self, gpu_details=(), *, initialized=False, visible=None):
        self.calls: list[tuple] = []
        self.gpus = [gpu(i) for i in range(len(gpu_details))]
        self.details = dict(zip(self.gpus, gpu_details))
        self.visible = list(self.gpus if visible is None else visible)
        self.growth = {g: False for g in self.gpus}
        self.virtual: dict = {}
        self.cpu_logical = None
        self.initialized = initialized
        self.LogicalDeviceConfiguration = LogicalDeviceConfiguration
        self.experimental = types.SimpleNamespace(
            get_device_details=self._get_device_details, set_memory_growth=self._set_memory_growth
        )

    @staticmethod
    def _short(device):
        return device.name.split("device:")[-1]

    def _record(self, *call):
        self.calls.append(call)

    def setter_calls(self):
        return [c for c in self.calls if c[0].startswith("set_")]

    def list_physical_devices(self, device_type):
        self._record("list_physical_devices", device_type)
        return [CPU0] if device_type == "CPU" else list(self.gpus)

    def get_visible_devices(self, device_type):
        self._record("get_visible_devices", device_type)
        return [d for d in self.visible if d.device_type == device_type]

    def _get_device_details(self, device):
        self._record("get_device_details", self._short(device))
        return dict(self.details.get(device, {}))

    def set_visible_devices(self, devices_, device_type):
        self._record("set_visible_devices", [self._short(d) for d in devices_], device_type)
        if list(devices_) == self.visible:
            return
        if self.initialized:
            raise RuntimeError("Visible devices cannot be modified after being initialized")
        self.visible = list(devices_)

    def _set_memory_growth(self, device, enable):
        self._record("set_memory_growth", self._short(device), enable)
        if device in self.virtual:
            raise ValueError("Cannot set memory growth on device when virtual devices configured")
        if self.growth[device] == enable:
            return
        if self.initialized:
            raise RuntimeError("Physical devices cannot be modified after being initialized")
        self.growth[device] = enable

    def set_logical_device_configuration(self, device, configs):
        self._record("set_logical_device_configuration", self._short(device), [c.memory_limit for c in configs])
        if self.virtual.get(device) == configs:
            return
        if self.initialized:
            raise RuntimeError("Virtual devices cannot be modified after being initialized")
        self.virtual[device] = configs

    def get_logical_device_configuration(self, device):
        self._record("get_logical_device_configuration", self._short(device))
        return self.cpu_logical if device == CPU0 else self.virtual.get(device)

    def list_logical_devices(self, device_type):
        self._record("list_logical_devices", device_type)
        if not self.initialized:
            raise AssertionError("list_logical_devices would initialize the TF runtime")
        names = [f"/job:localhost/replica:0/task:0/device:GPU:{k}" for k in range(len(self.visible))]
        return [LogicalDevice(n, "GPU") for n in names]


DETECTION = [
    ("list_physical_devices", "CPU"),
    ("list_physical_devices", "GPU"),
]


def detection_calls(n_gpus):
    if not n_gpus:
        return list(DETECTION)
    return DETECTION + [("get_visible_devices", "GPU")] + [
        ("get_device_details", f"GPU:{i}") for i in range(n_gpus)
    ]


def cuda_host(host, n_gpus=1, total_mib=12288, free_mib=None, **fake_kwargs):
    """``free_mib``: one figure per GPU; by default each has all but 300 MiB (driver context) free."""
    host.fake = FakeTFConfig([RTX_3060] * n_gpus, **fake_kwargs)
    frees = free_mib if free_mib is not None else [total_mib - 300] * n_gpus
    host.smi_output = "".join(f"NVIDIA GeForce RTX 3060, {total_mib}, {free}\n" for free in frees)
    return host.fake


def metal_host(host, **fake_kwargs):
    host.platform = ("Darwin", "arm64")
    host.fake = FakeTFConfig([METAL], **fake_kwargs)
    return host.fake


def configure_quietly(*args, **kwargs) -> DevicePlan:
    """configure_devices, failing the test on any warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return configure_devices(*args, **kwargs)


def make_info(device_type, *, available=True, index=0):
    tf_type = "CPU" if device_type is DeviceType.CPU else "GPU"
    return DeviceInfo(
        type=device_type, available=available, name=tf_type, memory_bytes=None, details={},
        tf_name=f"/device:{tf_type}:{index}" if available else None,
        physical_name=f"/physical_device:{tf_type}:{index}", index=index,
    )


def plan_with(device_type, *, limit=None, total=None):
    return DevicePlan(
        device_type=device_type, device_names=("/device:GPU:0",), memory_limit_bytes=limit,
        memory_limit_enforced=limit is not None, allow_growth=True, device_memory_bytes=total,
    )
