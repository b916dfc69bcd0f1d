"""RunOptions: every setting of a corpus run, in one frozen object validated once, where it is built.

    from vggish_tf2.options import RunOptions
    options = RunOptions(output_format="parquet", layout="shards", batch_size=48)

The CLI builds it from its flags (each field declares its flag beside it: a new option is one
field, its default, its check and its flag), ``embed_corpus`` takes it (or its fields as
keywords), and every stage reads it. ``None`` means the library's default (the environment's
``VGGISH_*`` where there is one, see :mod:`vggish_tf2.config`). Errors name the field
(``workers=0 must be a positive integer``); the CLI shows the flag instead.

Each choice list is defined once, in the module that owns it, and imported here.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any, Union

from vggish_tf2 import config, params
from vggish_tf2.audio import RESAMPLERS
from vggish_tf2.corpus.pooling import POOLS
from vggish_tf2.corpus.write import LAYOUTS, SHARD_FORMATS
from vggish_tf2.errors import InvalidArgumentError
from vggish_tf2.frontend import FRONTEND_PRECISIONS as PRECISIONS
from vggish_tf2.outputs import OUTPUT_FORMATS as FORMATS
from vggish_tf2.windows import SHORT_CLIP_POLICIES as SHORT_CLIPS

DEVICES = config.DEVICE_PREFERENCES
ENGINES = ("local", "ray")  # local: decoding threads + this process's device; ray: Ray Data (vggish-tf2[ray])

PathLike = Union[str, os.PathLike]


# --- command-line text -> value (argparse types; the values are checked by RunOptions) ----------
def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return value


def batch_size_text(text: str) -> int | str:
    return text if text == "auto" else positive_int(text)


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be in (0, 1]")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number > 0")
    return value


def _option(default: Any, flag: str, help: str, *, group: str, **argparse_kwargs: Any) -> Any:
    """A field with its command-line flag: ``flag``, ``help`` and argparse's keywords beside it."""
    return dataclasses.field(default=default, metadata={"flag": flag, "help": help, "group": group,
                                                        "argparse": argparse_kwargs})


EMBEDDER = "model and device"
CORPUS = "outputs"
ENGINE = "engine"


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """The settings of a corpus run (see the module doc). Invalid values raise InvalidArgumentError."""

    # embedder: the numbers
    model: PathLike | None = _option(
        None, "--model", "converted model directory (default: VGGISH_MODEL_DIR or models/vggish)",
        group=EMBEDDER, metavar="DIR")
    device: str | None = _option(
        None, "--device", "where to run (default: VGGISH_DEVICE_PREFERENCE or auto)", group=EMBEDDER, choices=DEVICES)
    memory_fraction: float | None = _option(
        None, "--memory-fraction", "share of each GPU's memory TensorFlow may use, in (0, 1] (default 0.8)",
        group=EMBEDDER, type=fraction, metavar="F")
    batch_size: int | str = _option(
        "auto", "--batch-size",
        f"examples per device per step, rounded down to whole slices of {params.STEP_EXAMPLES} rows (at least one); "
        "default: auto, measured once per machine and model and cached in ~/.cache/vggish-tf2/tuning.json",
        group=EMBEDDER, type=batch_size_text, metavar="N")
    jit_compile: bool | None = _option(
        None, "--jit-compile", "XLA-compile the device step (default: measured with the batch size, or the mode "
        "the --out directory was made with; XLA rounds float32 otherwise, so it is recorded)",
        group=EMBEDDER, action=argparse.BooleanOptionalAction)
    resampler: str | None = _option(
        None, "--resampler", "kaiser_best (default: the reference's resampy filter, Google's numbers) or "
        "soxr_hq (a little faster, another filter)", group=EMBEDDER, choices=RESAMPLERS)
    frontend_precision: str | None = _option(
        None, "--frontend-precision", "log-mel front end precision (default float64; float32 on Metal)",
        group=EMBEDDER, choices=PRECISIONS)
    short_clips: str | None = _option(
        None, "--short-clips",
        "clips shorter than one example (0.975 s): drop (default, as the reference), pad, repeat",
        group=EMBEDDER, choices=SHORT_CLIPS)
    hop_seconds: float | None = _option(
        None, "--hop-seconds", "seconds between example starts, a multiple of 0.01 (default 0.96)",
        group=EMBEDDER, type=positive_float, metavar="S")
    workers: int | None = _option(
        None, "--workers", "decoding threads (default: cores - 1, at most 4)", group=EMBEDDER, type=positive_int,
        metavar="N")
    verify_model_hashes: bool = _option(
        True, "--no-verify-model", "load the model without checking its files against their recorded hashes "
        "(for an export without its hash list that you trust)", group=EMBEDDER, action="store_false")
    # corpus
    output_format: str = _option(
        "npz", "--format", "output format (default: npz)", group=CORPUS, choices=FORMATS)
    layout: str = _option(
        "files", "--layout", "files: one output per input, mirroring the input tree (default); shards: a "
        "dataset of part files under <out>/embeddings/ (parquet, tfrecord), for big corpora",
        group=CORPUS, choices=LAYOUTS)
    shard_rows: int = _option(
        100_000, "--shard-rows", "examples per shard at most (default 100000; a file's rows are never split)",
        group=CORPUS, type=positive_int, metavar="N")
    pool: str = _option(
        "none", "--pool", "none: one row per example (default); mean: one vector per file, the mean of its "
        "examples (npz, parquet)", group=CORPUS, choices=POOLS)
    postprocess: bool = _option(
        True, "--postprocess", "add AudioSet's PCA + uint8 embeddings (default: on; tfrecord needs them)",
        group=CORPUS, action=argparse.BooleanOptionalAction)
    overwrite: bool = _option(
        False, "--overwrite", "redo every input, also when the output directory was made with other settings",
        group=CORPUS, action="store_true")
    engine: str = _option(
        "local", "--engine", "local: decoding threads and this process's device (default); ray: Ray Data, "
        "decoding tasks and an actor pool of embedders (needs vggish-tf2[ray])", group=ENGINE, choices=ENGINES)
    ray_address: str | None = _option(
        None, "--ray-address", "the Ray cluster to join (default: start a local Ray instance)", group=ENGINE,
        metavar="ADDR")
    ray_actors: int | None = _option(
        None, "--ray-actors", "embedder actors (default: one per GPU, else 1)", group=ENGINE, type=positive_int,
        metavar="N")

    def __post_init__(self) -> None:
        if self.model is not None and not isinstance(self.model, (str, os.PathLike)):
            raise InvalidArgumentError(f"model={self.model!r} must be a model directory path or a TF Hub handle")
        if self.device is not None:
            object.__setattr__(self, "device", config.validate_device_preference(self.device))  # "GPU" -> "gpu"
        if self.memory_fraction is not None:
            object.__setattr__(self, "memory_fraction", config.validate_memory_fraction(self.memory_fraction))
        if not (self.batch_size == "auto" or _is_positive_int(self.batch_size)):
            raise InvalidArgumentError(f"batch_size={self.batch_size!r} must be a positive integer or 'auto'")
        _check_optional_bool("jit_compile", self.jit_compile)
        _check_choice("resampler", self.resampler, RESAMPLERS, optional=True)
        _check_choice("frontend_precision", self.frontend_precision, PRECISIONS, optional=True)
        _check_choice("short_clips", self.short_clips, SHORT_CLIPS, optional=True)
        if self.hop_seconds is not None:
            params.example_hop_samples(self.hop_seconds)  # a whole number of 10 ms frames, > 0
        _check_optional_positive_int("workers", self.workers)
        for name in ("verify_model_hashes", "postprocess", "overwrite"):
            _check_bool(name, getattr(self, name))

        _check_choice("output_format", self.output_format, FORMATS)
        _check_choice("layout", self.layout, LAYOUTS)
        if not _is_positive_int(self.shard_rows):
            raise InvalidArgumentError(f"shard_rows={self.shard_rows!r} must be a positive integer")
        _check_choice("pool", self.pool, POOLS)
        if self.output_format == "tfrecord" and not self.postprocess:
            raise InvalidArgumentError("format 'tfrecord' stores AudioSet's post-processed uint8 embeddings: "
                                       "it cannot be combined with --no-postprocess (use npz or parquet)")
        if self.layout == "shards" and self.output_format not in SHARD_FORMATS:
            raise InvalidArgumentError(f"layout='shards' writes {' or '.join(SHARD_FORMATS)} shards, not "
                                       f"{self.output_format} (npz is one file per input: layout='files')")
        if self.pool == "mean" and self.output_format == "tfrecord":
            raise InvalidArgumentError("pool='mean' gives one vector per file, which AudioSet's tfrecord layout "
                                       "(one frame per example) cannot hold: use npz or parquet")

        _check_choice("engine", self.engine, ENGINES)
        if self.ray_address is not None and (not isinstance(self.ray_address, str) or not self.ray_address.strip()):
            raise InvalidArgumentError(f"ray_address={self.ray_address!r} must be a non-empty string or None")
        _check_optional_positive_int("ray_actors", self.ray_actors)
        if self.engine != "ray":
            given = [name for name in ("ray_address", "ray_actors") if getattr(self, name) is not None]
            if given:
                raise InvalidArgumentError(f"{given[0]}={getattr(self, given[0])!r} needs engine='ray' "
                                           f"(engine={self.engine!r})")

    @property
    def hop_samples(self) -> int | None:
        """The hop in 16 kHz samples, or None for the default."""
        return params.example_hop_samples(self.hop_seconds) if self.hop_seconds is not None else None

    def embedder_options_given(self) -> list[str]:
        """The embedder fields set to anything but their default (they build the Embedder)."""
        defaults = RunOptions()
        return [name for name in EMBEDDER_FIELDS if getattr(self, name) != getattr(defaults, name)]

    def replace(self, **changes: Any) -> "RunOptions":
        """A copy with ``changes``, validated again."""
        return dataclasses.replace(self, **changes)


EMBEDDER_FIELDS = tuple(f.name for f in dataclasses.fields(RunOptions) if f.metadata["group"] == EMBEDDER)
# Each field's flag: library errors name the field, the command line shows the flag typed.
FLAGS = {f.name: f.metadata["flag"] for f in dataclasses.fields(RunOptions)}


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise InvalidArgumentError(f"{name}={value!r} must be True or False")


def _check_optional_bool(name: str, value: object) -> None:
    if value is not None and not isinstance(value, bool):
        raise InvalidArgumentError(f"{name}={value!r} must be True, False or None")


def _check_optional_positive_int(name: str, value: object) -> None:
    if value is not None and not _is_positive_int(value):
        raise InvalidArgumentError(f"{name}={value!r} must be a positive integer")


def _check_choice(name: str, value: object, choices: tuple[str, ...], *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if value not in choices:
        raise InvalidArgumentError(f"{name}={value!r} must be one of {', '.join(choices)}")


__all__ = ["DEVICES", "ENGINES", "FORMATS", "LAYOUTS", "POOLS", "PRECISIONS", "RESAMPLERS", "RunOptions",
           "SHORT_CLIPS"]
