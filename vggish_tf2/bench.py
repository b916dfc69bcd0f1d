"""``vggish-tf2 bench``'s measurements: what this machine does with VGGish, as one frozen result.

    from vggish_tf2.bench import BenchSettings, run_bench
    result = run_bench(BenchSettings(model="models/vggish", seconds=5.0))
    result.as_dict()   # what --json writes; vggish_tf2.bench_report.format_report prints it

Figures, each the median and the spread (min, max) of a few repeats within ``seconds``:

- the device step (the Embedder's own runner, at its batch size and compile mode, on noise
  windows): examples per second;
- end to end: generated 10-s 44.1 kHz stereo WAV clips through the real pipeline
  (:func:`vggish_tf2.corpus.run.embed_corpus` with the same Embedder, npz outputs in a temporary
  folder): examples and audio hours per second;
- decoding, per resampler: CPU seconds of one thread per audio second for what a decoding thread
  does (decode, mix, resample, cut into windows: :func:`vggish_tf2.corpus.decode.file_blocks`);
- from the two: the decoding cores one device needs to stay busy (its examples per second times
  the CPU seconds of decoding per example).

Nothing here prints; ``on_phase`` is told what is being measured. The batch size and compile mode
are the Embedder's: "auto" reads the tuning cache, or measures and caches them as ``vggish-tf2
embed`` would; a given batch size neither reads nor writes it.
"""
from __future__ import annotations

import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from vggish_tf2 import audio, params
from vggish_tf2.bench_machine import Machine, describe_machine
from vggish_tf2.errors import InternalError, InvalidArgumentError

SCHEMA = "vggish-tf2-bench/1"
DEFAULT_SECONDS = 5.0  # per measurement: the whole command takes ~30-60 s on a 2-core CPU
DEFAULT_CLIPS = 8  # 10-s clips: 80 examples per end-to-end pass
MIN_REPEATS = 3  # a median and a spread need a few
MAX_REPEATS = 30
CLIP_SECONDS = 10.0
CLIP_RATE_HZ = 44_100
CLIP_CHANNELS = 2


@dataclasses.dataclass(frozen=True)
class BenchSettings:
    """What to measure; checked here, once. None: the library's default (as ``vggish-tf2 embed``)."""

    model: str | os.PathLike | None = None
    device: str | None = None
    batch_size: int | str = "auto"
    jit_compile: bool | None = None
    resampler: str | None = None
    seconds: float = DEFAULT_SECONDS
    clips: int = DEFAULT_CLIPS

    def __post_init__(self) -> None:
        if isinstance(self.seconds, bool) or not isinstance(self.seconds, (int, float)) or not 0 < self.seconds < 1e6:
            raise InvalidArgumentError(f"seconds={self.seconds!r} must be a number of seconds > 0")
        if isinstance(self.clips, bool) or not isinstance(self.clips, int) or self.clips < 1:
            raise InvalidArgumentError(f"clips={self.clips!r} must be a positive integer")


@dataclasses.dataclass(frozen=True)
class Spread:
    """The median, min and max of a figure over ``repeats`` measurements."""

    median: float
    min: float
    max: float
    repeats: int

    @classmethod
    def of(cls, values: Sequence[float]) -> "Spread":
        return cls(median=float(statistics.median(values)), min=float(min(values)), max=float(max(values)),
                   repeats=len(values))


@dataclasses.dataclass(frozen=True)
class DeviceStep:
    batch_size: int  # per device
    rows_per_step: int  # all devices
    jit_compile: bool
    tuning: str  # "cache" or "probe" (batch size "auto"), "given"
    examples_per_second: Spread


@dataclasses.dataclass(frozen=True)
class EndToEnd:
    clips: int
    clip_seconds: float
    clip_rate_hz: int
    clip_channels: int
    resampler: str
    workers: int  # decoding threads
    examples_per_pass: int
    examples_per_second: Spread
    audio_hours_per_second: Spread
    share_of_device_step: float  # median end-to-end rate / median device step rate


@dataclasses.dataclass(frozen=True)
class Decoding:
    resampler: str
    cpu_seconds_per_audio_second: Spread
    audio_seconds_per_example: float  # of the generated clips
    cores_per_device: float  # decoding cores one device needs: its ex/s x CPU s per example


@dataclasses.dataclass(frozen=True)
class BenchResult:
    """Everything ``vggish-tf2 bench`` reports (``as_dict`` is its JSON)."""

    vggish_tf2_version: str | None
    started_at: str  # UTC, ISO 8601
    wall_seconds: float
    settings: BenchSettings
    model: dict  # path, synthetic_weights, frontend_precision
    machine: Machine
    load_average_before: tuple[float, float, float] | None
    load_average_after: tuple[float, float, float] | None
    device_step: DeviceStep
    end_to_end: EndToEnd
    decoding: tuple[Decoding, ...]

    @property
    def decoding_cores_per_device(self) -> float:
        """The cores for the resampler of the end-to-end run (the one the pipeline would use)."""
        return next(d.cores_per_device for d in self.decoding if d.resampler == self.end_to_end.resampler)

    def as_dict(self) -> dict:
        out = {"schema": SCHEMA, **dataclasses.asdict(self)}
        out["settings"]["model"] = None if self.settings.model is None else str(self.settings.model)
        out["decoding"] = {d["resampler"]: d for d in out["decoding"]}
        out["decoding_cores_per_device"] = self.decoding_cores_per_device
        return out


def load_average() -> tuple[float, float, float] | None:
    """The 1, 5 and 15-minute load averages (None where the system has none)."""
    try:
        return tuple(round(x, 2) for x in os.getloadavg())
    except (AttributeError, OSError):
        return None


def _version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("vggish-tf2")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return None


def repeat(measure: Callable[[], float], *, seconds: float) -> Spread:
    """``measure()`` MIN_REPEATS times, then again while ``seconds`` last (at most MAX_REPEATS)."""
    values: list[float] = []
    started = time.perf_counter()
    while len(values) < MIN_REPEATS or (time.perf_counter() - started < seconds and len(values) < MAX_REPEATS):
        values.append(measure())
    return Spread.of(values)


def measure_device_step(embedder, *, seconds: float) -> DeviceStep:
    """The Embedder's device step on noise windows, one full step per repeat, after one untimed
    step (tracing, XLA compiling)."""
    rows = embedder.rows_per_step
    windows = np.random.default_rng(0).uniform(-0.5, 0.5, (rows, params.EXAMPLE_WINDOW_SAMPLES))
    windows = windows.astype(embedder.sample_dtype)
    embedder.embed_rows(windows)

    def one_step() -> float:
        started = time.perf_counter()
        embedder.embed_rows(windows)
        return rows / (time.perf_counter() - started)

    spread = repeat(one_step, seconds=seconds)
    tuning = embedder.tuning.source if embedder.tuning is not None else "given"
    return DeviceStep(batch_size=embedder.batch_size, rows_per_step=embedder.rows_per_step,
                      jit_compile=embedder.jit_compile, tuning=tuning, examples_per_second=spread)


def synthetic_clip(*, seed: int) -> np.ndarray:
    """float32 [samples, CLIP_CHANNELS] at CLIP_RATE_HZ: three tones and noise, different per seed."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(CLIP_SECONDS * CLIP_RATE_HZ)) / CLIP_RATE_HZ
    tones = sum(0.2 * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f in rng.uniform(100, 4000, 3))
    noise = 0.1 * rng.standard_normal((len(t), CLIP_CHANNELS))
    return np.clip(tones[:, None] + noise, -1.0, 1.0 - 1.0 / 32768).astype(np.float32)


def write_clips(folder: Path, count: int) -> list[Path]:
    """``count`` generated 16-bit WAV clips (CLIP_SECONDS, CLIP_RATE_HZ, stereo) in ``folder``."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"clip_{index:04d}.wav"
        sf.write(str(path), synthetic_clip(seed=index), CLIP_RATE_HZ, subtype="PCM_16")
        paths.append(path)
    return paths


def measure_end_to_end(clips: Sequence[Path], *, embedder, work_dir: Path, seconds: float,
                       step_rate: float) -> EndToEnd:
    """``embed_corpus`` of ``clips`` with ``embedder`` into a new folder per pass (npz), after one
    untimed pass of one clip; each pass's examples and audio per second of its processing time."""
    from vggish_tf2.corpus.run import embed_corpus

    passes = iter(range(MAX_REPEATS + 2))
    summaries = []

    def one_pass(paths: Sequence[Path]):
        out_dir = work_dir / f"pass_{next(passes)}"
        summary = embed_corpus(paths, out_dir=out_dir, embedder=embedder)
        if summary.failed or summary.ok != len(paths):
            raise InternalError(f"{out_dir}: the generated clips did not all embed ({summary.failures[:1]})")
        return summary

    def timed_pass() -> float:
        summaries.append(one_pass(clips))
        return summaries[-1].examples_per_second

    one_pass(clips[:1])
    spread = repeat(timed_pass, seconds=seconds)
    hours = Spread.of([s.audio_seconds_per_second / 3600.0 for s in summaries])
    return EndToEnd(clips=len(clips), clip_seconds=CLIP_SECONDS, clip_rate_hz=CLIP_RATE_HZ,
                    clip_channels=CLIP_CHANNELS, resampler=embedder.resampler, workers=embedder.workers,
                    examples_per_pass=summaries[0].examples, examples_per_second=spread,
                    audio_hours_per_second=hours, share_of_device_step=spread.median / step_rate)


def measure_decoding(clips: Sequence[Path], *, resampler: str, embedder, seconds: float,
                     examples_per_second_per_device: float) -> Decoding:
    """CPU seconds of this thread per audio second to turn ``clips`` into example windows as the
    pipeline's decoding threads do (in the Embedder's sample dtype and hop), one pass per repeat."""
    from vggish_tf2.corpus.decode import file_blocks

    counts = {}

    def one_pass() -> float:
        cpu_started = time.thread_time()  # this thread only: TF's idle threads are not decoding
        samples = examples = 0
        for path in clips:
            file_samples = 0
            for block, decoded in file_blocks(path, resampler=resampler, hop_samples=embedder.hop_samples,
                                              short_clips=embedder.short_clips, dtype=embedder.sample_dtype):
                examples += len(block)
                file_samples = decoded  # 16 kHz samples decoded so far
            samples += file_samples
        cpu_seconds = time.thread_time() - cpu_started
        counts.update(samples=samples, examples=examples)
        return cpu_seconds / (samples / params.SAMPLE_RATE)

    spread = repeat(one_pass, seconds=seconds)
    audio_per_example = counts["samples"] / params.SAMPLE_RATE / max(1, counts["examples"])
    cores = examples_per_second_per_device * spread.median * audio_per_example
    return Decoding(resampler=resampler, cpu_seconds_per_audio_second=spread,
                    audio_seconds_per_example=audio_per_example, cores_per_device=cores)


def run_bench(settings: BenchSettings, *, on_phase: Callable[[str], None] | None = None) -> BenchResult:
    """Every measurement of ``settings``, in order: model and devices, device step, end to end, decoding."""
    from vggish_tf2.embedder import Embedder

    tell = on_phase or (lambda text: None)
    started, started_at = time.perf_counter(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load_before = load_average()
    tell("loading the model" + (" (and measuring the batch size: once per machine)"
                                if settings.batch_size == "auto" else ""))
    keywords = {"device": settings.device, "resampler": settings.resampler}
    embedder = Embedder(settings.model, batch_size=settings.batch_size,
                        jit_compile="auto" if settings.jit_compile is None else settings.jit_compile,
                        **{name: value for name, value in keywords.items() if value is not None})
    machine = describe_machine(device_preference=settings.device, plan=embedder.plan)
    tell(f"device step: {embedder.device}, batch {embedder.batch_size}")
    step = measure_device_step(embedder, seconds=settings.seconds)
    per_device = step.examples_per_second.median / len(embedder.plan.device_names)
    with tempfile.TemporaryDirectory(prefix="vggish-tf2-bench-") as work:
        clips = write_clips(Path(work) / "clips", settings.clips)
        tell(f"end to end: {len(clips)} generated clips of {CLIP_SECONDS:.0f} s")
        end_to_end = measure_end_to_end(clips, embedder=embedder, work_dir=Path(work) / "out",
                                        seconds=settings.seconds, step_rate=step.examples_per_second.median)
        decoding = []
        for resampler in audio.RESAMPLERS:
            tell(f"decoding with {resampler}")
            decoding.append(measure_decoding(clips, resampler=resampler, embedder=embedder, seconds=settings.seconds,
                                             examples_per_second_per_device=per_device))
    model = {"path": str(embedder.model_path), "synthetic_weights": embedder.synthetic_weights,
             "frontend_precision": embedder.frontend_precision}
    return BenchResult(vggish_tf2_version=_version(), started_at=started_at,
                       wall_seconds=time.perf_counter() - started, settings=settings, model=model, machine=machine,
                       load_average_before=load_before, load_average_after=load_average(), device_step=step,
                       end_to_end=end_to_end, decoding=tuple(decoding))


__all__ = ["BenchResult", "BenchSettings", "DEFAULT_CLIPS", "DEFAULT_SECONDS", "Decoding", "DeviceStep", "EndToEnd",
           "SCHEMA", "Spread", "load_average", "measure_decoding", "measure_device_step", "measure_end_to_end",
           "repeat", "run_bench", "synthetic_clip", "write_clips"]
