"""Embed a corpus: audio files -> outputs, a manifest, and resume.

    from vggish_tf2.pipeline import embed_corpus      # or vggish_tf2.corpus
    summary = embed_corpus(["corpus/"], out_dir="embeddings", output_format="npz")
    print(summary.format())

Inputs are files, directories (walked recursively for audio extensions, hidden entries skipped),
glob patterns and list files (one path a line, ``#`` comments; relative paths are relative to the
current directory). With ``layout="files"`` (the default) the output tree mirrors the input tree
relative to the inputs' common root: ``embed corpus/ --out out`` writes ``corpus/a/b.wav`` to
``out/a/b.wav.npz``; with ``layout="shards"`` the rows go to part files under ``out/embeddings/``
(see :mod:`vggish_tf2.corpus.shards`). The input's path relative to that root names it everywhere:
the manifest's ``input``, the TFRecord ``video_id``, the Parquet ``file`` column.

Every output is written atomically, then its line is appended to ``<out>/manifest.jsonl``.
``<out>/run_config.json`` records the settings that decide the numbers; a later run into the same
directory with other settings is refused unless ``overwrite=True``. Rerunning the same command
skips every input whose last manifest record is ok or skipped, whose output still exists, and
whose size and mtime have not changed since; failed inputs are retried. An error on one file (its
decoding, or an OSError writing its output) is recorded and the run goes on; a KeyboardInterrupt
stops it after the current file (what is done is complete and in the manifest) and is re-raised
as :class:`RunInterrupted`, which carries the summary. Any other error is a bug, not the file's
fault: the run stops at once with :class:`RunStopped` (an :class:`~vggish_tf2.errors.InternalError`
naming the file, also carrying the summary), keeping what finished.

A run holds ``<out>/.vggish-tf2.lock`` (:class:`~vggish_tf2.corpus.lock.OutputLock`) from before
the model loads (when ``out_dir`` exists) to its end: a second run into the same directory is
refused at once with :class:`~vggish_tf2.errors.OutputInUseError` naming the first (pid, host).

The run, top to bottom: lock -> inputs -> engine (loads the model) -> run configuration -> plan
-> writer -> each engine result written and recorded -> summary.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence, Union

from vggish_tf2 import outputs
from vggish_tf2.atomic import remove_stale_temporaries
from vggish_tf2.corpus.engine import Engine, TaskError
from vggish_tf2.corpus.lock import OutputLock
from vggish_tf2.corpus.manifest import Manifest
from vggish_tf2.corpus.plan import Task, plan_tasks
from vggish_tf2.corpus.run_config import (
    build_run_config,
    check_run_config,
    known_before_loading,
    model_fingerprint,
    output_metadata,
    recorded_jit_compile,
)
from vggish_tf2.corpus.summary import RunSummary
from vggish_tf2.corpus.write import OUTPUT_SUFFIXES, manifest_record, open_writer
from vggish_tf2.errors import InternalError, InvalidArgumentError, OutputError, VGGishError, one_line
from vggish_tf2.inputs import InputFile, expand_inputs
from vggish_tf2.options import RunOptions

if TYPE_CHECKING:
    from vggish_tf2.embedder import Embedder
    from vggish_tf2.progress import Progress

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
_FIELDS = frozenset(f.name for f in dataclasses.fields(RunOptions))


class RunInterrupted(KeyboardInterrupt):
    """The run was stopped by KeyboardInterrupt; ``summary`` describes what was done before."""

    def __init__(self, summary: RunSummary):
        super().__init__("interrupted")
        self.summary = summary


class RunStopped(InternalError):
    """An unexpected error (a bug) stopped the run; the message names the file, ``__cause__`` is
    the error, ``summary`` describes what finished (it is recorded in the manifest)."""

    def __init__(self, message: str, summary: RunSummary):
        super().__init__(message)
        self.summary = summary


def embed_corpus(
    inputs: Iterable[PathLike],
    *,
    out_dir: PathLike,
    list_files: Sequence[PathLike] = (),
    options: RunOptions | None = None,
    progress: "Progress | None" = None,
    embedder: "Embedder | None" = None,
    **fields: Any,
) -> RunSummary:
    """Embed every input into ``out_dir`` (see the module doc); returns the run's summary.

    ``options`` (a :class:`~vggish_tf2.options.RunOptions`), or its fields as keywords
    (``output_format="parquet", batch_size=48``): the embedder fields build an
    :class:`~vggish_tf2.embedder.Embedder` (defaults: the packaged model, its files checked against
    their recorded hashes, best device, kaiser_best, hop 0.96 s, short clips dropped);
    alternatively pass a ready ``embedder`` and none of them. ``jit_compile`` None: the mode the
    directory's outputs were made with when resuming, else measured with the batch size
    (vggish_tf2.tuning) when ``batch_size`` is "auto", else no XLA. ``postprocess`` adds AudioSet's
    PCA + uint8 rows when the model has PCA; the ``tfrecord`` format needs them.
    """
    started = time.perf_counter()
    options = _options(options, fields)
    outputs.check_output_format(options.output_format)  # its library is installed
    if embedder is not None:
        given = options.embedder_options_given()
        if given:
            raise InvalidArgumentError(f"pass either embedder= or embedder options, not both (got {', '.join(given)})")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: exists and is not a directory")
    items = expand_inputs(inputs, list_files=list_files, exclude=out_dir)
    summary = RunSummary(out_dir=out_dir, output_format=options.output_format, files=len(items))
    # An existing directory is locked before the model loads, so a second run stops at once; a
    # new one once it is created (after the model loads: a refused model leaves no directory).
    lock = OutputLock(out_dir).acquire() if out_dir.is_dir() else None
    try:
        try:
            if embedder is None and not options.overwrite:
                # Refuse a settings change before the model loads, on what is already known.
                check_run_config(out_dir, known_before_loading(options), overwrite=False, record=False)
                if options.jit_compile is None and (recorded := recorded_jit_compile(out_dir)) is not None:
                    options = options.replace(jit_compile=recorded)  # resume with the outputs' mode
            engine = open_engine(options, embedder=embedder)
            try:
                try:
                    out_dir.mkdir(parents=True, exist_ok=True)
                except OSError as e:
                    raise OutputError(f"{out_dir}: cannot create the output directory ({e.strerror or e})") from e
                if lock is None:
                    lock = OutputLock(out_dir).acquire()
                _run(items, out_dir=out_dir, engine=engine, options=options, summary=summary, progress=progress)
            finally:
                engine.close()
        except KeyboardInterrupt:
            summary.interrupted = True
            logger.warning("interrupted: %d outputs written; rerun the same command to resume", summary.ok)
    finally:
        if lock is not None:
            lock.release()
        summary.wall_seconds = time.perf_counter() - started
    if summary.interrupted:
        raise RunInterrupted(summary)
    logger.info("run done: %d ok, %d failed, %d skipped, %d already done; %.1f audio s/s, %.1f examples/s",
                summary.ok, summary.failed, summary.skipped, summary.already_done,
                summary.audio_seconds_per_second, summary.examples_per_second)
    return summary


def _options(options: RunOptions | None, fields: dict[str, Any]) -> RunOptions:
    unknown = sorted(set(fields) - _FIELDS)
    if unknown:
        raise TypeError(f"embed_corpus() got unexpected keyword arguments: {', '.join(unknown)}")
    if options is None:
        return RunOptions(**fields)
    if fields:
        raise InvalidArgumentError(f"pass either options= or its fields as keywords, not both (got {', '.join(sorted(fields))})")
    if not isinstance(options, RunOptions):
        raise InvalidArgumentError(f"options={options!r} must be a vggish_tf2.options.RunOptions")
    return options


def open_engine(options: RunOptions, *, embedder: "Embedder | None" = None) -> Engine:
    """The engine ``options.engine`` names, with the model loaded."""
    if options.engine == "local":
        from vggish_tf2.corpus.local import LocalEngine

        return LocalEngine(options, embedder)
    if embedder is not None:
        raise InvalidArgumentError("embedder= runs on the local engine; engine='ray' loads the model in its actors")
    try:
        from vggish_tf2.corpus.ray_engine import RayEngine

        return RayEngine(options)
    except ImportError as e:
        if (e.name or "").split(".")[0] != "ray":
            raise
        raise InvalidArgumentError(f"engine='ray' needs Ray Data ({e}): pip install 'vggish-tf2[ray]'") from e


def _run(items: list[InputFile], *, out_dir: Path, engine: Engine, options: RunOptions, summary: RunSummary,
         progress: "Progress | None") -> None:
    """The locked part of a run: check the directory's settings, then embed, write and record each input."""
    facts = engine.facts
    use_postprocess = options.postprocess and facts.has_pca
    if options.output_format == "tfrecord" and not facts.has_pca:
        raise InvalidArgumentError(f"{facts.model_path}: has no PCA parameters, so it cannot write AudioSet "
                                   "TFRecords (re-convert with the PCA file, or use npz or parquet)")
    if options.postprocess and not facts.has_pca:
        logger.warning("%s has no PCA parameters: outputs hold the raw embeddings only", facts.model_path)
    # Synthetic weights: the Embedder warned when it loaded the model (once); the outputs record it.
    summary.synthetic_weights = facts.synthetic_weights
    summary.device = facts.device
    summary.batch_size = facts.batch_size

    for stale in remove_stale_temporaries(out_dir):
        logger.info("removed %s, left by an interrupted run", stale)
    fingerprint = model_fingerprint(facts.model_path, files_verified=facts.files_verified)
    check_run_config(out_dir, build_run_config(facts, options, fingerprint=fingerprint), overwrite=options.overwrite)
    base_metadata = output_metadata(facts, fingerprint=fingerprint, has_postprocessed=use_postprocess)

    previous = {} if options.overwrite else Manifest.load(out_dir)
    paths = {item.relative: item.path for item in items}  # the failure lines of the summary leave them out
    manifest = Manifest(out_dir)
    manifest.open()
    try:
        plan = plan_tasks(items, out_dir, options, previous, OUTPUT_SUFFIXES[options.output_format])
        summary.already_done = plan.already_done
        if plan.already_done:
            logger.info("%d of %d inputs already done in %s", plan.already_done, len(items), out_dir)
        if progress is not None:
            progress.start(total_files=len(items), already_done=plan.already_done)
        # Inputs whose output path is refused fail here; the rest go to the engine.
        for task, error in plan.refused:
            _record(manifest_record(task, "failed", output_format=options.output_format, error=error),
                    manifest=manifest, summary=summary, progress=progress, path=task.item.path)

        writer = open_writer(out_dir, options=options, facts=facts, base_metadata=base_metadata, previous=previous)
        processing_started = time.perf_counter()
        current: Task | None = None
        writing = False  # inside writer.write: a shard may be half committed
        try:
            results = engine.results(plan.tasks)
            with contextlib.closing(results) if hasattr(results, "close") else contextlib.nullcontext():
                for embedded in results:
                    current = embedded.task
                    writing = True
                    records = writer.write(embedded)
                    writing = False
                    for record in records:
                        _record(record, manifest=manifest, summary=summary, progress=progress,
                                path=paths.get(record["input"]))
                current = None
            for record in writer.finish():
                _record(record, manifest=manifest, summary=summary, progress=progress, path=paths.get(record["input"]))
        except KeyboardInterrupt:
            # Ctrl-C while the engine worked: the writer is whole, so the files it holds (an open
            # shard: up to a minute of work) are committed rather than redone by the next run.
            if not writing:
                for record in writer.finish():
                    _record(record, manifest=manifest, summary=summary, progress=progress,
                            path=paths.get(record["input"]))
            raise
        except Exception as e:  # noqa: BLE001 - a bug stops the run, naming the file; what is done stays
            if isinstance(e, TaskError):
                current, e = e.task, e.error
            if isinstance(e, VGGishError) and not isinstance(e, (InvalidArgumentError, InternalError)):
                raise e  # a run-level error that names itself: the manifest's disk, the device, the model
            summary.stopped = one_line(f"{type(e).__name__}: {e}")
            logger.debug("stopped by an unexpected error", exc_info=True)
            finished = f"the run stopped; what finished is recorded in {manifest.path} (rerun to resume)"
            if isinstance(e, InternalError):  # the Embedder's own report of a bug names the file
                raise RunStopped(f"{one_line(e)}; {finished}", summary) from e
            where = f"{current.item.path}: " if current is not None else ""
            raise RunStopped(
                f"{where}{type(e).__name__}: {one_line(e)}. This is a bug in vggish-tf2, not a fault of the file: "
                f"{finished}; -v shows the traceback; please report it", summary) from e
        finally:
            summary.processing_seconds = time.perf_counter() - processing_started
    finally:
        manifest.close()
        if progress is not None:
            progress.close()


def _record(record: dict, *, manifest: Manifest, summary: RunSummary, progress: "Progress | None",
            path: Path | None) -> None:
    """One input's outcome: in the manifest (durable), then in the summary and the progress line."""
    manifest.append(record)
    if "moved_from" in record:
        return  # its rows moved to a rewritten shard: not a file this run embedded
    summary.count(record, path=path)
    if record["status"] == "failed":
        logger.warning("failed: %s", one_line(record.get("error")))
    if progress is not None:
        progress.advance(status=record["status"], audio_seconds=record.get("duration_seconds") or 0.0,
                         examples=record.get("examples") or 0)


__all__ = ["RunInterrupted", "RunStopped", "embed_corpus", "open_engine"]
