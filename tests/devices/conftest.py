"""The ``host`` fixture: a fake host in place of every seam of ``vggish_tf2.devices.inventory``."""
from __future__ import annotations

import sys
import types

import pytest

from vggish_tf2.devices import configuration, inventory

from .fakes import HOST_RAM_BYTES


@pytest.fixture
def host(monkeypatch):
    """A Linux host with 16 GiB, no NVML, no nvidia-smi, clean TF/CUDA variables."""
    state = types.SimpleNamespace(fake=None, platform=("Linux", "x86_64"), smi_output=None, smi_calls=[])

    def run_smi(args):
        state.smi_calls.append(list(args))
        return state.smi_output

    monkeypatch.setattr(inventory, "_tf_config", lambda: state.fake)
    monkeypatch.setattr(inventory, "_runtime_initialized", lambda: state.fake.initialized)
    monkeypatch.setattr(inventory, "_host_platform", lambda: state.platform)
    monkeypatch.setattr(inventory, "_host_memory_bytes", lambda: HOST_RAM_BYTES)
    monkeypatch.setattr(inventory, "_run_nvidia_smi", run_smi)
    monkeypatch.setattr(configuration, "_force_growth_env_set_by_us", False)
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError
    monkeypatch.delenv("TF_FORCE_GPU_ALLOW_GROWTH", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return state
