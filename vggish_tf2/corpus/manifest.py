"""The run's manifest, ``<out>/manifest.jsonl``: one JSON line per input outcome, the resume point.

Each append is one whole line written with one write, then fsynced; a torn last line (a kill
mid-write) is cut off before the next append and ignored when loading. The last record of an
input wins.
"""
from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path
from typing import Union

from vggish_tf2.atomic import error_reason
from vggish_tf2.errors import InvalidArgumentError, OutputError, one_line

PathLike = Union[str, os.PathLike]

MANIFEST_NAME = "manifest.jsonl"
STATUSES = ("ok", "skipped", "failed")


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
            raise OutputError(f"{self.path}: cannot append to the manifest ({error_reason(e)})") from e

    def open(self) -> None:
        """Open (and check) the manifest now, before any output is written: a planted link or an
        unwritable manifest then stops the run before it has done anything."""
        try:
            self._open()
        except OutputError:
            raise
        except OSError as e:
            raise OutputError(f"{self.path}: cannot open the manifest ({error_reason(e)})") from e

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
            raise OutputError(f"{path}: cannot read the manifest ({error_reason(e)})") from e
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


__all__ = ["MANIFEST_NAME", "STATUSES", "Manifest"]
