"""Batch size and compile mode chosen by measurement: a short timed probe, cached per machine.

``Embedder(batch_size="auto")`` (and ``vggish-tf2 embed`` without ``--batch-size``) asks
:func:`resolve` for the batch size per device and, unless given, the compile mode (XLA
``jit_compile`` or the plain graph). The first time on a machine, device and model, it times the
device step the run will execute (a :class:`~vggish_tf2.runner.DeviceRunner`, built as the
Embedder builds it, on noise windows) at a few batch sizes and both modes, and writes the rates
to ``<user cache>/vggish-tf2/tuning.json``; later runs read them (no probe). Delete that file to
measure again (:func:`cache_file` gives its path).

What the choice decides:
- batch size: speed and memory only. Every network call has one fixed shape (vggish_tf2.step),
  so the numbers do not depend on it. The smallest batch within ``BATCH_MARGIN`` of the best rate
  wins (less memory, an earlier first step).
- compile mode: the numbers too. XLA rounds float32 differently from the graph path, so the
  pipeline records the mode in run_config.json and a resumed run keeps it. XLA is chosen only
  when it is faster by more than ``XLA_MARGIN``: the graph path is the export's own (its
  signatures give the same bits), and a choice that flips with the load would be a poor default.

Cache key: CPU model and flags, core count, TensorFlow version, the devices the step runs on, the
model's fingerprint, the front-end precision, the compute dtype and the rows of a network call.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

logger = logging.getLogger(__name__)

CACHE_NAME = "tuning.json"
VERIFIED_EXPORTS_NAME = "verified_exports.json"
CACHE_VERSION = 1
CACHE_ENTRIES = 32  # machine/model keys remembered
XLA_MARGIN = 0.05  # XLA must be > 5 % faster than the graph path to be chosen
BATCH_MARGIN = 0.03  # the smallest batch within 3 % of the best rate is chosen
PROBE_SECONDS = 2.0  # per compile mode, after its warm-up call; at least two batch sizes are timed
MAX_PROBE_BATCH = 768


@dataclasses.dataclass(frozen=True)
class Choice:
    """What :func:`resolve` decided and how: ``source`` is "cache" or "probe"."""

    batch_size: int
    jit_compile: bool
    source: str
    rates: dict  # "graph|48" / "xla|96" -> examples per second measured
    probe_seconds: float = 0.0


def cache_dir() -> Path:
    """The per-user cache directory (pooch.os_cache('vggish-tf2'): ~/.cache/vggish-tf2 on Linux,
    following XDG_CACHE_HOME; the downloader's too). platformdirs (pooch's own dependency, which
    pooch.os_cache calls) directly: importing pooch costs ~0.15 s of start-up."""
    try:
        import platformdirs
    except ImportError:
        import pooch

        return Path(pooch.os_cache("vggish-tf2"))
    return Path(platformdirs.user_cache_dir("vggish-tf2"))


def cache_file() -> Path:
    """The tuning cache (delete it to probe again)."""
    return cache_dir() / CACHE_NAME


def verified_exports_file() -> Path:
    """Where exports verified against their hash lists are remembered (see hashing.verify_file_hashes_cached)."""
    return cache_dir() / VERIFIED_EXPORTS_NAME


def _cpu_description() -> dict:
    info = {"machine": platform.machine(), "processor": platform.processor(), "cores": os.cpu_count()}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as stream:
            for line in stream:
                name, _, value = line.partition(":")
                name = name.strip()
                if name in ("model name", "flags", "Features") and name not in info:
                    info[name] = value.strip()
                if "model name" in info and ("flags" in info or "Features" in info):
                    break
    except OSError:
        pass  # not Linux: platform's fields and the core count
    return info


def device_descriptions(plan) -> list[str]:
    """The device type and, for GPUs, each physical device's name as TensorFlow reports it."""
    import tensorflow as tf

    out = [getattr(plan.device_type, "value", str(plan.device_type))]
    for device in tf.config.list_physical_devices():
        if device.device_type == "CPU":
            continue
        try:
            details = tf.config.experimental.get_device_details(device)
        except Exception:  # noqa: BLE001 - a description only
            details = {}
        out.append(f"{device.name} {details.get('device_name', '')} {details.get('compute_capability', '')}".strip())
    return out


def machine_key(*, device_names: Iterable[str], device_descriptions: Iterable[str], model_fingerprint: str,
                frontend_precision: str, compute_dtype: str) -> str:
    """sha256 of everything a measured rate depends on (see the module doc)."""
    import tensorflow as tf

    from vggish_tf2 import params

    parts = {
        "step_examples": params.STEP_EXAMPLES,  # rows of every network call: the cost of a step
        "cpu": _cpu_description(),
        "tensorflow": tf.__version__,
        "devices": list(device_names),
        "device_descriptions": list(device_descriptions),
        "model": model_fingerprint,
        "frontend_precision": frontend_precision,
        "compute_dtype": compute_dtype,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _rate_key(jit_compile: bool, batch_size: int) -> str:
    return f"{'xla' if jit_compile else 'graph'}|{batch_size}"


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data.get("entries"), dict):
        return {}
    return data["entries"]


def _write_cache(path: Path, entries: dict) -> None:
    entries = dict(list(entries.items())[-CACHE_ENTRIES:])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temp.write_text(json.dumps({"version": CACHE_VERSION, "entries": entries}, indent=1) + "\n", encoding="utf-8")
        os.replace(temp, path)
    except OSError as e:  # a read-only home only costs a probe next time
        logger.info("cannot write the tuning cache %s (%s)", path, e)


def batch_candidates(max_batch_size: int) -> tuple[int, ...]:
    """STEP_EXAMPLES, twice that, four times... up to ``max_batch_size`` (the memory bound for the device) and MAX_PROBE_BATCH."""
    from vggish_tf2.step import STEP_EXAMPLES

    limit = max(STEP_EXAMPLES, min(int(max_batch_size), MAX_PROBE_BATCH))
    sizes, size = [], STEP_EXAMPLES
    while size <= limit:
        sizes.append(size)
        size *= 2
    return tuple(sizes)


def probe(make_runner: Callable[[bool, int], object], *, modes: Iterable[bool], candidates: Iterable[int],
          window_dtype, seconds_per_mode: float = PROBE_SECONDS) -> tuple[dict, dict]:
    """Time ``make_runner(jit_compile, batch_size).run`` on noise windows: one untimed warm-up call
    (tracing, XLA compiling) per mode, then each batch size in increasing order (the best of two
    calls when a call is short) until ``seconds_per_mode`` is spent, at least two sizes timed.
    Returns (rates "graph|48" -> examples/s, runners by mode: the caller keeps the chosen one)."""
    from vggish_tf2 import params

    candidates = sorted(set(int(c) for c in candidates))
    windows = np.random.default_rng(0).uniform(-0.5, 0.5, (candidates[-1], params.EXAMPLE_WINDOW_SAMPLES)).astype(window_dtype)
    rates: dict[str, float] = {}
    runners = {}
    for jit_compile in modes:
        runner = make_runner(jit_compile, candidates[-1])
        runners[jit_compile] = runner
        started = time.perf_counter()
        runner.run(windows[: candidates[0]])  # warm-up: traces (and compiles) the step
        logger.debug("tuning: %s warm-up %.2f s", _rate_key(jit_compile, candidates[0]), time.perf_counter() - started)
        spent_from = time.perf_counter()
        for index, size in enumerate(candidates):
            runner.batch_size = size
            times = []
            for _ in range(2):  # the best of two: a first call at a new size may compile (XLA)
                begin = time.perf_counter()
                runner.run(windows[:size])
                times.append(time.perf_counter() - begin)
            rates[_rate_key(jit_compile, size)] = size / min(times)
            if index >= 1 and time.perf_counter() - spent_from > seconds_per_mode:
                break
    return rates, runners


def choose(rates: dict, *, modes: Iterable[bool], candidates: Iterable[int]) -> tuple[bool, int]:
    """(jit_compile, batch_size) from measured rates, within the allowed modes and sizes."""
    modes = list(modes)
    best_by_mode = {}
    for jit_compile in modes:
        measured = {size: rates[_rate_key(jit_compile, size)] for size in candidates if _rate_key(jit_compile, size) in rates}
        if measured:
            best_by_mode[jit_compile] = measured
    if not best_by_mode:
        raise ValueError("no measured rate for the allowed modes and batch sizes")
    jit_compile = False if False in best_by_mode else True
    if True in best_by_mode and False in best_by_mode:
        if max(best_by_mode[True].values()) > (1 + XLA_MARGIN) * max(best_by_mode[False].values()):
            jit_compile = True
    measured = best_by_mode[jit_compile]
    best = max(measured.values())
    batch_size = min(size for size, rate in measured.items() if rate >= (1 - BATCH_MARGIN) * best)
    return jit_compile, batch_size


def resolve(make_runner: Callable[[bool, int], object], *, key: str, modes: Iterable[bool], max_batch_size: int,
            window_dtype, batch_size: int | None = None, path: Path | None = None,
            seconds_per_mode: float = PROBE_SECONDS) -> tuple[Choice, dict]:
    """The batch size (per device) and compile mode for ``key``, from the cache or by probing what
    is missing; ``batch_size`` fixes the size (then only the modes are compared). Returns the
    choice and the probe's runners by mode (empty when the cache answered)."""
    modes = list(modes)
    candidates = (int(batch_size),) if batch_size is not None else batch_candidates(max_batch_size)
    path = cache_file() if path is None else path
    entries = _read_cache(path)
    cached = entries.get(key, {}).get("rates", {}) if isinstance(entries.get(key), dict) else {}
    # Complete when every allowed mode has a rate at the smallest candidate (probes time sizes in order).
    if cached and all(_rate_key(m, candidates[0]) in cached for m in modes):
        jit_compile, size = choose(cached, modes=modes, candidates=candidates)
        return Choice(batch_size=size, jit_compile=jit_compile, source="cache", rates=dict(cached)), {}
    started = time.perf_counter()
    logger.info("tuning: measuring the device step (batch sizes %s, %s); once per machine and model, cached in %s",
                ", ".join(map(str, candidates)), " and ".join("XLA" if m else "graph" for m in modes), path)
    rates, runners = probe(make_runner, modes=modes, candidates=candidates, window_dtype=window_dtype,
                           seconds_per_mode=seconds_per_mode)
    seconds = time.perf_counter() - started
    merged = {**cached, **{k: round(v, 3) for k, v in rates.items()}}
    entries.pop(key, None)
    entries[key] = {"rates": merged, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "probe_seconds": round(seconds, 2), "load_average": _load_average()}
    _write_cache(path, entries)
    jit_compile, size = choose(merged, modes=modes, candidates=candidates)
    logger.info("tuning: %s at batch %d (%s), measured in %.1f s", "XLA" if jit_compile else "graph", size,
                ", ".join(f"{k} {v:.1f} ex/s" for k, v in rates.items()), seconds)
    return Choice(batch_size=size, jit_compile=jit_compile, source="probe", rates=merged, probe_seconds=seconds), runners


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None
