"""One vector per file (``pool="mean"``): the mean of its examples' raw embeddings.

The mean is taken in float64 and cast to float32. Its post-processed row (AudioSet's PCA + uint8)
is ``postprocess(mean)``: the quantisation of the mean vector, not the mean of the quantised
rows. The engines compute it where the model is, with :func:`postprocessed_rows`; the writers
compute the mean again (the same function, the same bits) and keep the example count.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from vggish_tf2 import params
from vggish_tf2.errors import InternalError

POOLS = ("none", "mean")  # none: one row per example | mean: one row per file


def mean_embedding(embedding: np.ndarray) -> np.ndarray:
    """float32 [1, 128]: the float64 mean of ``embedding`` [N >= 1, 128]."""
    embedding = np.asarray(embedding)
    if embedding.ndim != 2 or embedding.shape[1] != params.EMBEDDING_SIZE or len(embedding) == 0:
        raise InternalError(f"cannot pool an embedding of shape {embedding.shape}")
    return embedding.astype(np.float64).mean(axis=0, keepdims=True).astype(np.float32)


def postprocessed_rows(result, *, pool: str, postprocess: Callable[[np.ndarray], np.ndarray] | None) -> np.ndarray | None:
    """What an engine hands the writer as ``Embedded.postprocessed`` for ``result`` (a FileResult):
    None without post-processing or without rows; else ``postprocess`` of the rows (pool "none")
    or of the mean vector (pool "mean", one row)."""
    if postprocess is None or result.status != "ok":
        return None
    rows = mean_embedding(result.embedding) if pool == "mean" else result.embedding
    return np.asarray(postprocess(rows))


def check_pooled(postprocessed: np.ndarray | None) -> None:
    """A pooled file's post-processed rows are one row (the engine pooled before post-processing)."""
    if postprocessed is not None and np.shape(postprocessed) != (1, params.EMBEDDING_SIZE):
        raise InternalError(f"pool='mean' expects one post-processed row per file, got shape {np.shape(postprocessed)}")


__all__ = ["POOLS", "check_pooled", "mean_embedding", "postprocessed_rows"]
