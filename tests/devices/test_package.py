"""The package as a whole: the old module's names are all still there, importing it stays free
of TensorFlow, and only ``inventory`` reads TF's device lists and the host, so that the ``host``
fixture's fakes (conftest.py) stand in for everything real."""
from __future__ import annotations

import ast
import inspect
import os
import platform
import shutil
import subprocess
import sys
import warnings

import pytest

from vggish_tf2 import devices
from vggish_tf2.devices import choice, compute, configuration, inventory, report

from .fakes import HOST_RAM_BYTES, cuda_host, metal_host

# Every public name of vggish_tf2/devices.py before it became this package.
OLD_PUBLIC_NAMES = {
    "MIB", "GIB", "CPU_DEVICE_NAME", "FORCE_GROWTH_ENV", "METAL_PLUGIN_DISTRIBUTIONS", "NVIDIA_SMI_QUERY",
    "BUSY_GPU_FREE_SHARE", "CPU_BATCH_SIZE", "MIN_BATCH_SIZE", "MAX_BATCH_SIZE", "UNKNOWN_MEMORY_BATCH_SIZE",
    "WEIGHTS_BYTES", "ACTIVATION_BYTES_PER_EXAMPLE", "ACTIVATION_MEMORY_SHARE", "DeviceType", "DeviceInfo",
    "DevicePlan", "detect_available_devices", "select_device", "log_device_info", "configure_devices",
    "ComputeOptions", "resolve_compute_options", "is_gpu_oom", "suggest_batch_size", "devices_report", "main",
}

# What only inventory may call or import: TF's device listings and the host's facts.
READS = {
    "list_physical_devices", "get_visible_devices", "list_logical_devices", "get_device_details",
    "get_logical_device_configuration", "get_build_info", "sysconf", "_tf_module",
}
READING_MODULES = {"platform", "subprocess", "shutil", "pynvml", "tensorflow"}


def test_every_public_name_of_the_old_module_is_still_there():
    assert set(devices.__all__) == OLD_PUBLIC_NAMES
    for name in OLD_PUBLIC_NAMES:
        value = getattr(devices, name)
        home = getattr(value, "__module__", None)
        if home is not None and home.startswith("vggish_tf2.devices."):
            assert getattr(sys.modules[home], name) is value  # re-exported, not a copy


def test_importing_the_package_does_not_import_tensorflow():
    result = subprocess.run(
        [sys.executable, "-c", "import sys, vggish_tf2.devices; print('tensorflow' in sys.modules)"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("module", [choice, configuration, compute, report], ids=lambda m: m.__name__)
def test_only_inventory_reads_tf_devices_and_the_host(module):
    tree = ast.parse(inspect.getsource(module))
    called = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    called |= {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert called & READS == set()
    assert {m for m in imported if m.split(".")[0] in READING_MODULES or m == "importlib.metadata"} == set()


def test_the_fake_host_stands_in_for_everything_real(host, monkeypatch):
    # The real host is out of reach: a seam the fixture missed fails here instead of reading it.
    def real(*args, **kwargs):
        raise AssertionError(f"reached the real host: {args!r}")

    for owner, name in [(subprocess, "run"), (shutil, "which"), (platform, "system"), (platform, "machine"),
                        (os, "sysconf"), (inventory, "_tf_module")]:
        monkeypatch.setattr(owner, name, real)
    cuda_host(host, n_gpus=2)
    infos = devices.detect_available_devices()
    assert [(d.type, d.memory_bytes) for d in infos] == [
        (devices.DeviceType.CPU, HOST_RAM_BYTES), (devices.DeviceType.GPU, 12 * 1024 * devices.MIB),
        (devices.DeviceType.GPU, 12 * 1024 * devices.MIB),
    ]
    assert devices.configure_devices("auto", memory_fraction=1.0).num_replicas == 2
    devices.log_device_info()
    metal_host(host)
    assert devices.select_device("auto").type is devices.DeviceType.METAL
    assert devices.configure_devices("auto").device_type is devices.DeviceType.METAL


def test_the_growth_flag_the_host_fixture_resets_is_the_one_configuration_reads(host, monkeypatch):
    # The fixture resets configuration._force_growth_env_set_by_us; were the flag read elsewhere,
    # this "true" would be the user's (kept, with a warning) instead of ours (removed).
    cuda_host(host)
    monkeypatch.setenv("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    monkeypatch.setattr(configuration, "_force_growth_env_set_by_us", True)  # as an earlier plan leaves it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plan = devices.configure_devices("gpu", memory_fraction=0.5, allow_growth=False)
    assert "TF_FORCE_GPU_ALLOW_GROWTH" not in os.environ
    assert plan.allow_growth is False
