"""The Ray engine's driver side of the rows: embedded rows (any order, maybe repeated) -> whole files.

A file may span batches and actors, and its rows arrive in any order; a batch Ray retried (after
an actor died) may bring rows again. :class:`Regrouper` hands out each file once, its examples in
order, as soon as all of them (or its error) have arrived. No Ray, no TensorFlow.
"""
from __future__ import annotations

import numpy as np

from vggish_tf2 import params
from vggish_tf2.corpus.ray_decode import error_from_row
from vggish_tf2.errors import InternalError


class _Pending:
    __slots__ = ("examples", "embeddings", "expected", "samples", "received")

    def __init__(self):
        self.examples: list[np.ndarray] = []
        self.embeddings: list[np.ndarray] = []
        self.expected: int | None = None  # known once the file's end row has arrived
        self.samples = 0
        self.received = 0


class Regrouper:
    """Collects embedded rows (any order, possibly repeated by a retried batch) into whole files.

    ``add(batch)`` returns ``(task index, embedding [N, 128] in example order, samples, error)`` for
    each file that the batch completed; a file is returned once, whatever arrives for it later.
    """

    def __init__(self, count: int):
        self.count = count
        self._pending: dict[int, _Pending] = {}
        self._done: set[int] = set()

    @property
    def outstanding(self) -> int:
        return self.count - len(self._done)

    def add(self, batch: dict[str, np.ndarray]) -> list[tuple[int, np.ndarray | None, int, BaseException | None]]:
        tasks = np.asarray(batch["task"])
        if not len(tasks):
            return []
        order = np.argsort(tasks, kind="stable")
        starts = np.flatnonzero(np.r_[True, tasks[order][1:] != tasks[order][:-1]])
        finished = []
        for rows in np.split(order, starts[1:]):
            task = int(tasks[rows[0]])
            if task in self._done:
                continue  # a retried batch's copy of a file already handed out
            if not 0 <= task < self.count:
                raise InternalError(f"the Ray engine got rows of task {task}, not one of its {self.count}")
            pending = self._pending.setdefault(task, _Pending())
            example = np.asarray(batch["example"])[rows]
            for row in rows[np.asarray(batch["end"])[rows]]:
                error_type = str(batch["error_type"][row])
                if error_type:
                    self._done.add(task)
                    del self._pending[task]
                    finished.append((task, None, 0, error_from_row(error_type, str(batch["error"][row]))))
                    break
                pending.expected = int(batch["example"][row]) + 1  # -1 (no window) -> 0 examples
                pending.samples = int(batch["samples"][row])
            if task in self._done:
                continue
            keep = example >= 0
            if keep.any():
                pending.examples.append(example[keep])
                pending.embeddings.append(np.asarray(batch["embedding"])[rows[keep]])
                pending.received += int(keep.sum())
            if pending.expected is not None and pending.received >= pending.expected:
                embedding = self._assemble(task, pending)
                if embedding is not None:
                    self._done.add(task)
                    del self._pending[task]
                    finished.append((task, embedding, pending.samples, None))
        return finished

    @staticmethod
    def _assemble(task: int, pending: _Pending) -> np.ndarray | None:
        """The file's rows in example order, each once; None while some are still missing."""
        if pending.expected == 0:
            return np.zeros((0, params.EMBEDDING_SIZE), np.float32)
        examples = np.concatenate(pending.examples)
        unique, first = np.unique(examples, return_index=True)  # a retried batch may repeat rows
        if len(unique) < pending.expected:
            return None
        if len(unique) != pending.expected or unique[0] != 0 or unique[-1] != pending.expected - 1:
            raise InternalError(f"task {task}: examples {unique[:3]}...{unique[-3:]} for {pending.expected} expected "
                                "(this is a bug in vggish-tf2)")
        return np.ascontiguousarray(np.concatenate(pending.embeddings)[first], dtype=np.float32)


__all__ = ["Regrouper"]
