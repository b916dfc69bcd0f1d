"""Device detection, selection and configuration against a recording fake of ``tf.config``.

The fake mimics what TF 2.21's eager context does (read from its source and PLATFORM_FACTS):
setters are silent when the value does not change and raise RuntimeError for a change once the
runtime is initialized; growth on a device with a logical configuration raises ValueError; and
``list_logical_devices`` initializes the runtime, so the fake fails the test if it is called
before initialization. Real TF runs only in subprocesses at the end (configuration is global).
"""
from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import subprocess
import sys
import textwrap
import types
import warnings

import pytest

from vggish_tf2 import devices
from vggish_tf2.config import get_settings
from vggish_tf2.devices import (
    MIB,
    DevicePlan,
    DeviceInfo,
    DeviceType,
    configure_devices,
    detect_available_devices,
    devices_report,
    is_gpu_oom,
    log_device_info,
    select_device,
    suggest_batch_size,
)
from vggish_tf2.errors import InvalidArgumentError

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


@pytest.fixture
def host(monkeypatch):
    """A Linux host with 16 GiB, no NVML, no nvidia-smi, clean TF/CUDA variables."""
    state = types.SimpleNamespace(fake=None, platform=("Linux", "x86_64"), smi_output=None, smi_calls=[])

    def run_smi(args):
        state.smi_calls.append(list(args))
        return state.smi_output

    monkeypatch.setattr(devices, "_tf_config", lambda: state.fake)
    monkeypatch.setattr(devices, "_runtime_initialized", lambda: state.fake.initialized)
    monkeypatch.setattr(devices, "_host_platform", lambda: state.platform)
    monkeypatch.setattr(devices, "_host_memory_bytes", lambda: HOST_RAM_BYTES)
    monkeypatch.setattr(devices, "_run_nvidia_smi", run_smi)
    monkeypatch.setattr(devices, "_force_growth_env_set_by_us", False)
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError
    monkeypatch.delenv("TF_FORCE_GPU_ALLOW_GROWTH", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return state


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


# --- No GPU -----------------------------------------------------------------------------------------


def test_no_gpu_auto_is_cpu_with_only_listing_calls(host):
    host.fake = FakeTFConfig()
    plan = configure_quietly("auto")
    assert host.fake.calls == DETECTION
    assert plan.device_type is DeviceType.CPU
    assert plan.device_names == ("/device:CPU:0",)
    assert (plan.memory_limit_bytes, plan.memory_limit_enforced, plan.allow_growth) == (None, False, False)
    assert plan.warnings == ()


def test_no_gpu_requested_gpu_warns_and_falls_back(host):
    host.fake = FakeTFConfig()
    with pytest.warns(UserWarning, match=r'"gpu" but TensorFlow lists no CUDA GPU.*running on CPU'):
        plan = configure_devices("gpu")
    assert plan.device_names == ("/device:CPU:0",)
    assert len(plan.warnings) == 1 and "no CUDA GPU" in plan.warnings[0]
    assert host.fake.setter_calls() == []


def test_metal_requested_on_linux_warns(host):
    host.fake = FakeTFConfig()
    with pytest.warns(UserWarning, match=r"Metal needs macOS on Apple silicon"):
        plan = configure_devices("metal")
    assert plan.device_type is DeviceType.CPU


def test_metal_requested_on_mac_without_plugin_suggests_the_extra(host):
    host.platform = ("Darwin", "arm64")
    host.fake = FakeTFConfig()  # without tensorflow-metal TF lists no GPU
    with pytest.warns(UserWarning, match=r'lists no Metal GPU \(install the "metal" extra'):
        plan = configure_devices("metal")
    assert plan.device_type is DeviceType.CPU


# --- Metal ------------------------------------------------------------------------------------------


def test_metal_detected_on_macos_arm64(host):
    metal_host(host)
    [cpu, metal] = detect_available_devices()
    assert cpu.type is DeviceType.CPU and cpu.tf_name == "/device:CPU:0"
    assert metal.type is DeviceType.METAL
    assert (metal.name, metal.available, metal.tf_name) == ("METAL", True, "/device:GPU:0")
    assert metal.memory_bytes == HOST_RAM_BYTES  # unified memory
    assert metal.details == {"device_name": "METAL"}
    assert host.fake.calls == detection_calls(1)


def test_metal_auto_configures_growth_and_a_budget_only(host):
    fake = metal_host(host)
    plan = configure_quietly("auto", memory_fraction=0.5)
    assert fake.calls == detection_calls(1) + [
        ("set_visible_devices", ["GPU:0"], "GPU"),
        ("set_memory_growth", "GPU:0", True),
    ]
    assert plan.device_type is DeviceType.METAL
    assert plan.device_names == ("/device:GPU:0",)
    # PluggableDevices ignore logical-device limits: a budget, honestly marked as not enforced.
    assert plan.memory_limit_bytes == HOST_RAM_BYTES // 2
    assert plan.memory_limit_enforced is False
    assert plan.allow_growth is True
    assert "TF_FORCE_GPU_ALLOW_GROWTH" not in os.environ


def test_metal_without_growth_sets_growth_false(host):
    fake = metal_host(host)
    plan = configure_quietly("metal", allow_growth=False)
    assert fake.setter_calls() == [
        ("set_visible_devices", ["GPU:0"], "GPU"),
        ("set_memory_growth", "GPU:0", False),
    ]
    assert plan.allow_growth is False


def test_gpu_requested_on_a_mac_points_to_metal_and_hides_it(host):
    fake = metal_host(host)
    with pytest.warns(UserWarning, match=r'no CUDA GPU \(this Mac has a Metal GPU: use device "metal" or "auto"\)'):
        plan = configure_devices("gpu")
    assert plan.device_names == ("/device:CPU:0",)
    assert fake.setter_calls() == [("set_visible_devices", [], "GPU")]


def test_a_gpu_off_macos_arm64_is_cuda_even_on_intel_macs(host):
    host.platform = ("Darwin", "x86_64")
    host.fake = FakeTFConfig([RTX_3060])
    assert select_device("auto").type is DeviceType.GPU


# --- CUDA -------------------------------------------------------------------------------------------


def test_cuda_detected_with_memory_from_nvidia_smi(host):
    cuda_host(host)
    [_, info] = detect_available_devices()
    assert info.type is DeviceType.GPU
    assert info.name == "NVIDIA GeForce RTX 3060"
    assert info.memory_bytes == 12288 * MIB
    assert info.details["compute_capability"] == (8, 6)
    assert info.free_memory_bytes == (12288 - 300) * MIB
    # One query answers total and free memory (free memory picks the GPUs "auto" uses).
    assert host.smi_calls == [["--query-gpu=name,memory.total,memory.free", "--format=csv,noheader,nounits"]]


def test_cuda_fraction_with_growth_sets_limit_and_force_growth_env(host):
    fake = cuda_host(host)
    plan = configure_quietly("auto", memory_fraction=0.8, allow_growth=True)
    limit_mib = int(0.8 * 12288 * MIB) // MIB  # 9830
    assert fake.calls == detection_calls(1) + [
        ("set_visible_devices", ["GPU:0"], "GPU"),
        ("set_logical_device_configuration", "GPU:0", [limit_mib]),
    ]
    assert os.environ["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"  # growth up to the limit
    assert plan == DevicePlan(
        device_type=DeviceType.GPU,
        device_names=("/device:GPU:0",),
        memory_limit_bytes=limit_mib * MIB,
        memory_limit_enforced=True,
        allow_growth=True,
        warnings=(),
        device_memory_bytes=12288 * MIB,
    )


def test_cuda_fraction_without_growth_sets_only_the_limit(host):
    fake = cuda_host(host)
    plan = configure_quietly("gpu", memory_fraction=0.5, allow_growth=False)
    assert fake.setter_calls() == [
        ("set_visible_devices", ["GPU:0"], "GPU"),
        ("set_logical_device_configuration", "GPU:0", [6144]),
    ]
    assert "TF_FORCE_GPU_ALLOW_GROWTH" not in os.environ
    assert (plan.memory_limit_bytes, plan.allow_growth) == (6144 * MIB, False)


def test_growth_env_set_by_an_earlier_plan_is_removed_when_growth_is_turned_off(host):
    cuda_host(host)
    configure_quietly("gpu", memory_fraction=0.5, allow_growth=True)
    assert os.environ["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    configure_quietly("gpu", memory_fraction=0.5, allow_growth=False)
    assert "TF_FORCE_GPU_ALLOW_GROWTH" not in os.environ


def test_users_force_growth_env_wins_and_is_reported(host, monkeypatch):
    cuda_host(host)
    monkeypatch.setenv("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    with pytest.warns(UserWarning, match=r"TF_FORCE_GPU_ALLOW_GROWTH=true in the environment .* allow_growth=False"):
        configure_devices("gpu", memory_fraction=0.5, allow_growth=False)
    assert os.environ["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"  # the user's setting is left alone


@pytest.mark.parametrize("value", ["True", "1", "yes", "", "TRUE"])
def test_a_users_force_growth_value_tf_does_not_read_is_kept_and_growth_reported_off(host, monkeypatch, value):
    # TF's GetAllowGrowthValue (gpu_bfc_allocator.cc) reads only exactly "true"/"false" and logs
    # anything else as unparsable, keeping the config's allow_growth, which a memory_limit makes
    # False. The old code lower-cased "True", took it for "true" and reported growth on; it
    # overwrote "1" with "true".
    cuda_host(host)
    monkeypatch.setenv("TF_FORCE_GPU_ALLOW_GROWTH", value)
    with pytest.warns(UserWarning, match=rf"TF_FORCE_GPU_ALLOW_GROWTH={value!r} in the environment is not a value "
                      r"TensorFlow reads \(only exactly 'true' or 'false'\): TF ignores it and will allocate its "
                      r"GPU memory up front despite allow_growth=True; left unchanged"):
        plan = configure_devices("gpu", memory_fraction=0.5, allow_growth=True)
    assert os.environ["TF_FORCE_GPU_ALLOW_GROWTH"] == value
    assert (plan.memory_limit_enforced, plan.allow_growth) == (True, False)


def test_a_users_false_is_not_overwritten_and_growth_is_reported_off(host, monkeypatch):
    cuda_host(host)
    monkeypatch.setenv("TF_FORCE_GPU_ALLOW_GROWTH", "false")
    with pytest.warns(UserWarning, match=r"TF_FORCE_GPU_ALLOW_GROWTH=false in the environment makes TF allocate its "
                      r"GPU memory up front despite allow_growth=True; left unchanged"):
        plan = configure_devices("gpu", memory_fraction=0.5, allow_growth=True)
    assert os.environ["TF_FORCE_GPU_ALLOW_GROWTH"] == "false"
    assert plan.allow_growth is False


def test_a_users_false_turns_off_set_memory_growth_too(host, monkeypatch):
    # No limit: set_memory_growth(True) is applied, but "false" overrides it in the allocator.
    fake = cuda_host(host)
    monkeypatch.setenv("TF_FORCE_GPU_ALLOW_GROWTH", "false")
    with pytest.warns(UserWarning, match=r"=false in the environment makes TF allocate its GPU memory up front"):
        plan = configure_devices("gpu", memory_fraction=1.0, allow_growth=True)
    assert fake.setter_calls()[-1] == ("set_memory_growth", "GPU:0", True)
    assert plan.allow_growth is False


def test_a_users_true_is_reported_as_growth_on(host, monkeypatch):
    cuda_host(host)
    monkeypatch.setenv("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    with pytest.warns(UserWarning, match=r"on demand despite allow_growth=False"):
        plan = configure_devices("gpu", memory_fraction=0.5, allow_growth=False)
    assert plan.allow_growth is True  # what TF does, not what was asked


def test_a_users_unread_value_with_plain_memory_growth_is_only_noted(host, monkeypatch):
    cuda_host(host)
    monkeypatch.setenv("TF_FORCE_GPU_ALLOW_GROWTH", "1")
    with pytest.warns(UserWarning, match=r"'1' in the environment is not a value TensorFlow reads .* will allocate "
                      r"GPU memory on demand; left unchanged"):
        plan = configure_devices("gpu", memory_fraction=1.0, allow_growth=True)
    assert plan.allow_growth is True  # the config's set_memory_growth(True) stands


def test_metal_reports_a_users_false(host, monkeypatch):
    metal_host(host)
    monkeypatch.setenv("TF_FORCE_GPU_ALLOW_GROWTH", "false")
    with pytest.warns(UserWarning, match=r"=false in the environment"):
        plan = configure_devices("metal", allow_growth=True)
    assert plan.allow_growth is False


def test_growth_turned_off_too_late_is_reported(host):
    fake = cuda_host(host)
    configure_quietly("gpu", memory_fraction=0.5, allow_growth=True)  # sets the variable
    fake.initialized = True  # the GPUs were created with growth on
    with pytest.warns(UserWarning, match=r"allow_growth=False \(GPU devices already exist with growth True\)"):
        plan = configure_devices("gpu", memory_fraction=0.5, allow_growth=False)
    assert plan.allow_growth is True
    assert os.environ["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"  # removing it would change nothing


def test_cuda_full_fraction_with_growth_is_plain_memory_growth(host):
    fake = cuda_host(host)
    plan = configure_quietly("gpu", memory_fraction=1.0, allow_growth=True)
    assert fake.setter_calls() == [
        ("set_visible_devices", ["GPU:0"], "GPU"),
        ("set_memory_growth", "GPU:0", True),
    ]
    assert "TF_FORCE_GPU_ALLOW_GROWTH" not in os.environ
    assert (plan.memory_limit_bytes, plan.memory_limit_enforced, plan.allow_growth) == (None, False, True)


def test_cuda_memory_from_nvml_before_nvidia_smi(host, monkeypatch):
    fake = cuda_host(host)
    nvml_calls = []

    class Memory:
        total = 8 * GIB

    fake_nvml = types.SimpleNamespace(
        NVMLError=RuntimeError,
        nvmlInit=lambda: nvml_calls.append("init"),
        nvmlShutdown=lambda: nvml_calls.append("shutdown"),
        nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetName=lambda h: b"NVIDIA GeForce RTX 3060",  # older pynvml returns bytes
        nvmlDeviceGetMemoryInfo=lambda h: Memory,
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml)
    plan = configure_quietly("gpu", memory_fraction=0.25)
    assert host.smi_calls == []
    assert nvml_calls == ["init", "shutdown"]
    assert fake.setter_calls()[-1] == ("set_logical_device_configuration", "GPU:0", [2048])
    assert plan.device_memory_bytes == 8 * GIB


def test_nvml_failure_falls_back_to_nvidia_smi(host, monkeypatch):
    cuda_host(host, total_mib=4096)

    class NVMLError(Exception):
        pass

    def fail():
        raise NVMLError("Driver Not Loaded")

    monkeypatch.setitem(sys.modules, "pynvml", types.SimpleNamespace(NVMLError=NVMLError, nvmlInit=fail))
    [_, info] = detect_available_devices()
    assert info.memory_bytes == 4096 * MIB
    assert len(host.smi_calls) == 1


def test_unknown_gpu_memory_warns_and_applies_growth_only(host):
    fake = cuda_host(host)
    host.smi_output = None  # neither NVML nor nvidia-smi
    with pytest.warns(UserWarning, match=r"memory_fraction=0.8 not applied: the total memory .* could not be read"):
        plan = configure_devices("auto")
    assert fake.setter_calls() == [
        ("set_visible_devices", ["GPU:0"], "GPU"),
        ("set_memory_growth", "GPU:0", True),
    ]
    assert (plan.memory_limit_bytes, plan.allow_growth, plan.device_memory_bytes) == (None, True, None)


def test_cpu_preference_hides_the_gpus(host):
    fake = cuda_host(host, n_gpus=2)
    plan = configure_quietly("cpu")
    assert fake.calls == detection_calls(2) + [("set_visible_devices", [], "GPU")]
    assert plan.device_names == ("/device:CPU:0",)


def test_cuda_totals_follow_cuda_visible_devices(host, monkeypatch):
    host.smi_output = "Tesla T4, 15360, 15000\nNVIDIA A100-SXM4-40GB, 40960, 40000\n"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert devices._cuda_memory_totals_bytes(["NVIDIA A100-SXM4-40GB"]) == [40960 * MIB]


def test_cuda_totals_match_by_name_when_orders_differ(host):
    # CUDA orders fastest first, NVML by PCI bus: TF's GPU:0 is NVML's 1 here.
    host.smi_output = "Tesla T4, 15360, 15000\nNVIDIA A100-SXM4-40GB, 40960, 40000\n"
    totals = devices._cuda_memory_totals_bytes(["NVIDIA A100-SXM4-40GB", "Tesla T4", "Unknown GPU"])
    assert totals == [40960 * MIB, 15360 * MIB, None]


# --- Several GPUs -----------------------------------------------------------------------------------


def test_several_gpus_are_all_replicas_by_default(host):
    fake = cuda_host(host, n_gpus=3)
    plan = configure_quietly("auto", memory_fraction=0.5)
    assert fake.setter_calls() == [
        ("set_visible_devices", ["GPU:0", "GPU:1", "GPU:2"], "GPU"),
        ("set_logical_device_configuration", "GPU:0", [6144]),
        ("set_logical_device_configuration", "GPU:1", [6144]),
        ("set_logical_device_configuration", "GPU:2", [6144]),
    ]
    assert plan.device_names == ("/device:GPU:0", "/device:GPU:1", "/device:GPU:2")
    assert plan.num_replicas == 3


def test_auto_takes_the_gpus_with_the_most_free_memory(host, caplog):
    # The original system's "dynamic device switching based on load": GPU:1 is busy elsewhere.
    fake = cuda_host(host, n_gpus=3, free_mib=[11000, 2000, 10500])
    with caplog.at_level(logging.INFO, logger="vggish_tf2.devices"):
        plan = configure_quietly("auto", memory_fraction=1.0)
    assert fake.setter_calls()[0] == ("set_visible_devices", ["GPU:0", "GPU:2"], "GPU")
    assert plan.device_names == ("/device:GPU:0", "/device:GPU:1")
    reason = ("auto uses the GPUs with the most free memory (GPU:0, GPU:2); skipped as busy: "
              "GPU:1 (2.0 GiB free of 12.0 GiB), less than 50% of the freest GPU's 10.7 GiB")
    assert plan.selection_reason == reason
    assert reason in caplog.text


def test_gpu_preference_and_explicit_devices_ignore_free_memory(host):
    fake = cuda_host(host, n_gpus=3, free_mib=[11000, 2000, 10500])
    plan = configure_quietly("gpu", memory_fraction=1.0)
    assert plan.num_replicas == 3 and plan.selection_reason is None
    plan = configure_quietly("auto", memory_fraction=1.0, devices=[1])
    assert fake.visible == [gpu(1)] and plan.selection_reason is None


def test_auto_uses_every_gpu_when_free_memory_is_similar_or_unknown(host):
    cuda_host(host, n_gpus=2, free_mib=[11000, 6000])
    assert configure_quietly("auto").num_replicas == 2
    host.smi_output = "NVIDIA GeForce RTX 3060, 12288, [N/A]\nNVIDIA GeForce RTX 3060, 12288, 100\n"
    assert configure_quietly("auto").num_replicas == 2


def test_devices_report_and_log_say_why_auto_skips_a_busy_gpu(host, monkeypatch, caplog):
    cuda_host(host, n_gpus=2, free_mib=[11000, 1000])
    monkeypatch.setattr(devices, "_tf_module", lambda: types.SimpleNamespace(
        __version__="2.21.0", sysconfig=types.SimpleNamespace(get_build_info=dict)))
    monkeypatch.setattr(devices, "_metal_plugin_versions", dict)
    lines = devices_report().splitlines()
    assert "  gpu   /device:GPU:1    NVIDIA GeForce RTX 3060, 12.0 GiB (1.0 GiB free), compute capability 8.6" in lines
    assert '"auto" picks    gpu (/device:GPU:0: NVIDIA GeForce RTX 3060)' in lines
    assert any("skipped as busy: GPU:1 (1.0 GiB free of 12.0 GiB)" in line for line in lines)
    with caplog.at_level(logging.INFO, logger="vggish_tf2.devices"):
        log_device_info()
    assert "skipped as busy: GPU:1" in caplog.text


@pytest.mark.parametrize(
    "selection", [[2, 1], ["GPU:1", "/physical_device:GPU:2"], ["/device:gpu:2", "1"]]
)
def test_devices_restricts_and_renumbers(host, selection):
    fake = cuda_host(host, n_gpus=3)
    plan = configure_quietly("gpu", memory_fraction=1.0, devices=selection)
    assert fake.setter_calls() == [
        ("set_visible_devices", ["GPU:1", "GPU:2"], "GPU"),
        ("set_memory_growth", "GPU:1", True),
        ("set_memory_growth", "GPU:2", True),
    ]
    # Hidden GPU:0 shifts the logical numbering.
    assert plan.device_names == ("/device:GPU:0", "/device:GPU:1")


def test_devices_accepts_device_infos(host):
    cuda_host(host, n_gpus=2)
    second = detect_available_devices()[2]
    plan = configure_quietly("gpu", devices=[second])
    assert plan.device_names == ("/device:GPU:0",)
    assert host.fake.visible == [gpu(1)]


@pytest.mark.parametrize(
    ("selection", "match"),
    [
        ([5], r"devices entry 5: there are only 2 GPU device\(s\)"),
        (["CPU:0"], r"devices entry 'CPU:0' is not a GPU"),
        ([0, "GPU:0"], r"names a device twice"),
        ([], r"devices=\[\] selects nothing"),
        ("GPU:0", r"must be a list"),
        ([-1], r"must be >= 0"),
        (["tpu0"], r"devices entry 'tpu0' must be an index or a name"),
    ],
)
def test_invalid_devices(host, selection, match):
    cuda_host(host, n_gpus=2)
    with pytest.raises(InvalidArgumentError, match=match):
        configure_devices("gpu", devices=selection)


def test_devices_for_missing_gpus_are_ignored_on_cpu(host):
    # A script written for a two-GPU machine still runs where there is none.
    host.fake = FakeTFConfig()
    with pytest.warns(UserWarning, match="no CUDA GPU"):
        plan = configure_devices("gpu", devices=[0, 1])
    assert plan.device_names == ("/device:CPU:0",)
    assert configure_quietly("auto", devices=[0, 1]).device_names == ("/device:CPU:0",)


def test_cpu_devices_select_logical_cpus(host):
    host.fake = FakeTFConfig()
    host.fake.cpu_logical = [LogicalDeviceConfiguration(), LogicalDeviceConfiguration()]
    plan = configure_quietly("cpu", devices=[1, "CPU:0"])
    assert plan.device_names == ("/device:CPU:0", "/device:CPU:1")
    with pytest.raises(InvalidArgumentError, match=r"there are only 2 CPU device"):
        configure_devices("cpu", devices=[2])


# --- TF already initialized -------------------------------------------------------------------------


def test_initialized_cpu_preference_warns_once_and_stays_on_cpu(host):
    fake = cuda_host(host, initialized=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = configure_devices("cpu")
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "runtime was already initialized" in message
    assert "hide the GPUs" in message and "Visible devices cannot be modified" in message
    assert "Work is placed on /device:CPU:0" in message
    assert fake.setter_calls() == [("set_visible_devices", [], "GPU")]
    assert plan.device_names == ("/device:CPU:0",)
    assert plan.warnings and plan.warnings[-1] == message


def test_initialized_gpu_skips_the_limit_and_still_places_on_the_gpu(host):
    fake = cuda_host(host, initialized=True)
    with pytest.warns(UserWarning, match=r"already initialized.*memory_limit=9830 MiB on /physical_device:GPU:0.*Virtual devices cannot be modified") as record:
        plan = configure_devices("auto")
    assert len(record) == 1
    # Visibility was unchanged (silent); the limit raised; logical devices are listed only now.
    assert fake.calls == detection_calls(1) + [
        ("set_visible_devices", ["GPU:0"], "GPU"),
        ("set_logical_device_configuration", "GPU:0", [9830]),
        ("get_visible_devices", "GPU"),
        ("list_logical_devices", "GPU"),
    ]
    assert plan.device_type is DeviceType.GPU
    assert plan.device_names == ("/device:GPU:0",)
    assert (plan.memory_limit_bytes, plan.memory_limit_enforced, plan.allow_growth) == (None, False, False)
    assert "TF_FORCE_GPU_ALLOW_GROWTH" not in os.environ  # too late to matter: not set


def test_initialized_with_several_gpus_restricting_keeps_original_numbering(host):
    fake = cuda_host(host, n_gpus=2, initialized=True)
    with pytest.warns(UserWarning, match=r"select the GPUs .*Visible devices cannot be modified"):
        plan = configure_devices("gpu", memory_fraction=1.0, allow_growth=False, devices=[1])
    assert fake.visible == [gpu(0), gpu(1)]
    assert plan.device_names == ("/device:GPU:1",)  # GPU:0 stays visible, so GPU:1 keeps its name


def test_initialized_with_gpus_hidden_falls_back_to_cpu(host):
    cuda_host(host, initialized=True, visible=[])
    with pytest.warns(UserWarning, match=r"none of the selected gpu GPUs is visible.*running on CPU"):
        plan = configure_devices("gpu")
    assert plan.device_type is DeviceType.CPU
    assert plan.device_names == ("/device:CPU:0",)


def test_reapplying_the_same_plan_after_initialization_is_silent(host):
    fake = cuda_host(host, n_gpus=2)
    first = configure_quietly("auto")
    fake.initialized = True  # the program then made its first tensor
    second = configure_quietly("auto")
    assert second == first
    assert second.allow_growth is True  # the variable was set before the GPUs were created


def test_growth_env_too_late_is_reported(host):
    # A limit that matches what TF already has is accepted silently, but the allocator read
    # TF_FORCE_GPU_ALLOW_GROWTH when the GPU was created: growth cannot be claimed.
    fake = cuda_host(host, initialized=True)
    fake.virtual[gpu(0)] = [LogicalDeviceConfiguration(9830)]
    with pytest.warns(UserWarning, match=r"TF_FORCE_GPU_ALLOW_GROWTH=true \(GPU devices already exist\)"):
        plan = configure_devices("gpu")
    assert plan.memory_limit_enforced is True
    assert plan.allow_growth is False
    assert "TF_FORCE_GPU_ALLOW_GROWTH" not in os.environ


def test_growth_refused_on_a_device_with_a_logical_config(host):
    # Not initialized, but an earlier plan gave GPU:0 a limit: TF refuses growth (ValueError).
    fake = cuda_host(host)
    configure_quietly("gpu", memory_fraction=0.5)
    with pytest.warns(UserWarning, match=r"refused part of the device configuration.*Cannot set memory growth"):
        plan = configure_devices("gpu", memory_fraction=1.0)
    assert fake.setter_calls()[-1] == ("set_memory_growth", "GPU:0", True)
    assert plan.allow_growth is False


# --- Selection, arguments, logging ------------------------------------------------------------------


def make_info(device_type, *, available=True, index=0):
    tf_type = "CPU" if device_type is DeviceType.CPU else "GPU"
    return DeviceInfo(
        type=device_type, available=available, name=tf_type, memory_bytes=None, details={},
        tf_name=f"/device:{tf_type}:{index}" if available else None,
        physical_name=f"/physical_device:{tf_type}:{index}", index=index,
    )


@pytest.mark.parametrize(
    ("present", "expected"),
    [
        ([DeviceType.CPU, DeviceType.GPU, DeviceType.METAL], DeviceType.METAL),
        ([DeviceType.CPU, DeviceType.GPU], DeviceType.GPU),
        ([DeviceType.CPU], DeviceType.CPU),
    ],
)
def test_auto_prefers_metal_then_cuda_then_cpu(present, expected):
    assert select_device("auto", devices=[make_info(t) for t in present]).type is expected


def test_select_device_skips_hidden_gpus(host):
    host.fake = FakeTFConfig([RTX_3060], visible=[])
    [_, hidden] = detect_available_devices()
    assert (hidden.available, hidden.tf_name) == (False, None)
    with pytest.warns(UserWarning, match="no CUDA GPU"):
        assert select_device("gpu").type is DeviceType.CPU


def test_select_device_metal_missing_warns():
    with pytest.warns(UserWarning, match=r'"metal" but TensorFlow lists no Metal GPU'):
        assert select_device("METAL", devices=[make_info(DeviceType.CPU)]).type is DeviceType.CPU


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"preference": "tpu"}, r"device_preference='tpu' is not one of"),
        ({"memory_fraction": 0}, r"memory_fraction=0 must be in \(0, 1\]"),
        ({"memory_fraction": 1.2}, r"memory_fraction=1.2 must be in \(0, 1\]"),
        ({"allow_growth": "false"}, r"allow_growth='false' must be True or False"),
    ],
)
def test_invalid_arguments_raise_before_touching_tf(host, kwargs, match):
    host.fake = FakeTFConfig([RTX_3060])
    with pytest.raises(InvalidArgumentError, match=match):
        configure_devices(**kwargs)
    assert host.fake.calls == []


def test_log_device_info(host, caplog):
    metal_host(host)
    with caplog.at_level(logging.INFO, logger="vggish_tf2.devices"):
        log_device_info()
    text = caplog.text
    assert "cpu   /device:CPU:0" in text
    assert "metal /device:GPU:0" in text and "unified (host RAM)" in text
    assert 'device preference "auto" selects metal (/device:GPU:0)' in text


# --- Report -----------------------------------------------------------------------------------------


def test_devices_report(host, monkeypatch):
    cuda_host(host)
    fake_tf = types.SimpleNamespace(
        __version__="2.18.1",
        sysconfig=types.SimpleNamespace(
            get_build_info=lambda: {"is_cuda_build": True, "cuda_version": "12.5.1", "cudnn_version": "9"}
        ),
    )
    monkeypatch.setattr(devices, "_tf_module", lambda: fake_tf)
    monkeypatch.setattr(devices.importlib.metadata, "version", lambda dist: "1.2.0" if dist == "tensorflow-metal" else
                        (_ for _ in ()).throw(devices.importlib.metadata.PackageNotFoundError(dist)))
    monkeypatch.setenv("VGGISH_DEVICE_PREFERENCE", "metal")
    get_settings.cache_clear()
    try:
        report = devices_report()
    finally:
        get_settings.cache_clear()
    lines = report.splitlines()
    assert lines[0] == "TensorFlow      2.18.1"
    assert "CUDA build      yes (CUDA 12.5.1, cuDNN 9)" in lines
    assert "Metal plugin    tensorflow-metal 1.2.0" in lines
    assert "  gpu   /device:GPU:0    NVIDIA GeForce RTX 3060, 12.0 GiB (11.7 GiB free), compute capability 8.6" in lines
    assert '"auto" picks    gpu (/device:GPU:0: NVIDIA GeForce RTX 3060)' in lines
    assert any(l.startswith("Settings        device preference 'metal' -> cpu") for l in lines)
    assert any("no Metal GPU" in l for l in lines)


def test_devices_report_survives_invalid_settings(host, monkeypatch):
    host.fake = FakeTFConfig()
    fake_tf = types.SimpleNamespace(__version__="2.21.0", sysconfig=types.SimpleNamespace(get_build_info=dict))
    monkeypatch.setattr(devices, "_tf_module", lambda: fake_tf)
    monkeypatch.setattr(devices, "_metal_plugin_versions", dict)
    monkeypatch.setenv("VGGISH_GPU_MEMORY_FRACTION", "2")
    get_settings.cache_clear()
    try:
        report = devices_report()
    finally:
        get_settings.cache_clear()
    assert "CUDA build      no" in report
    assert "Metal plugin    not installed" in report
    assert "Settings        invalid: VGGISH_GPU_MEMORY_FRACTION='2'" in report


# --- Batch size and OOM -----------------------------------------------------------------------------


def plan_with(device_type, *, limit=None, total=None):
    return DevicePlan(
        device_type=device_type, device_names=("/device:GPU:0",), memory_limit_bytes=limit,
        memory_limit_enforced=limit is not None, allow_growth=True, device_memory_bytes=total,
    )


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


def test_is_gpu_oom_ignores_non_tf_errors(monkeypatch):
    assert is_gpu_oom(MemoryError("out of memory")) is False
    assert is_gpu_oom(ValueError("OOM")) is False
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    assert is_gpu_oom(RuntimeError("OOM")) is False


# --- Real TensorFlow, in subprocesses (device configuration is process-global) --------------------


def run_python(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VGGISH_")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
        timeout=300, check=False,
    )


def test_real_tf_cpu_and_auto_place_work_on_cpu():
    result = run_python(
        """
        import json, warnings
        warnings.simplefilter("error")
        import tensorflow as tf
        from vggish_tf2 import devices
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
        plans = {p: devices.configure_devices(p) for p in ("cpu", "auto")}
        pair = devices.configure_devices("cpu", devices=[0, 1])
        initialized_by_configuration = devices._runtime_initialized()
        placed = []
        for name in pair.device_names:
            with tf.device(name):
                placed.append((tf.constant([1.0, 2.0]) * 2.0).device)
        print(json.dumps({
            "types": {p: plan.device_type.value for p, plan in plans.items()},
            "names": {p: list(plan.device_names) for p, plan in plans.items()},
            "warnings": {p: list(plan.warnings) for p, plan in plans.items()},
            "initialized_by_configuration": initialized_by_configuration,
            "initialized_after_tensor": devices._runtime_initialized(),
            "placed": placed,
        }))
        """
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["types"] == {"cpu": "cpu", "auto": "cpu"}
    assert out["names"] == {"cpu": ["/device:CPU:0"], "auto": ["/device:CPU:0"]}
    assert out["warnings"] == {"cpu": [], "auto": []}
    assert out["initialized_by_configuration"] is False
    assert out["initialized_after_tensor"] is True
    assert [p.rsplit("/", 1)[-1] for p in out["placed"]] == ["device:CPU:0", "device:CPU:1"]


def test_python_m_devices_prints_the_report():
    result = subprocess.run(
        [sys.executable, "-m", "vggish_tf2.devices"], capture_output=True, text=True, timeout=300,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("VGGISH_")}, "TF_CPP_MIN_LOG_LEVEL": "3"},
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("TensorFlow      2.")
    assert "cpu   /device:CPU:0" in result.stdout
    assert '"auto" picks    cpu' in result.stdout


# --- What runs where: float64 and XLA on Metal ------------------------------------------------------


def test_metal_runs_the_float64_front_end_on_the_cpu(host):
    metal_host(host)
    plan = configure_quietly("auto")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        options = devices.resolve_compute_options(plan, frontend_precision=None, jit_compile=False)
    # Metal has no float64: the reference's front end stays float64, on the CPU.
    assert options == devices.ComputeOptions("float64", "/device:CPU:0", False, ())
    explicit = devices.resolve_compute_options(plan, frontend_precision="float64", jit_compile=False)
    assert explicit.frontend_device == "/device:CPU:0"
    assert devices.resolve_compute_options(plan, frontend_precision="float32").frontend_device is None


def test_metal_turns_jit_compile_off_with_a_warning(host):
    metal_host(host)
    plan = configure_quietly("metal")
    with pytest.warns(UserWarning, match=r"jit_compile=True ignored on Metal: XLA has no compiler") as record:
        options = devices.resolve_compute_options(plan, frontend_precision="float32", jit_compile=True)
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
        options = devices.resolve_compute_options(plan, frontend_precision=precision, jit_compile=jit)
    assert options == devices.ComputeOptions(precision or "float64", None, jit, ())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"frontend_precision": "float16"}, r"frontend_precision='float16' must be one of float64, float32 or None"),
        ({"jit_compile": 1}, r"jit_compile=1 must be True or False"),
    ],
)
def test_resolve_compute_options_rejects_invalid_values(kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        devices.resolve_compute_options(plan_with(DeviceType.CPU), **kwargs)
