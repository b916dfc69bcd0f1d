"""inventory: what TF and the host report, read through the recording fake of ``tf.config``
(fakes.py) and faked NVML / nvidia-smi output. Detection never initializes TF's runtime."""
from __future__ import annotations

import sys
import types

from vggish_tf2.devices import inventory
from vggish_tf2.devices.choice import select_device
from vggish_tf2.devices.inventory import MIB, DeviceType, detect_available_devices

from .fakes import GIB, HOST_RAM_BYTES, RTX_3060, FakeTFConfig, configure_quietly, cuda_host, detection_calls, metal_host


# --- Metal ---------------------------------------------------------------------------------------


def test_metal_detected_on_macos_arm64(host):
    metal_host(host)
    [cpu, metal] = detect_available_devices()
    assert cpu.type is DeviceType.CPU and cpu.tf_name == "/device:CPU:0"
    assert metal.type is DeviceType.METAL
    assert (metal.name, metal.available, metal.tf_name) == ("METAL", True, "/device:GPU:0")
    assert metal.memory_bytes == HOST_RAM_BYTES  # unified memory
    assert metal.details == {"device_name": "METAL"}
    assert host.fake.calls == detection_calls(1)


def test_a_gpu_off_macos_arm64_is_cuda_even_on_intel_macs(host):
    host.platform = ("Darwin", "x86_64")
    host.fake = FakeTFConfig([RTX_3060])
    assert select_device("auto").type is DeviceType.GPU


# --- CUDA memory: NVML, then nvidia-smi ----------------------------------------------------------


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


def test_cuda_totals_follow_cuda_visible_devices(host, monkeypatch):
    host.smi_output = "Tesla T4, 15360, 15000\nNVIDIA A100-SXM4-40GB, 40960, 40000\n"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert inventory._cuda_memory_totals_bytes(["NVIDIA A100-SXM4-40GB"]) == [40960 * MIB]


def test_cuda_totals_match_by_name_when_orders_differ(host):
    # CUDA orders fastest first, NVML by PCI bus: TF's GPU:0 is NVML's 1 here.
    host.smi_output = "Tesla T4, 15360, 15000\nNVIDIA A100-SXM4-40GB, 40960, 40000\n"
    totals = inventory._cuda_memory_totals_bytes(["NVIDIA A100-SXM4-40GB", "Tesla T4", "Unknown GPU"])
    assert totals == [40960 * MIB, 15360 * MIB, None]
