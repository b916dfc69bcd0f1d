"""Streaming Gaussian statistics of embeddings: count, mean and covariance in float64.

    acc = StatsAccumulator()
    for block in blocks:              # float [n, 128], any n, any number of blocks
        acc.update(block)
    stats = acc.finish()              # GaussianStats(mean float64 [128], cov float64 [128, 128], count)

Memory is flat in the number of embeddings: the accumulator holds one mean and one scatter
matrix. Each block's mean and scatter are computed around the block's own mean (two passes over
the block, in float64) and merged with Chan, Golub & LeVeque's pairwise update, so no sum of
squares of raw values is ever formed (Google's tool accumulates sum(x x^T) and subtracts
n m m^T at the end, which loses digits when the mean is large against the spread). Accumulators
merge (``a.merge(b)``), so statistics of parts can be computed apart and combined.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from vggish_tf2.errors import InvalidArgumentError

EMBEDDING_SIZE = 128  # VGGish's embedding width; other widths are allowed (dim=...)


@dataclasses.dataclass(frozen=True)
class GaussianStats:
    """Mean and (ddof=1, like ``np.cov`` and Google's tool) covariance of ``count`` embeddings.

    ``count`` is None when the source does not record it (fadtk's npz)."""

    mean: np.ndarray  # float64 [d]
    cov: np.ndarray  # float64 [d, d], symmetric
    count: int | None

    def __post_init__(self):
        mean = np.asarray(self.mean, dtype=np.float64)
        cov = np.asarray(self.cov, dtype=np.float64)
        if mean.ndim != 1 or cov.shape != (len(mean), len(mean)):
            raise InvalidArgumentError(f"mean.shape={mean.shape} and cov.shape={cov.shape} must be [d] and [d, d]")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(cov))):
            raise InvalidArgumentError("statistics hold non-finite values (NaN or Inf)")
        if self.count is not None and (isinstance(self.count, bool) or int(self.count) < 1):
            raise InvalidArgumentError(f"count={self.count!r} must be an integer >= 1")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "cov", cov)
        object.__setattr__(self, "count", None if self.count is None else int(self.count))

    @property
    def dim(self) -> int:
        return len(self.mean)


def _block(embeddings, dim: int | None) -> np.ndarray:
    array = np.asarray(embeddings)
    if array.ndim != 2 or array.dtype.kind not in "fiu" or (dim is not None and array.shape[1] != dim):
        want = f"[n, {dim}]" if dim is not None else "[n, d]"
        raise InvalidArgumentError(f"embeddings have shape {array.shape} and dtype {array.dtype}; expected numbers {want}")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise InvalidArgumentError("embeddings hold non-finite values (NaN or Inf)")
    return array


def block_moments(embeddings, *, dim: int | None = None) -> tuple[int, np.ndarray, np.ndarray]:
    """(n, mean, scatter) of one block in float64; scatter = sum (x - mean)(x - mean)^T."""
    x = _block(embeddings, dim)
    if len(x) == 0:
        d = x.shape[1]
        return 0, np.zeros(d), np.zeros((d, d))
    mean = x.mean(axis=0)
    centered = x - mean
    return len(x), mean, centered.T @ centered


class StatsAccumulator:
    """Running count, mean and scatter matrix in float64; ``update`` with blocks, ``merge`` others."""

    def __init__(self, dim: int = EMBEDDING_SIZE):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise InvalidArgumentError(f"dim={dim!r} must be an integer >= 1")
        self.dim = dim
        self.count = 0
        self.mean = np.zeros(dim)
        self.scatter = np.zeros((dim, dim))

    def update(self, embeddings) -> "StatsAccumulator":
        """Add a block of embeddings [n, dim] (any float or integer dtype; n may be 0)."""
        self.merge_moments(*block_moments(embeddings, dim=self.dim))
        return self

    def merge(self, other: "StatsAccumulator") -> "StatsAccumulator":
        """Add another accumulator's embeddings (Chan et al.'s pairwise update)."""
        if other.dim != self.dim:
            raise InvalidArgumentError(f"cannot merge statistics of dimension {other.dim} into {self.dim}")
        self.merge_moments(other.count, other.mean, other.scatter)
        return self

    def merge_moments(self, n: int, mean: np.ndarray, scatter: np.ndarray) -> None:
        """Add a group given by its count, mean and scatter (as :func:`block_moments` returns)."""
        if n == 0:
            return
        if self.count == 0:
            self.count, self.mean, self.scatter = n, mean.copy(), scatter.copy()
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.scatter = self.scatter + scatter + np.outer(delta, delta) * (self.count * n / total)
        self.count = total

    def finish(self) -> GaussianStats:
        """The statistics so far; needs at least 2 embeddings (a covariance of 1 is undefined)."""
        if self.count < 2:
            raise InvalidArgumentError(f"statistics need at least 2 embeddings, got {self.count}")
        cov = self.scatter / (self.count - 1)
        return GaussianStats(mean=self.mean.copy(), cov=(cov + cov.T) / 2, count=self.count)


def compute_stats(embeddings, *, block_rows: int = 65536) -> GaussianStats:
    """Statistics of an array [n, d], or of an iterator (e.g. a generator) of [n, d] blocks."""
    if isinstance(embeddings, np.ndarray) or not hasattr(embeddings, "__next__"):
        array = np.asarray(embeddings)  # an array or nested lists
        if array.ndim != 2:
            raise InvalidArgumentError(f"embeddings have shape {array.shape}; expected [n, d] (or an iterator of blocks)")
        blocks = (array[i:i + block_rows] for i in range(0, len(array), block_rows))
    else:
        blocks = embeddings  # an iterator (generator) of [n, d] blocks
    accumulator = None
    for block in blocks:
        block = np.asarray(block)
        if accumulator is None:
            accumulator = StatsAccumulator(block.shape[1] if block.ndim == 2 and block.shape[1] > 0 else EMBEDDING_SIZE)
        accumulator.update(block)
    if accumulator is None:
        raise InvalidArgumentError("statistics need at least 2 embeddings, got 0")
    return accumulator.finish()


def pooled_stats(counts: np.ndarray, means: np.ndarray, scatters: np.ndarray, weights: np.ndarray | None = None) -> GaussianStats:
    """Statistics of groups (files) given per-group (count, mean, scatter), each taken ``weights``
    times (bootstrap multiplicities; default once): centred, so as stable as the streaming update."""
    counts = np.asarray(counts, dtype=np.float64)
    w = np.ones(len(counts)) if weights is None else np.asarray(weights, dtype=np.float64)
    wn = w * counts
    total = wn.sum()
    if total < 2:
        raise InvalidArgumentError(f"statistics need at least 2 embeddings, got {int(total)}")
    mean = (wn @ means) / total
    spread = means - mean
    scatter = np.tensordot(w, scatters, axes=1) + (spread * wn[:, None]).T @ spread
    cov = scatter / (total - 1)
    return GaussianStats(mean=mean, cov=(cov + cov.T) / 2, count=int(round(total)))
