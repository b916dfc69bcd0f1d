"""What an engine is: it loads the model, embeds tasks, and hands each input's outcome to the writer.

Two engines implement :class:`Engine`: :class:`~vggish_tf2.corpus.local.LocalEngine` (decoding
threads, this process's device) and :class:`~vggish_tf2.corpus.ray_engine.RayEngine` (Ray Data).
Both are built as ``Engine(options)``; the run reads ``engine.facts`` (known once the model is
loaded, before anything is embedded), iterates ``engine.results(tasks)`` and calls ``close()``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Protocol, Sequence

import numpy as np

from vggish_tf2 import params

if TYPE_CHECKING:
    from vggish_tf2.corpus.plan import Task
    from vggish_tf2.embedder import Embedder, FileResult


@dataclasses.dataclass(frozen=True)
class ModelFacts:
    """What run_config.json, the outputs' metadata and the summary need, known without running."""

    model_path: str
    has_pca: bool
    synthetic_weights: bool
    frontend_precision: str
    jit_compile: bool
    resampler: str
    hop_samples: int
    short_clips: str
    device: str
    batch_size: int
    files_verified: bool  # the model's files were checked against their recorded hashes at load

    @property
    def hop_seconds(self) -> float:
        return self.hop_samples / params.SAMPLE_RATE

    @property
    def model_location(self) -> str:
        """The model's absolute path when it is a directory here, else as given (a TF Hub handle)."""
        path = Path(self.model_path)
        return str(path.absolute()) if path.exists() else str(self.model_path)

    @classmethod
    def of(cls, embedder: "Embedder", *, files_verified: bool) -> "ModelFacts":
        """The facts of a loaded Embedder."""
        return cls(
            model_path=str(embedder.model_path), has_pca=embedder.has_pca, synthetic_weights=embedder.synthetic_weights,
            frontend_precision=embedder.frontend_precision, jit_compile=embedder.jit_compile,
            resampler=embedder.resampler, hop_samples=int(embedder.hop_samples), short_clips=embedder.short_clips,
            device=embedder.device, batch_size=embedder.batch_size, files_verified=files_verified,
        )


@dataclasses.dataclass(frozen=True)
class Embedded:
    """One input's outcome, handed from an engine to the writer."""

    task: "Task"
    result: "FileResult"  # status ok | skipped | failed
    postprocessed: np.ndarray | None  # uint8 [N, 128] when postprocessing applies (status ok), else None


class TaskError(Exception):
    """An error that is not a file's fault (a bug, the device, the model) raised by an engine while
    embedding ``task``: the run stops, naming the file. ``error`` (also ``__cause__``) is the error."""

    def __init__(self, task: "Task", error: Exception):
        super().__init__(f"{task.item.path}: {type(error).__name__}: {error}")
        self.task = task
        self.error = error


class Engine(Protocol):
    """Loads the model when built (``Engine(options)``); embeds tasks; releases what it holds."""

    facts: ModelFacts

    def results(self, tasks: Sequence["Task"]) -> Iterator[Embedded]:
        """One Embedded per task, each exactly once, in any order. A file's own fault is its
        result's error; anything else raises, as a TaskError when it happened at a known task."""
        ...

    def close(self) -> None:
        ...


__all__ = ["Embedded", "Engine", "ModelFacts", "TaskError"]
