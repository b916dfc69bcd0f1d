"""End to end: files -> embeddings with Embedder.embed_files (decode + resample on worker
threads, windows of many files packed into full batches, the device step), on a corpus of 10-s
clips (44.1 kHz stereo WAV, so resampling runs) and on one long file; and in the same session the
baseline (benchmarks/baseline.py: the replaced system, one file per call) on the same corpus.

extra_info: examples/s and audio seconds per second; for the Embedder, the device's share of the
wall time (device_seconds / wall) and the summed decode time; for the baseline, time per stage.
"""
from __future__ import annotations

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


def _record_embedder(benchmark, embedder, before: dict, rounds: int, examples: int, audio_seconds: float) -> float:
    delta = _stats_delta(embedder, before)
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


@pytest.mark.benchmark(group="end-to-end")
def test_embed_files_clips(benchmark, embedder, clip_corpus, figures):
    examples = _embed_all(embedder, clip_corpus)  # warm-up: traces the step shapes this corpus needs
    before = embedder.stats.as_dict()
    benchmark.pedantic(_embed_all, args=(embedder, clip_corpus), rounds=SETTINGS.e2e_rounds, iterations=1)
    audio_seconds = len(clip_corpus) * SETTINGS.corpus_clip_seconds
    benchmark.extra_info["files"] = len(clip_corpus)
    figures["e2e_clips_ex_per_s"] = _record_embedder(benchmark, embedder, before, SETTINGS.e2e_rounds, examples, audio_seconds)


@pytest.mark.benchmark(group="end-to-end")
def test_embed_files_long(benchmark, embedder, long_file, figures):
    examples = _embed_all(embedder, [long_file])
    before = embedder.stats.as_dict()
    benchmark.pedantic(_embed_all, args=(embedder, [long_file]), rounds=SETTINGS.e2e_rounds, iterations=1)
    figures["e2e_long_ex_per_s"] = _record_embedder(benchmark, embedder, before, SETTINGS.e2e_rounds, examples,
                                                    SETTINGS.long_file_seconds)


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
