"""The Fréchet distance between two Gaussians, and the kernel audio distance (KAD).

Fréchet distance (Dowson & Landau 1982) between N(m1, S1) and N(m2, S2)::

    FD = |m1 - m2|^2 + tr S1 + tr S2 - 2 tr sqrt(S1^(1/2) S2 S1^(1/2))

The trace term is computed as the sum of the square roots of the eigenvalues of the *symmetric*
positive semi-definite matrix ``S1^(1/2) S2 S1^(1/2)`` (same eigenvalues as ``S1 S2``), in
float64, with ``numpy.linalg.eigh``: no ``scipy.linalg.sqrtm``, no complex numbers, no epsilon
retry. Eigenvalues that round below zero are clipped to zero, so rank-deficient covariances
(fewer examples than dimensions) give a real, finite, correct value. The result is exactly 0 for
identical statistics, exactly symmetric (the pair is put in a canonical order first) and >= 0.

KAD (Chung et al. 2025, "KAD: No More FAD!") is the unbiased estimate of the squared maximum
mean discrepancy (MMD^2) with a Gaussian RBF kernel ``k(x, y) = exp(-|x - y|^2 / (2 bw^2))``;
here ``bw`` defaults to the median pairwise Euclidean distance between baseline embeddings. It
has no sample-size bias (its expectation does not depend on n) but can be slightly negative.
No scale factor is applied.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from vggish_tf2.errors import InvalidArgumentError
from vggish_tf2.fad.stats import GaussianStats

# Eigenvalues below -PSD_TOLERANCE * (largest |eigenvalue|) mean the matrix is not a covariance.
# float32-stored covariances (Google's files) of rank-deficient sets measured down to ~-1e-7.
PSD_TOLERANCE = 1e-4


def _as_stats(value, name: str) -> GaussianStats:
    if isinstance(value, GaussianStats):
        return value
    try:
        mean, cov = value
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{name} must be GaussianStats or a (mean, cov) pair") from None
    return GaussianStats(mean=mean, cov=cov, count=None)


def _psd_eigh(cov: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    cov = (cov + cov.T) / 2
    values, vectors = np.linalg.eigh(cov)
    scale = max(float(np.max(np.abs(values))), np.finfo(np.float64).tiny)
    if values[0] < -PSD_TOLERANCE * scale:
        raise InvalidArgumentError(
            f"{name} is not a covariance: eigenvalue {values[0]:.3g} < 0 (largest {scale:.3g})"
        )
    return np.clip(values, 0.0, None), vectors


def psd_sqrt(cov: np.ndarray, *, name: str = "cov") -> np.ndarray:
    """The symmetric PSD square root of a covariance (eigenvalues clipped at 0)."""
    values, vectors = _psd_eigh(np.asarray(cov, dtype=np.float64), name)
    return (vectors * np.sqrt(values)) @ vectors.T


def trace_sqrt_product(cov1: np.ndarray, cov2: np.ndarray) -> float:
    """tr sqrt(cov1 cov2), as the sum of sqrt(eigenvalues) of cov1^(1/2) cov2 cov1^(1/2)."""
    root = psd_sqrt(cov1, name="cov1")
    middle = root @ np.asarray(cov2, dtype=np.float64) @ root
    values = np.linalg.eigvalsh((middle + middle.T) / 2)
    return float(np.sum(np.sqrt(np.clip(values, 0.0, None))))


def frechet_distance(a, b) -> float:
    """FD between two Gaussians given as :class:`GaussianStats` or (mean, cov) pairs."""
    a, b = _as_stats(a, "a"), _as_stats(b, "b")
    if a.dim != b.dim:
        raise InvalidArgumentError(f"statistics have different dimensions: {a.dim} and {b.dim}")
    if np.array_equal(a.mean, b.mean) and np.array_equal(a.cov, b.cov):
        return 0.0
    # A canonical order makes FD(a, b) and FD(b, a) the same floating-point operations.
    if (a.cov.tobytes(), a.mean.tobytes()) > (b.cov.tobytes(), b.mean.tobytes()):
        a, b = b, a
    _psd_eigh(b.cov, "cov2")  # checks it is a covariance
    diff = a.mean - b.mean
    value = float(diff @ diff) + float(np.trace(a.cov)) + float(np.trace(b.cov)) - 2.0 * trace_sqrt_product(a.cov, b.cov)
    return max(value, 0.0)


# --- KAD --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class KernelDistance:
    """Unbiased MMD^2 with a Gaussian RBF kernel of bandwidth ``bandwidth``."""

    value: float
    bandwidth: float
    baseline_examples: int  # used (after subsampling)
    eval_examples: int
    kernel: str = "gaussian_rbf"

    def as_dict(self) -> dict:
        return {
            "value": self.value, "kernel": self.kernel,
            "kernel_formula": "exp(-|x - y|^2 / (2 bandwidth^2))",
            "bandwidth": self.bandwidth,
            "bandwidth_rule": "median pairwise Euclidean distance of baseline embeddings",
            "estimator": "unbiased MMD^2 (U-statistic), no scale factor",
            "baseline_examples": self.baseline_examples, "eval_examples": self.eval_examples,
        }


def _matrix(x, name: str) -> np.ndarray:
    array = np.asarray(x, dtype=np.float64)
    if array.ndim != 2 or len(array) < 2:
        raise InvalidArgumentError(f"{name} has shape {np.shape(x)}; expected [n >= 2, d]")
    if not np.all(np.isfinite(array)):
        raise InvalidArgumentError(f"{name} holds non-finite values (NaN or Inf)")
    return array


def median_distance(x: np.ndarray, *, max_examples: int = 1000, seed: int = 0) -> float:
    """Median pairwise Euclidean distance (over at most ``max_examples`` rows, drawn with ``seed``)."""
    x = _matrix(x, "embeddings")
    if len(x) > max_examples:
        x = x[np.random.default_rng(seed).choice(len(x), max_examples, replace=False)]
    sq = np.sum(x * x, axis=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    upper = np.sqrt(np.clip(d2[np.triu_indices(len(x), k=1)], 0.0, None))
    median = float(np.median(upper))
    if not median > 0:
        raise InvalidArgumentError("all embeddings are identical: the kernel bandwidth would be 0")
    return median


def _kernel_sum(x: np.ndarray, y: np.ndarray, gamma: float, *, same: bool, block: int = 2048) -> float:
    total = 0.0
    sx, sy = np.sum(x * x, axis=1), np.sum(y * y, axis=1)
    for i in range(0, len(x), block):
        for j in range(0, len(y), block):
            d2 = sx[i:i + block, None] + sy[None, j:j + block] - 2.0 * (x[i:i + block] @ y[j:j + block].T)
            np.clip(d2, 0.0, None, out=d2)
            if same and i == j:
                np.fill_diagonal(d2, 0.0)  # exactly k(x, x) = 1, removed below
            total += float(np.sum(np.exp(-gamma * d2)))
    return total - (len(x) if same else 0.0)


def kernel_distance(baseline, evaluation, *, bandwidth: float | None = None, max_examples: int = 10000,
                    seed: int = 0) -> KernelDistance:
    """KAD: unbiased MMD^2 between two sets of embeddings [n, d]. Sets larger than
    ``max_examples`` are subsampled (without replacement, ``seed``): the cost is O(n^2)."""
    x, y = _matrix(baseline, "baseline"), _matrix(evaluation, "eval")
    if x.shape[1] != y.shape[1]:
        raise InvalidArgumentError(f"embeddings have different dimensions: {x.shape[1]} and {y.shape[1]}")
    rng = np.random.default_rng(seed)
    if len(x) > max_examples:
        x = x[rng.choice(len(x), max_examples, replace=False)]
    if len(y) > max_examples:
        y = y[rng.choice(len(y), max_examples, replace=False)]
    if bandwidth is None:
        bandwidth = median_distance(x, seed=seed)
    elif not bandwidth > 0:
        raise InvalidArgumentError(f"bandwidth={bandwidth!r} must be > 0")
    gamma = 1.0 / (2.0 * bandwidth * bandwidth)
    m, n = len(x), len(y)
    value = (_kernel_sum(x, x, gamma, same=True) / (m * (m - 1))
             + _kernel_sum(y, y, gamma, same=True) / (n * (n - 1))
             - 2.0 * _kernel_sum(x, y, gamma, same=False) / (m * n))
    return KernelDistance(value=float(value), bandwidth=float(bandwidth), baseline_examples=m, eval_examples=n)
