"""FAD: streaming statistics of 1 million synthetic embeddings (time; memory flat in the count),
the Fréchet distance itself, the bootstrap interval and KAD. NumPy only, no model.

- statistics: StatsAccumulator fed 1,000,000 x 128 float32 rows in blocks of 65,536 (the same
  pre-generated block, shifted, so generation is not timed); rows per second;
- memory: tracemalloc peak (NumPy reports its buffers to tracemalloc) while accumulating 100,000
  and 1,000,000 rows, excluding the caller's input block: it must not grow with the count;
- distance: frechet_distance of two 128-dim statistics (two eigh of 128 x 128 and products);
  OpenBLAS threads on a loaded 2-core box slow eigh 15x: see README for both figures;
- bootstrap: 100 replicates over 500 files a side; KAD: 5,000 examples a side.

VGGISH_BENCH_QUICK=1 shrinks the sizes. Timings are reported, not asserted (memory flatness is).
"""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from conftest import SETTINGS
from vggish_tf2.fad import FileSet, StatsAccumulator, bootstrap_interval, compute_stats, frechet_distance, kernel_distance

BLOCK_ROWS = 65536
TOTAL_ROWS = 100_000 if SETTINGS.quick else 1_000_000


@pytest.fixture(scope="module")
def block():
    return np.random.default_rng(0).standard_normal((BLOCK_ROWS, 128)).astype(np.float32)


def accumulate(block: np.ndarray, total_rows: int) -> StatsAccumulator:
    accumulator = StatsAccumulator()
    done = 0
    while done < total_rows:
        rows = min(BLOCK_ROWS, total_rows - done)
        accumulator.update(block[:rows] + np.float32(done % 7))  # a different block each time
        done += rows
    return accumulator


def test_stats_one_million(benchmark, block):
    accumulator = benchmark.pedantic(accumulate, args=(block, TOTAL_ROWS), rounds=2 if not SETTINGS.quick else 1)
    assert accumulator.count == TOTAL_ROWS
    seconds = benchmark.stats.stats.min
    benchmark.extra_info.update(rows=TOTAL_ROWS, rows_per_second=TOTAL_ROWS / seconds)


def _peak_bytes(block, total_rows) -> int:
    tracemalloc.start()
    try:
        accumulate(block, total_rows)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_stats_memory_flat_in_count(benchmark, block):
    small = _peak_bytes(block, TOTAL_ROWS // 10)
    large = benchmark.pedantic(_peak_bytes, args=(block, TOTAL_ROWS), rounds=1)
    benchmark.extra_info.update(peak_mb_small=small / 2**20, peak_mb_large=large / 2**20,
                                rows_small=TOTAL_ROWS // 10, rows_large=TOTAL_ROWS)
    assert large < small * 1.1 + 2**20  # flat: a 10x count may not grow the peak by more than 10 % + 1 MB


@pytest.fixture(scope="module")
def two_stats():
    rng = np.random.default_rng(1)
    a = compute_stats(rng.standard_normal((4000, 128)) @ rng.standard_normal((128, 128)) * 0.3)
    b = compute_stats(rng.standard_normal((4000, 128)) @ rng.standard_normal((128, 128)) * 0.3 + 0.1)
    return a, b


def test_frechet_distance(benchmark, two_stats):
    value = benchmark(frechet_distance, *two_stats)
    assert value > 0


def test_bootstrap_interval(benchmark):
    rng = np.random.default_rng(2)
    count = 50 if SETTINGS.quick else 500
    sides = [FileSet.from_embeddings((f"f{i}", rng.standard_normal((20, 128)) + shift) for i in range(count))
             for shift in (0.0, 0.05)]
    replicates = 20 if SETTINGS.quick else 100
    result = benchmark.pedantic(bootstrap_interval, args=tuple(sides), kwargs={"replicates": replicates}, rounds=1)
    benchmark.extra_info.update(files_per_side=count, replicates=replicates,
                                ms_per_replicate=1000 * benchmark.stats.stats.min / replicates, width=result["high"] - result["low"])


def test_kernel_distance(benchmark):
    rng = np.random.default_rng(3)
    n = 1000 if SETTINGS.quick else 5000
    x, y = rng.standard_normal((n, 128)), rng.standard_normal((n, 128)) + 0.05
    result = benchmark.pedantic(kernel_distance, args=(x, y), rounds=1)
    benchmark.extra_info.update(examples_per_side=n, kad=result.value)
