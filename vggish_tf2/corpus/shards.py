"""Layout "shards": a dataset of part files for big corpora, committed with their manifest records.

    <out>/manifest.jsonl, <out>/run_config.json              (outside the dataset folder)
    <out>/embeddings/part-<run id>-<seq:05d>.parquet         (format parquet)
    <out>/embeddings/part-<run id>-<seq:05d>.tfrecord        (format tfrecord)

Parquet: one row per example (``file``, ``index``, ``start_seconds``, ``end_seconds``,
``embedding``, ``postprocessed`` when present; pooled: ``examples`` instead of ``index``, one row
per file), the run's metadata as JSON under the schema key ``vggish_tf2``, so
``pyarrow.dataset.dataset(out / "embeddings")``, ``pandas.read_parquet`` and DuckDB read the
folder as one table. TFRecord: one ``SequenceExample`` per file in AudioSet's layout, many per
shard, as in AudioSet's released shards.

A file's rows are never split. A shard closes when it holds ``shard_rows`` examples (a file with
more gets a shard of its own) or, at the next file handed over, once its first file is
:data:`SHARD_SECONDS` old; it is written atomically, and only then are its files' records
returned: the caller appends them to the manifest, so shard and records are one commit, and a
kill loses about a minute of work at most. A
record names its shard (``output``) and its rows there (``rows``: [first, end), Parquet rows or
TFRecord records).

A run killed after writing a shard but before its records reached the manifest leaves a shard no
record names: at open, such orphans are deleted (their files are embedded again). A shard only
some of whose rows a record names (a kill while its records were being appended, or a file
embedded again since, because it changed) is rewritten with the named rows only, and those files'
records are returned again, naming the new shard and the old one (``moved_from``: such a record
reports a move, not a file embedded by this run): at open for the first case, at :meth:`finish`
for the second. So after a kill and a resume every file's rows are present exactly once.
"""
from __future__ import annotations

import json
import logging
import re
import secrets
import struct
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from vggish_tf2 import outputs
from vggish_tf2.atomic import error_reason
from vggish_tf2.corpus import pooling
from vggish_tf2.corpus.write import OUTPUT_SUFFIXES, example_ends, manifest_record, parquet_name, unwritten_record
from vggish_tf2.errors import OutputError, VGGishError, one_line

if TYPE_CHECKING:
    from vggish_tf2.corpus.engine import Embedded

logger = logging.getLogger(__name__)

DATASET_DIR = "embeddings"  # the dataset folder inside out_dir: part files only
SHARD_SECONDS = 60.0  # a shard closes when its first file is this old: a kill loses at most this much work
PART_PATTERN = re.compile(r"^part-(?P<run>.+)-(?P<seq>\d{5,})\.(?P<format>parquet|tfrecord)$")


def new_run_id() -> str:
    """UTC start time and 6 random hex digits: part files sort by run, runs never collide."""
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(3)}"


def shard_records(previous: dict[str, dict]) -> dict[str, list[dict]]:
    """The ok records of ``previous`` by the shard they name (relative to out_dir)."""
    by_shard: dict[str, list[dict]] = {}
    for record in previous.values():
        output = record.get("output")
        if record.get("status") == "ok" and record.get("layout") == "shards" and _is_part(output):
            by_shard.setdefault(output, []).append(record)
    return by_shard


def _is_part(output) -> bool:
    """``embeddings/part-...``: a record naming anything else (an edited manifest) is never
    read, rewritten or deleted."""
    if not isinstance(output, str):
        return False
    folder, _, name = output.partition("/")
    return folder == DATASET_DIR and PART_PATTERN.match(name) is not None and "/" not in name


def remove_orphans(out_dir: Path, previous: dict[str, dict]) -> list[Path]:
    """Delete the part files of ``<out_dir>/embeddings`` that no ok record of ``previous`` names:
    written by a run killed before their records were appended. Returns the paths removed."""
    dataset = out_dir / DATASET_DIR
    if not dataset.is_dir():
        return []
    named = set(shard_records(previous))
    removed = []
    for path in sorted(dataset.iterdir()):
        if not PART_PATTERN.match(path.name) or f"{DATASET_DIR}/{path.name}" in named:
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as e:
            raise OutputError(f"{path}: cannot remove an orphan shard ({error_reason(e)})") from e
        logger.info("removed orphan shard %s (written by a run stopped before its records reached the manifest; "
                    "its files are embedded again)", path)
        removed.append(path)
    return removed


class _Pending:
    """A file waiting in the open shard: its record's fields and its rows (an Arrow table or a
    serialised SequenceExample)."""

    __slots__ = ("task", "examples", "duration", "part", "rows", "weight")

    def __init__(self, task, examples: int, duration: float, part, rows: int, weight: int):
        self.task, self.examples, self.duration, self.part = task, examples, duration, part
        self.rows = rows  # rows it takes in the shard (Parquet rows, or 1 TFRecord record)
        self.weight = weight  # examples it counts toward shard_rows


class ShardWriter:
    """Layout "shards" (see the module doc); ``output_format`` parquet or tfrecord."""

    def __init__(self, out_dir: Path, *, output_format: str, pool: str, shard_rows: int, base_metadata: dict,
                 previous: dict[str, dict], clock: Callable[[], float] = time.monotonic):
        assert output_format in ("parquet", "tfrecord") and not (pool == "mean" and output_format == "tfrecord")
        self.out_dir = Path(out_dir)
        self.dataset = self.out_dir / DATASET_DIR
        self.output_format = output_format
        self.pool = pool
        self.shard_rows = shard_rows
        self.metadata = {**base_metadata, "layout": "shards", **({"pool": "mean"} if pool == "mean" else {})}
        self.run_id = new_run_id()
        self._clock = clock
        self._sequence = 0
        self._pending: list[_Pending] = []
        self._pending_weight = 0
        self._opened_at = 0.0
        self.removed_orphans = remove_orphans(self.out_dir, previous)
        self._previous = dict(previous)
        self._returned: dict[str, dict] = {}  # this run's records, by input
        # A shard some rows of which no record names: rewritten now, its records returned by the first call.
        self._held = self._repair(previous, only=None)

    # --- the writer protocol ---------------------------------------------------------------------
    def write(self, embedded: "Embedded") -> list[dict]:
        """Add the file to the open shard; return the records of the shard this closes (if any), or
        the file's own record when it has nothing to write (failed, skipped)."""
        committed, self._held = self._held, []
        record = unwritten_record(embedded, output_format=self.output_format)
        if record is not None:
            return self._returning(committed + [record])
        entry = self._entry(embedded)
        # A file's rows never split: one that does not fit opens the next shard. At most one shard
        # is committed per call, so the caller appends each shard's records before the next is written.
        closed = False
        if self._pending and (self._full() or self._pending_weight + entry.weight > self.shard_rows):
            committed += self._commit()
            closed = True
        if not self._pending:
            self._opened_at = self._clock()
        self._pending.append(entry)
        self._pending_weight += entry.weight
        if not closed and self._full():
            committed += self._commit()
        return self._returning(committed)

    def finish(self) -> list[dict]:
        """Commit the open shard; its records, then those of earlier shards rewritten without the
        rows of files embedded again in this run."""
        records, self._held = self._held, []
        if self._pending:
            records += self._commit()
        self._returning(records)
        # Shards of earlier runs that held a file this run wrote again (it changed, or had failed).
        redone = {self._previous[name].get("output") for name in self._returned if name in self._previous}
        claims = {**self._previous, **self._returned}
        return records + self._returning(self._repair(claims, only=redone))

    def _returning(self, records: list[dict]) -> list[dict]:
        for record in records:
            self._returned[record["input"]] = record
        return records

    def _full(self) -> bool:
        return self._pending_weight >= self.shard_rows or self._clock() - self._opened_at >= SHARD_SECONDS

    # --- shards ----------------------------------------------------------------------------------
    def _entry(self, embedded: "Embedded") -> _Pending:
        task, result = embedded.task, embedded.result
        examples = len(result.embedding)
        duration = float(result.duration_seconds)
        timestamps = np.asarray(result.timestamps, dtype=np.float64)
        ends = example_ends(timestamps, duration)
        embedding, postprocessed = result.embedding, embedded.postprocessed
        if self.output_format == "tfrecord":
            part = outputs.sequence_example(video_id=task.item.relative, postprocessed=postprocessed,
                                            start_time_seconds=float(timestamps[0]), end_time_seconds=float(ends[-1]))
            return _Pending(task, examples, duration, part, rows=1, weight=examples)
        if self.pool == "mean":
            pooling.check_pooled(postprocessed)
            part = outputs.parquet_table(file=parquet_name(task.item.relative),
                                         embedding=pooling.mean_embedding(embedding), start_seconds=timestamps[:1],
                                         end_seconds=ends[-1:], postprocessed=postprocessed, examples=[examples])
            return _Pending(task, examples, duration, part, rows=1, weight=1)
        part = outputs.parquet_table(file=parquet_name(task.item.relative), embedding=embedding,
                                     start_seconds=timestamps, end_seconds=ends, postprocessed=postprocessed)
        return _Pending(task, examples, duration, part, rows=examples, weight=examples)

    def _commit(self) -> list[dict]:
        """Write the open shard atomically, then return its records (an OSError writing it is the
        failure of each of its files: recorded, the run goes on)."""
        pending, self._pending, self._pending_weight = self._pending, [], 0
        path = self._next_path()
        name = path.name
        try:
            if self.output_format == "tfrecord":
                outputs.write_tfrecords(path, [entry.part for entry in pending])
            else:
                import pyarrow as pa

                outputs.write_parquet_table(path, pa.concat_tables([entry.part for entry in pending]),
                                            metadata=self.metadata)
        except OSError as e:  # OutputError included: the disk, permissions
            logger.debug("%s: writing the shard failed", path, exc_info=True)
            message = str(e) if isinstance(e, VGGishError) else f"{path}: cannot write ({one_line(e)})"
            return [self._record(entry, "failed", error=message) for entry in pending]
        records, first = [], 0
        for entry in pending:
            records.append(self._record(entry, "ok", output=f"{DATASET_DIR}/{name}", rows=[first, first + entry.rows]))
            first += entry.rows
        return records

    def _next_path(self) -> Path:
        name = f"part-{self.run_id}-{self._sequence:05d}{OUTPUT_SUFFIXES[self.output_format]}"
        self._sequence += 1
        return self.dataset / name

    # --- rows no record names --------------------------------------------------------------------
    def _repair(self, records: dict[str, dict], *, only: set | None) -> list[dict]:
        """Rewrite each shard (of ``only``, or all) holding rows that no ok record of ``records``
        names, keeping the named rows; delete it; return the new records of the files it keeps. A
        kill at any point loses nothing: the old shard gone, its files' records name a missing
        shard and are embedded again; the new one not yet named, it is an orphan."""
        repaired = []
        for output, claims in sorted(shard_records(records).items()):
            path = self.out_dir / output
            if (only is not None and output not in only) or not path.is_file():
                continue
            claims.sort(key=lambda record: record["rows"][0])
            total = _shard_rows(path)
            spans = [tuple(record["rows"]) for record in claims]
            if sum(end - first for first, end in spans) == total:
                continue
            if any(not 0 <= first < end <= total for first, end in spans) or any(
                    a[1] > b[0] for a, b in zip(spans, spans[1:])):
                logger.warning("%s: its manifest records name rows it does not hold; left as it is", path)
                continue
            new_path = self._next_path()
            if path.suffix == ".parquet":
                import pyarrow as pa
                import pyarrow.parquet as pq

                table = pq.read_table(path)
                kept = pa.concat_tables([table.slice(first, end - first) for first, end in spans])
                metadata = json.loads(table.schema.metadata[outputs.PARQUET_METADATA_KEY])
                outputs.write_parquet_table(new_path, kept, metadata=metadata)
            else:
                serialised = _read_tfrecords(path)
                outputs.write_tfrecords(new_path, [record for first, end in spans for record in serialised[first:end]])
            path.unlink()
            logger.info("rewrote shard %s as %s without its %d rows no manifest record names (a run stopped while "
                        "appending its records, or files embedded again since)", path, new_path,
                        total - sum(end - first for first, end in spans))
            first = 0
            for record, (a, b) in zip(claims, spans):
                repaired.append({**record, "output": f"{DATASET_DIR}/{new_path.name}", "rows": [first, first + b - a],
                                 "moved_from": output})
                first += b - a
        return repaired

    def _record(self, entry: _Pending, status: str, **fields) -> dict:
        pooled = {"pool": "mean"} if self.pool == "mean" else {}
        return manifest_record(entry.task, status, output_format=self.output_format, examples=entry.examples,
                               duration_seconds=entry.duration, layout="shards", **pooled, **fields)


def _shard_rows(path: Path) -> int:
    """Rows in a part file: Parquet rows (from its footer), TFRecord records."""
    try:
        if path.suffix == ".parquet":
            import pyarrow
            import pyarrow.parquet as pq

            try:
                return pq.ParquetFile(path).metadata.num_rows
            except pyarrow.ArrowException as e:
                raise OutputError(f"{path}: not a readable Parquet shard ({one_line(e)}); delete it and rerun to "
                                  "embed its files again") from e
        return len(_tfrecord_offsets(path))
    except (OSError, struct.error) as e:
        if isinstance(e, OutputError):
            raise
        raise OutputError(f"{path}: cannot read this shard ({error_reason(e)}); delete it and rerun to embed its "
                          "files again") from e


def _tfrecord_offsets(path: Path) -> list[tuple[int, int]]:
    """(offset, length) of each record's data: a TFRecord is a sequence of uint64 length, uint32
    CRC, data, uint32 CRC (the files are ours, written whole, so the CRCs are not checked)."""
    spans = []
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        position = 0
        while position < size:
            f.seek(position)
            (length,) = struct.unpack("<Q", f.read(8))
            spans.append((position + 12, length))
            position += 16 + length
    return spans


def _read_tfrecords(path: Path) -> list[bytes]:
    with open(path, "rb") as f:
        data = f.read()
    return [data[offset:offset + length] for offset, length in _tfrecord_offsets(path)]


__all__ = ["DATASET_DIR", "SHARD_SECONDS", "ShardWriter", "new_run_id", "remove_orphans", "shard_records"]
