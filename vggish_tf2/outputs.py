"""Output formats: npz, AudioSet TFRecord and Parquet writers and readers, and output paths.

Every file is written atomically (:func:`vggish_tf2.atomic.atomic_output`): a reader sees the old
file or the whole new one, never a partial one; a failure raises
:class:`~vggish_tf2.errors.OutputError` naming the path and leaves nothing behind.

Outputs are byte-identical for identical inputs (no timestamps inside zip members, deterministic
protobuf serialisation), so a resumed run produces the same files as an uninterrupted one.
Nothing here ever unpickles: npz files are read with ``allow_pickle=False``.

The manifest (:class:`~vggish_tf2.corpus.manifest.Manifest`) and the output directory's lock
(:class:`~vggish_tf2.corpus.lock.OutputLock`) lived here before; their names still import from
this module.
"""
from __future__ import annotations

import importlib
import json
import os
import zipfile
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from vggish_tf2 import params
# is_io_error and remove_stale_temporaries: re-exported (they lived here).
from vggish_tf2.atomic import atomic_output, error_reason, is_io_error, remove_stale_temporaries  # noqa: F401
from vggish_tf2.errors import InvalidArgumentError, OutputError

PathLike = Union[str, os.PathLike]

OUTPUT_FORMATS = ("npz", "tfrecord", "parquet")
PARQUET_METADATA_KEY = b"vggish_tf2"  # schema key-value metadata holding the JSON metadata
# AudioSet's feature names, so code written for the released files reads ours unchanged.
TFRECORD_EMBEDDING_FEATURE = "audio_embedding"

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed member time: identical inputs give identical bytes

# Names that moved to the corpus package; imported on first use (the corpus imports this module).
_MOVED = {
    "Manifest": "vggish_tf2.corpus.manifest",
    "MANIFEST_NAME": "vggish_tf2.corpus.manifest",
    "STATUSES": "vggish_tf2.corpus.manifest",
    "OutputLock": "vggish_tf2.corpus.lock",
    "LOCK_NAME": "vggish_tf2.corpus.lock",
}


def __getattr__(name: str):
    if name in _MOVED:
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- Validation ---------------------------------------------------------------------------------
def _embedding(embedding) -> np.ndarray:
    array = np.asarray(embedding)
    if array.ndim != 2 or array.shape[1] != params.EMBEDDING_SIZE or array.dtype.kind != "f":
        raise InvalidArgumentError(
            f"embedding has shape {array.shape} and dtype {array.dtype}; expected float [N, {params.EMBEDDING_SIZE}]"
        )
    return array.astype(np.float32, copy=False)


def _postprocessed(postprocessed, num_examples: int | None) -> np.ndarray:
    array = np.asarray(postprocessed)
    # uint8 exactly: casting other types would silently wrap or truncate the quantised values.
    if array.ndim != 2 or array.shape[1] != params.EMBEDDING_SIZE or array.dtype != np.uint8:
        raise InvalidArgumentError(
            f"postprocessed has shape {array.shape} and dtype {array.dtype}; expected uint8 [N, {params.EMBEDDING_SIZE}]"
        )
    if num_examples is not None and len(array) != num_examples:
        raise InvalidArgumentError(f"postprocessed has {len(array)} rows, embedding has {num_examples}")
    return array


def _vector(values, num_examples: int, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (num_examples,):
        raise InvalidArgumentError(f"{name} has shape {array.shape}; expected [{num_examples}]")
    return array


def _count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InvalidArgumentError(f"{name}={value!r} must be an integer >= 0")
    return int(value)


def _metadata_json(metadata: dict) -> str:
    if not isinstance(metadata, dict):
        raise InvalidArgumentError(f"metadata must be a dict, not {type(metadata).__name__}")
    try:
        # sort_keys: the same metadata always gives the same bytes.
        return json.dumps(metadata, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(f"metadata is not JSON-serialisable ({e})") from e


def check_output_format(output_format: str) -> None:
    """Raise early (before any embedding work) when ``output_format`` is unknown or its library is missing."""
    if output_format not in OUTPUT_FORMATS:
        raise InvalidArgumentError(f"format={output_format!r} must be one of {', '.join(OUTPUT_FORMATS)}")
    if output_format == "parquet":
        _import_pyarrow("Parquet output")


def _import_pyarrow(what: str):
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as e:
        raise OutputError(f"{what} needs pyarrow: install vggish-tf2[formats]") from e
    return pyarrow, pyarrow.parquet


# --- npz ----------------------------------------------------------------------------------------
def write_npz(
    path: PathLike,
    *,
    embedding: np.ndarray,
    postprocessed: np.ndarray | None,
    timestamps: np.ndarray,
    metadata: dict,
    examples: int | None = None,
) -> None:
    """Write ``embedding`` float32 [N,128], ``postprocessed`` uint8 [N,128] (only when given),
    ``timestamps`` float64 [N] (start seconds), ``examples`` int64 (only when given: the example
    count of a pooled row) and ``metadata`` (a JSON string in a 0-d unicode array, so
    ``np.load(path, allow_pickle=False)`` reads every key)."""
    arrays = {"embedding": _embedding(embedding)}
    num_examples = len(arrays["embedding"])
    if postprocessed is not None:
        arrays["postprocessed"] = _postprocessed(postprocessed, num_examples)
    arrays["timestamps"] = _vector(timestamps, num_examples, "timestamps")
    if examples is not None:
        arrays["examples"] = np.array(_count(examples, "examples"), dtype=np.int64)
    arrays["metadata"] = np.array(_metadata_json(metadata))
    with atomic_output(path) as temp:
        with open(temp, "xb") as f, zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED) as archive:
            for name, array in arrays.items():
                # np.savez stamps each member with the current time; a fixed time keeps reruns byte-identical.
                info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
                with archive.open(info, mode="w", force_zip64=True) as member:
                    # np.ascontiguousarray would turn the 0-d metadata into shape (1,); copy instead.
                    contiguous = array if array.flags.c_contiguous else array.copy(order="C")
                    np.lib.format.write_array(member, contiguous, allow_pickle=False)


def read_npz(path: PathLike) -> dict:
    """Read a file written by :func:`write_npz` (never unpickles); ``metadata`` comes back as a dict."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            result = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise OutputError(f"{os.fspath(path)}: cannot read npz ({error_reason(e)})") from e
    if "metadata" in result:
        try:
            result["metadata"] = json.loads(str(result["metadata"][()]))
        except ValueError as e:
            raise OutputError(f"{os.fspath(path)}: metadata is not valid JSON ({e})") from e
    return result


# --- AudioSet TFRecord ----------------------------------------------------------------------------
def sequence_example(
    *,
    video_id: str,
    postprocessed: np.ndarray,
    start_time_seconds: float,
    end_time_seconds: float,
    labels: Sequence[int] | None = None,
) -> bytes:
    """One serialised ``tf.train.SequenceExample`` in AudioSet's layout: feature list
    ``audio_embedding`` (one bytes feature of 128 uint8 per example), context ``video_id``
    (bytes), ``start_time_seconds``/``end_time_seconds`` (float) and ``labels`` (int64, empty if none)."""
    if not isinstance(video_id, str):
        raise InvalidArgumentError(f"video_id={video_id!r} must be a str")
    rows = _postprocessed(postprocessed, None)
    label_values = [int(label) for label in (labels or [])]
    import tensorflow as tf  # lazy: the other writers and readers must not pay for TF

    sequence = tf.train.SequenceExample()
    context = sequence.context.feature
    # surrogateescape: names from non-UTF-8 file systems round-trip instead of failing.
    context["video_id"].bytes_list.value.append(video_id.encode("utf-8", "surrogateescape"))
    context["start_time_seconds"].float_list.value.append(float(start_time_seconds))
    context["end_time_seconds"].float_list.value.append(float(end_time_seconds))
    # SetInParent: an empty label list must still be an int64 list, or parsers see a type mismatch.
    context["labels"].int64_list.SetInParent()
    context["labels"].int64_list.value.extend(label_values)
    feature_list = sequence.feature_lists.feature_list[TFRECORD_EMBEDDING_FEATURE]
    for row in rows:
        feature_list.feature.add().bytes_list.value.append(row.tobytes())
    # deterministic: context is a protobuf map, whose order is otherwise unspecified.
    return sequence.SerializeToString(deterministic=True)


def write_tfrecord(
    path: PathLike,
    *,
    video_id: str,
    postprocessed: np.ndarray,
    start_time_seconds: float,
    end_time_seconds: float,
    labels: Sequence[int] | None = None,
) -> None:
    """A TFRecord file of one :func:`sequence_example` (AudioSet's layout)."""
    record = sequence_example(video_id=video_id, postprocessed=postprocessed, start_time_seconds=start_time_seconds,
                              end_time_seconds=end_time_seconds, labels=labels)
    write_tfrecords(path, [record])


def write_tfrecords(path: PathLike, records: Sequence[bytes]) -> None:
    """A TFRecord file of serialised records, in order (AudioSet's shards hold many SequenceExamples)."""
    import tensorflow as tf

    with atomic_output(path) as temp:
        with tf.io.TFRecordWriter(os.fspath(temp)) as writer:
            for record in records:
                writer.write(record)


# --- Parquet ----------------------------------------------------------------------------------------
def parquet_table(
    *,
    file: str,
    embedding: np.ndarray,
    start_seconds: np.ndarray,
    end_seconds: np.ndarray,
    postprocessed: np.ndarray | None,
    examples: Sequence[int] | None = None,
):
    """One file's rows as a ``pyarrow.Table`` (no schema metadata): ``file``, ``index`` (or, for
    pooled rows, ``examples``: each row's example count), ``start_seconds``, ``end_seconds``,
    ``embedding`` (fixed_size_list<float32>[128]) and, when given, ``postprocessed``
    (fixed_size_list<uint8>[128])."""
    pa, _ = _import_pyarrow("Parquet output")
    if not isinstance(file, str):
        raise InvalidArgumentError(f"file={file!r} must be a str")
    vectors = _embedding(embedding)
    num_examples = len(vectors)
    size = params.EMBEDDING_SIZE
    columns = {"file": pa.array([file] * num_examples, pa.string())}
    if examples is None:
        columns["index"] = pa.array(np.arange(num_examples, dtype=np.int64))
    else:
        counts = np.array([_count(count, "examples") for count in examples], dtype=np.int64)
        if counts.shape != (num_examples,):
            raise InvalidArgumentError(f"examples has shape {counts.shape}; expected [{num_examples}]")
        columns["examples"] = pa.array(counts)
    columns.update({
        "start_seconds": pa.array(_vector(start_seconds, num_examples, "start_seconds")),
        "end_seconds": pa.array(_vector(end_seconds, num_examples, "end_seconds")),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), size),
    })
    if postprocessed is not None:
        rows = _postprocessed(postprocessed, num_examples)
        columns["postprocessed"] = pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1)), size)
    return pa.table(columns)


def write_parquet(
    path: PathLike,
    *,
    file: str,
    embedding: np.ndarray,
    start_seconds: np.ndarray,
    end_seconds: np.ndarray,
    postprocessed: np.ndarray | None,
    metadata: dict,
    examples: Sequence[int] | None = None,
) -> None:
    """One row per example (see :func:`parquet_table`); ``metadata`` is stored as JSON under the
    schema metadata key ``vggish_tf2``."""
    _import_pyarrow(f"{os.fspath(path)}: Parquet output")
    table = parquet_table(file=file, embedding=embedding, start_seconds=start_seconds, end_seconds=end_seconds,
                          postprocessed=postprocessed, examples=examples)
    write_parquet_table(path, table, metadata=metadata)


def write_parquet_table(path: PathLike, table, *, metadata: dict) -> None:
    """Write ``table`` atomically, with ``metadata`` as JSON under the schema metadata key ``vggish_tf2``."""
    _, pq = _import_pyarrow(f"{os.fspath(path)}: Parquet output")
    table = table.replace_schema_metadata({PARQUET_METADATA_KEY: _metadata_json(metadata).encode()})
    with atomic_output(path) as temp:
        with open(temp, "xb") as f:
            pq.write_table(table, f)


# --- Output paths -------------------------------------------------------------------------------------
def safe_output_path(out_dir: PathLike, relative_input_path: PathLike, suffix: str) -> Path:
    """Where the output for an input goes: ``out_dir / relative_input_path`` with ``suffix``
    appended to the full file name (``a/b.wav`` -> ``a/b.wav.npz``, so ``b.wav`` and ``b.mp3``
    never collide).

    Never escapes ``out_dir``: absolute paths, ``..`` components, and a directory inside
    ``out_dir`` that is a symlink pointing outside it raise OutputError. ``out_dir`` itself may
    be a symlink (to a bigger disk, say): containment is checked against its resolved target.
    """
    if not isinstance(suffix, str) or not suffix.startswith(".") or "/" in suffix or os.sep in suffix or "\0" in suffix:
        raise InvalidArgumentError(f"suffix={suffix!r} must start with '.' and hold no path separator")
    relative = os.fspath(relative_input_path)
    if isinstance(relative, bytes):
        relative = os.fsdecode(relative)
    if "\0" in relative:
        raise OutputError(f"{relative!r}: input path contains a NUL byte")
    pure = Path(relative)
    if pure.is_absolute() or pure.anchor:
        raise OutputError(f"{relative}: input path must be relative to the output directory, not absolute")
    if ".." in pure.parts:
        raise OutputError(f"{relative}: input path contains '..' and could escape the output directory")
    parts = [part for part in pure.parts if part != "."]
    if not parts:
        raise OutputError(f"{relative!r}: input path has no file name")
    root = Path(out_dir).resolve()
    candidate = root.joinpath(*parts[:-1], parts[-1] + suffix)
    # resolve() follows symlinks in every existing component, so a link to elsewhere shows up here.
    resolved = candidate.resolve()
    if resolved == root or not resolved.is_relative_to(root):
        raise OutputError(f"{candidate}: resolves to {resolved}, outside the output directory {root}")
    return candidate


__all__ = [
    "LOCK_NAME",
    "MANIFEST_NAME",
    "Manifest",
    "OUTPUT_FORMATS",
    "OutputLock",
    "check_output_format",
    "read_npz",
    "remove_stale_temporaries",
    "safe_output_path",
    "write_npz",
    "parquet_table",
    "sequence_example",
    "write_parquet",
    "write_parquet_table",
    "write_tfrecord",
    "write_tfrecords",
]
