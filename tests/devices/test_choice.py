"""choice: a preference -> devices ("auto" = Metal > CUDA > CPU, busy GPUs skipped), fallbacks
with their warnings, and ``devices=`` entries; through configure_devices on the fake where the
choice shows in what is configured."""
from __future__ import annotations

import logging

import pytest

from vggish_tf2.devices.choice import select_device
from vggish_tf2.devices.configuration import configure_devices
from vggish_tf2.devices.inventory import DeviceType, detect_available_devices
from vggish_tf2.errors import InvalidArgumentError

from .fakes import (
    DETECTION,
    RTX_3060,
    FakeTFConfig,
    LogicalDeviceConfiguration,
    configure_quietly,
    cuda_host,
    gpu,
    make_info,
    metal_host,
)


# --- No GPU, or not the one asked for ------------------------------------------------------------


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


def test_gpu_requested_on_a_mac_points_to_metal_and_hides_it(host):
    fake = metal_host(host)
    with pytest.warns(UserWarning, match=r'no CUDA GPU \(this Mac has a Metal GPU: use device "metal" or "auto"\)'):
        plan = configure_devices("gpu")
    assert plan.device_names == ("/device:CPU:0",)
    assert fake.setter_calls() == [("set_visible_devices", [], "GPU")]


# --- select_device -------------------------------------------------------------------------------


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


# --- Several GPUs: "auto" skips busy ones --------------------------------------------------------


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


# --- devices= ------------------------------------------------------------------------------------


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
