"""The Ray Data engine: decoding tasks on CPUs, an actor pool of embedders, rows back to the driver.

    vggish-tf2 embed corpus/ --out out --engine ray [--ray-address ADDR] [--ray-actors N]

The run's tasks (after resume filtering) become a Ray Dataset of file paths, which flows through
two stages:

1. **decode** (Ray tasks, one CPU each, GPUs hidden; :mod:`~vggish_tf2.corpus.ray_decode`):
   :func:`vggish_tf2.corpus.decode.file_blocks` with the run's resampler, hop, short-clip policy
   and sample dtype, so the windows are the local engine's. Each example window becomes a row
   ``(task, example, window)``, yielded a block of windows at a time (an hour of audio never sits
   in one object). A file's last row carries its end: the 16 kHz samples decoded, or the file's
   error (same text as the local engine's). A file with no window (too short, or failed) is one
   marker row whose window is not computed.
2. **embed** (an actor pool, ``ActorPoolStrategy(size=n)``, each actor with ``num_gpus`` where the
   cluster has GPUs; :mod:`~vggish_tf2.corpus.ray_actors`): each actor loads the model once into
   an :class:`~vggish_tf2.embedder.Embedder` and turns ``batch_size`` rows at a time into
   embeddings.

How the stages are configured and placed is :mod:`~vggish_tf2.corpus.ray_stages`. The driver
(this module) regroups the rows per file (:mod:`~vggish_tf2.corpus.ray_regroup`: a file may span
batches and actors; rows arrive in any order), post-processes them as the local engine does, and
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

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from vggish_tf2 import errors, params, windows
from vggish_tf2.corpus.engine import Embedded, ModelFacts
from vggish_tf2.corpus.ray_regroup import Regrouper
from vggish_tf2.corpus.ray_stages import (block_bytes, connect, decode_stage, embed_windows_stage, forwarded_env,
                                          import_ray, model_directory, stage_settings)
from vggish_tf2.errors import InternalError, VGGishError, one_line

if TYPE_CHECKING:
    from vggish_tf2.corpus.plan import Task
    from vggish_tf2.options import RunOptions

logger = logging.getLogger(__name__)

FILES_PER_DECODE_TASK = 4  # input rows per Ray block: one decoding task decodes this many files in turn


class RayEngine:
    """The Engine protocol (vggish_tf2.corpus.engine) on Ray Data; see the module doc.

    ``RayEngine(options)`` joins ``options.ray_address`` (or starts a local Ray instance, shut down
    again by :meth:`close`), loads the model on the driver (its metadata, and its post-processing),
    and knows its :attr:`facts`; the actors load it when :meth:`results` starts the dataset.
    """

    def __init__(self, options: "RunOptions"):
        from vggish_tf2.model import load_export

        ray = import_ray()
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


# --- Ray's errors -> ours ----------------------------------------------------------------------------
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


__all__ = ["FILES_PER_DECODE_TASK", "RayEngine"]
