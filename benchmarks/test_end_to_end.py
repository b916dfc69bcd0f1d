"""End to end: files -> embeddings with Embedder.embed_files (decode + resample on worker
threads, windows of many files packed into full batches, the device step), on a corpus of 10-s
clips (44.1 kHz stereo WAV, so resampling runs) and on one long file; and in the same session the
baseline (benchmarks/baseline.py: the replaced system, one file per call) on the same corpus.

Before each end-to-end round, the same files' windows (decoded beforehand) go through
`Embedder.embed_windows`, the device step in the same configuration: the model-only figure
measured next to each round, so that "end to end / model-only" is not spoilt by load changing
between benchmarks on a shared box.

extra_info: examples/s and audio seconds per second; for the Embedder, the device's share of the
wall time (device_seconds / wall) and the summed decode time; for the baseline, time per stage.
"""
from __future__ import annotations

import statistics
import time

import pytest

from conftest import SETTINGS


def _embed_all(embedder, paths) -> int:
    examples = 0
    for result in embedder.embed_files(paths):
        if not result.ok:
            raise result.error
        examples += len(result.embedding)
    return examples


def _stats_delta(embedder, before: dict) -> dict:
    after = embedder.stats.as_dict()
    return {k: after[k] - before[k] for k in ("examples", "audio_seconds", "decode_seconds", "device_seconds")}


def _record_embedder(benchmark, embedder, before: dict, rounds: int, examples: int, audio_seconds: float,
                     model_only_seconds: float) -> float:
    delta = _stats_delta(embedder, before)
    # The paired embed_windows calls count as device time too: take them out.
    delta["device_seconds"] -= model_only_seconds
    median = benchmark.stats.stats.median
    ex_per_s = examples / median
    total_wall = benchmark.stats.stats.total
    benchmark.extra_info.update({
        "examples_per_round": examples, "audio_seconds_per_round": round(audio_seconds, 1),
        "ex_per_s": round(ex_per_s, 2), "audio_s_per_s": round(audio_seconds / median, 1),
        "device_share_of_wall_pct": round(100 * delta["device_seconds"] / total_wall, 1),
        "decode_seconds_per_round": round(delta["decode_seconds"] / rounds, 2),
        "device_seconds_per_round": round(delta["device_seconds"] / rounds, 2),
        "batch_size": embedder.batch_size, "workers": embedder.workers, "device": embedder.device,
        "resampler": embedder.resampler, "frontend_precision": embedder.frontend_precision,
    })
    return ex_per_s


def _paired(benchmark, embedder, paths) -> tuple[int, float, dict, float]:
    """Time embed_files(paths) over the rounds; before each round (untimed by pytest-benchmark)
    time embedder.embed_windows on the same files' windows, pre-made: the model-only figure of the
    same configuration, measured next to each end-to-end round.

    Returns (examples per round, model-only ex/s, the Embedder's stats before the rounds, seconds
    spent in the model-only calls)."""
    import numpy as np

    from vggish_tf2 import audio, windows

    rows = np.concatenate([windows.frame_windows(audio.load_audio(p, resampler=embedder.resampler),
                                                 hop_samples=embedder.hop_samples) for p in paths])
    examples = _embed_all(embedder, paths)  # warm-up: traces the step shapes these files need
    embedder.embed_windows(rows)
    model_seconds = []

    def model_only():
        started = time.perf_counter()
        embedder.embed_windows(rows)
        model_seconds.append(time.perf_counter() - started)

    before = embedder.stats.as_dict()
    benchmark.pedantic(lambda: _embed_all(embedder, paths), setup=model_only, rounds=SETTINGS.e2e_rounds, iterations=1)
    model_ex_per_s = len(rows) / statistics.median(model_seconds)
    benchmark.extra_info.update({
        "model_only_ex_per_s_paired": round(model_ex_per_s, 2),
        "model_only_seconds_by_round": [round(t, 2) for t in model_seconds],
    })
    return examples, model_ex_per_s, before, sum(model_seconds)


@pytest.mark.benchmark(group="end-to-end")
def test_embed_files_clips(benchmark, embedder, clip_corpus, figures):
    examples, model_ex_per_s, before, model_total = _paired(benchmark, embedder, clip_corpus)
    audio_seconds = len(clip_corpus) * SETTINGS.corpus_clip_seconds
    benchmark.extra_info["files"] = len(clip_corpus)
    ex_per_s = _record_embedder(benchmark, embedder, before, SETTINGS.e2e_rounds, examples, audio_seconds, model_total)
    benchmark.extra_info["pct_of_model_only_paired"] = round(100 * ex_per_s / model_ex_per_s, 1)
    figures["e2e_clips_ex_per_s"] = ex_per_s
    figures["e2e_clips_pct_of_paired_model_only"] = 100 * ex_per_s / model_ex_per_s


@pytest.mark.benchmark(group="end-to-end")
def test_embed_files_long(benchmark, embedder, long_file, figures):
    examples, model_ex_per_s, before, model_total = _paired(benchmark, embedder, [long_file])
    ex_per_s = _record_embedder(benchmark, embedder, before, SETTINGS.e2e_rounds, examples,
                                SETTINGS.long_file_seconds, model_total)
    benchmark.extra_info["pct_of_model_only_paired"] = round(100 * ex_per_s / model_ex_per_s, 1)
    figures["e2e_long_ex_per_s"] = ex_per_s
    figures["e2e_long_pct_of_paired_model_only"] = 100 * ex_per_s / model_ex_per_s


@pytest.mark.benchmark(group="end-to-end")
def test_baseline_clips(benchmark, synthetic_checkpoint, clip_corpus, figures):
    from baseline import STAGES, BaselineVGGish

    baseline = BaselineVGGish(synthetic_checkpoint)
    try:
        baseline.embed_file(clip_corpus[0])  # warm-up: the Session's first run
        baseline.seconds = dict.fromkeys(STAGES, 0.0)
        baseline.examples = 0
        benchmark.pedantic(baseline.embed_files, args=(clip_corpus,), rounds=1, iterations=1)
    finally:
        baseline.close()
    median = benchmark.stats.stats.median
    ex_per_s = baseline.examples / median
    benchmark.extra_info.update({
        "files": len(clip_corpus), "examples_per_round": baseline.examples, "ex_per_s": round(ex_per_s, 2),
        "audio_s_per_s": round(len(clip_corpus) * SETTINGS.corpus_clip_seconds / median, 1),
        **{f"{stage}_seconds": round(seconds, 2) for stage, seconds in baseline.seconds.items()},
    })
    figures["baseline_clips_ex_per_s"] = ex_per_s
