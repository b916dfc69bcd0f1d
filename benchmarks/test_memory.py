"""Memory, in a fresh process each (long: set VGGISH_BENCH_LONG=1; see README):

- a 3-hour 16 kHz WAV (about 350 MB, written in chunks) embedded with Embedder.embed_files:
  peak RSS of the child; target < 2 GB, i.e. memory flat in file length. The child's own
  high-water mark (VmHWM) is the figure: on Linux resource.getrusage's ru_maxrss (RUSAGE_SELF in
  the child, RUSAGE_CHILDREN in the parent) also carries the high-water mark of the image before
  exec, i.e. of the forking pytest process (TF and models loaded: ~2 GB); both are recorded too;
- 10,000 one-second files in one embed_files call: RSS after warm-up (the first 10 % of files)
  vs at the end (target growth < 10 %), and wall time per 1,000 files along the run (per-file
  overhead should stay constant).

The child prints one JSON line; the figures go to extra_info. Timings are reported, not asserted.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import SETTINGS, write_long_wav

CHILD = textwrap.dedent('''
    import json, os, resource, sys, time
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from vggish_tf2.embedder import Embedder

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def peak_rss_mb():
        # VmHWM: this process image's own high-water mark. ru_maxrss would also carry the
        # pre-exec image's (Linux keeps it across exec), i.e. the forking pytest process's size.
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    model_dir, list_file, every = sys.argv[1], sys.argv[2], int(sys.argv[3])
    paths = open(list_file).read().splitlines()
    embedder = Embedder(model_dir)
    rss_after_init = rss_mb()
    started = time.perf_counter()
    samples, files, examples = [], 0, 0
    for result in embedder.embed_files(paths):
        if not result.ok:
            raise result.error
        files += 1
        examples += len(result.embedding)
        if files % every == 0 or files == len(paths):
            samples.append({"files": files, "seconds": round(time.perf_counter() - started, 2), "rss_mb": round(rss_mb(), 1)})
    wall = time.perf_counter() - started
    stats = embedder.stats.as_dict()
    print(json.dumps({
        "files": files, "examples": examples, "wall_seconds": wall, "samples": samples,
        "peak_rss_mb": peak_rss_mb(), "ru_maxrss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_init_mb": rss_after_init,
        "device_seconds": stats["device_seconds"], "decode_seconds": stats["decode_seconds"],
    }))
''')


def _run_child(model_dir: Path, paths: list[Path], list_file: Path, every: int) -> dict:
    list_file.write_text("\n".join(str(p) for p in paths))
    proc = subprocess.run([sys.executable, "-c", CHILD, str(model_dir), str(list_file), str(every)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    report["children_maxrss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return report


@pytest.mark.long
@pytest.mark.benchmark(group="memory")
def test_three_hour_file_peak_rss(benchmark, model_dir, tmp_path, figures):
    path = write_long_wav(tmp_path / "three_hours.wav", SETTINGS.three_hour_seconds, 16000, 1)
    reports = []
    benchmark.pedantic(lambda: reports.append(_run_child(model_dir, [path], tmp_path / "list.txt", 1)),
                       rounds=1, iterations=1)
    report = reports[0]
    benchmark.extra_info.update({
        "audio_seconds": SETTINGS.three_hour_seconds, "file_mb": round(path.stat().st_size / 2**20, 1),
        "examples": report["examples"], "peak_rss_mb": round(report["peak_rss_mb"], 1),
        "rss_after_init_mb": round(report["rss_after_init_mb"], 1),
        "ru_maxrss_self_mb": round(report["ru_maxrss_self_mb"], 1),
        "children_maxrss_mb": round(report["children_maxrss_mb"], 1),
        "ex_per_s": round(report["examples"] / report["wall_seconds"], 2),
        "device_seconds": round(report["device_seconds"], 1), "wall_seconds": round(report["wall_seconds"], 1),
    })
    figures["memory_3h_peak_rss_mb"] = report["peak_rss_mb"]
    path.unlink()


@pytest.mark.long
@pytest.mark.benchmark(group="memory")
def test_many_short_files_rss(benchmark, model_dir, tmp_path, figures):
    import soundfile as sf

    from conftest import synthetic_audio

    corpus = tmp_path / "short"
    corpus.mkdir()
    paths = []
    for i in range(SETTINGS.load_files):
        path = corpus / f"{i // 1000:02d}" / f"short_{i:05d}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(str(path), synthetic_audio(SETTINGS.load_file_seconds, 16000, 1, seed=i), 16000, subtype="PCM_16")
        paths.append(path)
    every = max(1, SETTINGS.load_files // 20)
    reports = []
    benchmark.pedantic(lambda: reports.append(_run_child(model_dir, paths, tmp_path / "list.txt", every)),
                       rounds=1, iterations=1)
    report = reports[0]
    samples = report["samples"]
    warm = next(s for s in samples if s["files"] >= SETTINGS.load_files // 10)
    end = samples[-1]
    growth = 100 * (end["rss_mb"] - warm["rss_mb"]) / warm["rss_mb"]
    # Wall seconds per 1,000 files, segment by segment after warm-up: flat if per-file cost is constant.
    per_k = [round(1000 * (b["seconds"] - a["seconds"]) / (b["files"] - a["files"]), 1)
             for a, b in zip(samples, samples[1:]) if a["files"] >= warm["files"]]
    overhead_ms = 1000 * (report["wall_seconds"] - report["device_seconds"]) / report["files"]
    benchmark.extra_info.update({
        "files": report["files"], "examples": report["examples"],
        "rss_after_warmup_mb": warm["rss_mb"], "rss_end_mb": end["rss_mb"], "rss_growth_pct": round(growth, 2),
        "peak_rss_mb": round(report["peak_rss_mb"], 1), "seconds_per_1000_files_by_segment": per_k,
        "files_per_s": round(report["files"] / report["wall_seconds"], 1),
        "wall_minus_device_ms_per_file": round(overhead_ms, 2), "device_seconds": round(report["device_seconds"], 1),
        "rss_samples": samples,
    })
    figures["load_rss_growth_pct"] = growth
    figures["load_ms_per_file_beyond_device"] = overhead_ms
