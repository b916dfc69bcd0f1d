"""Layout "shards" through the real CLI: kill -9 at random moments, resume, and every file's rows
are present exactly once in the Parquet dataset, equal to an uninterrupted run's.

Small shards (``--shard-rows 6``: a few files each) so that kills land before, inside and after
shard writes, and between a shard's rename and its records' append.
"""
from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

import reliability_corpus as corpus_kinds
from test_reliability import TEMPORARY, cli_command, cli_env, manifest_records, run_cli
from vggish_tf2.corpus.manifest import MANIFEST_NAME
from vggish_tf2.corpus.shards import DATASET_DIR

pa = pytest.importorskip("pyarrow")
ds = pytest.importorskip("pyarrow.dataset")
pq = pytest.importorskip("pyarrow.parquet")

CLI = ["--device", "cpu", "--batch-size", "12", "--workers", "2", "--quiet", "--format", "parquet",
       "--layout", "shards", "--shard-rows", "6"]
FILES = 40


def rows_by_file(dataset_dir: Path) -> dict[str, tuple[list[int], np.ndarray]]:
    table = ds.dataset(dataset_dir, format="parquet").to_table()
    found = {}
    for file in dict.fromkeys(table.column("file").to_pylist()):
        mine = table.filter(pa.compute.equal(table.column("file"), file))
        found[file] = (mine.column("index").to_pylist(),
                       np.asarray(mine.column("embedding").combine_chunks().flatten()).reshape(-1, 128))
    return found


def manifest_lines(out_dir: Path) -> int:
    try:
        return (out_dir / MANIFEST_NAME).read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


@pytest.fixture(scope="module")
def sharded_reference(tmp_path_factory, exported_model):
    root = tmp_path_factory.mktemp("shards") / "corpus"
    names = corpus_kinds.write_short_corpus(root, FILES, seed=11)
    reference = tmp_path_factory.mktemp("reference") / "out"
    done = run_cli(root, "--out", reference, "--model", exported_model, *CLI)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return root, names, reference


def test_kill_9_during_a_sharded_run_then_resume_keeps_every_files_rows_once(sharded_reference, exported_model,
                                                                             tmp_path):
    root, names, reference = sharded_reference
    expected = rows_by_file(reference / DATASET_DIR)
    assert sorted(expected) == sorted(names)
    out_dir = tmp_path / "out"
    rng = random.Random(7)
    kills = 0
    for target in sorted(rng.sample(range(1, FILES - 10), 3)):
        process = subprocess.Popen(cli_command(root, "--out", out_dir, "--model", exported_model, *CLI),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=cli_env())
        deadline = time.monotonic() + 300
        while manifest_lines(out_dir) < target and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.25))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        _, stderr = process.communicate(timeout=60)
        assert process.returncode in (-signal.SIGKILL, 0), stderr.decode()[-2000:]
        # What a kill leaves: every ok record names a shard that holds exactly that file's rows.
        for record in manifest_records(out_dir):
            if record["status"] == "ok":
                first, end = record["rows"]
                shard = pq.read_table(out_dir / record["output"]).slice(first, end - first)
                assert shard.column("file").to_pylist() == [record["input"]] * record["examples"]
    assert kills >= 2  # the run is long enough for the kills to land in it
    done = run_cli(root, "--out", out_dir, "--model", exported_model, *CLI)
    assert done.returncode == 0, done.stderr.decode()[-2000:]

    resumed = rows_by_file(out_dir / DATASET_DIR)
    assert sorted(resumed) == sorted(expected)
    for name, (index, embedding) in expected.items():
        assert resumed[name][0] == index, name  # each row once: 0..n-1, no repeats
        np.testing.assert_array_equal(resumed[name][1], embedding, err_msg=name)
    leftovers = [p.name for p in out_dir.rglob("*") if TEMPORARY.match(p.name)]
    assert leftovers == []
    last = {}
    for record in manifest_records(out_dir):
        last[record["input"]] = record
    assert sorted(last) == sorted(names) and {r["status"] for r in last.values()} == {"ok"}
    named = {r["output"] for r in last.values()}
    assert {f"{DATASET_DIR}/{p.name}" for p in (out_dir / DATASET_DIR).iterdir()} == named  # no orphan left
    assert sorted(p.name for p in out_dir.iterdir()) == sorted([DATASET_DIR, MANIFEST_NAME, "run_config.json"])
