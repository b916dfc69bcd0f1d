"""Settings from the environment, read once and validated in one place.

Every ``VGGISH_*`` variable the library honours is parsed here and nowhere else; functions that
take the same values as arguments (``Embedder(device=..., memory_fraction=...)``) use the
validators below, so an argument and an environment variable fail with the same message.

=============================  ==============================================  =========
Variable                       Accepted values                                 Default
=============================  ==============================================  =========
VGGISH_DEVICE_PREFERENCE       auto, cpu, gpu, metal (any case)                auto
VGGISH_GPU_MEMORY_FRACTION     a number in (0, 1]                              0.8
VGGISH_GPU_ALLOW_GROWTH        1/0, true/false, yes/no, on/off (any case)      true
VGGISH_MODEL_DIR               a directory (``~`` is expanded)                 unset
=============================  ==============================================  =========

A variable that is set to an empty string counts as unset, so ``VGGISH_MODEL_DIR= cmd``
restores the default instead of failing.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Mapping

from vggish_tf2.errors import InvalidArgumentError

# The device preferences the device module understands: "auto" = Metal, then CUDA GPU, then CPU.
DEVICE_PREFERENCES = ("auto", "cpu", "gpu", "metal")

ENV_DEVICE_PREFERENCE = "VGGISH_DEVICE_PREFERENCE"
ENV_GPU_MEMORY_FRACTION = "VGGISH_GPU_MEMORY_FRACTION"
ENV_GPU_ALLOW_GROWTH = "VGGISH_GPU_ALLOW_GROWTH"
ENV_MODEL_DIR = "VGGISH_MODEL_DIR"

_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS = frozenset({"0", "false", "no", "off"})


@dataclasses.dataclass(frozen=True)
class Settings:
    """Library defaults; explicit arguments to the API override each field."""

    device_preference: str = "auto"  # one of DEVICE_PREFERENCES
    gpu_memory_fraction: float = 0.8  # share of each GPU's total memory TF may use, in (0, 1]
    gpu_allow_growth: bool = True  # allocate GPU memory on demand instead of all up front
    model_dir: str | None = None  # default SavedModel directory; None = the packaged default


def validate_device_preference(value: object) -> str:
    """Return ``value`` normalised to lower case, or raise if it is not a known preference."""
    if not isinstance(value, str):
        raise InvalidArgumentError(
            f"device_preference={value!r} must be a string, one of {', '.join(DEVICE_PREFERENCES)}"
        )
    normalised = value.strip().lower()
    if normalised not in DEVICE_PREFERENCES:
        raise InvalidArgumentError(
            f"device_preference={value!r} is not one of {', '.join(DEVICE_PREFERENCES)}"
        )
    return normalised


def validate_memory_fraction(value: object) -> float:
    """Return ``value`` as a float in (0, 1], or raise naming it.

    Strings are refused on purpose: the environment is parsed by ``settings_from_env``; an API
    caller passing "0.5" has a bug that silently converting would hide.
    """
    # bool is an int subclass: memory_fraction=True would otherwise mean 1.0.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgumentError(f"memory_fraction={value!r} must be a number in (0, 1]")
    fraction = float(value)
    if not math.isfinite(fraction) or not 0.0 < fraction <= 1.0:
        raise InvalidArgumentError(f"memory_fraction={value!r} must be in (0, 1]")
    return fraction


def validate_allow_growth(value: object) -> bool:
    """Return ``value`` if it is a bool; refuse anything else (the string "false" is truthy)."""
    if not isinstance(value, bool):
        raise InvalidArgumentError(f"allow_growth={value!r} must be True or False")
    return value


def parse_bool(text: str, *, name: str) -> bool:
    """Parse an environment flag; ``name`` is the variable, used in the error message."""
    word = text.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise InvalidArgumentError(
        f"{name}={text!r} is not a boolean; use one of 1/0, true/false, yes/no, on/off"
    )


def settings_from_env(environ: Mapping[str, str]) -> Settings:
    """Build ``Settings`` from ``environ`` (pass ``os.environ`` or a dict in tests).

    Raises ``InvalidArgumentError`` naming the variable and its value when one cannot be used.
    """
    defaults = Settings()

    def raw(name: str) -> str | None:
        text = environ.get(name)
        # Empty counts as unset so that `VAR= command` restores the default.
        return text if text is not None and text.strip() else None

    preference = defaults.device_preference
    if (text := raw(ENV_DEVICE_PREFERENCE)) is not None:
        try:
            preference = validate_device_preference(text)
        except InvalidArgumentError as e:
            raise InvalidArgumentError(f"{ENV_DEVICE_PREFERENCE}={text!r}: {e}") from e

    fraction = defaults.gpu_memory_fraction
    if (text := raw(ENV_GPU_MEMORY_FRACTION)) is not None:
        try:
            number = float(text)
        except ValueError as e:
            raise InvalidArgumentError(
                f"{ENV_GPU_MEMORY_FRACTION}={text!r} is not a number; use a value in (0, 1]"
            ) from e
        try:
            fraction = validate_memory_fraction(number)
        except InvalidArgumentError as e:
            raise InvalidArgumentError(f"{ENV_GPU_MEMORY_FRACTION}={text!r}: {e}") from e

    allow_growth = defaults.gpu_allow_growth
    if (text := raw(ENV_GPU_ALLOW_GROWTH)) is not None:
        allow_growth = parse_bool(text, name=ENV_GPU_ALLOW_GROWTH)

    model_dir = defaults.model_dir
    if (text := raw(ENV_MODEL_DIR)) is not None:
        model_dir = os.path.expanduser(text.strip())

    return Settings(
        device_preference=preference,
        gpu_memory_fraction=fraction,
        gpu_allow_growth=allow_growth,
        model_dir=model_dir,
    )


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from ``os.environ`` on first use and cached.

    Read once so that one run behaves consistently even if the program edits its environment
    later; tests call ``get_settings.cache_clear()`` after changing variables.
    """
    return settings_from_env(os.environ)
