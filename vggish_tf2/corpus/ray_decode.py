"""What a decoding task of the Ray engine runs: input rows ``(task, path)`` -> window rows.

Decoding is :func:`vggish_tf2.corpus.decode.file_blocks` with the run's resampler, hop, short-clip
policy and sample dtype, so the windows are the local engine's. Each example window becomes a row
``(task, example, window, end, samples, error, error_type)``, yielded a block of windows at a
time (an hour of audio never sits in one object). A file's last row carries its end: the 16 kHz
samples decoded, or the file's error (same text as the local engine's). A file with no window
(too short, or failed) is one marker row whose window is not computed (example -1).

No Ray and no TensorFlow here: these functions run inside Ray tasks, and tests call them directly.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from vggish_tf2 import errors, params
from vggish_tf2.errors import InternalError, VGGishError, one_line

NO_ERROR = ""  # the error column of a row whose file has no error (yet)


@dataclasses.dataclass(frozen=True)
class DecodeSettings:
    """What decoding needs; the same values the local engine decodes with (picklable, no TF)."""

    resampler: str
    hop_samples: int
    short_clips: str
    sample_dtype: str  # "float64" (float64 front end) or "float32"


def _rows(task: int, block: np.ndarray, first: int, *, samples: int | None) -> dict[str, np.ndarray]:
    """Rows of one block of a file's windows; ``samples`` (the file's decoded total) marks its last row."""
    n = len(block)
    end = np.zeros(n, bool)
    total = np.zeros(n, np.int64)
    if samples is not None:
        end[-1] = True
        total[-1] = samples
    return {"task": np.full(n, task, np.int64), "example": np.arange(first, first + n, dtype=np.int64),
            "window": block, "end": end, "samples": total,
            "error": np.full(n, NO_ERROR, dtype=object), "error_type": np.full(n, NO_ERROR, dtype=object)}


def _marker(task: int, *, samples: int, dtype: type, error: BaseException | None = None) -> dict[str, np.ndarray]:
    """The one row of a file without windows (too short, or failed): example -1, not computed."""
    return {"task": np.array([task], np.int64), "example": np.array([-1], np.int64),
            "window": np.zeros((1, params.EXAMPLE_WINDOW_SAMPLES), dtype), "end": np.array([True]),
            "samples": np.array([samples], np.int64),
            "error": np.array([NO_ERROR if error is None else str(error)], dtype=object),
            "error_type": np.array([NO_ERROR if error is None else type(error).__name__], dtype=object)}


def file_rows(task: int, path: Path, settings: DecodeSettings) -> Iterator[dict[str, np.ndarray]]:
    """One file's rows, a block of windows at a time (see the module doc). A file's own fault ends
    it with an error marker (rows already yielded are dropped by the driver); anything else is a
    bug and raises InternalError naming the file, which stops the run."""
    from vggish_tf2.corpus.decode import as_file_error, file_blocks

    held: np.ndarray | None = None  # the latest block, held back until we know whether it is the last
    first = 0
    samples = 0
    dtype: type = np.float32
    try:
        dtype = np.dtype(settings.sample_dtype).type
        for block, samples in file_blocks(path, resampler=settings.resampler, hop_samples=settings.hop_samples,
                                          short_clips=settings.short_clips, dtype=dtype):
            if not len(block):
                continue
            if held is not None:
                yield _rows(task, held, first, samples=None)
                first += len(held)
            held = block
    except (VGGishError, OSError) as e:  # the file's fault: this file fails, the others go on
        yield _marker(task, samples=0, dtype=dtype, error=as_file_error(path, e))
        return
    except Exception as e:  # noqa: BLE001 - a bug (TypeError, ...): stops the run, naming the file
        raise InternalError(f"{path}: {type(e).__name__} while decoding: {one_line(e)} "
                            "(this is a bug in vggish-tf2)") from e
    if held is None:
        yield _marker(task, samples=samples, dtype=dtype)
    else:
        yield _rows(task, held, first, samples=samples)


def decode_batch(batch: dict[str, np.ndarray], *, settings: DecodeSettings) -> Iterator[dict[str, np.ndarray]]:
    """map_batches function of the decode stage: input rows ``(task, path)`` -> window rows.
    ``path`` is the file system's bytes (any file name, also one that is not UTF-8)."""
    for task, raw_path in zip(batch["task"], batch["path"]):
        yield from file_rows(int(task), Path(os.fsdecode(bytes(raw_path))), settings)


def error_from_row(error_type: str, message: str) -> BaseException:
    """The file's error as the decoding task raised it: our own class when it is one, same text."""
    cls = getattr(errors, error_type, None)
    if not (isinstance(cls, type) and issubclass(cls, VGGishError)):
        cls = errors.InvalidAudioError
    return cls(message)


__all__ = ["NO_ERROR", "DecodeSettings", "decode_batch", "error_from_row", "file_rows"]
