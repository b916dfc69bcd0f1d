"""The Ray engine's two stages on the cluster: what they run with, where, and how they are joined.

- :func:`connect`: join a cluster, or start a local Ray instance.
- :func:`stage_settings`: the decoding and actor settings of a run's options, and the actors'
  :class:`Placement` (how many, each one's GPU share and memory limit).
- :func:`decode_stage`: rows ``(task, path)`` -> window rows, on CPU tasks that see no GPU
  (:mod:`vggish_tf2.corpus.ray_decode`).
- :func:`embed_windows_stage`: window rows -> embedded rows, on a fixed pool of embedder actors
  (:mod:`vggish_tf2.corpus.ray_actors`), each with ``num_gpus`` where the cluster has GPUs.

The corpus engine (:mod:`vggish_tf2.corpus.ray_engine`) and the Dataset API
(:mod:`vggish_tf2.corpus.ray_api`) both build their datasets from these.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vggish_tf2 import audio, config, errors, params
from vggish_tf2.corpus.ray_actors import ActorSettings, EmbedderActor
from vggish_tf2.corpus.ray_decode import DecodeSettings, decode_batch
from vggish_tf2.errors import InvalidArgumentError

if TYPE_CHECKING:
    from vggish_tf2.options import RunOptions

# Rows per actor call (and per device step) when RunOptions.batch_size is "auto": the batch size is
# fixed, not measured, so every actor computes the same way. CPU: the largest size the local tuning
# probe tries (vggish_tf2.embedder.CPU_MAX_PROBE_BATCH). GPU: ~2.3 GB of activations at ~6 MiB per
# example (vggish_tf2.devices' estimate), which fits a 4 GB GPU or half of an 8 GB one; a step that
# runs out of memory is halved and run again (vggish_tf2.runner), never lost.
CPU_BATCH_SIZE = 96
GPU_BATCH_SIZE = 384
# Host memory an embedder actor reserves (Ray's logical "memory" resource): TensorFlow, the model
# (~300 MB of weights) and a few batches of windows.
ACTOR_MEMORY_BYTES = 1536 * 1024 * 1024
MIN_BLOCK_BYTES = 1024 * 1024  # Ray Data's own floor for a block (target_min_block_size, 1 MiB)
# Hides every GPU from a process: decoding tasks never need one, and TensorFlow would otherwise take
# all memory of each GPU it sees (Ray no longer hides GPUs from tasks that asked for none).
NO_GPU_ENV = {"CUDA_VISIBLE_DEVICES": ""}
# Passed on to the tasks and actors (Ray starts them with its own environment): the library's
# settings (vggish_tf2.config) and TensorFlow's log level; with a local instance also the cache
# folder (tuning and verified-export caches), which names a path of this machine.
FORWARDED_ENV = (config.ENV_DEVICE_PREFERENCE, config.ENV_GPU_MEMORY_FRACTION, config.ENV_GPU_ALLOW_GROWTH,
                 config.ENV_MODEL_DIR, "TF_CPP_MIN_LOG_LEVEL")
FORWARDED_ENV_LOCAL = ("XDG_CACHE_HOME",)


def import_ray():
    """``ray`` (with Ray Data), or InvalidArgumentError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise InvalidArgumentError("engine='ray' needs Ray Data: pip install 'vggish-tf2[ray]'") from e
    return ray


def connect(address: str | None) -> bool:
    """Join ``address``, or start a local Ray instance, unless Ray is connected already; True when
    this call connected (so the caller shuts it down again)."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    return True


def forwarded_env(*, local: bool) -> dict[str, str]:
    """The variables of FORWARDED_ENV (and FORWARDED_ENV_LOCAL when ``local``) set here."""
    names = FORWARDED_ENV + (FORWARDED_ENV_LOCAL if local else ())
    return {name: os.environ[name] for name in names if name in os.environ}


# --- what the stages run with -------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Placement:
    """Where the embedder actors run: how many, and each one's share of a GPU (0: CPU actors)."""

    actors: int
    gpus_per_actor: float
    memory_fraction: float | None  # per actor; None: the library's default (a whole GPU, or the CPU)

    def describe(self) -> str:
        where = f"{self.gpus_per_actor:g} GPU each" if self.gpus_per_actor else "CPU"
        return f"ray: {self.actors} embedder actor{'s' if self.actors != 1 else ''}, {where}"


def plan_placement(options: "RunOptions", cluster_gpus: float) -> Placement:
    """Actors and their GPU shares on a cluster with ``cluster_gpus`` GPUs (see RunOptions.ray_actors):
    one actor per GPU by default; more actors than GPUs share them (``num_gpus`` < 1), each with
    its share of the memory limit set before TensorFlow starts; no GPU (or device="cpu"): one CPU
    actor unless asked for more."""
    use_gpus = options.device in (None, "auto", "gpu") and cluster_gpus >= 1
    if options.device is None and config.get_settings().device_preference == "cpu":
        use_gpus = False
    if options.device == "gpu" and not use_gpus:
        raise errors.DeviceError("device='gpu', but the Ray cluster has no GPU (ray.cluster_resources() lists none)")
    gpus = int(cluster_gpus) if use_gpus else 0
    actors = options.ray_actors or max(1, gpus)
    if not gpus:
        return Placement(actors=actors, gpus_per_actor=0.0, memory_fraction=options.memory_fraction)
    share = min(1.0, gpus / actors)
    fraction = options.memory_fraction
    if fraction is None and share < 1.0:
        fraction = round(config.get_settings().gpu_memory_fraction * share, 4)
    return Placement(actors=actors, gpus_per_actor=share, memory_fraction=fraction)


def _batch_rows(batch_size: int) -> int:
    """Rows per device step as the runner rounds them: whole STEP_EXAMPLES slices, at least one."""
    return max(1, batch_size // params.STEP_EXAMPLES) * params.STEP_EXAMPLES


@dataclasses.dataclass(frozen=True)
class StageSettings:
    """Both stages' settings for ``options`` on the cluster Ray is connected to."""

    placement: Placement
    actor: ActorSettings
    decode: DecodeSettings


def stage_settings(options: "RunOptions", *, model_path: Path, cluster_gpus: float,
                   postprocess_in_actors: bool = False) -> StageSettings:
    """What the stages run with: options' values or the library's defaults, and for
    ``batch_size="auto"`` CPU_BATCH_SIZE or GPU_BATCH_SIZE (see there)."""
    from vggish_tf2.hashing import export_fingerprint

    placement = plan_placement(options, cluster_gpus)
    batch_size = options.batch_size if isinstance(options.batch_size, int) else (
        GPU_BATCH_SIZE if placement.gpus_per_actor else CPU_BATCH_SIZE)
    hop_seconds = options.hop_seconds if options.hop_seconds is not None else params.EXAMPLE_HOP_SECONDS
    precision = options.frontend_precision or "float64"  # as the Embedder resolves it (off Metal)
    actor = ActorSettings(
        model_path=str(model_path), device=options.device, memory_fraction=placement.memory_fraction,
        batch_size=_batch_rows(batch_size),
        # None: no XLA. A resumed run's recorded mode reaches the engine as a bool in options.
        jit_compile=bool(options.jit_compile), frontend_precision=precision, hop_seconds=hop_seconds,
        short_clips=options.short_clips or "drop", resampler=options.resampler or audio.DEFAULT_RESAMPLER,
        verify_model_hashes=options.verify_model_hashes, postprocess=postprocess_in_actors,
        model_fingerprint=export_fingerprint(model_path, trust_recorded=options.verify_model_hashes))
    decode = DecodeSettings(resampler=actor.resampler, hop_samples=params.example_hop_samples(hop_seconds),
                            short_clips=actor.short_clips,
                            sample_dtype="float64" if precision == "float64" else "float32")
    return StageSettings(placement=placement, actor=actor, decode=decode)


def model_directory(options: "RunOptions") -> Path:
    """The export directory options name (checked to exist, without TensorFlow)."""
    from vggish_tf2.embedder import Embedder

    model_path = Embedder._check_model_location(options.model)
    if model_path is None:
        raise InvalidArgumentError(f"model={options.model!r}: the Ray engine needs a converted model directory, "
                                   "not a TF Hub handle")
    return model_path


def block_bytes(settings: StageSettings) -> int:
    """Ray blocks of about one actor call's windows: an actor task then computes one batch and
    hands it on, so rows stream on as they are done, and a killed actor loses one batch."""
    window_bytes = params.EXAMPLE_WINDOW_SAMPLES * (8 if settings.decode.sample_dtype == "float64" else 4)
    return max(MIN_BLOCK_BYTES, settings.actor.batch_size * window_bytes)


# --- the stages ---------------------------------------------------------------------------------------
def decode_stage(ds, settings: DecodeSettings, *, env: dict[str, str] | None = None):
    """``ds`` of rows ``(task, path)`` -> window rows, on CPU tasks that see no GPU; ``env``: more
    environment variables for the tasks (see forwarded_env)."""
    return ds.map_batches(decode_batch, fn_kwargs={"settings": settings}, batch_size=1, num_cpus=1,
                          runtime_env={"env_vars": {**(env or {}), **NO_GPU_ENV}})


def embed_windows_stage(ds, settings: ActorSettings, placement: Placement, *, env: dict[str, str] | None = None):
    """Window rows -> embedded rows on a fixed pool of embedder actors. Each actor reserves
    ACTOR_MEMORY_BYTES of the node's memory besides its GPU share or CPU: the model stage then
    asks Ray for other resources than the decoding tasks, so Ray never fuses the two stages into
    one (decoding would then run only inside the actors)."""
    import ray.data

    if placement.gpus_per_actor:  # Ray sets CUDA_VISIBLE_DEVICES to the actor's GPU
        where: dict[str, Any] = {"num_gpus": placement.gpus_per_actor, "runtime_env": {"env_vars": dict(env or {})}}
    else:  # a CPU actor: TensorFlow must not see (and take the memory of) a GPU Ray did not give it
        where = {"num_cpus": 1, "runtime_env": {"env_vars": {**(env or {}), **NO_GPU_ENV}}}
    return ds.map_batches(EmbedderActor, fn_constructor_kwargs={"settings": settings}, batch_size=settings.batch_size,
                          compute=ray.data.ActorPoolStrategy(size=placement.actors), memory=ACTOR_MEMORY_BYTES,
                          **where)


__all__ = ["Placement", "StageSettings", "block_bytes", "connect", "decode_stage", "embed_windows_stage",
           "forwarded_env", "import_ray", "model_directory", "plan_placement", "stage_settings"]
