"""What a single FAD number does not say: its uncertainty, its sample-size bias, and which files
drive it.

- :func:`bootstrap_interval`: bootstrap over *files* (examples of one file are not independent,
  so files are the unit resampled), on each side that has files; a side given as a statistics
  file is held fixed. The interval is conservative: in a simulation (d = 16, 30 files of 8
  examples a side with a per-file offset, 100 trials, 200 replicates) a nominal 90 % interval
  held the expected FAD at that size 99 times in 100, and the replicates' std was 1.6x the true
  std (0.41 vs 0.25): replicates repeat files, which adds to FAD's small-sample variance.
- :func:`fad_inf`: FAD is biased upward by ~c/n. Like fadtk, FAD is computed on random subsets of
  ``n`` eval examples for ``steps`` (25) sizes from ``min_n`` to all, and a line is fitted to FAD
  against 1/n; its intercept is FAD-inf. Unlike fadtk, subsets are drawn without replacement (a
  draw with replacement repeats examples, so its effective n is smaller than n).
- :func:`per_file_contributions`: for each eval file, FAD minus the FAD without that file
  (leave-one-out ``delta``; ``relative``: delta minus the mean delta, > 0 when the file pulls the
  distance up more than an average file), and the file's own FAD (fadtk's ``--indiv``).

A :class:`FileSet` keeps each file's count, mean and scatter (float64, 131 kB per file for
d = 128), so a bootstrap replicate costs O(files * d^2), not O(examples * d^2).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from vggish_tf2.errors import InvalidArgumentError
from vggish_tf2.fad.distance import frechet_distance
from vggish_tf2.fad.stats import GaussianStats, block_moments, pooled_stats


@dataclasses.dataclass
class FileSet:
    """Per-file moments of one side: ``names`` [F], ``counts`` [F], ``means`` [F, d], ``scatters`` [F, d, d]."""

    names: list[str]
    counts: np.ndarray
    means: np.ndarray
    scatters: np.ndarray

    @classmethod
    def from_embeddings(cls, items) -> "FileSet":
        """From (name, embedding [n, d]) pairs; files with no examples are left out."""
        names, counts, means, scatters = [], [], [], []
        for name, embedding in items:
            n, mean, scatter = block_moments(embedding)
            if n == 0:
                continue
            names.append(name)
            counts.append(n)
            means.append(mean)
            scatters.append(scatter)
        if not names:
            raise InvalidArgumentError("no file has any embedding")
        return cls(names, np.array(counts, dtype=np.int64), np.stack(means), np.stack(scatters))

    @property
    def examples(self) -> int:
        return int(self.counts.sum())

    def stats(self, weights: np.ndarray | None = None) -> GaussianStats:
        return pooled_stats(self.counts, self.means, self.scatters, weights)


def bootstrap_interval(baseline: GaussianStats | FileSet, evaluation: GaussianStats | FileSet, *,
                       level: float = 0.95, replicates: int = 1000, seed: int = 0) -> dict:
    """Percentile bootstrap interval of FAD, resampling the files of each side given as a FileSet."""
    if not 0 < level < 1:
        raise InvalidArgumentError(f"level={level!r} must be in (0, 1)")
    if replicates < 10:
        raise InvalidArgumentError(f"replicates={replicates!r} must be >= 10")
    sides = [s for s, v in (("baseline", baseline), ("eval", evaluation)) if isinstance(v, FileSet)]
    if not sides:
        raise InvalidArgumentError("a confidence interval needs the files of at least one side (both are statistics files)")
    for name, value in (("baseline", baseline), ("eval", evaluation)):
        if isinstance(value, FileSet) and len(value.names) < 2:
            raise InvalidArgumentError(f"a confidence interval needs at least 2 {name} files, got {len(value.names)}")
    rng = np.random.default_rng(seed)

    def draw(value):
        if isinstance(value, GaussianStats):
            return value
        weights = rng.multinomial(len(value.names), np.full(len(value.names), 1.0 / len(value.names)))
        return value.stats(weights)

    values = np.array([frechet_distance(draw(baseline), draw(evaluation)) for _ in range(replicates)])
    point = frechet_distance(baseline if isinstance(baseline, GaussianStats) else baseline.stats(),
                             evaluation if isinstance(evaluation, GaussianStats) else evaluation.stats())
    # A replicate repeats some files, so it holds fewer distinct examples and FAD's small-sample
    # bias grows: the replicates' mean sits above FAD. The interval keeps the replicates' spread
    # (their quantiles minus their mean) and centres it on the measured FAD.
    alpha = (1.0 - level) / 2.0
    q_low, q_high = np.quantile(values, [alpha, 1.0 - alpha])
    centre = float(values.mean())
    return {
        "level": level, "low": max(point + float(q_low) - centre, 0.0), "high": point + float(q_high) - centre,
        "std": float(values.std(ddof=1)), "bootstrap_mean": centre, "replicates": replicates, "seed": seed,
        "resampled": sides,
        "method": "bootstrap over files (resampled with replacement); replicate quantiles minus their mean, added to FAD",
    }


def fad_inf(baseline: GaussianStats, eval_embeddings: np.ndarray, *, steps: int = 25, min_n: int | None = None,
            seed: int = 0) -> dict:
    """FAD extrapolated to infinitely many eval examples: intercept of a line fitted to FAD vs 1/n."""
    x = np.asarray(eval_embeddings)
    total = len(x)
    if min_n is None:
        min_n = min(500, total // 2)  # fadtk's 500, or half the set when it is small
    if steps < 2 or min_n < 2 or min_n >= total:
        raise InvalidArgumentError(f"FAD-inf needs 2 <= min_n ({min_n}) < eval examples ({total}) and steps ({steps}) >= 2")
    from vggish_tf2.fad.stats import compute_stats

    rng = np.random.default_rng(seed)
    ns = np.unique(np.linspace(min_n, total, steps).astype(np.int64))
    points = []
    for n in ns:
        subset = x if n == total else x[rng.choice(total, int(n), replace=False)]
        points.append((int(n), frechet_distance(baseline, compute_stats(subset))))
    inv = 1.0 / np.array([p[0] for p in points], dtype=np.float64)
    fads = np.array([p[1] for p in points])
    slope, intercept = np.polyfit(inv, fads, 1)
    residual = np.sum((fads - (slope * inv + intercept)) ** 2)
    spread = np.sum((fads - fads.mean()) ** 2)
    r2 = float(1.0 - residual / spread) if spread > 0 else 1.0
    return {
        "value": float(intercept), "slope": float(slope), "r2": r2, "points": points, "seed": seed,
        "method": "linear fit of FAD against 1/n, eval subsets drawn without replacement",
    }


def per_file_contributions(baseline: GaussianStats, evaluation: FileSet) -> list[dict]:
    """For each eval file: ``delta`` = FAD(all) - FAD(all but this file) (leave-one-out; > 0 when
    the file pulls the distance up) and ``fad_alone`` (the file's own FAD, None below 2 examples).
    ``relative`` = delta - mean delta. Sorted by ``delta``, largest first."""
    if len(evaluation.names) < 2:
        raise InvalidArgumentError("per-file contributions need at least 2 eval files")
    full = evaluation.stats()
    fad_all = frechet_distance(baseline, full)
    total_n, mean, scatter = float(full.count), full.mean, full.cov * (full.count - 1)
    rows = []
    for i, name in enumerate(evaluation.names):
        n_i = float(evaluation.counts[i])
        rest_n = total_n - n_i
        alone = None
        if n_i >= 2:
            alone = frechet_distance(baseline, GaussianStats(evaluation.means[i], evaluation.scatters[i] / (n_i - 1), int(n_i)))
        if rest_n < 2:
            delta = None
        else:
            # Chan's merge run backwards: remove the file's moments from the pooled ones.
            rest_mean = (total_n * mean - n_i * evaluation.means[i]) / rest_n
            d = evaluation.means[i] - rest_mean
            rest_scatter = scatter - evaluation.scatters[i] - np.outer(d, d) * (n_i * rest_n / total_n)
            rest_cov = rest_scatter / (rest_n - 1)
            delta = fad_all - frechet_distance(baseline, GaussianStats(rest_mean, (rest_cov + rest_cov.T) / 2, int(rest_n)))
        rows.append({"file": name, "examples": int(n_i), "delta": delta, "fad_alone": alone})
    deltas = [r["delta"] for r in rows if r["delta"] is not None]
    mean_delta = float(np.mean(deltas)) if deltas else 0.0
    for row in rows:
        # Removing any file shrinks n and so raises FAD's bias: deltas are mostly negative. The
        # difference from the mean delta ranks files by how much more than an average file they add.
        row["relative"] = None if row["delta"] is None else row["delta"] - mean_delta
    rows.sort(key=lambda r: np.inf if r["delta"] is None else -r["delta"])
    return rows
