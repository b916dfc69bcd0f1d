"""Resampling alone, to 16 kHz, in audio seconds per second, per input rate: ours
(vggish_tf2.kaiser, resampy's kaiser_best as a polyphase product) vs resampy's kaiser_best itself
vs soxr HQ (the library's fast default). Mono float64 input, 20 s of tones + noise (2 s quick)."""
from __future__ import annotations

import time

import numpy as np
import pytest

from conftest import SETTINGS, synthetic_audio

RATES_HZ = (8000, 22050, 22051, 44056, 44100, 48000, 96000, 192000)
SECONDS = 2.0 if SETTINGS.quick else 20.0


def _resampler(method: str):
    if method == "ours":
        from vggish_tf2.kaiser import resample_kaiser_best

        return lambda x, rate: resample_kaiser_best(x, rate, target_sr=16000)
    if method == "resampy":
        resampy = pytest.importorskip("resampy")
        return lambda x, rate: resampy.resample(x, rate, 16000, filter="kaiser_best")
    import soxr

    return lambda x, rate: soxr.resample(x, rate, 16000, quality="HQ")


@pytest.fixture(scope="module")
def clips() -> dict[int, np.ndarray]:
    return {rate: synthetic_audio(SECONDS, rate, 1, seed=rate)[:, 0].astype(np.float64) for rate in RATES_HZ}


@pytest.mark.benchmark(group="resample")
@pytest.mark.parametrize("rate", RATES_HZ)
@pytest.mark.parametrize("method", ["ours", "resampy", "soxr_hq"])
def test_resample(benchmark, figures, clips, method, rate):
    resample = _resampler(method)
    x = clips[rate]
    resample(x[:rate], rate)  # warm-up: numba compile, filter tables
    cpu_started = time.process_time()
    resample(x, rate)
    cpu_seconds = time.process_time() - cpu_started
    benchmark.pedantic(lambda: resample(x, rate), rounds=3, iterations=1)
    audio_s_per_s = SECONDS / benchmark.stats.stats.median
    benchmark.extra_info.update({
        "audio_seconds": SECONDS,
        "audio_s_per_s": round(audio_s_per_s, 1),
        # CPU time of one call: steadier than wall time on a shared box
        "audio_s_per_cpu_s": round(SECONDS / max(cpu_seconds, 1e-9), 1),
    })
    figures[f"resample_{method}_{rate}_audio_s_per_s"] = audio_s_per_s
