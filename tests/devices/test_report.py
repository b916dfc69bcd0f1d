"""report: devices_report (``vggish-tf2 devices``, ``python -m vggish_tf2.devices``) and
log_device_info, on the fake hosts of fakes.py and, for ``python -m``, on this machine."""
from __future__ import annotations

import importlib.metadata
import logging
import os
import subprocess
import sys
import types

from vggish_tf2.config import get_settings
from vggish_tf2.devices import inventory
from vggish_tf2.devices.report import devices_report, log_device_info

from .fakes import FakeTFConfig, cuda_host, metal_host


# --- The report ----------------------------------------------------------------------------------


def test_devices_report(host, monkeypatch):
    cuda_host(host)
    fake_tf = types.SimpleNamespace(
        __version__="2.18.1",
        sysconfig=types.SimpleNamespace(
            get_build_info=lambda: {"is_cuda_build": True, "cuda_version": "12.5.1", "cudnn_version": "9"}
        ),
    )
    monkeypatch.setattr(inventory, "_tf_module", lambda: fake_tf)
    monkeypatch.setattr(importlib.metadata, "version", lambda dist: "1.2.0" if dist == "tensorflow-metal" else
                        (_ for _ in ()).throw(importlib.metadata.PackageNotFoundError(dist)))
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
    monkeypatch.setattr(inventory, "_tf_module", lambda: fake_tf)
    monkeypatch.setattr(inventory, "_metal_plugin_versions", dict)
    monkeypatch.setenv("VGGISH_GPU_MEMORY_FRACTION", "2")
    get_settings.cache_clear()
    try:
        report = devices_report()
    finally:
        get_settings.cache_clear()
    assert "CUDA build      no" in report
    assert "Metal plugin    not installed" in report
    assert "Settings        invalid: VGGISH_GPU_MEMORY_FRACTION='2'" in report


def test_devices_report_and_log_say_why_auto_skips_a_busy_gpu(host, monkeypatch, caplog):
    cuda_host(host, n_gpus=2, free_mib=[11000, 1000])
    monkeypatch.setattr(inventory, "_tf_module", lambda: types.SimpleNamespace(
        __version__="2.21.0", sysconfig=types.SimpleNamespace(get_build_info=dict)))
    monkeypatch.setattr(inventory, "_metal_plugin_versions", dict)
    lines = devices_report().splitlines()
    assert "  gpu   /device:GPU:1    NVIDIA GeForce RTX 3060, 12.0 GiB (1.0 GiB free), compute capability 8.6" in lines
    assert '"auto" picks    gpu (/device:GPU:0: NVIDIA GeForce RTX 3060)' in lines
    assert any("skipped as busy: GPU:1 (1.0 GiB free of 12.0 GiB)" in line for line in lines)
    with caplog.at_level(logging.INFO, logger="vggish_tf2.devices"):
        log_device_info()
    assert "skipped as busy: GPU:1" in caplog.text


# --- The log -------------------------------------------------------------------------------------


def test_log_device_info(host, caplog):
    metal_host(host)
    with caplog.at_level(logging.INFO, logger="vggish_tf2.devices"):
        log_device_info()
    text = caplog.text
    assert "cpu   /device:CPU:0" in text
    assert "metal /device:GPU:0" in text and "unified (host RAM)" in text
    assert 'device preference "auto" selects metal (/device:GPU:0)' in text


# --- python -m vggish_tf2.devices ----------------------------------------------------------------


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
