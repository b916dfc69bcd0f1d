"""Outputs for many small files: the write stage alone (no model, no manifest), issue 9.

10,000 files of 10 examples each (fake embeddings and post-processed rows, made as an engine
hands them over: their making is in every case's time) written as per-file npz, per-file Parquet,
and the sharded Parquet dataset (the default shard size, 100,000 examples, and 10,000). For each:
wall time of the writing (one round: the files are created once), files created, and the
writer's peak memory in a second pass (tracing slows the first): the Python heap (tracemalloc)
plus Arrow's buffers (a proxy memory pool; tracemalloc does not see them). Figures go to
extra_info; nothing is asserted about them.

    .venv/bin/python -m pytest benchmarks/test_outputs_scale.py --benchmark-columns=min,rounds
"""
from __future__ import annotations

import shutil
import time
import tracemalloc
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from conftest import SETTINGS
from vggish_tf2 import outputs
from vggish_tf2.corpus.engine import Embedded
from vggish_tf2.corpus.plan import Task
from vggish_tf2.corpus.write import open_writer
from vggish_tf2.embedder import FileResult
from vggish_tf2.inputs import InputFile
from vggish_tf2.options import RunOptions

pa = pytest.importorskip("pyarrow")

FILES = 200 if SETTINGS.quick else 10_000
EXAMPLES_PER_FILE = 10
METADATA = {"model": {"path": "/models/vggish", "hash": "sha256-files:" + "ab" * 32}, "synthetic_weights": True,
            "has_postprocessed": True, "resampler": "kaiser_best", "hop_seconds": 0.96}
CASES = {  # name: (format, layout, shard_rows)
    "npz files": ("npz", "files", None),
    "parquet files": ("parquet", "files", None),
    "parquet shards": ("parquet", "shards", 100_000),  # the default: one shard for these 100,000 examples
    "parquet shards of 10000": ("parquet", "shards", 10_000),  # the open shard's memory scales with it
}


def results(out_dir: Path, output_format: str, layout: str) -> Iterator[Embedded]:
    """Each file's own arrays, made as they are handed over (as an engine does), so a writer that
    keeps rows (an open shard) shows in the peak and one that writes them at once does not."""
    rng = np.random.default_rng(0)
    embedding = rng.standard_normal((EXAMPLES_PER_FILE, 128)).astype(np.float32)
    postprocessed = rng.integers(0, 256, (EXAMPLES_PER_FILE, 128), dtype=np.uint8)
    timestamps = np.arange(EXAMPLES_PER_FILE) * 0.96
    for i in range(FILES):
        relative = f"d{i // 1000:02d}/clip{i:05d}.wav"
        if layout == "files":
            output = outputs.safe_output_path(out_dir, relative, f".{output_format}")
            output_relative = output.relative_to(out_dir.resolve()).as_posix()
        else:
            output = output_relative = None
        task = Task(item=InputFile(Path("/corpus") / relative, relative), output=output,
                    output_relative=output_relative, signature=(320_044, 1_700_000_000_000_000_000 + i))
        # Distinct values per file (shifted copies), so compression does not see one file 10,000 times.
        result = FileResult(path=task.item.path, embedding=embedding + np.float32(i), timestamps=timestamps.copy(),
                            duration_seconds=9.6)
        yield Embedded(task=task, result=result, postprocessed=postprocessed + np.uint8(i % 256))


def write_all(out_dir: Path, output_format: str, layout: str, shard_rows: int | None) -> int:
    options = RunOptions(output_format=output_format, layout=layout, shard_rows=shard_rows or 100_000)
    writer = open_writer(out_dir, options=options, facts=None, base_metadata=METADATA, previous={})
    records = 0
    for embedded in results(out_dir, output_format, layout):
        records += len(writer.write(embedded))
    return records + len(writer.finish())


def files_under(directory: Path) -> int:
    return sum(1 for path in directory.rglob("*") if path.is_file())


@pytest.mark.benchmark(group="outputs-scale")
@pytest.mark.parametrize("case", list(CASES))
def test_write_many_small_files(benchmark, tmp_path, case):
    output_format, layout, shard_rows = CASES[case]
    out_dir = tmp_path / "out"

    def setup():
        shutil.rmtree(out_dir, ignore_errors=True)
        out_dir.mkdir()
        return (out_dir, output_format, layout, shard_rows), {}

    records = benchmark.pedantic(write_all, setup=setup, rounds=1, iterations=1)
    assert records == FILES
    created = files_under(out_dir)
    size_mb = sum(path.stat().st_size for path in out_dir.rglob("*") if path.is_file()) / 2**20
    shutil.rmtree(out_dir)
    out_dir.mkdir()
    default_pool = pa.default_memory_pool()
    arrow_pool = pa.proxy_memory_pool(default_pool)
    pa.set_memory_pool(arrow_pool)
    tracemalloc.start()
    try:
        started = time.perf_counter()
        write_all(out_dir, output_format, layout, shard_rows)
        traced_seconds = time.perf_counter() - started
        _, python_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        pa.set_memory_pool(default_pool)
    arrow_peak = arrow_pool.max_memory()
    seconds = benchmark.stats.stats.min
    benchmark.extra_info.update(files=FILES, examples=FILES * EXAMPLES_PER_FILE, files_created=created,
                                megabytes=round(size_mb, 1), files_per_second=round(FILES / seconds),
                                peak_python_mb=round(python_peak / 2**20, 2), peak_arrow_mb=round(arrow_peak / 2**20, 2),
                                traced_seconds=round(traced_seconds, 2))
    print(f"\n{case}: {seconds:.2f} s, {FILES / seconds:.0f} files/s, {created} files created, {size_mb:.1f} MB, "
          f"peak memory: Python {python_peak / 2**20:.2f} MB, Arrow {arrow_peak / 2**20:.2f} MB")
