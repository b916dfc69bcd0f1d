"""``<out>/run_config.json``: the settings that decide an output's bytes, and the model's fingerprint.

A run into a directory made with other settings is refused (unless ``overwrite``): its outputs
would not be comparable. The check runs twice: before the model loads, on what the options
already say, and once the model is loaded, on everything. A resumed run whose compile mode is
left to tuning takes the recorded one (:func:`recorded_jit_compile`), so its numbers stay the same.
"""
from __future__ import annotations

import json
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from vggish_tf2 import params
from vggish_tf2.atomic import atomic_output
from vggish_tf2.corpus.engine import ModelFacts
from vggish_tf2.errors import InvalidArgumentError, OutputError
from vggish_tf2.hashing import export_fingerprint
from vggish_tf2.options import RunOptions

RUN_CONFIG_NAME = "run_config.json"
RUN_CONFIG_VERSION = 1
# The settings that decide an output's bytes; a run into a directory made with others is refused.
RUN_CONFIG_KEYS = ("model_hash", "format", "postprocess", "hop_samples", "resampler", "frontend_precision", "short_clips",
                   "jit_compile", "layout", "pool")
# Values of keys added later, for a run_config.json written before them (jit_compile: XLA, which
# rounds float32 otherwise, was never used by a corpus run before it was recorded).
RUN_CONFIG_ADDED_DEFAULTS = {"jit_compile": False, "layout": "files", "pool": "none"}
# Written only when they differ from their default: a default run's file keeps its earlier bytes.
WRITTEN_WHEN_NOT_DEFAULT = ("layout", "pool")
VERSIONED_DISTRIBUTIONS = ("vggish-tf2", "tensorflow", "numpy", "soundfile", "soxr")


def model_fingerprint(model_path: str, *, files_verified: bool = True) -> str:
    """``sha256-files:<hex>`` naming every file of the export (see
    :func:`vggish_tf2.hashing.export_fingerprint`): the hash of its recorded file hashes when the
    files were checked against them at load, else of the files' hashes now (~1 s for VGGish's
    277 MB). A TF Hub handle names itself. No TensorFlow needed."""
    path = Path(model_path)
    if not path.is_dir():
        return f"handle:{model_path}"
    return export_fingerprint(path, trust_recorded=files_verified)


def versions() -> dict[str, str]:
    found = {}
    for distribution in VERSIONED_DISTRIBUTIONS:
        try:
            found[distribution] = importlib_metadata.version(distribution)
        except importlib_metadata.PackageNotFoundError:
            found[distribution] = "unknown"
    return found


def known_before_loading(options: RunOptions) -> dict[str, Any]:
    """The run configuration's keys the options decide before the model loads (unset ones left out)."""
    known = {"format": options.output_format, "postprocess": options.postprocess, "resampler": options.resampler,
             "short_clips": options.short_clips, "frontend_precision": options.frontend_precision,
             "jit_compile": options.jit_compile, "hop_samples": options.hop_samples, "layout": options.layout,
             "pool": options.pool}
    return {key: value for key, value in known.items() if value is not None}


def build_run_config(facts: ModelFacts, options: RunOptions, *, fingerprint: str) -> dict[str, Any]:
    """The whole configuration, once the model is loaded. ``postprocess`` as asked: whether PCA
    rows exist follows from the model, which ``model_hash`` names."""
    config: dict[str, Any] = {
        "config_version": RUN_CONFIG_VERSION,
        "model_hash": fingerprint,
        "format": options.output_format,
        "postprocess": options.postprocess,
        "hop_samples": int(facts.hop_samples),
        "hop_seconds": facts.hop_seconds,
        "resampler": facts.resampler,
        "frontend_precision": facts.frontend_precision,
        "short_clips": facts.short_clips,
        "jit_compile": facts.jit_compile,
        "layout": options.layout,
        "pool": options.pool,
    }
    return config


def recorded_jit_compile(out_dir: Path) -> bool | None:
    """The compile mode the directory's outputs were made with (None: no usable run_config.json),
    so that a resumed run whose mode would be tuned again keeps it: its numbers stay the same."""
    try:
        existing = json.loads((out_dir / RUN_CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(existing, dict):
        return None
    value = existing.get("jit_compile", RUN_CONFIG_ADDED_DEFAULTS["jit_compile"])
    return value if isinstance(value, bool) else None


def check_run_config(out_dir: Path, config: dict, *, overwrite: bool, record: bool = True) -> None:
    """Refuse a run whose settings differ from those the directory was made with (only the keys of
    ``config`` are compared); with ``record``, write ``config`` when there is none yet."""
    path = out_dir / RUN_CONFIG_NAME
    existing = None
    if path.exists() and not overwrite:
        try:
            existing = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise OutputError(f"{path}: unreadable run configuration ({e}); pass --overwrite to start afresh") from e
        if not isinstance(existing, dict):
            raise OutputError(f"{path}: not a run configuration; pass --overwrite to start afresh")
        differences = [
            f"{key} {existing.get(key, RUN_CONFIG_ADDED_DEFAULTS.get(key))!r} then, {config[key]!r} now"
            for key in RUN_CONFIG_KEYS
            if key in config and existing.get(key, RUN_CONFIG_ADDED_DEFAULTS.get(key)) != config[key]
        ]
        if differences:
            raise InvalidArgumentError(
                f"{out_dir} holds outputs made with other settings ({'; '.join(differences)}); "
                "use another --out directory, or --overwrite to redo everything with the new settings"
            )
    if existing is None and record:
        written = {key: value for key, value in config.items()
                   if not (key in WRITTEN_WHEN_NOT_DEFAULT and value == RUN_CONFIG_ADDED_DEFAULTS[key])}
        text = json.dumps(written, indent=2, sort_keys=True) + "\n"
        with atomic_output(path) as temp:
            temp.write_text(text)


def output_metadata(facts: ModelFacts, *, fingerprint: str, has_postprocessed: bool) -> dict[str, Any]:
    """The metadata every output of the run carries (each adds its input's own keys)."""
    metadata: dict[str, Any] = {
        "model": {"path": facts.model_location, "hash": fingerprint},
        "synthetic_weights": facts.synthetic_weights,
        "has_postprocessed": has_postprocessed,
        "resampler": facts.resampler,
        "frontend_precision": facts.frontend_precision,
        "jit_compile": facts.jit_compile,
        "hop_seconds": facts.hop_seconds,
        "hop_samples": int(facts.hop_samples),
        "short_clips": facts.short_clips,
        "sample_rate_hz": params.SAMPLE_RATE,
        "example_window_samples": params.EXAMPLE_WINDOW_SAMPLES,
        "versions": versions(),
    }
    if facts.synthetic_weights:
        metadata["warning"] = "SYNTHETIC WEIGHTS: these are not VGGish embeddings"
    return metadata


__all__ = ["RUN_CONFIG_KEYS", "RUN_CONFIG_NAME", "build_run_config", "check_run_config", "known_before_loading",
           "model_fingerprint", "output_metadata", "recorded_jit_compile", "versions"]
