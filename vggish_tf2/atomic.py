"""Atomic writes, and the temporaries a killed run leaves behind.

Every output is written to a temporary name in its own directory (``.<name>.tmp-<pid>-<random>``),
flushed and fsynced, then renamed over the final name, so a reader sees the old file or the whole
new one, never a partial one. On any error the temporary is removed and
:class:`~vggish_tf2.errors.OutputError` names the final path. A run killed mid-write can leave a
temporary behind: :func:`remove_stale_temporaries` deletes them.

Only I/O errors (OSError, and TensorFlow's I/O errors from the TFRecord writer) become
:class:`~vggish_tf2.errors.OutputError`; anything else (a TypeError, a MemoryError...) is a bug
and propagates unchanged, so it is never mistaken for a file that cannot be written.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import sys
from pathlib import Path
from typing import Iterator, Union

from vggish_tf2.errors import OutputError, one_line

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

_TEMP_PATTERN = re.compile(r"^\..+\.tmp-(\d+)-[0-9a-f]{8}$", re.DOTALL)
_TEMP_NAME_MAX = 200  # keeps ".<name>.tmp-<pid>-<hex>" under the usual 255-byte name limit


def error_reason(e: BaseException) -> str:
    """An I/O error as a short phrase: its strerror ("No space left on device"), else its message."""
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
        raise OutputError(f"{final}: cannot create directory {final.parent} ({error_reason(e)})") from e
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
        raise OutputError(f"{final}: cannot write ({error_reason(e)})") from e
    _fsync_directory(final.parent)


# --- Clean-up ------------------------------------------------------------------------------------
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
                raise OutputError(f"{path}: cannot remove stale temporary file ({error_reason(e)})") from e
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


__all__ = ["atomic_output", "error_reason", "is_io_error", "remove_stale_temporaries"]
