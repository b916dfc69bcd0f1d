"""The local device stage: files -> one FileResult per file, in input order.

Files are decoded ahead on the Embedder's ``workers`` threads (:class:`~vggish_tf2.corpus.decode.DecodeAhead`),
their windows packed into full device steps across file boundaries
(:func:`vggish_tf2.batching.pack_and_run`), run by the Embedder's device step, and handed back
per file. Each of the Embedder's counters is added here once per file.
"""
from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

from vggish_tf2 import params
from vggish_tf2.batching import pack_and_run
from vggish_tf2.corpus.decode import DecodeAhead, as_file_error, file_blocks

if TYPE_CHECKING:
    from vggish_tf2.embedder import Embedder, FileResult


def embed_files(embedder: "Embedder", paths: Iterable[str | os.PathLike]) -> Iterator["FileResult"]:
    """``embedder.embed_files``: a FileResult per path, in input order (see its doc)."""
    from vggish_tf2.embedder import FileResult

    paths = [Path(p) for p in paths]
    stats = embedder.stats
    counted_until = time.perf_counter()  # wall time up to here is already in stats.wall_seconds
    decode_counted = 0.0
    blocks_of = functools.partial(file_blocks, resampler=embedder.resampler, hop_samples=embedder.hop_samples,
                                  short_clips=embedder.short_clips, dtype=embedder.sample_dtype)
    decoding = DecodeAhead(paths, workers=embedder.workers, blocks_of=blocks_of, dtype=embedder.sample_dtype)
    try:
        for index, embedding in pack_and_run(decoding.blocks(), embedder.embed_rows,
                                             rows_per_step=lambda: embedder.rows_per_step):
            outcome = decoding.outcome(index)
            duration = outcome.samples / params.SAMPLE_RATE
            now = time.perf_counter()
            decoded = decoding.decode_seconds
            stats.device = embedder.device  # the runner may fall back to the CPU
            stats.add(files=1, wall_seconds=now - counted_until, decode_seconds=decoded - decode_counted,
                      failed_files=1 if outcome.error is not None else 0,
                      audio_seconds=0.0 if outcome.error is not None else duration)
            counted_until, decode_counted = now, decoded
            if outcome.error is not None:
                yield FileResult(paths[index], None, None, None, error=as_file_error(paths[index], outcome.error))
            else:
                yield FileResult(paths[index], embedding, embedder.timestamps(len(embedding)), duration)
    finally:
        decoding.close()  # stops the decoding threads
        stats.add(wall_seconds=time.perf_counter() - counted_until, decode_seconds=decoding.decode_seconds - decode_counted)


__all__ = ["embed_files"]
