"""The Ray Data engine (vggish_tf2.corpus.ray_engine) on a local Ray instance, CPU only.

One Ray instance (2 CPUs; the ray_session fixture of tests/conftest.py) serves the module, so its start-up is paid
once. The corpus mixes rates, channels and lengths (a 40-s file spans several Ray blocks, batches
and actor calls), a clip too short for one example, and a file that is not audio. The reference is the local engine
on the same synthetic export with the same fixed batch size and compile mode: the Ray engine's
results, and the files a run writes with it, must equal the local engine's bit for bit.
The parts that need no cluster are tested alone: test_ray_decode.py (a file longer than one
decoding block), test_ray_regroup.py, test_ray_stages.py (placement).
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("ray.data")

from vggish_tf2.corpus.ray_engine import RayEngine  # noqa: E402
from vggish_tf2.errors import InternalError, InvalidAudioError  # noqa: E402
from vggish_tf2.options import RunOptions  # noqa: E402

BATCH = 24  # two 12-row slices: a long file spans many actor calls


def write_noise(path: Path, seconds: float, *, rate: int = 16000, channels: int = 1, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sf.write(path, (0.1 * rng.standard_normal((int(round(seconds * rate)), channels))).astype(np.float32), rate)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Mixed rates and channels, 53 examples; mid.wav has 41 (several batches); short.wav (0.5 s)
    has none; bad.wav is text."""
    root = tmp_path_factory.mktemp("ray_corpus") / "corpus"
    write_noise(root / "a.wav", 3.5, seed=1)
    write_noise(root / "sub" / "b.flac", 7.2, rate=44100, channels=2, seed=2)
    write_noise(root / "sub" / "c.wav", 2.0, rate=48000, channels=2, seed=3)
    write_noise(root / "mid.wav", 40.0, rate=22050, seed=4)
    write_noise(root / "short.wav", 0.5, rate=22050, seed=5)
    (root / "bad.wav").write_text("not audio at all")
    return root


@pytest.fixture(scope="module")
def tasks(corpus):
    from vggish_tf2.corpus.plan import Task
    from vggish_tf2.inputs import expand_inputs

    return [Task(item=item, output=None, output_relative=None, signature=None) for item in expand_inputs([corpus])]


@pytest.fixture(scope="module")
def local_results(exported_model, tasks):
    """{relative: (FileResult, postprocessed)} from the local engine's Embedder, the reference."""
    from vggish_tf2.embedder import Embedder

    embedder = Embedder(exported_model, device="cpu", batch_size=BATCH, jit_compile=False, workers=2)
    out = {}
    for task, result in zip(tasks, embedder.embed_files([t.item.path for t in tasks])):
        post = embedder.postprocess(result.embedding) if result.status == "ok" else None
        out[task.item.relative] = (result, post)
    return out


def assert_same_as_local(embedded: list, local_results: dict) -> None:
    relatives = [e.task.item.relative for e in embedded]
    assert sorted(relatives) == sorted(local_results), "each task exactly once"
    for e in embedded:
        expected, post = local_results[e.task.item.relative]
        assert e.result.status == expected.status, e.task.item.relative
        assert e.result.path == expected.path
        if expected.status == "failed":
            assert type(e.result.error) is type(expected.error)
            assert str(e.result.error) == str(expected.error)
            assert e.postprocessed is None
            continue
        assert e.result.embedding.dtype == np.float32
        assert np.array_equal(e.result.embedding, expected.embedding), e.task.item.relative
        assert np.array_equal(e.result.timestamps, expected.timestamps)
        assert e.result.duration_seconds == expected.duration_seconds
        if post is None:
            assert e.postprocessed is None
        else:
            assert np.array_equal(e.postprocessed, post), e.task.item.relative


def descendants(pid: int) -> list[int]:
    """Processes descended from ``pid`` (Linux /proc): the local Ray instance's are this test's."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def actor_pids() -> list[int]:
    pids = []
    for pid in descendants(os.getpid()):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if title.startswith(b"ray::MapWorker(MapBatches(EmbedderActor))"):
            pids.append(pid)
    return pids


# --- the whole engine ---------------------------------------------------------------------------------
def test_results_equal_the_local_engine_bit_for_bit(ray_session, exported_model, tasks, local_results):
    engine = RayEngine(RunOptions(model=exported_model, engine="ray", batch_size=BATCH, device="cpu"))
    try:
        assert engine.facts.batch_size == BATCH and engine.facts.jit_compile is False
        assert engine.facts.has_pca and engine.facts.synthetic_weights
        assert engine.facts.device == "ray: 1 embedder actor, CPU"
        embedded = list(engine.results(tasks))
        assert_same_as_local(embedded, local_results)
        assert {e.task.item.relative: e.result.status for e in embedded}["short.wav"] == "skipped"
        assert isinstance({e.task.item.relative: e.result.error for e in embedded}["bad.wav"], InvalidAudioError)
        assert len({e.task.item.relative: e for e in embedded}["mid.wav"].result.embedding) == 41
    finally:
        engine.close()


def test_decoding_and_the_model_stay_separate_stages(ray_session, exported_model, tasks):
    """Ray fuses compatible map stages (it would, were the actors' resources the decoding tasks');
    fused, decoding would run inside the one actor. The optimized plan keeps two operators."""
    engine = RayEngine(RunOptions(model=exported_model, engine="ray", batch_size=BATCH, device="cpu"))
    try:
        shown = io.StringIO()
        with contextlib.redirect_stdout(shown):
            engine.dataset([t.item.path for t in tasks]).explain()
        physical = shown.getvalue().split("Physical Plan (Optimized)")[1]
        assert "ActorPoolMapOperator[MapBatches(EmbedderActor)]" in physical
        assert "TaskPoolMapOperator[MapBatches(decode_batch)]" in physical
    finally:
        engine.close()


def test_a_killed_actor_costs_nothing(ray_session, exported_model, tasks, local_results):
    """SIGKILL the embedder actor after the first file is out: Ray restarts it and retries its
    batch; every file still comes out exactly once, with the same numbers."""
    engine = RayEngine(RunOptions(model=exported_model, engine="ray", batch_size=12, device="cpu"))
    try:
        results = engine.results(tasks)
        embedded = [next(results)]
        killed = actor_pids()
        assert len(killed) == 1
        # The actor runs with its GPUs hidden (a CPU actor must not take a GPU's memory).
        environ = Path(f"/proc/{killed[0]}/environ").read_bytes().split(b"\0")
        assert b"CUDA_VISIBLE_DEVICES=" in environ
        os.kill(killed[0], signal.SIGKILL)
        seen = set()
        for result in results:  # the pool lives as long as the dataset runs: look while it does
            embedded.append(result)
            seen.update(actor_pids())
        assert seen - set(killed), "a new actor finished the files"  # (the killed one may linger a moment)
        assert_same_as_local(embedded, local_results)
    finally:
        engine.close()


def test_a_bug_in_decoding_stops_the_run_naming_the_file(ray_session, exported_model, tasks, monkeypatch):
    """Not a file's fault (here: a TypeError in the task, from a dtype name NumPy does not know):
    raised on the driver as InternalError naming the file, not recorded as the file's failure."""
    engine = RayEngine(RunOptions(model=exported_model, engine="ray", batch_size=BATCH, device="cpu"))
    try:
        broken = dataclasses.replace(engine.settings.decode, sample_dtype="no such dtype")
        monkeypatch.setattr(engine, "settings", dataclasses.replace(engine.settings, decode=broken))
        with pytest.raises(InternalError, match=r"a\.wav: TypeError while decoding"):
            list(engine.results(tasks[:1]))
    finally:
        engine.close()


def test_an_actor_without_the_model_stops_the_run_naming_the_path(ray_session, exported_model, tasks, monkeypatch,
                                                                  tmp_path):
    """A node without the model at the driver's path: the actors cannot start; the run stops with
    the Embedder's own ModelNotFoundError (Ray passes it on only as text), not a hang."""
    from vggish_tf2.errors import ModelNotFoundError

    engine = RayEngine(RunOptions(model=exported_model, engine="ray", batch_size=BATCH, device="cpu"))
    try:
        missing = dataclasses.replace(engine.settings.actor, model_path=str(tmp_path / "elsewhere"))
        monkeypatch.setattr(engine, "settings", dataclasses.replace(engine.settings, actor=missing))
        with pytest.raises(ModelNotFoundError, match=r"an embedder actor could not start: .*elsewhere: no model here"):
            list(engine.results(tasks[:1]))
    finally:
        engine.close()


def test_an_actor_whose_node_has_another_export_refuses_it(ray_session, exported_model, tasks, monkeypatch):
    """Each node loads its own copy of the model: one that is not the driver's (another hash list)
    would compute other numbers; its actors refuse to start, naming both fingerprints."""
    from vggish_tf2.errors import ModelError

    engine = RayEngine(RunOptions(model=exported_model, engine="ray", batch_size=BATCH, device="cpu"))
    try:
        other = dataclasses.replace(engine.settings.actor, model_fingerprint="sha256-files:" + "0" * 64)
        monkeypatch.setattr(engine, "settings", dataclasses.replace(engine.settings, actor=other))
        with pytest.raises(ModelError, match=r"this node's export is not the driver's \(sha256-files:[0-9a-f]{64}, "
                                             r"the driver's sha256-files:0{64}\)"):
            list(engine.results(tasks[:1]))
    finally:
        engine.close()


# --- whole runs: the same files as the local engine --------------------------------------------------------
RUN_FIELDS = {"batch_size": 12, "jit_compile": False, "device": "cpu"}


def run_outputs(out_dir: Path) -> dict[str, bytes]:
    """Every file a run left, by relative path, except the manifest (its lines come in the order
    files finish: compared as records)."""
    return {p.relative_to(out_dir).as_posix(): p.read_bytes() for p in sorted(out_dir.rglob("*"))
            if p.is_file() and p.name != "manifest.jsonl"}


def manifest_records(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "manifest.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def local_runs(tmp_path_factory, corpus, exported_model):
    """{format[+pool]: out_dir} of local-engine runs, made on first use."""
    from vggish_tf2.corpus import embed_corpus

    made: dict[str, Path] = {}

    def run(output_format: str) -> Path:
        if output_format not in made:
            out_dir = tmp_path_factory.mktemp(f"local_{output_format.replace('+', '_')}") / "out"
            fmt, _, pool = output_format.partition("+")
            embed_corpus([corpus], out_dir=out_dir, model=exported_model, output_format=fmt, pool=pool or "none",
                         **RUN_FIELDS)
            made[output_format] = out_dir
        return made[output_format]

    return run


@pytest.mark.parametrize("output_format", ["npz", "parquet", "tfrecord", "parquet+mean"])
def test_a_ray_run_writes_the_local_engines_files_byte_for_byte(ray_session, corpus, exported_model, local_runs,
                                                                 tmp_path, output_format):
    """Per-file outputs; "+mean": one vector per file (pool="mean", its post-processed row made
    on the driver from the mean, as the local engine makes it)."""
    from vggish_tf2.corpus import embed_corpus

    out_dir = tmp_path / "out"
    fmt, _, pool = output_format.partition("+")
    summary = embed_corpus([corpus], out_dir=out_dir, model=exported_model, output_format=fmt, pool=pool or "none",
                           engine="ray", **RUN_FIELDS)
    assert (summary.ok, summary.skipped, summary.failed) == (4, 1, 1)
    assert summary.examples == 53
    expected = local_runs(output_format)
    assert run_outputs(out_dir) == run_outputs(expected)
    key = lambda record: record["input"]  # noqa: E731
    assert sorted(manifest_records(out_dir), key=key) == sorted(manifest_records(expected), key=key)


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process it started (the local Ray instance of a driver)."""
    for child in [pid, *descendants(pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


def test_a_killed_driver_resumes_from_the_manifest(corpus, exported_model, local_runs, tmp_path):
    """`vggish-tf2 embed --engine ray` SIGKILLed once its first file is in the manifest, then run
    again: each file is written once (one ok record), and the outputs are the local engine's."""
    out_dir = tmp_path / "out"
    command = [sys.executable, "-m", "vggish_tf2", "embed", str(corpus), "--out", str(out_dir), "--model",
               str(exported_model), "--engine", "ray", "--batch-size", "12", "--no-jit-compile", "--device", "cpu",
               "--quiet"]
    manifest = out_dir / "manifest.jsonl"
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not (manifest.exists() and manifest.read_text().count("\n") >= 1):
            assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no file recorded in 240 s"
            time.sleep(0.05)
        ray_processes = descendants(driver.pid)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        _kill_tree(driver.pid)
        for pid in ray_processes if "ray_processes" in locals() else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    before = manifest_records(out_dir)
    assert 1 <= len(before) < 6, "the kill came before the run's end"

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 1, resumed.stderr[-2000:]  # bad.wav failed (again): exit 1
    records = manifest_records(out_dir)
    written = [r["input"] for r in records if r["status"] == "ok"]
    assert sorted(written) == ["a.wav", "mid.wav", "sub/b.flac", "sub/c.wav"], "each file written exactly once"
    assert run_outputs(out_dir) == run_outputs(local_runs("npz"))


def test_a_sharded_ray_run_holds_the_local_engines_rows(ray_session, corpus, exported_model, tmp_path):
    """layout="shards": the driver writes the rows in the order files complete, so the part files
    differ; the dataset they make holds the same rows as the local engine's (sorted by file and
    example), each file's once, and every ok record names the shard and rows that hold it."""
    import pyarrow.dataset

    from vggish_tf2.corpus import embed_corpus

    tables = {}
    for engine in ("local", "ray"):
        out_dir = tmp_path / engine
        embed_corpus([corpus], out_dir=out_dir, model=exported_model, output_format="parquet", layout="shards",
                     engine=engine, **RUN_FIELDS)
        table = pyarrow.dataset.dataset(out_dir / "embeddings", format="parquet").to_table()
        tables[engine] = table.sort_by([("file", "ascending"), ("index", "ascending")])
        for record in manifest_records(out_dir):
            if record["status"] == "ok":
                part = pyarrow.dataset.dataset(out_dir / record["output"], format="parquet").to_table()
                first, end = record["rows"]
                assert set(part.column("file").to_pylist()[first:end]) == {record["input"]}
                assert end - first == record["examples"]
    assert tables["ray"].num_rows == 53
    assert tables["ray"].equals(tables["local"])
