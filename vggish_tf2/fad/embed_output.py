"""An output folder of ``vggish-tf2 embed`` as a FAD side: its embeddings read back, file by file.

The folder's ``run_config.json`` says how it was made, its ``manifest.jsonl`` which files it holds
(the last record of each input: ok ones are read, skipped ones count as too short, failed ones as
failures). What FAD reads from each layout ``embed`` writes:

=================================================  ========================  ===========================
embed output                                       ``--embedding raw``       ``--embedding pca``
=================================================  ========================  ===========================
``--format npz`` (one file per input)              ``embedding`` array       ``postprocessed`` array
``--format parquet`` (one file per input)          ``embedding`` column      ``postprocessed`` column
``--format parquet --layout shards``               ``embedding`` column      ``postprocessed`` column
``--format tfrecord`` (per input, or shards)       refused (see below)       ``audio_embedding`` rows
``--pool mean`` (any format)                       refused (see below)       refused
=================================================  ========================  ===========================

- A sharded Parquet dataset (``<out>/embeddings/part-*.parquet``) is read through the manifest:
  only the rows ``[first, end)`` an ok record names (``rows``, in the shard its ``output``
  names). Rows no record names (a shard written by a run killed before its records reached the
  manifest, or rows of a file embedded again since) are never counted, and each file's rows are
  read once. Shards are read one at a time (only the ``file`` and the embedding columns), in the
  order the manifest first names them, and each file's rows go to the streaming statistics
  before the next shard is opened: memory is one shard, not the dataset.
- TFRecord outputs (per input and sharded) hold only AudioSet's post-processed rows (PCA, then
  8-bit quantisation), not the raw float embeddings FAD uses by default, so ``--embedding raw``
  is refused naming the folder: embed with ``--format npz`` or ``parquet``, or compare PCA rows
  (``--embedding pca``), which are read from the ``audio_embedding`` feature list (TensorFlow is
  imported for that).
- ``--pool mean`` outputs hold one mean vector per file, not the per-example embeddings FAD's
  statistics (a Gaussian over examples) are defined on: refused naming the folder; embed with
  ``--pool none`` (the default).

Every error names the folder, the manifest or the file and the problem; a file whose output is
missing or malformed is that file's failure (the side goes on without it).
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from vggish_tf2 import outputs, params
from vggish_tf2.corpus.manifest import MANIFEST_NAME, Manifest
from vggish_tf2.corpus.shards import DATASET_DIR, PART_PATTERN
from vggish_tf2.corpus.write import parquet_name
from vggish_tf2.errors import InvalidArgumentError, OutputError, VGGishError, one_line

RUN_CONFIG_NAME = "run_config.json"
READABLE_FORMATS = ("npz", "parquet", "tfrecord")
LAYOUTS = ("files", "shards")


@dataclasses.dataclass(frozen=True)
class Item:
    """One file of a side: its embeddings [n, 128], or why it has none."""

    name: str
    embedding: np.ndarray | None  # None: failed or skipped
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class _Folder:
    directory: Path
    output_format: str
    layout: str
    key: str  # "embedding" (raw) or "postprocessed" (pca)

    def where(self, output: str) -> Path:
        return self.directory / output


def read_embed_output(directory: Path, embedding: str) -> tuple[Iterator[Item], dict, bool | None]:
    """(items, the side's settings, synthetic_weights) of an embed output folder; ``embedding``
    "raw" or "pca". Raises InvalidArgumentError naming the folder when FAD cannot use it."""
    directory = Path(directory)
    config = _run_config(directory)
    output_format, layout, pool = config.get("format"), config.get("layout", "files"), config.get("pool", "none")
    records = Manifest.load(directory)  # the last record of each input
    if pool != "none" or any(record.get("pool") not in (None, "none") for record in records.values()):
        raise InvalidArgumentError(
            f"{directory}: made with --pool {pool if pool != 'none' else 'mean'}: it holds one mean vector per file, "
            "not the per-example embeddings FAD's statistics are defined on; embed again with --pool none")
    if output_format not in READABLE_FORMATS or layout not in LAYOUTS:
        raise InvalidArgumentError(f"{directory}: made with --format {output_format} --layout {layout}; FAD reads "
                                   f"formats {', '.join(READABLE_FORMATS)} in layouts {', '.join(LAYOUTS)}")
    if output_format == "tfrecord" and embedding == "raw":
        raise InvalidArgumentError(
            f"{directory}: made with --format tfrecord, which holds only AudioSet's post-processed uint8 rows "
            "(PCA + 8-bit), not the raw embeddings FAD uses; embed with --format npz or --format parquet "
            "(or compare the PCA rows with --embedding pca)")
    if embedding == "pca" and not config.get("postprocess", True):
        raise InvalidArgumentError(f"{directory}: made with --no-postprocess, so it has no PCA embeddings; use --embedding raw")
    if not records:
        raise InvalidArgumentError(f"{directory / MANIFEST_NAME}: no records; is the embed run complete?")
    folder = _Folder(directory, output_format, layout, "embedding" if embedding == "raw" else "postprocessed")
    side_settings = {
        "preset": None, "embedding": embedding, "hop_seconds": config.get("hop_seconds"),
        "short_clips": config.get("short_clips"), "resampler": config.get("resampler"),
        "frontend_precision": config.get("frontend_precision"), "loudness_normalization": "none",
        "slicing": "embedder", "model_hash": config.get("model_hash"),
    }
    first = next((r for r in records.values() if r.get("status") == "ok"), None)
    synthetic = None
    if first is not None and output_format != "tfrecord":  # a TFRecord carries no metadata
        metadata = _metadata(folder, first)
        synthetic = metadata.get("synthetic_weights")
        side_settings["model"] = (metadata.get("model") or {}).get("path")
        side_settings["synthetic_weights"] = synthetic
    items = _shard_items(folder, records) if layout == "shards" else _file_items(folder, records)
    return items, side_settings, synthetic


def _run_config(directory: Path) -> dict:
    path = directory / RUN_CONFIG_NAME
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InvalidArgumentError(f"{path}: unreadable run configuration ({e})") from e
    if not isinstance(config, dict):
        raise InvalidArgumentError(f"{path}: not a run configuration")
    return config


def _output_path(folder: _Folder, record: dict) -> Path:
    output = record.get("output")
    manifest = folder.directory / MANIFEST_NAME
    if not output or not isinstance(output, str):
        raise InvalidArgumentError(f"{manifest}: ok record of {record.get('input')} has no output")
    path = (folder.directory / output).resolve()
    if folder.directory.resolve() not in path.parents:
        raise InvalidArgumentError(f"{manifest}: output {output!r} is outside the directory")
    return path


def _metadata(folder: _Folder, record: dict) -> dict:
    """The run's metadata as the first ok output carries it ({} when unreadable: its file fails later)."""
    try:
        path = _output_path(folder, record)
        if folder.output_format == "npz":
            return outputs.read_npz(path).get("metadata") or {}
        import pyarrow.parquet as pq

        raw = (pq.read_schema(path).metadata or {}).get(outputs.PARQUET_METADATA_KEY)
        return json.loads(raw) if raw else {}
    except (VGGishError, OSError, ValueError):
        return {}


def _checked(name: str, array: np.ndarray, key: str, where) -> Item:
    if array.ndim != 2 or array.shape[1] != params.EMBEDDING_SIZE:
        return Item(name, None, error=f"{where}: {key} has shape {array.shape}; expected [N, {params.EMBEDDING_SIZE}]")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        return Item(name, None, error=f"{where}: {key} holds non-finite values (NaN or Inf)")
    return Item(name, array.astype(np.float64) if array.dtype == np.uint8 else array)


def _unread(name: str, record: dict) -> Item | None:
    """The item of a record with nothing to read (skipped, failed), else None."""
    status = record.get("status")
    if status == "skipped":
        return Item(name, None)
    if status != "ok":
        return Item(name, None, error=one_line(record.get("error") or f"status {status!r}"))
    return None


# --- one output per input -------------------------------------------------------------------------
def _file_items(folder: _Folder, records: dict[str, dict]) -> Iterator[Item]:
    for name, record in records.items():
        unread = _unread(name, record)
        if unread is not None:
            yield unread
            continue
        try:
            path = _output_path(folder, record)
            if folder.output_format == "npz":
                data = outputs.read_npz(path)
                if folder.key not in data:
                    yield Item(name, None, error=f"{folder.where(record['output'])}: no {folder.key!r} array "
                                                 f"(keys {sorted(data)})")
                    continue
                array = np.asarray(data[folder.key])
            elif folder.output_format == "parquet":
                array = _parquet_matrix(_read_parquet(path, [folder.key]), folder.key, path)
            else:
                rows = list(_tfrecord_examples(path))
                if len(rows) != 1:
                    raise OutputError(f"{path}: holds {len(rows)} records; a per-file TFRecord holds one")
                array = rows[0][1]
        except VGGishError as e:
            yield Item(name, None, error=one_line(e))
            continue
        yield _checked(name, array, folder.key, folder.where(record["output"]))


# --- a sharded dataset ----------------------------------------------------------------------------
def _shard_items(folder: _Folder, records: dict[str, dict]) -> Iterator[Item]:
    """Each ok record's rows, shard by shard (see the module doc); skipped and failed files first."""
    manifest = folder.directory / MANIFEST_NAME
    by_shard: dict[str, list[dict]] = {}
    for name, record in records.items():
        unread = _unread(name, record)
        if unread is not None:
            yield unread
            continue
        output, rows = record.get("output"), record.get("rows")
        folder_name, _, part = output.partition("/") if isinstance(output, str) else ("", "", "")
        if folder_name != DATASET_DIR or not PART_PATTERN.match(part) or not part.endswith(f".{folder.output_format}"):
            yield Item(name, None, error=f"{manifest}: ok record of {name} names {output!r}, not a "
                                         f"{DATASET_DIR}/part-*.{folder.output_format} shard")
        elif (not isinstance(rows, list) or len(rows) != 2 or not all(type(r) is int for r in rows)
              or not 0 <= rows[0] < rows[1]):
            yield Item(name, None, error=f"{manifest}: ok record of {name} has rows {rows!r}; expected [first, end)")
        else:
            by_shard.setdefault(output, []).append(record)
    for output, claims in by_shard.items():
        path = folder.where(output)
        claims.sort(key=lambda record: record["rows"][0])
        overlapping = {id(b) for a, b in zip(claims, claims[1:]) if b["rows"][0] < a["rows"][1]}
        for record in claims:
            if id(record) in overlapping:
                yield Item(record["input"], None, error=f"{path}: rows {record['rows']} of {record['input']} overlap "
                                                        "another file's rows in the manifest")
        claims = [record for record in claims if id(record) not in overlapping]
        if folder.output_format == "parquet":
            yield from _parquet_shard(folder, path, claims)
        else:
            yield from _tfrecord_shard(folder, path, claims)


def _parquet_shard(folder: _Folder, path: Path, claims: list[dict]) -> Iterator[Item]:
    try:
        table = _read_parquet(path, ["file", folder.key])
        matrix = _parquet_matrix(table, folder.key, path)
        files = table.column("file").to_numpy(zero_copy_only=False)
    except VGGishError as e:
        for record in claims:
            yield Item(record["input"], None, error=one_line(e))
        return
    del table
    for record in claims:
        name, (first, end) = record["input"], record["rows"]
        if end > len(matrix):
            yield Item(name, None, error=f"{path}: the manifest names rows [{first}, {end}) of {name}; the shard "
                                         f"holds {len(matrix)}")
        elif set(files[first:end]) != {parquet_name(name)}:
            yield Item(name, None, error=f"{path}: rows [{first}, {end}) are not all {name}'s (file column "
                                         f"{sorted(set(files[first:end]))[:3]})")
        elif record.get("examples") is not None and record["examples"] != end - first:
            yield Item(name, None, error=f"{path}: rows [{first}, {end}) of {name}; its record says "
                                         f"{record['examples']} examples")
        else:
            yield _checked(name, matrix[first:end], folder.key, path)


def _tfrecord_shard(folder: _Folder, path: Path, claims: list[dict]) -> Iterator[Item]:
    """One SequenceExample per file: a record's rows are [i, i + 1); read in one pass."""
    wanted = {}
    for record in claims:
        first, end = record["rows"]
        if end - first != 1:
            yield Item(record["input"], None, error=f"{path}: rows [{first}, {end}) of {record['input']}; a "
                                                    "TFRecord shard holds one record per file")
        else:
            wanted[first] = record
    found = 0
    try:
        for index, (video_id, rows) in enumerate(_tfrecord_examples(path)):
            found = index + 1
            record = wanted.pop(index, None)
            if record is None:
                continue
            name = record["input"]
            if video_id != name:
                yield Item(name, None, error=f"{path}: record {index} is {video_id!r}, not {name}")
            else:
                yield _checked(name, rows, folder.key, path)
    except VGGishError as e:
        for record in wanted.values():
            yield Item(record["input"], None, error=one_line(e))
        return
    for index, record in wanted.items():
        yield Item(record["input"], None, error=f"{path}: the manifest names record {index} of {record['input']}; "
                                                f"the shard holds {found}")


# --- readers --------------------------------------------------------------------------------------
def _read_parquet(path: Path, columns: list[str]):
    try:
        import pyarrow
        import pyarrow.parquet as pq
    except ImportError as e:
        raise OutputError(f"{path}: reading Parquet needs pyarrow: install vggish-tf2[formats]") from e
    try:
        return pq.read_table(path, columns=columns)
    except (OSError, pyarrow.ArrowException, KeyError) as e:
        raise OutputError(f"{path}: cannot read the columns {', '.join(columns)} ({one_line(e)})") from e


def _parquet_matrix(table, key: str, path: Path) -> np.ndarray:
    """A fixed_size_list<128> column as a [rows, 128] array."""
    column = table.column(key).combine_chunks()
    values = np.asarray(column.flatten().to_numpy(zero_copy_only=False))
    if len(values) != len(column) * params.EMBEDDING_SIZE:
        raise OutputError(f"{path}: {key} is not {params.EMBEDDING_SIZE} values a row")
    return values.reshape(len(column), params.EMBEDDING_SIZE)


def _tfrecord_examples(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    """(video_id, uint8 [n, 128]) of each SequenceExample in AudioSet's layout, streamed."""
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    try:
        for serialized in tf.data.TFRecordDataset(os.fspath(path)):
            sequence = tf.train.SequenceExample.FromString(serialized.numpy())
            video_id = sequence.context.feature["video_id"].bytes_list.value
            features = sequence.feature_lists.feature_list[outputs.TFRECORD_EMBEDDING_FEATURE].feature
            rows = [np.frombuffer(feature.bytes_list.value[0], dtype=np.uint8) if feature.bytes_list.value
                    else np.zeros(0, np.uint8) for feature in features]
            if any(len(row) != params.EMBEDDING_SIZE for row in rows):
                raise OutputError(f"{path}: an {outputs.TFRECORD_EMBEDDING_FEATURE} row is not "
                                  f"{params.EMBEDDING_SIZE} bytes")
            matrix = np.stack(rows) if rows else np.zeros((0, params.EMBEDDING_SIZE), np.uint8)
            yield (video_id[0].decode("utf-8", "surrogateescape") if video_id else ""), matrix
    except (tf.errors.OpError, DecodeError) as e:  # DataLossError, NotFoundError; a malformed protobuf
        message = e.message if isinstance(e, tf.errors.OpError) else e
        raise OutputError(f"{path}: cannot read the TFRecord ({one_line(message)})") from e


__all__ = ["Item", "READABLE_FORMATS", "read_embed_output"]
