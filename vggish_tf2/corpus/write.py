"""The write stage: one input's embeddings -> its output and its manifest record.

    writer = open_writer(out_dir, options=options, facts=facts, base_metadata=metadata, previous=previous)
    for embedded in engine.results(tasks):
        for record in writer.write(embedded):   # records whose outputs are now on disk
            manifest.append(record)
    for record in writer.finish():              # the last shard
        manifest.append(record)

A record is the input's whole manifest line: ``input``, ``status`` (ok|skipped|failed),
``format``, ``input_size``, ``input_mtime_ns``, then ``examples``, ``duration_seconds`` and
``output`` (relative to ``out_dir``) when ok, ``reason`` when skipped, ``error`` when failed.
Sharded records add ``layout`` ("shards") and ``rows`` ([first, end) inside the shard); pooled
ones add ``pool`` ("mean").

Layout "files" (:class:`FileWriter`) writes one output per input, atomically, before returning
its record. An OSError writing it (the disk, the name, permissions) is that file's failure: it is
recorded and the run goes on. Any other error is a bug and propagates.
Layout "shards": see :mod:`vggish_tf2.corpus.shards`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from vggish_tf2 import outputs, params
from vggish_tf2.corpus import pooling
from vggish_tf2.errors import VGGishError, one_line

if TYPE_CHECKING:
    from vggish_tf2.corpus.engine import Embedded, ModelFacts
    from vggish_tf2.corpus.plan import Task
    from vggish_tf2.options import RunOptions

logger = logging.getLogger(__name__)

LAYOUTS = ("files", "shards")  # one output per input (as always) | a dataset of part files (parquet, tfrecord)
SHARD_FORMATS = ("parquet", "tfrecord")
OUTPUT_SUFFIXES = {"npz": ".npz", "tfrecord": ".tfrecord", "parquet": ".parquet"}
EXAMPLE_SECONDS = params.EXAMPLE_WINDOW_SECONDS  # nominal span of one example (96 frames of 10 ms)


class Writer(Protocol):
    def write(self, embedded: "Embedded") -> list[dict]:
        """The manifest records that are now durable (their outputs written): none, one or many."""

    def finish(self) -> list[dict]:
        """Commit what is pending (the last shard); its records."""


def open_writer(out_dir: Path, *, options: "RunOptions", facts: "ModelFacts", base_metadata: dict,
                previous: dict[str, dict]) -> Writer:
    """The writer of ``options.layout``. ``previous``: the manifest's last record of each input
    (empty when overwriting); the sharded writer deletes shards none of its ok records names."""
    del facts  # what the writers need of the model is in base_metadata and in each Embedded
    if options.layout == "shards":
        from vggish_tf2.corpus.shards import ShardWriter

        return ShardWriter(Path(out_dir), output_format=options.output_format, pool=options.pool,
                           shard_rows=options.shard_rows, base_metadata=base_metadata, previous=previous)
    return FileWriter(Path(out_dir), output_format=options.output_format, pool=options.pool,
                      base_metadata=base_metadata)


# --- Records ----------------------------------------------------------------------------------------
def manifest_record(task: "Task", status: str, *, output_format: str, **fields) -> dict:
    """An input's manifest line: its name, status, format and the input's size and mtime (the
    signature resume compares), then ``fields``."""
    size, mtime = task.signature if task.signature is not None else (None, None)
    return {"input": task.item.relative, "status": status, "format": output_format, "input_size": size,
            "input_mtime_ns": mtime, **fields}


def skip_reason(duration_seconds: float) -> str:
    """The manifest's reason for a clip too short for one example."""
    example_seconds = params.EXAMPLE_WINDOW_SAMPLES / params.SAMPLE_RATE
    return (f"{duration_seconds:.3f} s is shorter than one example ({example_seconds} s)"
            f" and short clips are dropped (--short-clips pad or repeat embeds it)")


def unwritten_record(embedded: "Embedded", *, output_format: str) -> dict | None:
    """The record of an input that has nothing to write (failed to decode, or skipped: shorter than
    one example); None when it has rows to write."""
    task, result = embedded.task, embedded.result
    if result.status == "failed":
        return manifest_record(task, "failed", output_format=output_format,
                               error=str(result.error) or type(result.error).__name__)
    if result.status == "skipped":
        duration = float(result.duration_seconds)
        return manifest_record(task, "skipped", output_format=output_format, examples=0, duration_seconds=duration,
                               reason=skip_reason(duration))
    return None


def example_ends(timestamps: np.ndarray, duration_seconds: float) -> np.ndarray:
    """Each example's end: a padded or repeated short clip ends where the audio ends, not a whole
    example later."""
    return np.minimum(timestamps + EXAMPLE_SECONDS, max(duration_seconds, 0.0))


def parquet_name(relative: str) -> str:
    """Parquet strings must be valid UTF-8: undecodable name bytes are shown as \\x.. escapes."""
    return relative.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


# --- One output per input -----------------------------------------------------------------------------
class FileWriter:
    """Layout "files": ``<out>/<input's relative path><suffix>`` per input (the task's ``output``)."""

    def __init__(self, out_dir: Path, *, output_format: str, pool: str, base_metadata: dict):
        self.out_dir = out_dir
        self.output_format = output_format
        self.pool = pool
        self.base_metadata = base_metadata

    def write(self, embedded: "Embedded") -> list[dict]:
        """Write the input's output, then return its record. An OSError writing it is the file's
        failure (recorded, the run goes on); any other error propagates: it is a bug."""
        record = unwritten_record(embedded, output_format=self.output_format)
        if record is not None:
            return [record]
        task, result = embedded.task, embedded.result
        examples = len(result.embedding)
        duration = float(result.duration_seconds)
        metadata = {**self.base_metadata, "input": task.item.relative, "duration_seconds": duration,
                    "examples": examples}
        pooled = {}
        if self.pool == "mean":
            metadata["pool"] = pooled["pool"] = "mean"
        try:
            self._write(task, result, embedded.postprocessed, metadata)
        except OSError as e:  # OutputError included: the disk, the name, permissions; the run goes on
            logger.debug("%s: writing failed", task.item.relative, exc_info=True)
            message = str(e) if isinstance(e, VGGishError) else f"{task.output}: cannot write ({one_line(e)})"
            return [manifest_record(task, "failed", output_format=self.output_format, examples=examples,
                                    duration_seconds=duration, error=message, **pooled)]
        return [manifest_record(task, "ok", output_format=self.output_format, examples=examples,
                                duration_seconds=duration, output=task.output_relative, **pooled)]

    def finish(self) -> list[dict]:
        return []  # every output was written by write()

    def _write(self, task: "Task", result, postprocessed: np.ndarray | None, metadata: dict) -> None:
        path, output_format = task.output, self.output_format
        timestamps = np.asarray(result.timestamps, dtype=np.float64)
        ends = example_ends(timestamps, result.duration_seconds)
        embedding = result.embedding
        if self.pool == "mean":
            # One row: the mean vector, from the first example's start to the last one's end.
            embedding, timestamps, ends = pooling.mean_embedding(embedding), timestamps[:1], ends[-1:]
            pooling.check_pooled(postprocessed)
        if output_format == "npz":
            outputs.write_npz(path, embedding=embedding, postprocessed=postprocessed, timestamps=timestamps,
                              metadata=metadata, examples=len(result.embedding) if self.pool == "mean" else None)
        elif output_format == "tfrecord":
            outputs.write_tfrecord(path, video_id=task.item.relative, postprocessed=postprocessed,
                                   start_time_seconds=float(timestamps[0]), end_time_seconds=float(ends[-1]))
        elif self.pool == "mean":
            outputs.write_parquet(path, file=parquet_name(task.item.relative), embedding=embedding,
                                  start_seconds=timestamps, end_seconds=ends, postprocessed=postprocessed,
                                  metadata=metadata, examples=np.array([len(result.embedding)]))
        else:
            outputs.write_parquet(path, file=parquet_name(task.item.relative), embedding=embedding,
                                  start_seconds=timestamps, end_seconds=ends, postprocessed=postprocessed,
                                  metadata=metadata)


__all__ = ["LAYOUTS", "FileWriter", "Writer", "example_ends", "manifest_record", "open_writer", "unwritten_record"]
