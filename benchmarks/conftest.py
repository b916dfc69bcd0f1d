"""Session fixtures for the benchmarks: a model export, a generated corpus, the GEMM ceiling.

Settings (environment, read once here):
  VGGISH_BENCH_MODEL   an export directory to benchmark (default: a synthetic export converted
                       once per session into a temporary directory; weights do not change speed)
  VGGISH_BENCH_QUICK   1: tiny sizes, to check that the benchmarks run (figures mean nothing)
  VGGISH_BENCH_LONG    1: also run the long memory/load runs (3-hour file, 10,000 files)
  VGGISH_DEVICE_PREFERENCE  the library's own device setting (auto, cpu, gpu, metal)

See benchmarks/README.md.
"""
from __future__ import annotations

import os

# Before TensorFlow is imported anywhere in the session: keep its C++ logging quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import dataclasses  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

SYNTHETIC_SEED = 1234
GFLOP_PER_EXAMPLE = 1.728  # VGGish forward pass, multiply-adds x 2 (PLATFORM_FACTS)


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@dataclasses.dataclass(frozen=True)
class BenchSettings:
    quick: bool
    long: bool
    model_dir: str | None
    # sizes
    gemm_n: int
    batch_sizes: tuple[int, ...]
    model_rows_per_round: int  # examples per timed round of the model-only benchmark
    model_rounds: int
    corpus_files: int
    corpus_clip_seconds: float
    corpus_rate_hz: int
    corpus_channels: int
    long_file_seconds: float
    e2e_rounds: int
    three_hour_seconds: float
    load_files: int
    load_file_seconds: float
    whole_process_files: int  # issue 10's corpus: 120 clips of 10 s, 44.1 kHz stereo


def _settings() -> BenchSettings:
    quick = _flag("VGGISH_BENCH_QUICK")
    return BenchSettings(
        quick=quick,
        long=_flag("VGGISH_BENCH_LONG"),
        model_dir=os.environ.get("VGGISH_BENCH_MODEL") or None,
        gemm_n=512 if quick else 2048,
        batch_sizes=(8, 16) if quick else (32, 64, 128, 256),
        model_rows_per_round=16 if quick else 256,
        model_rounds=1 if quick else 2,
        # 64 clips of 10 s = 640 examples = 2 full batches of 256 + one of 128 (no padded rows)
        corpus_files=4 if quick else 64,
        corpus_clip_seconds=10.0,
        corpus_rate_hz=44100,
        corpus_channels=2,
        long_file_seconds=30.0 if quick else 600.0,
        e2e_rounds=1 if quick else 2,
        three_hour_seconds=120.0 if quick else 3 * 3600.0,
        load_files=200 if quick else 10_000,
        load_file_seconds=1.0,  # one example each (0.975 s is the shortest clip that gives one)
        whole_process_files=6 if quick else 120,
    )


SETTINGS = _settings()


def pytest_configure(config):
    config.addinivalue_line("markers", "long: long memory/load runs; set VGGISH_BENCH_LONG=1")


def pytest_collection_modifyitems(config, items):
    if SETTINGS.long:
        return
    skip = pytest.mark.skip(reason="long run: set VGGISH_BENCH_LONG=1")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)


def pytest_report_header(config):
    return (f"vggish benchmarks: quick={SETTINGS.quick} long={SETTINGS.long} "
            f"model={SETTINGS.model_dir or 'synthetic export'} "
            f"device={os.environ.get('VGGISH_DEVICE_PREFERENCE', 'auto')}")


@pytest.fixture(scope="session")
def bench_settings() -> BenchSettings:
    return SETTINGS


# --- Model ----------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def synthetic_checkpoint(tmp_path_factory) -> Path:
    """A seeded synthetic TF1 checkpoint (V1): the baseline restores it; the export is converted from it."""
    from convert.synthetic import write_synthetic_checkpoint

    checkpoint, _ = write_synthetic_checkpoint(tmp_path_factory.mktemp("checkpoint"), seed=SYNTHETIC_SEED)
    return Path(checkpoint)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, synthetic_checkpoint) -> Path:
    """VGGISH_BENCH_MODEL, or a synthetic export (float64 front end) converted once per session."""
    if SETTINGS.model_dir:
        return Path(SETTINGS.model_dir)
    from convert.checkpoint_to_savedmodel import convert
    from convert.synthetic import PCA_PARAMS_NAME

    output = tmp_path_factory.mktemp("export") / "vggish"
    convert(checkpoint=synthetic_checkpoint, pca_params=synthetic_checkpoint.parent / PCA_PARAMS_NAME,
            output=output, frontend_precision="float64", synthetic_weights=True)
    return output


@pytest.fixture(scope="session")
def device_plan():
    """Devices configured as the Embedder would (VGGISH_DEVICE_PREFERENCE etc.), before any TF work."""
    from vggish_tf2 import config, devices

    settings = config.get_settings()
    return devices.configure_devices(settings.device_preference, memory_fraction=settings.gpu_memory_fraction,
                                     allow_growth=settings.gpu_allow_growth)


@pytest.fixture(scope="session")
def loaded_export(device_plan, model_dir):
    from vggish_tf2.model import load_export

    return load_export(model_dir)


@pytest.fixture(scope="session")
def embedder(device_plan, model_dir):
    """The default Embedder (batch size 'auto', jit_compile=False, float64 front end on CPU/CUDA)."""
    from vggish_tf2.embedder import Embedder

    return Embedder(model_dir)


# --- The machine's ceiling -------------------------------------------------------------------------
def numpy_gemm_gflops(n: int, repeats: int = 7) -> float:
    """Median float32 GEMM rate of numpy over `repeats` n x n products, in GFLOP/s."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm-up (thread pool start)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - started)
    return 2.0 * n**3 / float(np.median(times)) / 1e9


# --- Generated audio -------------------------------------------------------------------------------
def synthetic_audio(seconds: float, rate_hz: int, channels: int, *, seed: int) -> np.ndarray:
    """Float32 [n, channels] in [-1, 1): a few tones plus noise, different per seed."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * rate_hz))
    t = np.arange(n, dtype=np.float64) / rate_hz
    tone = sum(0.2 * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f in rng.uniform(100, 4000, 3))
    out = np.empty((n, channels), np.float32)
    for c in range(channels):
        out[:, c] = (tone + 0.1 * rng.standard_normal(n)).astype(np.float32)
    return np.clip(out, -1.0, 1.0 - 1.0 / 32768)


def write_long_wav(path: Path, seconds: float, rate_hz: int, channels: int, *, chunk_seconds: float = 60.0) -> Path:
    """A long 16-bit WAV written chunk by chunk (memory stays small whatever its length)."""
    import soundfile as sf

    with sf.SoundFile(str(path), "w", samplerate=rate_hz, channels=channels, subtype="PCM_16", format="WAV") as f:
        done, index = 0.0, 0
        while done < seconds:
            step = min(chunk_seconds, seconds - done)
            f.write(synthetic_audio(step, rate_hz, channels, seed=10_000 + index))
            done += step
            index += 1
    return path


@pytest.fixture(scope="session")
def clip_corpus(tmp_path_factory) -> list[Path]:
    """SETTINGS.corpus_files WAV files of 10 s, 44.1 kHz stereo 16-bit (so resampling is exercised)."""
    import soundfile as sf

    out = tmp_path_factory.mktemp("corpus")
    paths = []
    for i in range(SETTINGS.corpus_files):
        path = out / f"clip_{i:04d}.wav"
        sf.write(str(path), synthetic_audio(SETTINGS.corpus_clip_seconds, SETTINGS.corpus_rate_hz,
                                            SETTINGS.corpus_channels, seed=i), SETTINGS.corpus_rate_hz,
                 subtype="PCM_16")
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def whole_process_corpus(tmp_path_factory) -> Path:
    """A directory of SETTINGS.whole_process_files clips like clip_corpus's (issue 10's corpus)."""
    import soundfile as sf

    out = tmp_path_factory.mktemp("whole_process_corpus")
    for i in range(SETTINGS.whole_process_files):
        sf.write(str(out / f"clip_{i:04d}.wav"), synthetic_audio(SETTINGS.corpus_clip_seconds, SETTINGS.corpus_rate_hz,
                                                                   SETTINGS.corpus_channels, seed=i),
                 SETTINGS.corpus_rate_hz, subtype="PCM_16")
    return out


@pytest.fixture(scope="session")
def long_file(tmp_path_factory) -> Path:
    """One long WAV (10 min; 44.1 kHz stereo like the corpus)."""
    out = tmp_path_factory.mktemp("long")
    return write_long_wav(out / "long.wav", SETTINGS.long_file_seconds, SETTINGS.corpus_rate_hz, SETTINGS.corpus_channels)


@pytest.fixture(scope="session")
def example_windows() -> np.ndarray:
    """Pre-made example windows float32 [max(batch, rows per round), 15600] of 16 kHz audio."""
    from vggish_tf2 import params, windows

    rows = max(max(SETTINGS.batch_sizes), SETTINGS.model_rows_per_round)
    seconds = ((rows - 1) * params.EXAMPLE_HOP_SAMPLES + params.EXAMPLE_WINDOW_SAMPLES) / params.SAMPLE_RATE + 0.01
    mono = synthetic_audio(seconds, params.SAMPLE_RATE, 1, seed=99)[:, 0]
    out = windows.frame_windows(mono)[:rows]
    assert len(out) == rows
    return out


# --- Figures shared between benchmarks, and the targets summary ------------------------------------
FIGURES: dict[str, float] = {}  # filled by the benchmarks of this session, read by the summary below
WHOLE_PROCESS_LINES: list[str] = []  # benchmarks/test_whole_process.py's table, printed in the summary


@pytest.fixture(scope="session")
def figures() -> dict[str, float]:
    return FIGURES


def _ratio_line(label: str, numerator: str, denominator: str, target: float, unit: str = "x") -> str | None:
    if numerator not in FIGURES or denominator not in FIGURES or not FIGURES[denominator]:
        return None
    value = FIGURES[numerator] / FIGURES[denominator]
    shown = f"{100 * value:.0f} %" if unit == "%" else f"{value:.2f}x"
    wanted = f"{100 * target:.0f} %" if unit == "%" else f"{target:.2f}x"
    verdict = "met" if value >= target else "NOT met"
    return f"{label}: {shown} (target >= {wanted}: {verdict})"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not FIGURES:
        return
    tr = terminalreporter
    tr.section("vggish targets (this run only; the box may be shared: check `uptime`)")
    for key in sorted(FIGURES):
        tr.write_line(f"{key} = {FIGURES[key]:.4g}")
    for key in sorted(k for k in FIGURES if k.startswith("model_pct_of_adjacent_gemm[")):
        pct = FIGURES[key]
        tr.write_line(f"model stage {key[len('model_pct_of_adjacent_gemm'):]} vs numpy GEMM measured just before/after: "
                      f"{pct:.0f} % (target >= 85 %: {'met' if pct >= 85 else 'NOT met'})")
    for name in ("clips", "long"):
        key = f"e2e_{name}_pct_of_paired_model_only"
        if key in FIGURES:
            pct = FIGURES[key]
            tr.write_line(f"end to end ({name}) vs model-only on the same windows, measured between its rounds: "
                          f"{pct:.0f} % (target >= 85 %: {'met' if pct >= 85 else 'NOT met'})")
    for line in WHOLE_PROCESS_LINES:
        tr.write_line(line)
    line = _ratio_line("end to end (10-s clips) vs baseline", "e2e_clips_ex_per_s", "baseline_clips_ex_per_s", 2.0)
    if line:
        tr.write_line(line)
    if "memory_3h_peak_rss_mb" in FIGURES:
        peak = FIGURES["memory_3h_peak_rss_mb"]
        tr.write_line(f"3-hour file peak RSS: {peak:.0f} MB (target < 2048 MB: {'met' if peak < 2048 else 'NOT met'})")
    if "load_rss_growth_pct" in FIGURES:
        growth = FIGURES["load_rss_growth_pct"]
        tr.write_line(f"10k-files RSS growth after warm-up: {growth:.1f} % (target < 10 %: {'met' if growth < 10 else 'NOT met'})")
