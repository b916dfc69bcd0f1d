"""Configure TF for the chosen devices (visibility, memory growth, memory limits) -> a ``DevicePlan``.

TF2 has no ConfigProto for a device preference, a memory fraction and memory growth, so this
module builds them on ``tf.config``, within what TF allows:

* Everything is configured before TF initializes its runtime (the first tensor, tf.function
  call or SavedModel load): ``configure_devices`` only uses calls that do not initialize it
  (the listings in ``inventory``, and the setters).
* A memory fraction on CUDA becomes one logical device per GPU with
  ``memory_limit = fraction x total memory`` (the total from ``inventory``: NVML or nvidia-smi).
* TF refuses memory growth together with a logical memory limit through its API (limit then
  growth raises; growth then limit silently drops growth, tensorflow#38367). The one way TF does
  allow "grow up to the limit" is the ``TF_FORCE_GPU_ALLOW_GROWTH=true`` environment variable,
  read by the GPU allocator when the device is created (exactly "true" or "false"; anything
  else is ignored by TF). So with a fraction below 1 and growth on, this module sets that
  variable in ``os.environ`` next to the logical limit, unless the user set it: a user's value
  is never changed, and the plan reports (and warns about) what TF will do with it. A fraction
  of 1.0 with growth is plain ``set_memory_growth`` and no limit.
* Metal (Apple's tensorflow-metal PluggableDevice) shares the host's unified memory. TF's
  PluggableDevice factory ignores logical-device settings, so on Metal the fraction is a
  best-effort *budget* (fraction x physical RAM) used for batch sizing, not a limit TF enforces;
  memory growth is applied with ``set_memory_growth``, which pluggable devices accept.
* If the runtime is already initialized, TF raises RuntimeError for any changed setting. This
  module then applies what still can be applied, warns once saying what could not, and returns
  a plan that still places work on the chosen device (``tf.device(plan.device_names[i])``).

What the model step then runs with on a plan (front end precision, XLA, batch size, OOM) is
``compute``'s: it reads a plan and changes no TF setting, so it may run once the runtime exists.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from collections.abc import Sequence
from typing import Any

from vggish_tf2.config import validate_allow_growth, validate_device_preference, validate_memory_fraction
from vggish_tf2.devices import choice, inventory
from vggish_tf2.devices.inventory import CPU_DEVICE_NAME, MIB, DeviceInfo, DeviceType, _format_bytes

logger = logging.getLogger(__name__)

# Read by TF's GPU allocator when a GPU device is created; "true" forces on-demand allocation
# even when a logical memory_limit is set (which the Python API refuses to combine with growth).
FORCE_GROWTH_ENV = "TF_FORCE_GPU_ALLOW_GROWTH"

# Module state, on purpose: the variable belongs to the process, and we must know whether we set
# it (and may remove it) or the user did (and it wins over allow_growth=False).
_force_growth_env_set_by_us = False


@dataclasses.dataclass(frozen=True)
class DevicePlan:
    """What ``configure_devices`` decided and applied; run replica i under ``tf.device(device_names[i])``."""

    device_type: DeviceType
    device_names: tuple[str, ...]  # TF logical device names, one replica per device
    memory_limit_bytes: int | None  # per replica (smallest over replicas); Metal: budget only
    memory_limit_enforced: bool  # True only when TF itself enforces memory_limit_bytes
    allow_growth: bool  # whether TF's allocator will grow on demand (config and TF_FORCE_GPU_ALLOW_GROWTH)
    warnings: tuple[str, ...] = ()  # every degradation, as also sent to warnings.warn
    device_memory_bytes: int | None = None  # total memory per replica device (smallest), if known
    selection_reason: str | None = None  # why "auto" left some GPUs out (busy), for reports

    @property
    def num_replicas(self) -> int:
        return len(self.device_names)

    @property
    def primary_device(self) -> str:
        return self.device_names[0]


class _Applier:
    """Runs tf.config setters, collecting what TF refused instead of raising."""

    def __init__(self) -> None:
        self.refused: list[str] = []
        self.runtime_initialized = False  # learnt from a setter's RuntimeError
        self.last_error: type[Exception] | None = None  # what the last refused setter raised

    def __call__(self, what: str, setter: Any, *args: Any) -> bool:
        try:
            setter(*args)
            return True
        except RuntimeError as e:  # "... cannot be modified after being initialized"
            self.runtime_initialized = True
            self.last_error = RuntimeError
            self.refused.append(f"{what}: {e}")
        except ValueError as e:  # e.g. growth on a device that already has a logical config
            self.last_error = ValueError
            self.refused.append(f"{what}: {e}")
        return False


@dataclasses.dataclass(frozen=True)
class _Memory:
    """What the memory settings of the selected GPUs came to."""

    limit_bytes: int | None  # per replica; Metal: a budget only
    enforced: bool
    allow_growth: bool  # what TF's allocator will do


# --- configure_devices ---------------------------------------------------------------------------------


def configure_devices(
    preference: str = "auto",
    *,
    memory_fraction: float = 0.8,
    allow_growth: bool = True,
    devices: Sequence[int | str | DeviceInfo] | None = None,
) -> DevicePlan:
    """Choose the device(s) and configure TF for them; call before any other TF work.

    ``preference``: "auto" (Metal > CUDA GPU > CPU), "cpu", "gpu" (CUDA) or "metal"; a missing
    device warns and falls back to CPU. ``devices`` restricts the replicas to some GPUs (indices
    as TF lists them, or names such as "GPU:1"); by default every GPU of the chosen type is a
    replica. Unselected GPUs are hidden, so selected ones are renumbered from /device:GPU:0. On
    CPU, ``devices`` can name logical CPUs the program configured itself.

    ``memory_fraction`` in (0, 1]: on CUDA, a logical device per GPU with ``memory_limit =
    fraction x total`` (total from NVML or nvidia-smi; without either the fraction cannot be
    applied and a warning says so). With ``allow_growth`` as well, TF's API would refuse the
    combination, so ``TF_FORCE_GPU_ALLOW_GROWTH=true`` is set in ``os.environ`` for the GPU
    allocator to grow on demand up to the limit; 1.0 with growth is ``set_memory_growth`` only.
    On Metal the fraction of physical RAM is a budget for batch sizing, not enforced by TF.

    If TF's runtime is already initialized, settings TF refuses are skipped with one warning;
    the returned plan still names the device(s) to place work on.
    """
    preference = validate_device_preference(preference)
    fraction = validate_memory_fraction(memory_fraction)
    growth = validate_allow_growth(allow_growth)

    cfg = inventory._tf_config()
    detected = inventory._detect(cfg)
    selection = choice._select_for_configuration(preference, detected, devices)
    if selection.fallback is not None:
        warnings.warn(selection.fallback, stacklevel=2)
    notes: list[str] = []  # degradations other than the fallback, warned together at the end
    applier = _Applier()
    if selection.device.type is DeviceType.CPU:
        plan = _configure_cpu(
            cfg, detected, selection.device, devices=selection.devices,
            devices_name_cpus=preference == "cpu", applier=applier,
        )
    else:
        plan = _configure_accelerators(
            cfg, detected, selection.device.type, devices=selection.devices, fraction=fraction, growth=growth,
            notes=notes, applier=applier,
        )
    if applier.refused:
        notes.append(_refused_note(applier, plan))
    plan_warnings = [selection.fallback] if selection.fallback is not None else []
    if notes:
        degraded = " ".join(notes)
        warnings.warn(degraded, stacklevel=2)  # one warning for everything not applied
        plan_warnings.append(degraded)
    plan = dataclasses.replace(plan, warnings=tuple(plan_warnings), selection_reason=selection.reason)
    _log_plan(plan)
    return plan


def _refused_note(applier: _Applier, plan: DevicePlan) -> str:
    """One sentence for everything TF refused, and where work goes all the same."""
    cause = (
        "TensorFlow's runtime was already initialized (a tensor, tf.function or model was "
        "created before the device configuration)"
        if applier.runtime_initialized
        else "TensorFlow refused part of the device configuration"
    )
    return (
        f"{cause}; not applied: {'; '.join(applier.refused)}. "
        f"Work is placed on {', '.join(plan.device_names)}."
    )


def _log_plan(plan: DevicePlan) -> None:
    logger.info(
        "device plan: %s on %s, memory limit %s (%s), growth %s",
        plan.device_type.value, ", ".join(plan.device_names), _format_bytes(plan.memory_limit_bytes),
        "enforced" if plan.memory_limit_enforced else "not enforced", plan.allow_growth,
    )


# --- On the CPU ----------------------------------------------------------------------------------------


def _configure_cpu(
    cfg: Any,
    detected: list[tuple[DeviceInfo, Any]],
    chosen: DeviceInfo,
    *,
    devices: Sequence[object] | None,
    devices_name_cpus: bool,
    applier: _Applier,
) -> DevicePlan:
    """Hide the GPUs; a plan on the CPU device(s) that ``devices`` names."""
    gpus = [phys for info, phys in detected if info.type is not DeviceType.CPU]
    if gpus:
        # Hidden GPUs cannot take ops by soft placement nor reserve memory at initialization.
        applier(
            "hide the GPUs (set_visible_devices([], 'GPU'); they stay visible and TF may hold their memory)",
            cfg.set_visible_devices, [], "GPU",
        )
    return DevicePlan(
        device_type=DeviceType.CPU,
        device_names=_cpu_names(cfg, detected, devices=devices, devices_name_cpus=devices_name_cpus),
        memory_limit_bytes=None,
        memory_limit_enforced=False,
        allow_growth=False,
        device_memory_bytes=chosen.memory_bytes,
    )


def _cpu_names(
    cfg: Any, detected: list[tuple[DeviceInfo, Any]], *, devices: Sequence[object] | None, devices_name_cpus: bool
) -> tuple[str, ...]:
    if devices is None:
        return (CPU_DEVICE_NAME,)
    if not devices_name_cpus:
        # With "auto", "gpu" or "metal", devices= names GPUs, and there are none to use: a script
        # written for a GPU machine must still run on a CPU-only one.
        logger.info("devices=%r ignored: no GPU to use, running on CPU", devices)
        return (CPU_DEVICE_NAME,)
    return choice._selected_cpu_names(devices, count=inventory._logical_cpu_count(cfg, detected))


# --- On CUDA or Metal GPUs -----------------------------------------------------------------------------


def _configure_accelerators(
    cfg: Any,
    detected: list[tuple[DeviceInfo, Any]],
    device_type: DeviceType,
    *,
    devices: Sequence[object] | None,
    fraction: float,
    growth: bool,
    notes: list[str],
    applier: _Applier,
) -> DevicePlan:
    """Show only the selected GPUs, set their memory, and name them; the CPU if none is left."""
    pairs = choice._selected_gpus(detected, device_type, devices)
    selected = [phys for _, phys in pairs]
    totals = [info.memory_bytes for info, _ in pairs]
    device_memory = min(totals) if all(t is not None for t in totals) else None

    visible_ok = applier("select the GPUs (set_visible_devices)", cfg.set_visible_devices, selected, "GPU")
    if device_type is DeviceType.METAL:
        memory = _configure_metal_memory(
            cfg, selected, device_memory, fraction=fraction, growth=growth, notes=notes, applier=applier
        )
    else:
        memory = _configure_cuda_memory(
            cfg, selected, totals, fraction=fraction, growth=growth, notes=notes, applier=applier
        )

    names = _accelerator_names(cfg, pairs, visible_ok=visible_ok, applier=applier)
    if not names:
        message = f"none of the selected {device_type.value} GPUs is visible to the initialized runtime; running on CPU"
        notes.append(message)
        return DevicePlan(
            device_type=DeviceType.CPU, device_names=(CPU_DEVICE_NAME,), memory_limit_bytes=None,
            memory_limit_enforced=False, allow_growth=False,
            device_memory_bytes=inventory._host_memory_bytes(),
        )
    return DevicePlan(
        device_type=device_type,
        device_names=names,
        memory_limit_bytes=memory.limit_bytes,
        memory_limit_enforced=memory.enforced,
        allow_growth=memory.allow_growth,
        device_memory_bytes=device_memory,
    )


def _configure_metal_memory(
    cfg: Any, selected: list[Any], device_memory: int | None, *, fraction: float, growth: bool,
    notes: list[str], applier: _Applier,
) -> _Memory:
    """Metal: memory growth as asked; the fraction is a budget only (PluggableDevices ignore limits)."""
    limit_bytes = int(fraction * device_memory) if device_memory is not None else None
    logger.info(
        "Metal shares host memory; memory_fraction=%s is a budget of %s, not enforced by TF",
        fraction, _format_bytes(limit_bytes),
    )
    # The PluggableDevice allocator reads TF_FORCE_GPU_ALLOW_GROWTH like the CUDA one.
    return _Memory(limit_bytes, False, _set_memory_growth(cfg, selected, growth, notes=notes, applier=applier))


def _configure_cuda_memory(
    cfg: Any, selected: list[Any], totals: list[int | None], *, fraction: float, growth: bool,
    notes: list[str], applier: _Applier,
) -> _Memory:
    """CUDA: a logical device with memory_limit = fraction x total per GPU, or memory growth alone."""
    use_limit = fraction < 1.0
    if use_limit and any(t is None for t in totals):
        notes.append(
            f"memory_fraction={fraction} not applied: the total memory of the GPU(s) could not be "
            "read (install nvidia-ml-py, or put nvidia-smi on PATH)"
        )
        use_limit = False
    if not use_limit:
        return _Memory(None, False, _set_memory_growth(cfg, selected, growth, notes=notes, applier=applier))
    limits = [int(fraction * t) for t in totals]
    applied = [
        applier(
            f"memory_limit={b // MIB} MiB on {p.name} (set_logical_device_configuration)",
            cfg.set_logical_device_configuration, p,
            [cfg.LogicalDeviceConfiguration(memory_limit=b // MIB)],  # TF takes MiB
        )
        for p, b in zip(selected, limits)
    ]
    if not all(applied):
        return _Memory(None, False, False)
    # With a logical device the config's allow_growth is False: only the variable can turn growth
    # (up to the limit) on. Setters succeed silently when nothing changes, even after
    # initialization, but the allocator read the variable when the GPUs were created:
    # _growth_tf_will_use checks for that.
    growth_applied = _growth_tf_will_use(
        requested=growth, config_growth=False, may_set_env=True, notes=notes, applier=applier
    )
    return _Memory(min(b // MIB * MIB for b in limits), True, growth_applied)


def _set_memory_growth(cfg: Any, selected: list[Any], growth: bool, *, notes: list[str], applier: _Applier) -> bool:
    """set_memory_growth(growth) on each selected GPU; whether TF's allocator will grow."""
    applied = [
        applier(f"set_memory_growth({p.name}, {growth})", cfg.experimental.set_memory_growth, p, growth)
        for p in selected
    ]
    return _growth_tf_will_use(
        requested=growth, config_growth=_config_growth_after(applied, growth, applier),
        may_set_env=False, notes=notes, applier=applier,
    )


def _accelerator_names(
    cfg: Any, pairs: list[tuple[DeviceInfo, Any]], *, visible_ok: bool, applier: _Applier
) -> tuple[str, ...]:
    """Logical names of the selected GPUs, in physical order."""
    if visible_ok and not applier.runtime_initialized:
        # Exactly the selected GPUs will be visible; TF numbers them in physical order.
        return tuple(f"/device:GPU:{k}" for k in range(len(pairs)))
    # The runtime exists: the selected GPUs keep their position among the visible ones, checked
    # against the logical devices TF actually created.
    visible = inventory._visible_gpus(cfg)
    names = [f"/device:GPU:{visible.index(phys)}" for _, phys in pairs if phys in visible]
    if applier.runtime_initialized and names:
        # Only now is listing logical devices safe: it would otherwise initialize the runtime.
        existing = inventory._logical_gpu_ids(cfg)
        names = [n for n in names if n.rsplit("device:", 1)[-1] in existing]
    return tuple(names)


# --- Memory growth and TF_FORCE_GPU_ALLOW_GROWTH -----------------------------------------------------


def _tf_allow_growth(config_growth: bool, env_value: str | None) -> bool:
    """Whether TF's GPU allocator grows on demand, given the growth TF's config asks for.

    TF's own rule, read from its source (tensorflow/core/common_runtime/gpu/gpu_bfc_allocator.cc,
    GetAllowGrowthValue, TF 2.x; the PluggableDevice allocator has the same rule unless the plugin
    itself forces growth): the variable is read with getenv when each GPU allocator is created;
    exactly "true" forces growth on, exactly "false" forces it off (both override the config),
    and any other value, "" and "True" included, is logged as unparsable and ignored, so the
    config's value stands. The config asks for growth only through set_memory_growth; a GPU with
    a logical memory_limit has allow_growth False in the config.
    """
    if env_value == "true":
        return True
    if env_value == "false":
        return False
    return config_growth


def _growth_tf_will_use(
    *, requested: bool, config_growth: bool, may_set_env: bool, notes: list[str], applier: _Applier
) -> bool:
    """Set TF_FORCE_GPU_ALLOW_GROWTH if it is ours to set and needed; return TF's real growth.

    ``may_set_env``: only with a memory limit, where the variable is the one way TF allows growth
    up to the limit. A value the user set is never changed: a warning says what TF will do.
    """
    global _force_growth_env_set_by_us
    current = os.environ.get(FORCE_GROWTH_ENV)
    if current is not None and not _force_growth_env_set_by_us:  # the user's: it wins
        return _users_growth(current, requested=requested, config_growth=config_growth, notes=notes)
    wanted = "true" if may_set_env and requested and not config_growth else None
    if wanted == current:
        return _tf_allow_growth(config_growth, current)
    if applier.runtime_initialized or inventory._runtime_initialized():
        # The allocators read the variable when the GPUs were created; changing it now changes
        # nothing. What they read is assumed to be today's value (it is ours, unchanged since).
        effective = _tf_allow_growth(config_growth, current)
        if wanted == "true":
            applier.refused.append(f"{FORCE_GROWTH_ENV}=true (GPU devices already exist)")
        elif effective != requested:
            applier.refused.append(f"allow_growth={requested} (GPU devices already exist with growth {effective})")
        return effective
    if wanted is None:
        del os.environ[FORCE_GROWTH_ENV]  # set by an earlier plan of this process: undo
        _force_growth_env_set_by_us = False
    else:
        os.environ[FORCE_GROWTH_ENV] = wanted
        _force_growth_env_set_by_us = True
    return _tf_allow_growth(config_growth, wanted)


def _users_growth(current: str, *, requested: bool, config_growth: bool, notes: list[str]) -> bool:
    """The growth TF will use with the user's TF_FORCE_GPU_ALLOW_GROWTH, noting where it differs."""
    effective = _tf_allow_growth(config_growth, current)
    does = "allocate GPU memory on demand" if effective else "allocate its GPU memory up front"
    if current not in ("true", "false"):
        notes.append(
            f"{FORCE_GROWTH_ENV}={current!r} in the environment is not a value TensorFlow reads "
            f"(only exactly 'true' or 'false'): TF ignores it and will {does}"
            + ("" if effective == requested else f" despite allow_growth={requested}")
            + "; left unchanged"
        )
    elif effective != requested:
        notes.append(
            f"{FORCE_GROWTH_ENV}={current} in the environment makes TF {does} despite "
            f"allow_growth={requested}; left unchanged"
        )
    return effective


def _config_growth_after(applied: Sequence[bool], requested: bool, applier: _Applier) -> bool:
    """The growth TF's config holds after set_memory_growth(requested) on each selected device."""
    if all(applied):
        return requested
    # RuntimeError: TF refuses only a *changed* value, so the config holds the other one;
    # ValueError: the device has a logical configuration, which excludes growth.
    return (not requested) if applier.last_error is RuntimeError else False
