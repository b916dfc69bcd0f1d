"""The Ray Data engine vs the local engine on the same machine (issue 9), and what decoding costs.

Runs, in this order, in one session (the corpus: SETTINGS.corpus_files clips of 10 s, 44.1 kHz
stereo, 640 examples; 4 clips with VGGISH_BENCH_QUICK):

  ray start-up    `ray.init()` of a local instance (2 CPUs), in a fresh Python, three times
  decode cost     corpus.decode.file_blocks on one thread, float64 samples (the default float64
                  front end), per resampler: CPU seconds per second of 44.1 kHz stereo audio
  steady state    each engine in this process, batch 96 (the Ray engine's CPU default), no XLA,
                  on the corpus four times over (2,560 examples):
                  examples/s over the second half of the examples (see _timed_results), and
                  the time to the first file (Ray: actor start-up and a first batch)
  whole process   `vggish-tf2 embed DIR --engine local|ray --batch-size 96 --no-jit-compile`,
                  each a subprocess, wall time (Ray's own processes are not this process's
                  children: their CPU time is not counted, so only wall time is compared)

Figures go to the session summary (ray_* keys); benchmarks/README.md has a recorded run.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SETTINGS

pytest.importorskip("ray.data")

REPO = Path(__file__).resolve().parent.parent
BATCH = 96
STEADY_COPIES = 1 if SETTINGS.quick else 4
RUN_FLAGS = ["--batch-size", str(BATCH), "--no-jit-compile", "--device", "cpu", "--quiet"]
RAY_INIT = """
import time, ray
started = time.perf_counter()
ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
print(time.perf_counter() - started)
ray.shutdown()
"""


def test_ray_startup(figures):
    times = []
    for _ in range(1 if SETTINGS.quick else 3):
        done = subprocess.run([sys.executable, "-c", RAY_INIT], capture_output=True, text=True, check=True)
        times.append(float(done.stdout.strip().splitlines()[-1]))
    figures["ray_init_seconds_min"] = min(times)
    figures["ray_init_seconds_max"] = max(times)


@pytest.mark.parametrize("resampler", ["kaiser_best", "soxr_hq"])
def test_decode_cost(clip_corpus, figures, resampler):
    """CPU seconds of decoding (read, mix to mono, resample to 16 kHz, cut windows) per second of
    audio, on one thread: the cost model's CPU side (a decoding task is one core)."""
    import numpy as np

    from vggish_tf2.corpus.decode import file_blocks
    from vggish_tf2.embedder import Embedder  # noqa: F401  (imports what decoding needs, outside the timing)

    files = clip_corpus[: 4 if SETTINGS.quick else 16]
    list(file_blocks(files[0], resampler=resampler, hop_samples=15360, short_clips="drop", dtype=np.float64))  # warm
    cpu_started, wall_started = time.process_time(), time.perf_counter()
    for path in files:
        for _ in file_blocks(path, resampler=resampler, hop_samples=15360, short_clips="drop", dtype=np.float64):
            pass
    cpu = time.process_time() - cpu_started
    audio_seconds = len(files) * SETTINGS.corpus_clip_seconds
    figures[f"ray_decode_cpu_s_per_audio_s[{resampler}]"] = cpu / audio_seconds
    figures[f"ray_decode_wall_s_per_audio_s[{resampler}]"] = (time.perf_counter() - wall_started) / audio_seconds


def _timed_results(engine, tasks) -> dict[str, float]:
    """One results() call: seconds to the first file and to the last, and the steady rate: the
    examples of the files that came after half of all examples were out, over the time they took
    (by then the model is loaded, the actors started, and what queued while they started has
    drained; a file's examples count when the file comes out)."""
    started = time.perf_counter()
    arrivals: list[tuple[float, int]] = []
    for embedded in engine.results(tasks):
        arrivals.append((time.perf_counter(), 0 if embedded.result.embedding is None else len(embedded.result.embedding)))
    assert len(arrivals) == len(tasks)
    total = sum(n for _, n in arrivals)
    done, half = 0, 0
    while done < total / 2:
        done += arrivals[half][1]
        half += 1
    half_at, last_at = arrivals[half - 1][0], arrivals[-1][0]
    return {"first_file_seconds": arrivals[0][0] - started, "all_files_seconds": last_at - started,
            "steady_ex_per_s": (total - done) / (last_at - half_at), "examples": total}


@pytest.fixture(scope="module")
def steady_corpus(clip_corpus, tmp_path_factory) -> Path:
    """The corpus four times over (hard links under other names): 2,560 examples, so that the
    second half of a run is long against a batch (a few seconds of start-up jitter)."""
    out = tmp_path_factory.mktemp("steady_corpus")
    for copy in range(STEADY_COPIES):
        for path in clip_corpus:
            os.link(path, out / f"{copy}_{path.name}")
    return out


@pytest.mark.parametrize("engine_name", ["local", "ray"])
def test_steady_state(steady_corpus, model_dir, figures, engine_name):
    from vggish_tf2.corpus.plan import Task
    from vggish_tf2.inputs import expand_inputs
    from vggish_tf2.options import RunOptions

    options = RunOptions(model=model_dir, batch_size=BATCH, jit_compile=False, device="cpu", engine=engine_name)
    tasks = [Task(item=item, output=None, output_relative=None, signature=None)
             for item in expand_inputs([steady_corpus])]
    opened = time.perf_counter()
    if engine_name == "local":
        from vggish_tf2.corpus.local import LocalEngine

        engine = LocalEngine(options)
    else:
        import ray

        from vggish_tf2.corpus.ray_engine import RayEngine

        init_started = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
        figures["ray_in_process_init_seconds"] = time.perf_counter() - init_started
        engine = RayEngine(options)
    figures[f"ray_bench_open_seconds[{engine_name}]"] = time.perf_counter() - opened
    try:
        timed = _timed_results(engine, tasks)
    finally:
        engine.close()
        if engine_name == "ray":
            import ray

            ray.shutdown()
    for key, value in timed.items():
        figures[f"ray_bench_{key}[{engine_name}]"] = value


@pytest.mark.parametrize("engine_name", ["local", "ray"])
def test_whole_process(clip_corpus, model_dir, figures, engine_name, tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, "-m", "vggish_tf2", "embed", str(clip_corpus[0].parent), "--out", str(tmp_path / "out"),
               "--model", str(model_dir), "--engine", engine_name, *RUN_FLAGS]
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-2000:]
    figures[f"ray_whole_process_wall_seconds[{engine_name}]"] = wall
    figures[f"ray_whole_process_load_before[{engine_name}]"] = load_before
