"""Environment parsing and the validators shared with the device module."""
from __future__ import annotations

import math
import os

import pytest

from vggish_tf2 import config
from vggish_tf2.config import (
    Settings,
    get_settings,
    settings_from_env,
    validate_allow_growth,
    validate_device_preference,
    validate_memory_fraction,
)
from vggish_tf2.errors import InvalidArgumentError, VGGishError


def test_empty_environment_gives_defaults():
    assert settings_from_env({}) == Settings("auto", 0.8, True, None)


def test_every_variable_is_read():
    settings = settings_from_env(
        {
            "VGGISH_DEVICE_PREFERENCE": " Metal ",
            "VGGISH_GPU_MEMORY_FRACTION": "0.5",
            "VGGISH_GPU_ALLOW_GROWTH": "off",
            "VGGISH_MODEL_DIR": "~/models/vggish",
        }
    )
    assert settings == Settings(
        device_preference="metal",
        gpu_memory_fraction=0.5,
        gpu_allow_growth=False,
        model_dir=os.path.expanduser("~/models/vggish"),
    )


@pytest.mark.parametrize("text", ["AUTO", "cpu", "Gpu", "metal"])
def test_preference_is_case_insensitive(text):
    assert settings_from_env({"VGGISH_DEVICE_PREFERENCE": text}).device_preference == text.lower()


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", True), ("true", True), ("YES", True), ("On", True),
     ("0", False), ("False", False), ("no", False), ("OFF", False)],
)
def test_allow_growth_words(text, expected):
    assert settings_from_env({"VGGISH_GPU_ALLOW_GROWTH": text}).gpu_allow_growth is expected


def test_fraction_one_is_allowed():
    assert settings_from_env({"VGGISH_GPU_MEMORY_FRACTION": "1"}).gpu_memory_fraction == 1.0


def test_empty_values_count_as_unset():
    env = {name: "  " for name in (
        "VGGISH_DEVICE_PREFERENCE", "VGGISH_GPU_MEMORY_FRACTION", "VGGISH_GPU_ALLOW_GROWTH", "VGGISH_MODEL_DIR"
    )}
    assert settings_from_env(env) == Settings()


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"VGGISH_DEVICE_PREFERENCE": "tpu"}, r"VGGISH_DEVICE_PREFERENCE='tpu'.*not one of auto, cpu, gpu, metal"),
        ({"VGGISH_GPU_MEMORY_FRACTION": "lots"}, r"VGGISH_GPU_MEMORY_FRACTION='lots' is not a number"),
        ({"VGGISH_GPU_MEMORY_FRACTION": "0"}, r"VGGISH_GPU_MEMORY_FRACTION='0'.*must be in \(0, 1\]"),
        ({"VGGISH_GPU_MEMORY_FRACTION": "1.5"}, r"VGGISH_GPU_MEMORY_FRACTION='1.5'.*must be in \(0, 1\]"),
        ({"VGGISH_GPU_MEMORY_FRACTION": "-0.2"}, r"VGGISH_GPU_MEMORY_FRACTION='-0.2'"),
        ({"VGGISH_GPU_MEMORY_FRACTION": "nan"}, r"VGGISH_GPU_MEMORY_FRACTION='nan'"),
        ({"VGGISH_GPU_ALLOW_GROWTH": "maybe"}, r"VGGISH_GPU_ALLOW_GROWTH='maybe' is not a boolean"),
    ],
)
def test_invalid_environment_names_variable_and_value(env, match):
    with pytest.raises(InvalidArgumentError, match=match):
        settings_from_env(env)


def test_errors_are_value_errors_and_library_errors():
    with pytest.raises(ValueError):
        settings_from_env({"VGGISH_DEVICE_PREFERENCE": "tpu"})
    with pytest.raises(VGGishError):
        validate_memory_fraction(2.0)


def test_validate_device_preference_normalises():
    assert validate_device_preference(" GPU ") == "gpu"


@pytest.mark.parametrize("value", [None, 1, "cuda", ""])
def test_validate_device_preference_rejects(value):
    with pytest.raises(InvalidArgumentError, match=r"device_preference="):
        validate_device_preference(value)


@pytest.mark.parametrize(("value", "expected"), [(1, 1.0), (0.25, 0.25), (1e-6, 1e-6)])
def test_validate_memory_fraction_accepts(value, expected):
    assert validate_memory_fraction(value) == expected


@pytest.mark.parametrize("value", [0, 0.0, -1, 1.0001, math.inf, math.nan, True, "0.5", None])
def test_validate_memory_fraction_rejects(value):
    with pytest.raises(InvalidArgumentError, match=r"memory_fraction=.* must be"):
        validate_memory_fraction(value)


@pytest.mark.parametrize("value", ["false", 0, 1, None])
def test_validate_allow_growth_rejects_non_bools(value):
    # The string "false" is truthy: accepting it would enable growth the caller turned off.
    with pytest.raises(InvalidArgumentError, match=r"allow_growth=.* must be True or False"):
        validate_allow_growth(value)


def test_get_settings_reads_os_environ_once(monkeypatch):
    monkeypatch.setenv("VGGISH_DEVICE_PREFERENCE", "cpu")
    monkeypatch.setenv("VGGISH_GPU_MEMORY_FRACTION", "0.3")
    get_settings.cache_clear()
    try:
        first = get_settings()
        assert (first.device_preference, first.gpu_memory_fraction) == ("cpu", 0.3)
        monkeypatch.setenv("VGGISH_DEVICE_PREFERENCE", "metal")
        assert get_settings() is first  # cached: later edits of the environment do not leak in
        get_settings.cache_clear()
        assert get_settings().device_preference == "metal"
    finally:
        get_settings.cache_clear()


def test_settings_are_frozen():
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().device_preference = "cpu"  # type: ignore[misc]
    assert config.DEVICE_PREFERENCES == ("auto", "cpu", "gpu", "metal")
