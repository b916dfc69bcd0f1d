"""Embed a corpus: audio files -> one output per input, a manifest, and resume.

    from vggish_tf2.pipeline import embed_corpus
    summary = embed_corpus(["corpus/"], out_dir="embeddings", output_format="npz")
    print(summary.format())

Inputs are files, directories (walked recursively for audio extensions, hidden entries skipped),
glob patterns and list files (one path a line, ``#`` comments; relative paths are relative to the
current directory). The output tree mirrors the input tree relative to the inputs' common root:
``embed corpus/ --out out`` writes ``corpus/a/b.wav`` to ``out/a/b.wav.npz``. The input's path
relative to that root names it everywhere: the manifest's ``input``, the TFRecord ``video_id``,
the Parquet ``file`` column.

Every output is written atomically (see :mod:`vggish_tf2.outputs`), then its line is appended to
``<out>/manifest.jsonl``. ``<out>/run_config.json`` records the settings that decide the numbers;
a later run into the same directory with other settings is refused unless ``overwrite=True``.
Rerunning the same command skips every input whose last manifest record is ok or skipped, whose
output still exists, and whose size and mtime have not changed since; failed inputs are retried.
An error on one file (its decoding, or an OSError writing its output) is recorded and the run
goes on; a KeyboardInterrupt stops it after the current file (what is done is complete and in the
manifest) and is re-raised as :class:`RunInterrupted`, which carries the summary. Any other error
is a bug, not the file's fault: the run stops at once with :class:`RunStopped` (an
:class:`~vggish_tf2.errors.InternalError` naming the file, also carrying the summary), keeping
what finished.

A run holds ``<out>/.vggish-tf2.lock`` (:class:`~vggish_tf2.outputs.OutputLock`) from before the
model loads (when ``out_dir`` exists) to its end: a second run into the same directory is
refused at once with :class:`~vggish_tf2.errors.OutputInUseError` naming the first (pid, host).
"""
from __future__ import annotations

import json
import logging
import os
import time
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence, Union

import numpy as np

from vggish_tf2 import outputs, params
from vggish_tf2.errors import InternalError, InvalidArgumentError, OutputError, VGGishError, one_line
from vggish_tf2.hashing import export_fingerprint
from vggish_tf2.inputs import AUDIO_EXTENSIONS, InputFile, expand_inputs, read_list_file  # noqa: F401 (re-exported)
from vggish_tf2.outputs import Manifest
from vggish_tf2.summary import RunSummary

if TYPE_CHECKING:
    from vggish_tf2.embedder import Embedder, FileResult
    from vggish_tf2.progress import Progress

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

OUTPUT_SUFFIXES = {"npz": ".npz", "tfrecord": ".tfrecord", "parquet": ".parquet"}
RUN_CONFIG_NAME = "run_config.json"
RUN_CONFIG_VERSION = 1
# The settings that decide an output's bytes; a run into a directory made with others is refused.
RUN_CONFIG_KEYS = ("model_hash", "format", "postprocess", "hop_samples", "resampler", "frontend_precision", "short_clips",
                   "jit_compile")
# Values of keys added later, for a run_config.json written before them (jit_compile: XLA, which
# rounds float32 otherwise, was never used by a corpus run before it was recorded).
RUN_CONFIG_ADDED_DEFAULTS = {"jit_compile": False}
EXAMPLE_SECONDS = params.EXAMPLE_WINDOW_SECONDS  # nominal span of one example (96 frames of 10 ms)


class RunInterrupted(KeyboardInterrupt):
    """The run was stopped by KeyboardInterrupt; ``summary`` describes what was done before."""

    def __init__(self, summary: "RunSummary"):
        super().__init__("interrupted")
        self.summary = summary


class RunStopped(InternalError):
    """An unexpected error (a bug) stopped the run; the message names the file, ``__cause__`` is
    the error, ``summary`` describes what finished (it is recorded in the manifest)."""

    def __init__(self, message: str, summary: "RunSummary"):
        super().__init__(message)
        self.summary = summary


# --- Model fingerprint and run configuration -------------------------------------------------------
def model_fingerprint(model_path: str, *, files_verified: bool = True) -> str:
    """``sha256-files:<hex>`` naming every file of the export (see
    :func:`vggish_tf2.hashing.export_fingerprint`): the hash of its recorded file hashes when the
    files were checked against them at load, else of the files' hashes now (~1 s for VGGish's
    277 MB). A TF Hub handle names itself. No TensorFlow needed."""
    path = Path(model_path)
    if not path.is_dir():
        return f"handle:{model_path}"
    return export_fingerprint(path, trust_recorded=files_verified)


def _versions() -> dict[str, str]:
    versions = {}
    for distribution in ("vggish-tf2", "tensorflow", "numpy", "soundfile", "soxr"):
        try:
            versions[distribution] = importlib_metadata.version(distribution)
        except importlib_metadata.PackageNotFoundError:
            versions[distribution] = "unknown"
    return versions


def _run_config(embedder: "Embedder", *, output_format: str, postprocess: bool, fingerprint: str) -> dict:
    return {
        "config_version": RUN_CONFIG_VERSION,
        "model_hash": fingerprint,
        "format": output_format,
        "postprocess": postprocess,
        "hop_samples": int(embedder.hop_samples),
        "hop_seconds": embedder.hop_samples / params.SAMPLE_RATE,
        "resampler": embedder.resampler,
        "frontend_precision": embedder.frontend_precision,
        "short_clips": embedder.short_clips,
        "jit_compile": embedder.jit_compile,
    }


def _recorded_jit_compile(out_dir: Path) -> bool | None:
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


def _check_run_config(out_dir: Path, config: dict, *, overwrite: bool, record: bool = True) -> None:
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
        text = json.dumps(config, indent=2, sort_keys=True) + "\n"
        with outputs.atomic_output(path) as temp:
            temp.write_text(text)


# --- Resume ---------------------------------------------------------------------------------------
def _input_signature(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _already_done(record: dict | None, *, out_dir: Path, output_relative: str | None, signature) -> bool:
    if record is None or record.get("status") not in ("ok", "skipped"):
        return False
    if signature is not None and record.get("input_size") is not None:
        if (record.get("input_size"), record.get("input_mtime_ns")) != signature:
            return False  # the input changed since
    if record["status"] == "skipped":
        return True
    if record.get("output") != output_relative:
        return False
    try:
        return (out_dir / output_relative).stat().st_size > 0
    except OSError:
        return False


# --- Writing one result ---------------------------------------------------------------------------
def _example_ends(timestamps: np.ndarray, duration_seconds: float) -> np.ndarray:
    # A padded or repeated short clip ends where the audio ends, not a whole example later.
    return np.minimum(timestamps + EXAMPLE_SECONDS, max(duration_seconds, 0.0))


def _write(
    output_format: str,
    path: Path,
    *,
    item: InputFile,
    result: "FileResult",
    postprocessed: np.ndarray | None,
    metadata: dict,
) -> None:
    timestamps = np.asarray(result.timestamps, dtype=np.float64)
    ends = _example_ends(timestamps, result.duration_seconds)
    if output_format == "npz":
        outputs.write_npz(path, embedding=result.embedding, postprocessed=postprocessed, timestamps=timestamps,
                          metadata=metadata)
    elif output_format == "tfrecord":
        outputs.write_tfrecord(path, video_id=item.relative, postprocessed=postprocessed,
                               start_time_seconds=float(timestamps[0]), end_time_seconds=float(ends[-1]))
    else:
        # Parquet strings must be valid UTF-8: undecodable name bytes are shown as \x.. escapes.
        name = item.relative.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        outputs.write_parquet(path, file=name, embedding=result.embedding, start_seconds=timestamps, end_seconds=ends,
                              postprocessed=postprocessed, metadata=metadata)


# --- The run --------------------------------------------------------------------------------------
_EMBEDDER_OPTION_DEFAULTS = {
    "model": None, "device": None, "memory_fraction": None, "batch_size": "auto", "resampler": None,
    "frontend_precision": None, "short_clips": None, "hop_seconds": None, "workers": None,
    "verify_model_hashes": True, "jit_compile": None,
}


def embed_corpus(
    inputs: Iterable[PathLike],
    *,
    out_dir: PathLike,
    list_files: Sequence[PathLike] = (),
    output_format: str = "npz",
    postprocess: bool = True,
    overwrite: bool = False,
    progress: "Progress | None" = None,
    embedder: "Embedder | None" = None,
    model: PathLike | None = None,
    device: str | None = None,
    memory_fraction: float | None = None,
    batch_size: int | str = "auto",
    resampler: str | None = None,
    frontend_precision: str | None = None,
    short_clips: str | None = None,
    hop_seconds: float | None = None,
    workers: int | None = None,
    verify_model_hashes: bool = True,
    jit_compile: bool | None = None,
) -> RunSummary:
    """Embed every input into ``out_dir`` (see the module doc); returns the run's summary.

    The embedder options (``model`` ... ``verify_model_hashes``) build an
    :class:`~vggish_tf2.embedder.Embedder` (defaults: the packaged model, its files checked
    against their recorded hashes, best device, kaiser_best, hop 0.96 s, short clips dropped);
    alternatively pass a ready ``embedder`` and none of them. ``jit_compile`` None: the mode the
    directory's outputs were made with when resuming, else measured with the batch size
    (vggish_tf2.tuning) when ``batch_size`` is "auto", else no XLA. ``postprocess`` adds AudioSet's
    PCA + uint8 rows when the model has PCA; the ``tfrecord`` format needs them.
    """
    started = time.perf_counter()
    outputs.check_output_format(output_format)
    if not isinstance(postprocess, bool):
        raise InvalidArgumentError(f"postprocess={postprocess!r} must be True or False")
    if not isinstance(verify_model_hashes, bool):
        raise InvalidArgumentError(f"verify_model_hashes={verify_model_hashes!r} must be True or False")
    if output_format == "tfrecord" and not postprocess:
        raise InvalidArgumentError("format 'tfrecord' stores AudioSet's post-processed uint8 embeddings: "
                                   "it cannot be combined with --no-postprocess (use npz or parquet)")
    options = {"model": model, "device": device, "memory_fraction": memory_fraction, "batch_size": batch_size,
               "resampler": resampler, "frontend_precision": frontend_precision, "short_clips": short_clips,
               "hop_seconds": hop_seconds, "workers": workers, "verify_model_hashes": verify_model_hashes,
               "jit_compile": jit_compile}
    if embedder is not None:
        given = sorted(k for k, v in options.items() if v != _EMBEDDER_OPTION_DEFAULTS[k])
        if given:
            raise InvalidArgumentError(f"pass either embedder= or embedder options, not both (got {', '.join(given)})")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: exists and is not a directory")
    items = expand_inputs(inputs, list_files=list_files, exclude=out_dir)
    summary = RunSummary(out_dir=out_dir, output_format=output_format, files=len(items))
    # An existing directory is locked before the model loads, so a second run stops at once; a
    # new one once it is created (after the model loads: a refused model leaves no directory).
    lock = outputs.OutputLock(out_dir).acquire() if out_dir.is_dir() else None
    try:
        try:
            if embedder is None and not overwrite:
                # Refuse a settings change before the model loads, on what is already known.
                known = {"format": output_format, "postprocess": postprocess, "resampler": resampler,
                         "short_clips": short_clips, "frontend_precision": frontend_precision, "jit_compile": jit_compile,
                         "hop_samples": params.example_hop_samples(hop_seconds) if hop_seconds is not None else None}
                _check_run_config(out_dir, {k: v for k, v in known.items() if v is not None}, overwrite=False,
                                  record=False)
            if embedder is None:
                from vggish_tf2.embedder import Embedder

                kwargs = {k: v for k, v in options.items() if v is not None and k != "model"}
                if jit_compile is None and not overwrite:
                    recorded = _recorded_jit_compile(out_dir)
                    if recorded is not None:
                        kwargs["jit_compile"] = recorded  # resume with the outputs' mode
                embedder = Embedder(model, **kwargs)
                files_verified = verify_model_hashes
            else:
                files_verified = embedder.verify_model_hashes
            try:
                out_dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise OutputError(f"{out_dir}: cannot create the output directory ({e.strerror or e})") from e
            if lock is None:
                lock = outputs.OutputLock(out_dir).acquire()
            _run(items, out_dir=out_dir, embedder=embedder, summary=summary, output_format=output_format,
                 postprocess=postprocess, overwrite=overwrite, progress=progress, files_verified=files_verified)
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


def _run(items: list[InputFile], *, out_dir: Path, embedder: "Embedder", summary: RunSummary, output_format: str,
         postprocess: bool, overwrite: bool, progress: "Progress | None", files_verified: bool) -> None:
    """The locked part of a run: check the directory's settings, then embed and record each input."""
    use_postprocess = postprocess and embedder.has_pca
    if output_format == "tfrecord" and not embedder.has_pca:
        raise InvalidArgumentError(f"{embedder.model_path}: has no PCA parameters, so it cannot write AudioSet "
                                   "TFRecords (re-convert with the PCA file, or use npz or parquet)")
    if postprocess and not embedder.has_pca:
        logger.warning("%s has no PCA parameters: outputs hold the raw embeddings only", embedder.model_path)
    # Synthetic weights: the Embedder warned when it loaded the model (once); the outputs record it.
    summary.synthetic_weights = embedder.synthetic_weights
    summary.device = embedder.device
    summary.batch_size = embedder.batch_size

    for stale in outputs.remove_stale_temporaries(out_dir):
        logger.info("removed %s, left by an interrupted run", stale)
    fingerprint = model_fingerprint(embedder.model_path, files_verified=files_verified)
    # postprocess as asked: whether PCA rows exist follows from the model, which model_hash names.
    config = _run_config(embedder, output_format=output_format, postprocess=postprocess, fingerprint=fingerprint)
    _check_run_config(out_dir, config, overwrite=overwrite)

    base_metadata: dict[str, Any] = {
        "model": {"path": str(Path(embedder.model_path).absolute()) if Path(embedder.model_path).exists()
                  else str(embedder.model_path), "hash": fingerprint},
        "synthetic_weights": embedder.synthetic_weights,
        "has_postprocessed": use_postprocess,
        "resampler": embedder.resampler,
        "frontend_precision": embedder.frontend_precision,
        "jit_compile": embedder.jit_compile,
        "hop_seconds": embedder.hop_samples / params.SAMPLE_RATE,
        "hop_samples": int(embedder.hop_samples),
        "short_clips": embedder.short_clips,
        "sample_rate_hz": params.SAMPLE_RATE,
        "example_window_samples": params.EXAMPLE_WINDOW_SAMPLES,
        "versions": _versions(),
    }
    if embedder.synthetic_weights:
        base_metadata["warning"] = "SYNTHETIC WEIGHTS: these are not VGGish embeddings"

    suffix = OUTPUT_SUFFIXES[output_format]
    previous = {} if overwrite else Manifest.load(out_dir)
    manifest = Manifest(out_dir)
    manifest.open()

    def record(item: InputFile, status: str, *, signature, **fields) -> None:
        size, mtime = signature if signature is not None else (None, None)
        manifest.append({"input": item.relative, "status": status, "format": output_format,
                         "input_size": size, "input_mtime_ns": mtime, **fields})
        if status == "failed":
            summary.failed += 1
            error = one_line(fields.get("error"))
            logger.warning("failed: %s", error)
            # The manifest keeps the whole message; the summary drops the path it starts with.
            summary.failures.append((item.relative, error.removeprefix(f"{item.path}: ")))
        elif status == "skipped":
            summary.skipped += 1
        else:
            summary.ok += 1
        if progress is not None:
            progress.advance(status=status, audio_seconds=fields.get("duration_seconds") or 0.0,
                             examples=fields.get("examples") or 0)

    try:
        runnable = []
        for item in items:
            signature = _input_signature(item.path)
            try:
                output = outputs.safe_output_path(out_dir, item.relative, suffix)
            except VGGishError as e:
                runnable.append((item, None, str(e), signature))  # fails below, in input order
                continue
            relative_output = output.relative_to(out_dir.resolve()).as_posix()
            if _already_done(previous.get(item.relative), out_dir=out_dir, output_relative=relative_output,
                             signature=signature):
                summary.already_done += 1
            else:
                runnable.append((item, output, relative_output, signature))
        if summary.already_done:
            logger.info("%d of %d inputs already done in %s", summary.already_done, len(items), out_dir)
        if progress is not None:
            progress.start(total_files=len(items), already_done=summary.already_done)

        # Inputs whose output path is refused fail here; the rest go to the embedder.
        for item, output, error, signature in runnable:
            if output is None:
                record(item, "failed", signature=signature, error=error)
        runnable = [entry for entry in runnable if entry[1] is not None]

        processing_started = time.perf_counter()
        results = embedder.embed_files([item.path for item, *_ in runnable])
        current = None
        try:
            for entry in runnable:
                current = entry[0]
                result = next(results)
                _handle_result(*entry, result, record=record, embedder=embedder, output_format=output_format,
                               use_postprocess=use_postprocess, base_metadata=base_metadata, summary=summary)
            current = None
        except Exception as e:  # noqa: BLE001 - a bug stops the run, naming the file; what is done stays
            if isinstance(e, VGGishError) and not isinstance(e, (InvalidArgumentError, InternalError)):
                raise  # a run-level error that names itself: the manifest's disk, the device, the model
            summary.stopped = one_line(f"{type(e).__name__}: {e}")
            logger.debug("stopped by an unexpected error", exc_info=True)
            finished = f"the run stopped; what finished is recorded in {manifest.path} (rerun to resume)"
            if isinstance(e, InternalError):  # the Embedder's own report of a bug names the file
                raise RunStopped(f"{one_line(e)}; {finished}", summary) from e
            where = f"{current.path}: " if current is not None else ""
            raise RunStopped(
                f"{where}{type(e).__name__}: {one_line(e)}. This is a bug in vggish-tf2, not a fault of the file: "
                f"{finished}; -v shows the traceback; please report it", summary) from e
        finally:
            results.close()  # stops the decoding threads
            summary.processing_seconds = time.perf_counter() - processing_started
    finally:
        manifest.close()
        if progress is not None:
            progress.close()
        embedder.log_stats()


def _handle_result(item, output, relative_output, signature, result, *, record, embedder, output_format,
                   use_postprocess, base_metadata, summary) -> None:
    """Write one file's output, then its manifest line. An OSError writing it is the file's
    failure (recorded, the run goes on); any other error propagates: it is a bug."""
    status = result.status  # the API's word (ok, skipped: no example, failed) is the manifest's
    if status == "failed":
        record(item, "failed", signature=signature, error=str(result.error) or type(result.error).__name__)
        return
    examples = len(result.embedding)
    duration = float(result.duration_seconds)
    summary.audio_seconds += duration
    if status == "skipped":
        reason = (f"{duration:.3f} s is shorter than one example ({params.EXAMPLE_WINDOW_SAMPLES / params.SAMPLE_RATE} s)"
                  f" and short clips are dropped (--short-clips pad or repeat embeds it)")
        record(item, "skipped", signature=signature, examples=0, duration_seconds=duration, reason=reason)
        return
    postprocessed = embedder.postprocess(result.embedding) if use_postprocess else None
    metadata = {**base_metadata, "input": item.relative, "duration_seconds": duration, "examples": examples}
    try:
        _write(output_format, output, item=item, result=result, postprocessed=postprocessed, metadata=metadata)
    except OSError as e:  # OutputError included: the disk, the name, permissions; the run goes on
        logger.debug("%s: writing failed", item.relative, exc_info=True)
        message = str(e) if isinstance(e, VGGishError) else f"{output}: cannot write ({one_line(e)})"
        record(item, "failed", signature=signature, examples=examples, duration_seconds=duration, error=message)
        return
    summary.examples += examples
    record(item, "ok", signature=signature, examples=examples, duration_seconds=duration, output=relative_output)


__all__ = [
    "AUDIO_EXTENSIONS",
    "InputFile",
    "RunInterrupted",
    "RunStopped",
    "RunSummary",
    "embed_corpus",
    "expand_inputs",
    "model_fingerprint",
    "read_list_file",
]
