"""Output writers (npz, AudioSet TFRecord, Parquet), output paths, the run manifest and the
output directory's lock.

Every file is written atomically: to a temporary name in the same directory
(``.<name>.tmp-<pid>-<random>``), flushed and fsynced, then renamed over the final name, so a
reader sees the old file or the whole new one, never a partial one. On any error the temporary
is removed and :class:`~vggish_tf2.errors.OutputError` names the final path. A run killed
mid-write can leave a temporary behind: :func:`remove_stale_temporaries` deletes them.

Outputs are byte-identical for identical inputs (no timestamps inside zip members, deterministic
protobuf serialisation), so a resumed run produces the same files as an uninterrupted one.
Nothing here ever unpickles: npz files are read with ``allow_pickle=False``.

Only I/O errors (OSError, and TensorFlow's I/O errors from the TFRecord writer) become
:class:`~vggish_tf2.errors.OutputError`; anything else (a TypeError, a MemoryError...) is a bug
and propagates unchanged, so it is never mistaken for a file that cannot be written.

:class:`OutputLock` holds ``<out>/.vggish-tf2.lock`` for a run, so two runs never write the same
directory at once.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import socket
import sys
import time
import warnings
import zipfile
from pathlib import Path
from typing import Iterator, Sequence, Union

import numpy as np

from vggish_tf2 import params
from vggish_tf2.errors import InvalidArgumentError, OutputError, OutputInUseError, one_line

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

OUTPUT_FORMATS = ("npz", "tfrecord", "parquet")
MANIFEST_NAME = "manifest.jsonl"
LOCK_NAME = ".vggish-tf2.lock"  # held (flock) by the run writing the directory; removed when it ends
STATUSES = ("ok", "skipped", "failed")
PARQUET_METADATA_KEY = b"vggish_tf2"  # schema key-value metadata holding the JSON metadata
# AudioSet's feature names, so code written for the released files reads ours unchanged.
TFRECORD_EMBEDDING_FEATURE = "audio_embedding"

_TEMP_PATTERN = re.compile(r"^\..+\.tmp-(\d+)-[0-9a-f]{8}$", re.DOTALL)
_TEMP_NAME_MAX = 200  # keeps ".<name>.tmp-<pid>-<hex>" under the usual 255-byte name limit
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed member time: identical inputs give identical bytes


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return one_line(e) or type(e).__name__


def is_io_error(e: BaseException) -> bool:
    """An error of the file system or the disk: OSError, or one of TensorFlow's (the TFRecord
    writer raises tf.errors.OpError subclasses for a full disk or a missing directory)."""
    if isinstance(e, OSError):
        return True
    tf = sys.modules.get("tensorflow")  # never import TF just to ask
    op_error = getattr(getattr(tf, "errors", None), "OpError", None)
    return op_error is not None and isinstance(e, op_error)


# --- Atomic writes ------------------------------------------------------------------------------
def _temp_name(final: Path) -> Path:
    name = final.name[:_TEMP_NAME_MAX]
    return final.with_name(f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; some platforms cannot open a directory, which is harmless.
    try:
        _fsync_path(directory)
    except OSError:
        logger.debug("cannot fsync directory %s", directory)


@contextlib.contextmanager
def atomic_output(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync it and rename it to ``path``."""
    final = Path(path)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{final}: cannot create directory {final.parent} ({_reason(e)})") from e
    temp = _temp_name(final)
    try:
        yield temp
        _fsync_path(temp)
        os.replace(temp, final)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        if isinstance(e, OutputError) or not is_io_error(e):
            raise  # ours already names the path; bugs and KeyboardInterrupt pass through unchanged
        raise OutputError(f"{final}: cannot write ({_reason(e)})") from e
    _fsync_directory(final.parent)


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
) -> None:
    """Write ``embedding`` float32 [N,128], ``postprocessed`` uint8 [N,128] (only when given),
    ``timestamps`` float64 [N] (start seconds) and ``metadata`` (a JSON string in a 0-d unicode
    array, so ``np.load(path, allow_pickle=False)`` reads every key)."""
    arrays = {"embedding": _embedding(embedding)}
    num_examples = len(arrays["embedding"])
    if postprocessed is not None:
        arrays["postprocessed"] = _postprocessed(postprocessed, num_examples)
    arrays["timestamps"] = _vector(timestamps, num_examples, "timestamps")
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
        raise OutputError(f"{os.fspath(path)}: cannot read npz ({_reason(e)})") from e
    if "metadata" in result:
        try:
            result["metadata"] = json.loads(str(result["metadata"][()]))
        except ValueError as e:
            raise OutputError(f"{os.fspath(path)}: metadata is not valid JSON ({e})") from e
    return result


# --- AudioSet TFRecord ----------------------------------------------------------------------------
def write_tfrecord(
    path: PathLike,
    *,
    video_id: str,
    postprocessed: np.ndarray,
    start_time_seconds: float,
    end_time_seconds: float,
    labels: Sequence[int] | None = None,
) -> None:
    """One ``tf.train.SequenceExample`` in AudioSet's layout: feature list ``audio_embedding``
    (one bytes feature of 128 uint8 per example), context ``video_id`` (bytes),
    ``start_time_seconds``/``end_time_seconds`` (float) and ``labels`` (int64, empty if none)."""
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
    record = sequence.SerializeToString(deterministic=True)
    with atomic_output(path) as temp:
        with tf.io.TFRecordWriter(os.fspath(temp)) as writer:
            writer.write(record)


# --- Parquet ----------------------------------------------------------------------------------------
def write_parquet(
    path: PathLike,
    *,
    file: str,
    embedding: np.ndarray,
    start_seconds: np.ndarray,
    end_seconds: np.ndarray,
    postprocessed: np.ndarray | None,
    metadata: dict,
) -> None:
    """One row per example: ``file``, ``index``, ``start_seconds``, ``end_seconds``, ``embedding``
    (fixed_size_list<float32>[128]) and, when given, ``postprocessed`` (fixed_size_list<uint8>[128]).
    ``metadata`` is stored as JSON under the schema metadata key ``vggish_tf2``."""
    pa, pq = _import_pyarrow(f"{os.fspath(path)}: Parquet output")
    if not isinstance(file, str):
        raise InvalidArgumentError(f"file={file!r} must be a str")
    vectors = _embedding(embedding)
    num_examples = len(vectors)
    size = params.EMBEDDING_SIZE
    columns = {
        "file": pa.array([file] * num_examples, pa.string()),
        "index": pa.array(np.arange(num_examples, dtype=np.int64)),
        "start_seconds": pa.array(_vector(start_seconds, num_examples, "start_seconds")),
        "end_seconds": pa.array(_vector(end_seconds, num_examples, "end_seconds")),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), size),
    }
    if postprocessed is not None:
        rows = _postprocessed(postprocessed, num_examples)
        columns["postprocessed"] = pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1)), size)
    table = pa.table(columns).replace_schema_metadata({PARQUET_METADATA_KEY: _metadata_json(metadata).encode()})
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


# --- Manifest ---------------------------------------------------------------------------------------
class Manifest:
    """The run's JSON Lines log, ``<out_dir>/manifest.jsonl``: one line per input outcome.

    Each :meth:`append` writes one whole line with a single write, then fsyncs, so after a crash
    a line is either whole or torn at the very end; a torn tail is cut off (with a warning) before
    the next append and ignored by :meth:`load`. The last record of an input wins.
    """

    def __init__(self, out_dir: PathLike):
        self.path = Path(out_dir) / MANIFEST_NAME
        self._fd: int | None = None

    def append(self, record: dict) -> None:
        """Append one record: ``input`` (str) and ``status`` (ok|skipped|failed) are required;
        ``examples``, ``duration_seconds``, ``output`` and ``error`` default to None; any other
        JSON-serialisable key is kept. ``error`` is folded to one line."""
        if not isinstance(record, dict):
            raise InvalidArgumentError(f"record must be a dict, not {type(record).__name__}")
        if not isinstance(record.get("input"), str):
            raise InvalidArgumentError(f"record['input']={record.get('input')!r} must be a str")
        if record.get("status") not in STATUSES:
            raise InvalidArgumentError(f"record['status']={record.get('status')!r} must be one of {', '.join(STATUSES)}")
        full = {"examples": None, "duration_seconds": None, "output": None, "error": None, **record}
        if full["error"] is not None:
            full["error"] = one_line(full["error"])
        if full["output"] is not None:
            full["output"] = os.fspath(full["output"])
        try:
            # ensure_ascii: file names that are not valid UTF-8 (surrogate escapes) still encode.
            line = json.dumps(full, sort_keys=True, ensure_ascii=True, allow_nan=False) + "\n"
        except (TypeError, ValueError) as e:
            raise InvalidArgumentError(f"manifest record is not JSON-serialisable ({e})") from e
        data = line.encode("ascii")
        try:
            fd = self._open()
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
        except OSError as e:
            raise OutputError(f"{self.path}: cannot append to the manifest ({_reason(e)})") from e

    def open(self) -> None:
        """Open (and check) the manifest now, before any output is written: a planted link or an
        unwritable manifest then stops the run before it has done anything."""
        try:
            self._open()
        except OutputError:
            raise
        except OSError as e:
            raise OutputError(f"{self.path}: cannot open the manifest ({_reason(e)})") from e

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _refuse_link(self.path)
            _cut_torn_tail(self.path)
            # O_NOFOLLOW: a link planted after the check still cannot redirect the appends.
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0), 0o644)
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "Manifest":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    @staticmethod
    def load(out_dir: PathLike) -> dict[str, dict]:
        """The last record of each input in ``<out_dir>/manifest.jsonl`` (empty when there is none)."""
        path = Path(out_dir) / MANIFEST_NAME
        _refuse_link(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise OutputError(f"{path}: cannot read the manifest ({_reason(e)})") from e
        lines = data.split(b"\n")
        if lines[-1]:
            warnings.warn(f"{path}: ignoring a torn last line (an interrupted write)", stacklevel=2)
        records: dict[str, dict] = {}
        for number, raw in enumerate(lines[:-1], start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except ValueError:
                record = None
            if not isinstance(record, dict) or not isinstance(record.get("input"), str):
                warnings.warn(f"{path}: ignoring line {number}, which is not a manifest record", stacklevel=2)
                continue
            records[record["input"]] = record
        return records


def _refuse_link(path: Path) -> None:
    """A manifest that is a symbolic link would be read, truncated and appended to wherever it
    points, outside the output directory: refuse it."""
    if path.is_symlink():
        raise OutputError(f"{path}: is a symbolic link (to {os.readlink(path)}); refusing to follow it out of "
                          "the output directory (remove the link)")


def _cut_torn_tail(path: Path) -> None:
    """Truncate a partial last line, so the next append starts on a line of its own."""
    try:
        f = open(path, "rb+")
    except FileNotFoundError:
        return
    with f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        keep = 0
        position = size
        while position > 0:  # scan back in blocks for the last newline
            start = max(0, position - 65536)
            f.seek(start)
            block = f.read(position - start)
            at = block.rfind(b"\n")
            if at >= 0:
                keep = start + at + 1
                break
            position = start
        warnings.warn(f"{path}: removing a torn last line ({size - keep} bytes) left by an interrupted write",
                      stacklevel=3)
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())


# --- The output directory's lock -------------------------------------------------------------------
class OutputLock:
    """``<out_dir>/.vggish-tf2.lock``, locked for as long as a run writes ``out_dir``.

    POSIX: ``fcntl.flock`` (exclusive, non-blocking); Windows: ``msvcrt.locking`` on its first
    byte. The lock belongs to the open file, so the system drops it when the process ends in any
    way (kill -9 included): a lock file left by a killed run never blocks the next one. The file
    holds the holder's pid, host and start time, which a refused run names. :meth:`release`
    removes it; a run that finds the path replaced after locking (a finishing run removed it in
    between) starts again on the new file. Network file systems may not honour the lock.
    """

    def __init__(self, out_dir: PathLike):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> "OutputLock":
        """Lock, or raise OutputInUseError naming the run that holds it."""
        if self._fd is not None:
            return self
        for _attempt in range(100):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
                             | getattr(os, "O_CLOEXEC", 0), 0o644)
            except OSError as e:
                raise OutputError(f"{self.path}: cannot open the output directory's lock file ({_reason(e)})") from e
            try:
                if not _try_lock(fd):
                    raise OutputInUseError(
                        f"{self.out_dir}: another vggish-tf2 run is writing here ({_holder(fd)}); wait for it to "
                        f"finish, or use another --out (a run that was killed leaves no lock behind)")
                try:
                    same = os.fstat(fd).st_ino == os.stat(self.path, follow_symlinks=False).st_ino
                except FileNotFoundError:
                    same = False
                if not same:  # the previous holder removed the file as we locked it: lock the new one
                    os.close(fd)
                    continue
                holder = {"pid": os.getpid(), "host": socket.gethostname(),
                          "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, b"\n" + json.dumps(holder).encode() + b"\n")  # byte 0 is the one locked on Windows
            except BaseException as e:
                os.close(fd)
                if isinstance(e, OSError) and not isinstance(e, OutputError):
                    raise OutputError(f"{self.path}: cannot lock the output directory ({_reason(e)})") from e
                raise
            self._fd = fd
            return self
        raise OutputError(f"{self.path}: cannot lock the output directory (its lock file keeps being replaced)")

    def release(self) -> None:
        """Remove the lock file, then unlock (closing the file unlocks it)."""
        if self._fd is None:
            return
        try:
            fd_ino = os.fstat(self._fd).st_ino
            if os.stat(self.path, follow_symlinks=False).st_ino == fd_ino:
                self.path.unlink()
        except OSError:  # already gone, or Windows refusing to remove an open file: harmless
            logger.debug("cannot remove %s", self.path, exc_info=True)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()


def _try_lock(fd: int) -> bool:
    """Take an exclusive lock on ``fd`` without waiting; False when another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # the first byte; the holder's details follow it
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _holder(fd: int) -> str:
    """The locking run as its lock file describes it: pid, host and start time."""
    try:
        os.lseek(fd, 1, os.SEEK_SET)  # past the first byte, which Windows keeps locked
        text = os.read(fd, 4096).decode("utf-8", "replace")
        holder = json.loads(text)
        return f"pid {holder['pid']} on host {holder['host']}, started {holder['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "pid and host not recorded yet"


# --- Clean-up -----------------------------------------------------------------------------------------
def remove_stale_temporaries(out_dir: PathLike) -> list[Path]:
    """Delete temporary files (``.<name>.tmp-<pid>-<hex>``) left under ``out_dir`` by a killed run.

    Temporaries of a process that is still alive (another run, or this one) are left alone.
    Symlinked directories are not followed. Returns the paths removed.
    """
    removed = []
    for directory, _dirs, files in os.walk(out_dir):
        for name in files:
            match = _TEMP_PATTERN.match(name)
            if not match or _process_alive(int(match.group(1))):
                continue
            path = Path(directory) / name
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as e:
                raise OutputError(f"{path}: cannot remove stale temporary file ({_reason(e)})") from e
            logger.info("removed stale temporary %s", path)
            removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except (OSError, OverflowError):
        return False
    return True


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
    "write_parquet",
    "write_tfrecord",
]
