"""configuration: what configure_devices sets on the recording fake of ``tf.config`` (fakes.py),
TF_FORCE_GPU_ALLOW_GROWTH, a runtime already initialized, invalid arguments. Real TF runs only in
a subprocess at the end (configuration is process-global). What a plan then runs with: test_compute.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings

import pytest

from vggish_tf2.devices.configuration import DevicePlan, configure_devices
from vggish_tf2.devices.inventory import MIB, DeviceType
from vggish_tf2.errors import InvalidArgumentError

from .fakes import (
    HOST_RAM_BYTES,
    RTX_3060,
    FakeTFConfig,
    LogicalDeviceConfiguration,
    configure_quietly,
    cuda_host,
    detection_calls,
    gpu,
    metal_host,
)


# --- Metal ---------------------------------------------------------------------------------------


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


# --- CUDA: memory limit, memory growth, hidden GPUs ----------------------------------------------


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


def test_cuda_full_fraction_with_growth_is_plain_memory_growth(host):
    fake = cuda_host(host)
    plan = configure_quietly("gpu", memory_fraction=1.0, allow_growth=True)
    assert fake.setter_calls() == [
        ("set_visible_devices", ["GPU:0"], "GPU"),
        ("set_memory_growth", "GPU:0", True),
    ]
    assert "TF_FORCE_GPU_ALLOW_GROWTH" not in os.environ
    assert (plan.memory_limit_bytes, plan.memory_limit_enforced, plan.allow_growth) == (None, False, True)


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


# --- TF_FORCE_GPU_ALLOW_GROWTH -------------------------------------------------------------------


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


# --- TF already initialized ----------------------------------------------------------------------


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


# --- Arguments -----------------------------------------------------------------------------------


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


# --- Real TensorFlow, in subprocesses (device configuration is process-global) -------------------


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
        from vggish_tf2.devices import inventory
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
        plans = {p: devices.configure_devices(p) for p in ("cpu", "auto")}
        pair = devices.configure_devices("cpu", devices=[0, 1])
        initialized_by_configuration = inventory._runtime_initialized()
        placed = []
        for name in pair.device_names:
            with tf.device(name):
                placed.append((tf.constant([1.0, 2.0]) * 2.0).device)
        print(json.dumps({
            "types": {p: plan.device_type.value for p, plan in plans.items()},
            "names": {p: list(plan.device_names) for p, plan in plans.items()},
            "warnings": {p: list(plan.warnings) for p, plan in plans.items()},
            "initialized_by_configuration": initialized_by_configuration,
            "initialized_after_tensor": inventory._runtime_initialized(),
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
