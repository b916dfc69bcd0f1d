"""vggish_tf2.fad: streaming statistics, the Fréchet distance (against closed forms and
scipy.linalg.sqrtm), KAD, the bootstrap interval, FAD-inf and per-file contributions. NumPy only.

Tolerances are from figures measured on this machine (OpenBLAS, float64), with ~100x margin:
- streaming vs two-pass np.cov/np.mean on 5000 x 128 with mean 100: max abs difference 1.8e-15;
- closed forms (shared eigenbasis, diagonal, with zero eigenvalues): relative error <= 1.4e-15;
- vs scipy.linalg.sqrtm on well-conditioned 2000-sample covariances (cond 1e4..2e7): <= 5.5e-13;
- few samples (10..127 < 128): scipy's own trace carries an imaginary part up to 1e-6 and its
  real part differs from ours by <= 6e-6 absolute.
"""
import numpy as np
import pytest
import scipy.linalg

from vggish_tf2.errors import InvalidArgumentError
from vggish_tf2.fad import (
    FileSet, GaussianStats, StatsAccumulator, bootstrap_interval, compare_embeddings, compute_stats, fad_inf,
    frechet_distance, kernel_distance, per_file_contributions,
)


def scipy_fd(a, b):
    """The textbook formula with scipy's sqrtm (no disp=, which SciPy 1.18 removed)."""
    root = scipy.linalg.sqrtm(a.cov @ b.cov)
    diff = a.mean - b.mean
    return diff @ diff + np.trace(a.cov) + np.trace(b.cov) - 2 * np.trace(root)


def random_rotation(rng, d=128):
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return q


# --- statistics -------------------------------------------------------------------------------
def test_streaming_equals_two_pass_float64():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((5000, 128)) * 3 + 100).astype(np.float32)
    acc = StatsAccumulator()
    for start, stop in ((0, 1), (1, 8), (8, 1000), (1000, 1000), (1000, 5000)):  # uneven blocks, an empty one
        acc.update(x[start:stop])
    stats = acc.finish()
    reference = x.astype(np.float64)
    assert stats.count == 5000
    np.testing.assert_allclose(stats.mean, reference.mean(axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(stats.cov, np.cov(reference, rowvar=False), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(stats.cov, stats.cov.T)


def test_merge_of_parts_equals_whole_and_blocks_do_not_matter():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3000, 128)) * 0.01 + 1e4  # large mean against the spread
    left, right = StatsAccumulator().update(x[:1234]), StatsAccumulator().update(x[1234:])
    merged = left.merge(right).finish()
    whole = compute_stats(x)
    blocks = compute_stats(iter([x[:10], x[10:2999], x[2999:]]))
    # Variances here are ~1e-4. Measured: merged vs whole 1.1e-14 (the merge's mean difference
    # carries the means' rounding, 1e4 * eps), whole vs a centred np.cov 1.1e-19, and Google's
    # sum(x x^T)/(n-1) - n m m^T/(n-1) formula 7.8e-7 off (0.7 % of the variance).
    reference = np.cov(x - 1e4, rowvar=False)
    np.testing.assert_allclose(whole.cov, reference, rtol=0, atol=1e-17)
    for other in (whole, blocks):
        np.testing.assert_allclose(merged.mean, other.mean, rtol=1e-14, atol=0)  # measured 3.8e-15
        np.testing.assert_allclose(merged.cov, other.cov, rtol=0, atol=1e-12)
    n, m = len(x), x.mean(axis=0)
    google = x.T @ x / (n - 1) - np.outer(m, m) * n / (n - 1)
    assert np.abs(google - reference).max() > 1e-8


def test_bad_statistics_inputs_are_named():
    with pytest.raises(InvalidArgumentError, match=r"shape \(10,\).*expected"):
        compute_stats(np.zeros(10))
    with pytest.raises(InvalidArgumentError, match="non-finite"):
        StatsAccumulator().update(np.full((3, 128), np.nan))
    with pytest.raises(InvalidArgumentError, match=r"\[n, 128\]"):
        StatsAccumulator().update(np.zeros((3, 64)))
    with pytest.raises(InvalidArgumentError, match="at least 2 embeddings, got 1"):
        compute_stats(np.zeros((1, 128)))


# --- the distance -----------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_closed_form_shared_eigenbasis(seed):
    rng = np.random.default_rng(seed)
    q = random_rotation(rng)
    l1, l2 = rng.uniform(0.01, 10, 128), rng.uniform(0.01, 10, 128)
    m1, m2 = rng.normal(size=128), rng.normal(size=128)
    exact = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(l1) - np.sqrt(l2)) ** 2)
    got = frechet_distance((m1, (q * l1) @ q.T), (m2, (q * l2) @ q.T))
    assert got == pytest.approx(exact, rel=1e-13)


def test_closed_form_diagonal_with_zero_variances():
    rng = np.random.default_rng(7)
    l1, l2 = rng.uniform(0, 10, 128), rng.uniform(0, 10, 128)
    l1[:40] = 0.0  # rank 88
    l2[100:] = 0.0  # rank 100
    m1, m2 = rng.normal(size=128), rng.normal(size=128)
    exact = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(l1) - np.sqrt(l2)) ** 2)
    assert frechet_distance((m1, np.diag(l1)), (m2, np.diag(l2))) == pytest.approx(exact, rel=1e-13)


def test_identical_is_exactly_zero_and_symmetric_bitwise():
    rng = np.random.default_rng(2)
    a = compute_stats(rng.standard_normal((300, 128)))
    b = compute_stats(rng.standard_normal((50, 128)) + 0.1)
    assert frechet_distance(a, a) == 0.0
    assert frechet_distance(a, GaussianStats(a.mean.copy(), a.cov.copy(), None)) == 0.0
    assert frechet_distance(a, b) == frechet_distance(b, a)


@pytest.mark.parametrize("seed", range(4))
def test_agrees_with_scipy_sqrtm_when_well_conditioned(seed):
    rng = np.random.default_rng(seed)
    a = compute_stats(rng.standard_normal((2000, 128)) @ rng.standard_normal((128, 128)) * 0.3)
    b = compute_stats(rng.standard_normal((2000, 128)) @ rng.standard_normal((128, 128)) * 0.3 + 0.05)
    reference = scipy_fd(a, b)
    assert abs(reference.imag) < 1e-9
    assert frechet_distance(a, b) == pytest.approx(reference.real, rel=1e-11)


@pytest.mark.parametrize("n", [3, 10, 50, 127])
def test_few_samples_real_finite_nonnegative_and_near_sqrtm(n):
    rng = np.random.default_rng(n)
    a, b = compute_stats(rng.standard_normal((n, 128))), compute_stats(rng.standard_normal((n, 128)))
    got = frechet_distance(a, b)
    assert isinstance(got, float) and np.isfinite(got) and got >= 0
    assert got == pytest.approx(scipy_fd(a, b).real, abs=1e-4)


def test_nearly_singular_float32_rounding_stays_nonnegative():
    """Where sqrtm gives a negative, complex FAD (measured: -1.05e-6 - 1.0e-7j), ours is >= 0."""
    rng = np.random.default_rng(3)
    a = compute_stats(rng.standard_normal((100, 128)).astype(np.float32))
    rounded = GaussianStats(a.mean.astype(np.float32), a.cov.astype(np.float32), a.count)
    got = frechet_distance(a, rounded)
    assert np.isfinite(got) and 0.0 <= got < 1e-6
    tiny = GaussianStats(np.zeros(128), np.diag(np.r_[np.ones(2), np.full(126, 1e-300)]), None)
    assert 0.0 <= frechet_distance(tiny, a) < np.inf


def test_not_a_covariance_is_refused():
    with pytest.raises(InvalidArgumentError, match="not a covariance"):
        frechet_distance((np.zeros(3), -np.eye(3)), (np.zeros(3), np.eye(3)))
    with pytest.raises(InvalidArgumentError, match="different dimensions: 3 and 4"):
        frechet_distance((np.zeros(3), np.eye(3)), (np.zeros(4), np.eye(4)))


# --- KAD --------------------------------------------------------------------------------------
def test_kad_zero_mean_for_same_distribution_and_grows_with_shift():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((600, 16)), rng.standard_normal((600, 16))
    same = kernel_distance(x, y).value
    shifted = [kernel_distance(x, y + shift).value for shift in (0.1, 0.3, 1.0)]
    assert abs(same) < 2e-3  # unbiased: measured 1e-4 level, can be negative
    assert shifted == sorted(shifted) and shifted[0] > same
    fixed = kernel_distance(x, y, bandwidth=2.0)
    assert fixed.bandwidth == 2.0 and fixed.as_dict()["kernel"] == "gaussian_rbf"


def test_kad_brute_force():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((40, 8)), rng.standard_normal((30, 8)) + 0.5
    bw = 1.7
    k = lambda a, b: np.exp(-((a[:, None, :] - b[None]) ** 2).sum(-1) / (2 * bw * bw))  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    expected = ((kxx.sum() - np.trace(kxx)) / (40 * 39) + (kyy.sum() - np.trace(kyy)) / (30 * 29) - 2 * kxy.mean())
    assert kernel_distance(x, y, bandwidth=bw).value == pytest.approx(expected, rel=1e-12)


# --- files: order, bootstrap, FAD-inf, per-file ----------------------------------------------------
def files(rng, count, shift=0.0, rows=30, d=128):
    return [rng.standard_normal((rows + i % 5, d)) + shift for i in range(count)]


def test_file_order_does_not_change_the_statistics_or_fad():
    rng = np.random.default_rng(6)
    base, ev = files(rng, 12), files(rng, 12, 0.1)
    forward = FileSet.from_embeddings(enumerate(ev)).stats()
    backward = FileSet.from_embeddings(reversed(list(enumerate(ev)))).stats()
    np.testing.assert_allclose(forward.cov, backward.cov, rtol=0, atol=1e-14)
    b = compute_stats(np.concatenate(base))
    assert frechet_distance(b, forward) == pytest.approx(frechet_distance(b, backward), rel=1e-12)
    assert frechet_distance(b, forward) == pytest.approx(frechet_distance(b, compute_stats(np.concatenate(ev))), rel=1e-12)


def test_bootstrap_interval_brackets_fad_and_is_reproducible():
    rng = np.random.default_rng(8)
    base, ev = FileSet.from_embeddings(enumerate(files(rng, 15))), FileSet.from_embeddings(enumerate(files(rng, 15, 0.1)))
    ci = bootstrap_interval(base, ev, level=0.9, replicates=60, seed=1)
    point = frechet_distance(base.stats(), ev.stats())
    assert ci["low"] <= point <= ci["high"] and ci["std"] > 0 and ci["resampled"] == ["baseline", "eval"]
    assert ci["bootstrap_mean"] > point  # repeated files inflate the small-sample bias (why the interval is re-centred)
    assert bootstrap_interval(base, ev, level=0.9, replicates=60, seed=1) == ci
    fixed = bootstrap_interval(base.stats(), ev, replicates=20)
    assert fixed["resampled"] == ["eval"]
    with pytest.raises(InvalidArgumentError, match="files of at least one side"):
        bootstrap_interval(base.stats(), ev.stats())


def test_fad_inf_recovers_the_true_distance_from_biased_sizes():
    rng = np.random.default_rng(9)
    d = 16
    true_shift = 0.2
    baseline = GaussianStats(np.zeros(d), np.eye(d), None)  # the population itself: no baseline bias
    x = rng.standard_normal((20000, d)) + true_shift
    result = fad_inf(baseline, x, min_n=200, seed=0)
    exact = d * true_shift ** 2  # 0.64
    assert len(result["points"]) == 25 and result["r2"] > 0.9
    assert result["points"][0][1] > exact + 0.03  # FAD at n=200 is biased up (measured ~0.7)
    assert result["value"] == pytest.approx(exact, abs=0.02)  # measured within 0.01


def test_per_file_contributions_finds_the_outlier():
    rng = np.random.default_rng(10)
    base = compute_stats(np.concatenate(files(rng, 20)))
    ev_files = files(rng, 20, 0.1)
    ev_files[7] = ev_files[7] + 1.0
    rows = per_file_contributions(base, FileSet.from_embeddings((f"f{i}", e) for i, e in enumerate(ev_files)))
    assert rows[0]["file"] == "f7" and rows[0]["delta"] > 0 and rows[0]["relative"] > 0
    assert all(r["relative"] < rows[0]["relative"] for r in rows[1:])
    # The leave-one-out statistics computed by subtraction equal those recomputed without the file.
    rest = compute_stats(np.concatenate(ev_files[:7] + ev_files[8:]))
    fad_all = frechet_distance(base, compute_stats(np.concatenate(ev_files)))
    assert rows[0]["delta"] == pytest.approx(fad_all - frechet_distance(base, rest), rel=1e-9)
    assert rows[0]["fad_alone"] == pytest.approx(frechet_distance(base, compute_stats(ev_files[7])), rel=1e-12)


def test_compare_embeddings_report():
    rng = np.random.default_rng(11)
    report = compare_embeddings(files(rng, 10), files(rng, 10, 0.1), ci=0.95, replicates=20, inf=True,
                                per_file=True, kad=True)
    assert set(report) >= {"fad", "ci", "fad_inf", "per_file", "kad", "baseline", "eval", "warnings"}
    assert report["baseline"]["examples"] == report["eval"]["examples"] == sum(30 + i % 5 for i in range(10))
    with pytest.raises(InvalidArgumentError, match="statistics file"):
        compare_embeddings(compute_stats(np.concatenate(files(rng, 3))), files(rng, 3), kad=True)


def test_importing_fad_needs_neither_tensorflow_nor_scipy_nor_matplotlib():
    import subprocess
    import sys

    code = ("import sys, vggish_tf2.fad, vggish_tf2.fad.cli; "
            "print(sorted(m for m in ('tensorflow', 'scipy', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
