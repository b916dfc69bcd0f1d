"""The output directory's lock, ``<out>/.vggish-tf2.lock``: two runs never write one directory at once."""
from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Union

from vggish_tf2.atomic import error_reason
from vggish_tf2.errors import OutputError, OutputInUseError

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

LOCK_NAME = ".vggish-tf2.lock"  # held (flock) by the run writing the directory; removed when it ends


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
                raise OutputError(f"{self.path}: cannot open the output directory's lock file ({error_reason(e)})") from e
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
                    raise OutputError(f"{self.path}: cannot lock the output directory ({error_reason(e)})") from e
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


__all__ = ["LOCK_NAME", "OutputLock"]
