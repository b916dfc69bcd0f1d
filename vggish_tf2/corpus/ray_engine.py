"""The Ray Data engine: decoding tasks on CPUs, an actor pool of embedders, rows back to the driver.

    vggish-tf2 embed corpus/ --out out --engine ray [--ray-address ADDR] [--ray-actors N]

The run's tasks (after resume filtering) become a Ray Dataset of file paths, which flows through
two stages:

1. **decode** (Ray tasks, one CPU each, GPUs hidden): :func:`vggish_tf2.corpus.decode.file_blocks`
   with the run's resampler, hop, short-clip policy and sample dtype, so the windows are the local
   engine's. Each example window becomes a row ``(task, example, window)``, yielded a block of
   windows at a time (an hour of audio never sits in one object). A file's last row carries its
   end: the 16 kHz samples decoded, or the file's error (same text as the local engine's). A file
   with no window (too short, or failed) is one marker row whose window is not computed.
2. **embed** (an actor pool, ``ActorPoolStrategy(size=n)``, each actor with ``num_gpus`` where the
   cluster has GPUs): each actor loads the model once into an
   :class:`~vggish_tf2.embedder.Embedder` and turns ``batch_size`` rows at a time into embeddings.

The driver regroups the rows per file (a file may span batches and actors; rows arrive in any
order), puts each file's examples in order, post-processes them as the local engine does, and
hands an :class:`~vggish_tf2.corpus.engine.Embedded` to the same writer and manifest as the local
engine. Per-file outputs are byte-identical to the local engine's on the same kind of device:
every actor runs one fixed compile mode and an explicit batch size, and an example's embedding
does not depend on its batch (vggish_tf2.step).

Failures: Ray restarts a dead actor and retries its batch (Ray Data's defaults for actor pools:
``max_restarts=-1``, ``max_task_retries=-1``), so a killed actor costs its batch's time, nothing
else; a row that comes back twice is dropped, so no file is written twice. Open-source Ray has no
job checkpointing: the manifest is the checkpoint, and a run killed on the driver resumes by being
run again.

On a cluster every node must reach the model directory and the input files at the paths the
driver sees, and have vggish-tf2 installed; outputs are written by the driver, under ``--out``.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from vggish_tf2 import audio, config, errors, params, windows
from vggish_tf2.corpus.engine import Embedded, ModelFacts
from vggish_tf2.errors import InternalError, InvalidArgumentError, VGGishError, one_line

if TYPE_CHECKING:
    from vggish_tf2.corpus.plan import Task
    from vggish_tf2.options import RunOptions

logger = logging.getLogger(__name__)

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
FILES_PER_DECODE_TASK = 4  # input rows per Ray block: one decoding task decodes this many files in turn
MIN_BLOCK_BYTES = 1024 * 1024  # Ray Data's own floor for a block (target_min_block_size, 1 MiB)
# Hides every GPU from a process: decoding tasks never need one, and TensorFlow would otherwise take
# all memory of each GPU it sees (Ray no longer hides GPUs from tasks that asked for none).
NO_GPU_ENV = {"CUDA_VISIBLE_DEVICES": ""}
NO_ERROR = ""  # the error column of a row whose file has no error (yet)
# Passed on to the tasks and actors (Ray starts them with its own environment): the library's
# settings (vggish_tf2.config) and TensorFlow's log level; with a local instance also the cache
# folder (tuning and verified-export caches), which names a path of this machine.
FORWARDED_ENV = (config.ENV_DEVICE_PREFERENCE, config.ENV_GPU_MEMORY_FRACTION, config.ENV_GPU_ALLOW_GROWTH,
                 config.ENV_MODEL_DIR, "TF_CPP_MIN_LOG_LEVEL")
FORWARDED_ENV_LOCAL = ("XDG_CACHE_HOME",)


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise InvalidArgumentError("engine='ray' needs Ray Data: pip install 'vggish-tf2[ray]'") from e
    return ray


# --- stage 1: decoding (a Ray task per block of input rows) ------------------------------------------
@dataclasses.dataclass(frozen=True)
class DecodeSettings:
    """What decoding needs; the same values the local engine decodes with (picklable, no TF)."""

    resampler: str
    hop_samples: int
    short_clips: str
    sample_dtype: str  # "float64" (float64 front end) or "float32"


def _rows(task: int, block: np.ndarray, first: int, *, samples: int | None) -> dict[str, np.ndarray]:
    """Rows of one block of a file's windows; ``samples`` (the file's decoded total) marks its last row."""
    n = len(block)
    end = np.zeros(n, bool)
    total = np.zeros(n, np.int64)
    if samples is not None:
        end[-1] = True
        total[-1] = samples
    return {"task": np.full(n, task, np.int64), "example": np.arange(first, first + n, dtype=np.int64),
            "window": block, "end": end, "samples": total,
            "error": np.full(n, NO_ERROR, dtype=object), "error_type": np.full(n, NO_ERROR, dtype=object)}


def _marker(task: int, *, samples: int, dtype: type, error: BaseException | None = None) -> dict[str, np.ndarray]:
    """The one row of a file without windows (too short, or failed): example -1, not computed."""
    return {"task": np.array([task], np.int64), "example": np.array([-1], np.int64),
            "window": np.zeros((1, params.EXAMPLE_WINDOW_SAMPLES), dtype), "end": np.array([True]),
            "samples": np.array([samples], np.int64),
            "error": np.array([NO_ERROR if error is None else str(error)], dtype=object),
            "error_type": np.array([NO_ERROR if error is None else type(error).__name__], dtype=object)}


def file_rows(task: int, path: Path, settings: DecodeSettings) -> Iterator[dict[str, np.ndarray]]:
    """One file's rows, a block of windows at a time (see the module doc). A file's own fault ends
    it with an error marker (rows already yielded are dropped by the driver); anything else is a
    bug and raises InternalError naming the file, which stops the run."""
    from vggish_tf2.corpus.decode import as_file_error, file_blocks

    held: np.ndarray | None = None  # the latest block, held back until we know whether it is the last
    first = 0
    samples = 0
    dtype: type = np.float32
    try:
        dtype = np.dtype(settings.sample_dtype).type
        for block, samples in file_blocks(path, resampler=settings.resampler, hop_samples=settings.hop_samples,
                                          short_clips=settings.short_clips, dtype=dtype):
            if not len(block):
                continue
            if held is not None:
                yield _rows(task, held, first, samples=None)
                first += len(held)
            held = block
    except (VGGishError, OSError) as e:  # the file's fault: this file fails, the others go on
        yield _marker(task, samples=0, dtype=dtype, error=as_file_error(path, e))
        return
    except Exception as e:  # noqa: BLE001 - a bug (TypeError, ...): stops the run, naming the file
        raise InternalError(f"{path}: {type(e).__name__} while decoding: {one_line(e)} "
                            "(this is a bug in vggish-tf2)") from e
    if held is None:
        yield _marker(task, samples=samples, dtype=dtype)
    else:
        yield _rows(task, held, first, samples=samples)


def decode_batch(batch: dict[str, np.ndarray], *, settings: DecodeSettings) -> Iterator[dict[str, np.ndarray]]:
    """map_batches function of the decode stage: input rows ``(task, path)`` -> window rows.
    ``path`` is the file system's bytes (any file name, also one that is not UTF-8)."""
    for task, raw_path in zip(batch["task"], batch["path"]):
        yield from file_rows(int(task), Path(os.fsdecode(bytes(raw_path))), settings)


# --- stage 2: the embedder actors ---------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ActorSettings:
    """What an embedder actor is built with, and the facts the driver expects it to have."""

    model_path: str
    device: str | None
    memory_fraction: float | None
    batch_size: int
    jit_compile: bool
    frontend_precision: str
    hop_seconds: float
    short_clips: str
    resampler: str
    verify_model_hashes: bool
    postprocess: bool = False  # add "postprocessed" (uint8 [128]) rows; the engine does it on the driver
    model_fingerprint: str | None = None  # the driver's export (vggish_tf2.hashing.export_fingerprint)


class EmbedderActor:
    """map_batches callable class: rows with a ``window`` (and an ``example`` number, -1 for a row
    not to compute) -> the same rows, their other columns as they came, with ``embedding``
    (float32 [128]) instead of ``window``, and ``postprocessed`` (uint8 [128]) when the settings
    ask for it. Loads the model once, when Ray starts the actor."""

    def __init__(self, settings: ActorSettings):
        from vggish_tf2.embedder import Embedder
        from vggish_tf2.hashing import export_fingerprint

        if settings.model_fingerprint is not None and Path(settings.model_path).is_dir():
            # Each node reads its own copy of the model: it must be the driver's, file for file
            # (its recorded hash list; the load below checks the files against it). No directory:
            # the Embedder says so (ModelNotFoundError).
            here = export_fingerprint(Path(settings.model_path), trust_recorded=settings.verify_model_hashes)
            if here != settings.model_fingerprint:
                raise errors.ModelError(f"{settings.model_path}: this node's export is not the driver's "
                                        f"({here}, the driver's {settings.model_fingerprint})")
        # jit_compile and batch_size are explicit (never "auto"): no actor measures its own mode,
        # so every actor, on every node, computes the numbers the driver recorded.
        self.embedder = Embedder(
            settings.model_path, device=settings.device, memory_fraction=settings.memory_fraction,
            batch_size=settings.batch_size, jit_compile=settings.jit_compile,
            frontend_precision=settings.frontend_precision, hop_seconds=settings.hop_seconds,
            short_clips=settings.short_clips, resampler=settings.resampler, workers=1,
            verify_model_hashes=settings.verify_model_hashes)
        self.postprocess = settings.postprocess
        found = (self.embedder.frontend_precision, self.embedder.jit_compile, self.embedder.batch_size)
        expected = (settings.frontend_precision, settings.jit_compile, settings.batch_size)
        if found != expected:
            raise InternalError(f"an embedder actor runs (frontend_precision, jit_compile, batch_size)={found}, "
                                f"the run expects {expected} (this is a bug in vggish-tf2)")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        example = batch["example"]
        computed = example >= 0  # marker rows (files without windows) carry no window to compute
        embedding = np.zeros((len(example), params.EMBEDDING_SIZE), np.float32)
        if computed.any():
            embedding[computed] = self.embedder.embed_windows(batch["window"][computed])
        out = {name: column for name, column in batch.items() if name != "window"}
        out["embedding"] = embedding
        if self.postprocess:
            out["postprocessed"] = self.embedder.postprocess(embedding)
        return out


# --- the driver: rows -> one result per file ------------------------------------------------------------
class _Pending:
    __slots__ = ("examples", "embeddings", "expected", "samples", "received")

    def __init__(self):
        self.examples: list[np.ndarray] = []
        self.embeddings: list[np.ndarray] = []
        self.expected: int | None = None  # known once the file's end row has arrived
        self.samples = 0
        self.received = 0


def error_from_row(error_type: str, message: str) -> BaseException:
    """The file's error as the decoding task raised it: our own class when it is one, same text."""
    cls = getattr(errors, error_type, None)
    if not (isinstance(cls, type) and issubclass(cls, VGGishError)):
        cls = errors.InvalidAudioError
    return cls(message)


class Regrouper:
    """Collects embedded rows (any order, possibly repeated by a retried batch) into whole files.

    ``add(batch)`` returns ``(task index, embedding [N, 128] in example order, samples, error)`` for
    each file that the batch completed; a file is returned once, whatever arrives for it later.
    """

    def __init__(self, count: int):
        self.count = count
        self._pending: dict[int, _Pending] = {}
        self._done: set[int] = set()

    @property
    def outstanding(self) -> int:
        return self.count - len(self._done)

    def add(self, batch: dict[str, np.ndarray]) -> list[tuple[int, np.ndarray | None, int, BaseException | None]]:
        tasks = np.asarray(batch["task"])
        if not len(tasks):
            return []
        order = np.argsort(tasks, kind="stable")
        starts = np.flatnonzero(np.r_[True, tasks[order][1:] != tasks[order][:-1]])
        finished = []
        for rows in np.split(order, starts[1:]):
            task = int(tasks[rows[0]])
            if task in self._done:
                continue  # a retried batch's copy of a file already handed out
            if not 0 <= task < self.count:
                raise InternalError(f"the Ray engine got rows of task {task}, not one of its {self.count}")
            pending = self._pending.setdefault(task, _Pending())
            example = np.asarray(batch["example"])[rows]
            for row in rows[np.asarray(batch["end"])[rows]]:
                error_type = str(batch["error_type"][row])
                if error_type:
                    self._done.add(task)
                    del self._pending[task]
                    finished.append((task, None, 0, error_from_row(error_type, str(batch["error"][row]))))
                    break
                pending.expected = int(batch["example"][row]) + 1  # -1 (no window) -> 0 examples
                pending.samples = int(batch["samples"][row])
            if task in self._done:
                continue
            keep = example >= 0
            if keep.any():
                pending.examples.append(example[keep])
                pending.embeddings.append(np.asarray(batch["embedding"])[rows[keep]])
                pending.received += int(keep.sum())
            if pending.expected is not None and pending.received >= pending.expected:
                embedding = self._assemble(task, pending)
                if embedding is not None:
                    self._done.add(task)
                    del self._pending[task]
                    finished.append((task, embedding, pending.samples, None))
        return finished

    @staticmethod
    def _assemble(task: int, pending: _Pending) -> np.ndarray | None:
        """The file's rows in example order, each once; None while some are still missing."""
        if pending.expected == 0:
            return np.zeros((0, params.EMBEDDING_SIZE), np.float32)
        examples = np.concatenate(pending.examples)
        unique, first = np.unique(examples, return_index=True)  # a retried batch may repeat rows
        if len(unique) < pending.expected:
            return None
        if len(unique) != pending.expected or unique[0] != 0 or unique[-1] != pending.expected - 1:
            raise InternalError(f"task {task}: examples {unique[:3]}...{unique[-3:]} for {pending.expected} expected "
                                "(this is a bug in vggish-tf2)")
        return np.ascontiguousarray(np.concatenate(pending.embeddings)[first], dtype=np.float32)


# --- the engine ---------------------------------------------------------------------------------------
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
    from vggish_tf2 import config

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


def connect(address: str | None) -> bool:
    """Join ``address``, or start a local Ray instance, unless Ray is connected already; True when
    this call connected (so the caller shuts it down again)."""
    ray = _import_ray()
    if ray.is_initialized():
        return False
    ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    return True


def block_bytes(settings: StageSettings) -> int:
    """Ray blocks of about one actor call's windows: an actor task then computes one batch and
    hands it on, so rows stream on as they are done, and a killed actor loses one batch."""
    window_bytes = params.EXAMPLE_WINDOW_SAMPLES * (8 if settings.decode.sample_dtype == "float64" else 4)
    return max(MIN_BLOCK_BYTES, settings.actor.batch_size * window_bytes)


class RayEngine:
    """The Engine protocol (vggish_tf2.corpus.engine) on Ray Data; see the module doc.

    ``RayEngine(options)`` joins ``options.ray_address`` (or starts a local Ray instance, shut down
    again by :meth:`close`), loads the model on the driver (its metadata, and its post-processing),
    and knows its :attr:`facts`; the actors load it when :meth:`results` starts the dataset.
    """

    def __init__(self, options: "RunOptions"):
        from vggish_tf2.model import load_export

        ray = _import_ray()
        self.options = options
        model_path = model_directory(options)  # before Ray and TF: a wrong path fails at once
        # Outputs are post-processed on the driver, as the local engine does it (whole files, or
        # their mean), so their bytes are the same; loading also checks the export before any
        # actor starts. The driver's TensorFlow stays on the CPU: the GPUs are the actors'.
        _hide_gpus_from_tensorflow()
        self._export = load_export(model_path, verify_hashes=options.verify_model_hashes)
        if self._export.synthetic_weights:
            logger.warning("%s: SYNTHETIC WEIGHTS: these are not VGGish embeddings", model_path)
        self._owns_ray = connect(options.ray_address)
        try:
            self.settings = stage_settings(options, model_path=model_path,
                                           cluster_gpus=float(ray.cluster_resources().get("GPU", 0)))
        except BaseException:
            self.close()
            raise
        actor, decode = self.settings.actor, self.settings.decode
        self.facts = ModelFacts(
            model_path=str(model_path), has_pca=bool(self._export.metadata.get("has_pca")),
            synthetic_weights=self._export.synthetic_weights, frontend_precision=actor.frontend_precision,
            jit_compile=actor.jit_compile, resampler=actor.resampler, hop_samples=decode.hop_samples,
            short_clips=actor.short_clips, device=self.settings.placement.describe(), batch_size=actor.batch_size,
            files_verified=options.verify_model_hashes)

    # The dataset ---------------------------------------------------------------------------------------
    def dataset(self, paths: Sequence[Path]):
        """The Ray Dataset of rows ``(task, example, end, samples, error, error_type, embedding)``
        for ``paths`` (task = index in ``paths``); nothing runs until it is iterated."""
        import ray.data

        items = [{"task": index, "path": os.fsencode(path)} for index, path in enumerate(paths)]
        blocks = max(1, -(-len(items) // FILES_PER_DECODE_TASK))
        env = forwarded_env(local=self.options.ray_address is None)
        ds = ray.data.from_items(items, override_num_blocks=blocks)
        ds = embed_windows_stage(decode_stage(ds, self.settings.decode, env=env), self.settings.actor,
                                 self.settings.placement, env=env)
        ds.context.target_max_block_size = block_bytes(self.settings)
        # The run shows its own progress (vggish_tf2.progress); Ray's would interleave with it.
        ds.context.enable_progress_bars = False
        ds.context.print_on_execution_start = False
        return ds

    def results(self, tasks: Sequence["Task"]) -> Iterator[Embedded]:
        """One Embedded per task, in the order files complete (see the module doc). A file's own
        fault is its result's error; a bug anywhere raises (a VGGishError from a task or an actor
        is raised as itself, with Ray's error as its cause)."""
        tasks = list(tasks)
        if not tasks:
            return
        regrouper = Regrouper(len(tasks))
        batches = self.dataset([task.item.path for task in tasks]).iter_batches(batch_size=None, batch_format="numpy")
        try:
            for batch in batches:
                for index, embedding, samples, error in regrouper.add(batch):
                    yield self._embedded(tasks[index], embedding, samples, error)
        except VGGishError:
            raise
        except Exception as e:  # noqa: BLE001 - Ray wraps what a task raised: raise our own error as itself
            own = _own_error(e) or _actor_start_error(e)
            if own is not None:
                raise own from e
            # Not about any one file (an actor that cannot start, a lost node, ...): say so, so that
            # the run does not pin it on the file it wrote last.
            raise InternalError(f"the Ray engine stopped: {type(e).__name__}: {one_line(e)}") from e
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()  # stops the dataset's execution when the consumer stops early
        if regrouper.outstanding:
            raise InternalError(f"the Ray dataset ended with {regrouper.outstanding} of {len(tasks)} files incomplete "
                                "(this is a bug in vggish-tf2)")

    def _embedded(self, task: "Task", embedding: np.ndarray | None, samples: int,
                  error: BaseException | None) -> Embedded:
        from vggish_tf2.corpus.pooling import postprocessed_rows
        from vggish_tf2.embedder import FileResult

        path = task.item.path
        if error is not None:
            return Embedded(task, FileResult(path, None, None, None, error=error), None)
        timestamps = windows.example_start_seconds(len(embedding), hop_samples=self.facts.hop_samples)
        result = FileResult(path, embedding, timestamps, samples / params.SAMPLE_RATE)
        postprocess = self._postprocess if self.options.postprocess and self.facts.has_pca else None
        return Embedded(task, result, postprocessed_rows(result, pool=self.options.pool, postprocess=postprocess))

    def _postprocess(self, embeddings: np.ndarray) -> np.ndarray:
        """AudioSet's PCA + uint8 of a whole file's rows (or its mean): the Embedder's call, here."""
        return np.asarray(self._export.module.postprocess(np.asarray(embeddings, dtype=np.float32)))

    def close(self) -> None:
        """Shuts down the Ray instance this engine started (not one it joined or found running)."""
        if self._owns_ray:
            import ray

            ray.shutdown()
            self._owns_ray = False


def forwarded_env(*, local: bool) -> dict[str, str]:
    """The variables of FORWARDED_ENV (and FORWARDED_ENV_LOCAL when ``local``) set here."""
    names = FORWARDED_ENV + (FORWARDED_ENV_LOCAL if local else ())
    return {name: os.environ[name] for name in names if name in os.environ}


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


def _own_error(error: BaseException) -> BaseException | None:
    """The VGGishError a Ray task or actor raised, found in Ray's wrapping (cause chain), or None."""
    seen = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, VGGishError) and type(current).__module__ == errors.__name__:
            return current
        current = getattr(current, "cause", None) or current.__cause__
    return None


def _actor_start_error(error: BaseException) -> BaseException | None:
    """An embedder actor that could not start (e.g. no model at its path on that node): Ray gives
    the error only as the text of its traceback, whose last line is ``Type: message``. Our own
    error type comes back as itself, anything else as an InternalError saying so."""
    if not getattr(error, "actor_init_failed", False):
        return None
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    last = lines[-1] if lines else type(error).__name__
    name, _, message = last.partition(": ")
    cls = getattr(errors, name.rsplit(".", 1)[-1], None)
    if isinstance(cls, type) and issubclass(cls, VGGishError) and message:
        return cls(f"an embedder actor could not start: {message}")
    return InternalError(f"an embedder actor could not start: {last}")


def _hide_gpus_from_tensorflow() -> None:
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TensorFlow already initialized in this process: leave it as it is
        pass


__all__ = ["ActorSettings", "DecodeSettings", "EmbedderActor", "Placement", "RayEngine", "Regrouper", "StageSettings",
           "block_bytes", "connect", "decode_batch", "decode_stage", "embed_windows_stage", "error_from_row",
           "file_rows", "forwarded_env", "model_directory", "plan_placement", "stage_settings"]
