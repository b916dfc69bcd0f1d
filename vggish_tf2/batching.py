"""Packing example windows of many files into full device batches, and unpacking results in order.

Input: a stream of (key, windows [n, 15600], final) blocks, a file's blocks consecutive and in
order (a long file arrives in several blocks). Output: (key, embeddings [N, 128]) once a file's
final block has been computed, in input order. Rows are batched across block and file
boundaries, so every device step but the last is full, whatever the files' lengths.
"""
from __future__ import annotations

import collections
from typing import Callable, Hashable, Iterable, Iterator

import numpy as np

from vggish_tf2 import params


class _Pending:
    __slots__ = ("key", "needed", "results", "final")

    def __init__(self, key: Hashable):
        self.key = key
        self.needed = 0  # rows queued for the device and not yet computed
        self.results: list[np.ndarray] = []
        self.final = False


def pack_and_run(
    blocks: Iterable[tuple[Hashable, np.ndarray, bool]],
    run: Callable[[np.ndarray], np.ndarray],
    *,
    rows_per_step: Callable[[], int],
) -> Iterator[tuple[Hashable, np.ndarray]]:
    """Run `run` on full batches of rows drawn from `blocks`; yield each key's embeddings in order.

    `rows_per_step` is asked before each step, so a runner that halves its batch on OOM is
    followed. `run` must return one row per input row, in order.
    """
    pending: collections.deque[_Pending] = collections.deque()
    queued: list[np.ndarray] = []  # rows waiting for the device, oldest first
    queued_rows = 0

    def compute(count: int) -> None:
        nonlocal queued, queued_rows
        rows = np.concatenate(queued) if len(queued) > 1 else queued[0]
        batch, rest = rows[:count], rows[count:]
        queued = [rest] if len(rest) else []
        queued_rows -= count
        results = run(batch)
        offset = 0
        for item in pending:  # hand rows back in the order they were queued
            if offset == count:
                break
            take = min(item.needed, count - offset)
            if take:
                item.results.append(results[offset : offset + take])
                item.needed -= take
                offset += take

    def completed() -> Iterator[tuple[Hashable, np.ndarray]]:
        while pending and pending[0].final and pending[0].needed == 0:
            item = pending.popleft()
            parts = item.results or [np.zeros((0, params.EMBEDDING_SIZE), np.float32)]
            yield item.key, np.concatenate(parts)

    for key, windows, final in blocks:
        if not pending or pending[-1].key != key or pending[-1].final:
            pending.append(_Pending(key))
        item = pending[-1]
        if len(windows):
            queued.append(windows)
            queued_rows += len(windows)
            item.needed += len(windows)
        item.final = final
        while queued_rows >= rows_per_step():
            compute(rows_per_step())
        yield from completed()
    while queued_rows:
        compute(min(queued_rows, rows_per_step()))
    yield from completed()
    # pending items are all final here unless the input stream ended mid-file
    if pending:
        raise ValueError(f"block stream ended before the final block of {pending[0].key!r}")
