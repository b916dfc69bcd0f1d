"""Decoding: one file -> blocks of example windows, and the threads that decode files ahead.

:func:`file_blocks` streams one file (memory flat in its length): decoded, mixed to mono,
resampled to 16 kHz, cut into example windows [n, 15600], handed over ``BLOCK_WINDOWS`` at a time.
:class:`DecodeAhead` runs it for many files on ``workers`` threads, a few files ahead of the
device, and gives their blocks back in input order as ``(index, windows, final)`` (the stream
:func:`vggish_tf2.batching.pack_and_run` packs into device steps), each file's outcome
(:class:`Decoded`: samples decoded, or the file's error) readable once its final block is out.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import queue
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence, Union

import numpy as np

from vggish_tf2 import audio, params, windows
from vggish_tf2.errors import InternalError, InvalidAudioError, VGGishError, one_line

BLOCK_WINDOWS = 256  # windows per block handed from a decoding thread to the device stage
PREFETCH_BLOCKS = 4  # blocks a decoding thread may hold ahead of the device (bounds memory)


def file_blocks(path: Path, *, resampler: str, hop_samples: int, short_clips: str,
                dtype: type) -> Iterator[tuple[np.ndarray, int]]:
    """Blocks of example windows [n, 15600] of one file (the last one possibly empty), each with
    the number of 16 kHz samples decoded so far."""
    chunks = audio.stream_audio(path, resampler=resampler, dtype=dtype)
    decoded = 0

    def counted():
        nonlocal decoded
        for chunk in chunks:
            decoded += len(chunk)
            yield chunk

    block: list[np.ndarray] = []
    for window in windows.iter_windows(counted(), hop_samples=hop_samples, short_clips=short_clips, dtype=dtype):
        block.append(window)
        if len(block) == BLOCK_WINDOWS:
            yield np.stack(block), decoded
            block = []
    yield (np.stack(block) if block else np.zeros((0, params.EXAMPLE_WINDOW_SAMPLES), dtype)), decoded


@dataclasses.dataclass
class Decoded:
    """A file's decoding outcome: the samples decoded (16 kHz), or its error (the file's fault)."""

    samples: int = 0
    error: BaseException | None = None


# What a decoding thread hands over, in order: blocks, then one end.
@dataclasses.dataclass(frozen=True)
class _Block:
    windows: np.ndarray
    samples: int  # decoded so far


@dataclasses.dataclass(frozen=True)
class _End:
    pass


@dataclasses.dataclass(frozen=True)
class _FileError:  # the file's fault: this file fails, the others go on
    error: BaseException


@dataclasses.dataclass(frozen=True)
class _Bug:  # anything else: stops the run
    error: BaseException


_Message = Union[_Block, _End, _FileError, _Bug]


class DecodeAhead:
    """Decode ``paths`` on ``workers`` threads, ``workers + 1`` files ahead of the consumer.

    ``blocks()`` yields ``(index, windows, final)`` in input order; after a file's final block,
    ``outcome(index)`` tells how it went. ``close()`` (also on leaving a ``with``) stops the
    threads: no hand-over waits once it is called. ``decode_seconds`` sums the threads' time.
    """

    def __init__(self, paths: Sequence[Path], *, workers: int,
                 blocks_of: Callable[[Path], Iterator[tuple[np.ndarray, int]]], dtype: type):
        self.paths = list(paths)
        self.decode_seconds = 0.0
        self._blocks_of = blocks_of
        self._empty = np.zeros((0, params.EXAMPLE_WINDOW_SAMPLES), dtype)
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._queues: dict[int, queue.Queue] = {}
        self._outcomes: dict[int, Decoded] = {}
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vggish-decode")
        self._lookahead = workers + 1
        self._submitted = 0

    def __enter__(self) -> "DecodeAhead":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._cancelled.set()
        self._executor.shutdown(wait=True, cancel_futures=True)

    def outcome(self, index: int) -> Decoded:
        """The outcome of file ``index`` once its final block was yielded (read once)."""
        return self._outcomes.pop(index)

    def blocks(self) -> Iterator[tuple[int, np.ndarray, bool]]:
        for index in range(len(self.paths)):
            self._submit_up_to(index + 1 + self._lookahead)
            source = self._queues.pop(index)
            outcome = self._outcomes[index] = Decoded()
            pending = None  # the latest block, held back until we know whether it is the last
            while True:
                message = source.get()
                if isinstance(message, _Block):
                    if pending is not None:
                        yield index, pending, False
                    pending = message.windows
                    outcome.samples = message.samples
                elif isinstance(message, _End):
                    yield index, pending if pending is not None else self._empty, True
                    break
                elif isinstance(message, _FileError):
                    outcome.error = message.error
                    # Rows already queued for this file are still computed; they are discarded.
                    yield index, self._empty, True
                    break
                else:
                    raise _internal_error(self.paths[index], message.error)

    def _submit_up_to(self, limit: int) -> None:
        while self._submitted < min(limit, len(self.paths)):
            out: queue.Queue = queue.Queue(maxsize=PREFETCH_BLOCKS)
            self._queues[self._submitted] = out
            self._executor.submit(self._decode_into, self.paths[self._submitted], out)
            self._submitted += 1

    def _decode_into(self, path: Path, out: queue.Queue) -> None:
        started = time.perf_counter()
        try:
            for block, decoded in self._blocks_of(path):
                if not self._hand_over(out, _Block(block, decoded)):
                    return
            self._hand_over(out, _End())
        except (VGGishError, OSError) as e:  # the file's fault (our own errors name it): this file only
            self._hand_over(out, _FileError(e))
        except BaseException as e:  # noqa: BLE001 - a bug (TypeError, MemoryError, ...): stops the run
            self._hand_over(out, _Bug(e))
        finally:
            with self._lock:
                self.decode_seconds += time.perf_counter() - started

    def _hand_over(self, out: queue.Queue, message: _Message) -> bool:
        """Put ``message`` into ``out``, waiting while it is full; False (dropped) once closed."""
        while not self._cancelled.is_set():
            try:
                out.put(message, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False


def as_file_error(path: Path, error: BaseException) -> BaseException:
    """A decoding error as the file's VGGishError (ours name the file already)."""
    if isinstance(error, VGGishError):
        return error
    wrapped = InvalidAudioError(f"{path}: {type(error).__name__}: {one_line(error)}")
    wrapped.__cause__ = error
    return wrapped


def _internal_error(path: Path, error: BaseException) -> BaseException:
    if isinstance(error, (KeyboardInterrupt, SystemExit)):
        return error
    wrapped = InternalError(f"{path}: {type(error).__name__} while decoding: {one_line(error)} (this is a bug in vggish-tf2)")
    wrapped.__cause__ = error
    return wrapped


__all__ = ["BLOCK_WINDOWS", "DecodeAhead", "Decoded", "PREFETCH_BLOCKS", "as_file_error", "file_blocks"]
