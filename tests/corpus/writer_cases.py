"""Inputs for the writer tests: tasks and engine outcomes built without a model."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from vggish_tf2 import outputs
from vggish_tf2.corpus.engine import Embedded
from vggish_tf2.corpus.plan import Task
from vggish_tf2.embedder import FileResult
from vggish_tf2.inputs import InputFile

BASE_METADATA = {"model": {"path": "/models/vggish", "hash": "sha256-files:ab"}, "synthetic_weights": True,
                 "has_postprocessed": True, "hop_seconds": 0.96, "hop_samples": 15360}


def task(out_dir: Path, relative: str, *, suffix: str | None = ".npz", signature=(1000, 123)) -> Task:
    """A task for ``relative``; ``suffix`` None: no per-file output (layout "shards")."""
    if suffix is None:
        return Task(item=InputFile(Path("/corpus") / relative, relative), output=None, output_relative=None,
                    signature=signature)
    output = outputs.safe_output_path(out_dir, relative, suffix)
    return Task(item=InputFile(Path("/corpus") / relative, relative), output=output,
                output_relative=output.relative_to(out_dir.resolve()).as_posix(), signature=signature)


def rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 128)).astype(np.float32), rng.integers(0, 256, (n, 128), dtype=np.uint8)


def ok(task: Task, n: int, *, seed: int = 0, postprocessed: bool = True, duration: float | None = None) -> Embedded:
    embedding, quantised = rows(n, seed)
    duration = n * 0.96 + 0.015 if duration is None else duration
    result = FileResult(path=task.item.path, embedding=embedding, timestamps=np.arange(n) * 0.96,
                        duration_seconds=duration)
    return Embedded(task=task, result=result, postprocessed=quantised if postprocessed else None)


def skipped(task: Task, duration: float = 0.5) -> Embedded:
    result = FileResult(path=task.item.path, embedding=np.zeros((0, 128), np.float32), timestamps=np.zeros(0),
                        duration_seconds=duration)
    return Embedded(task=task, result=result, postprocessed=None)


def failed(task: Task, message: str) -> Embedded:
    result = FileResult(path=task.item.path, embedding=None, timestamps=None, duration_seconds=None,
                        error=ValueError(message))
    return Embedded(task=task, result=result, postprocessed=None)
