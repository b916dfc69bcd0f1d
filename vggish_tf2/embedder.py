"""Embedder: waveforms and files -> VGGish embeddings, batched across files, on the chosen device(s).

    from vggish_tf2 import Embedder
    embedder = Embedder()                       # models/vggish, device="auto"
    embeddings = embedder.embed(waveform, sample_rate=44100)   # float32 [N, 128]
    for result in embedder.embed_files(paths):  # decoded ahead on CPU threads, packed into full batches
        ...

Devices are configured (tf.config) before the model is loaded, because loading initializes
TensorFlow's runtime, after which most device settings can no longer change. The Embedder is
"windows -> device step -> rows"; decoding files ahead on threads and packing their windows into
full steps is the corpus stages' work (:mod:`vggish_tf2.corpus.decode`, :mod:`vggish_tf2.corpus.embed`),
which ``embed_files`` runs.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from vggish_tf2 import audio, config, params, windows
from vggish_tf2.errors import InvalidArgumentError, InvalidAudioError, ModelError, ModelNotFoundError, VGGishError
from vggish_tf2.options import RunOptions

logger = logging.getLogger(__name__)

DEFAULT_MODEL_SUBDIR = Path("models") / "vggish"
CPU_MAX_PROBE_BATCH = 96  # the largest batch size batch_size="auto" tries on the CPU (vggish_tf2.tuning)


@dataclasses.dataclass(frozen=True)
class FileResult:
    """One input file's outcome from `Embedder.embed_files`."""

    path: Path
    embedding: np.ndarray | None  # float32 [N, 128]; None when the file failed
    timestamps: np.ndarray | None  # float64 [N] start of each example in seconds
    duration_seconds: float | None  # of the decoded 16 kHz audio
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        """Decoded without error (a clip too short for one example is ok, and also `skipped`)."""
        return self.error is None

    @property
    def skipped(self) -> bool:
        """Decoded, but no example: shorter than one example (0.975 s) with short_clips="drop"."""
        return self.error is None and self.embedding is not None and len(self.embedding) == 0

    @property
    def status(self) -> str:
        """"ok", "skipped" or "failed": the word the CLI's manifest and summary use."""
        return "failed" if self.error is not None else ("skipped" if self.skipped else "ok")


@dataclasses.dataclass
class EmbedderStats:
    """Counters, readable at any time as `embedder.stats`; logged at INFO by `log_stats()`."""

    device: str = ""
    batch_size: int = 0
    files: int = 0
    failed_files: int = 0
    examples: int = 0
    audio_seconds: float = 0.0
    decode_seconds: float = 0.0  # summed over decoding threads (may exceed wall_seconds)
    device_seconds: float = 0.0  # inside device steps; at most wall_seconds
    wall_seconds: float = 0.0  # summed over embed, embed_windows and embed_files calls

    def __post_init__(self) -> None:
        self._lock = threading.Lock()  # not a field: as_dict and replace leave it out

    def add(self, **amounts: float) -> None:
        """Add ``amounts`` to the counters they name (from any thread)."""
        with self._lock:
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def default_model_dir() -> Path:
    """VGGISH_MODEL_DIR, else ./models/vggish, else models/vggish beside the installed package."""
    settings = config.get_settings()
    if settings.model_dir:
        return Path(settings.model_dir)
    here = Path.cwd() / DEFAULT_MODEL_SUBDIR
    if here.exists():
        return here
    return Path(__file__).resolve().parent.parent / DEFAULT_MODEL_SUBDIR


def _is_hub_handle(model: str) -> bool:
    return model.startswith(("http://", "https://", "gs://")) or (model.count("/") == 2 and not Path(model).exists() and "/vggish/" in model)


def waveform_windows(waveform: np.ndarray, *, sample_rate: int, resampler: str, hop_samples: int, short_clips: str,
                     dtype: type) -> tuple[np.ndarray, int]:
    """(example windows [n, 15600] of ``dtype``, length of the 16 kHz mono signal in samples) of a
    mono [samples] or multichannel [samples, channels] float waveform at ``sample_rate`` Hz.

    The front half of :meth:`Embedder.embed` (its checks, mixing, resampling and framing), also run
    by the Ray Dataset API's decoding tasks (vggish_tf2.corpus.ray_api), so both refuse the same
    waveforms with the same words and make the same windows.
    """
    audio._check_rate("sample_rate", sample_rate)  # named as the caller wrote it, not orig_sr
    waveform = np.asarray(waveform)
    if waveform.ndim not in (1, 2):
        raise InvalidAudioError(f"waveform.shape={waveform.shape} must be [samples] or [samples, channels]")
    if waveform.ndim == 2 and waveform.shape[1] > waveform.shape[0]:
        # More channels than samples: almost surely librosa's channels-first layout, which
        # would otherwise be read as a handful of samples and silently give no example.
        raise InvalidAudioError(
            f"waveform.shape={waveform.shape} looks channels-first ([channels, samples], librosa's layout); "
            "pass waveform.T: embed expects [samples] or [samples, channels]"
        )
    if not np.issubdtype(waveform.dtype, np.floating):
        raise InvalidAudioError(f"waveform dtype {waveform.dtype} must be floating point in [-1, 1]")
    if not np.all(np.isfinite(waveform)):
        raise InvalidAudioError("waveform contains non-finite samples (NaN or Inf)")
    mono = audio.to_mono(waveform, dtype=dtype)
    if sample_rate != params.SAMPLE_RATE:
        mono = audio.resample(mono, sample_rate, resampler=resampler, dtype=dtype)
    return windows.frame_windows(mono, hop_samples=hop_samples, short_clips=short_clips, dtype=dtype), len(mono)


class Embedder:
    """VGGish embeddings on the best device available (see README: Devices)."""

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        *,
        device: str | None = None,
        memory_fraction: float | None = None,
        allow_growth: bool | None = None,
        devices: Sequence[int | str] | None = None,
        batch_size: int | str = "auto",
        frontend_precision: str | None = None,
        compute_dtype: str = "float32",
        jit_compile: bool | str = "auto",
        hop_seconds: float = params.EXAMPLE_HOP_SECONDS,
        short_clips: str = "drop",
        resampler: str = audio.DEFAULT_RESAMPLER,
        workers: int | None = None,
        verify_model_hashes: bool = True,
    ):
        from vggish_tf2 import devices as device_module

        if not (jit_compile == "auto" or isinstance(jit_compile, bool)):
            raise InvalidArgumentError(f"jit_compile={jit_compile!r} must be True, False or 'auto'")
        # The settings a corpus run shares are checked by RunOptions, the one gate for them.
        options = RunOptions(
            model=model, device=device, memory_fraction=memory_fraction, batch_size=batch_size,
            jit_compile=None if jit_compile == "auto" else jit_compile, resampler=resampler,
            frontend_precision=frontend_precision, short_clips=short_clips, hop_seconds=hop_seconds, workers=workers,
            verify_model_hashes=verify_model_hashes)
        settings = config.get_settings()  # the environment's defaults, validated when read
        preference = options.device if options.device is not None else settings.device_preference
        fraction = options.memory_fraction if options.memory_fraction is not None else settings.gpu_memory_fraction
        growth = config.validate_allow_growth(allow_growth if allow_growth is not None else settings.gpu_allow_growth)
        if compute_dtype not in ("float32", "float16", "bfloat16"):
            raise InvalidArgumentError(f"compute_dtype={compute_dtype!r} must be float32, float16 or bfloat16")
        self.hop_samples = options.hop_samples
        self.short_clips = short_clips
        self.resampler = resampler
        self.workers = workers or max(1, min(4, (os.cpu_count() or 2) - 1))
        model_path = self._check_model_location(model)  # before TensorFlow: a wrong path fails at once

        # Devices first: loading the model initializes TF's runtime.
        self.plan = device_module.configure_devices(preference, memory_fraction=fraction, allow_growth=growth, devices=devices)
        asked_jit = jit_compile if isinstance(jit_compile, bool) else False
        compute = device_module.resolve_compute_options(self.plan, frontend_precision=frontend_precision, jit_compile=asked_jit)
        self.frontend_precision = compute.frontend_precision
        self.verify_model_hashes = bool(verify_model_hashes)  # the pipeline's fingerprint depends on it
        self._load_model(model, model_path, verify_hashes=verify_model_hashes)
        self.tuning = None  # the tuning.Choice when batch size and compile mode were measured
        self._runner = None
        if self._export is not None:
            self._runner = self._make_runner(compute, batch_size=batch_size, jit_compile=jit_compile,
                                             compute_dtype=compute_dtype)
        self.compute_dtype = compute_dtype
        # float64 samples from decoding to a float64 front end, as the reference's; float32 otherwise.
        self.sample_dtype = self._runner.window_dtype if self._runner is not None else np.float32
        self.stats = EmbedderStats(device=", ".join(self.plan.device_names), batch_size=self.batch_size)

    @classmethod
    def from_options(cls, options: RunOptions, **extra: Any) -> "Embedder":
        """The Embedder of a run's options (None fields: the defaults); ``extra``: the keywords
        RunOptions has no field for (``allow_growth``, ``devices``, ``compute_dtype``)."""
        given = {"device": options.device, "memory_fraction": options.memory_fraction,
                 "frontend_precision": options.frontend_precision, "short_clips": options.short_clips,
                 "hop_seconds": options.hop_seconds, "resampler": options.resampler, "workers": options.workers,
                 "jit_compile": options.jit_compile}
        return cls(options.model, batch_size=options.batch_size, verify_model_hashes=options.verify_model_hashes,
                   **{name: value for name, value in given.items() if value is not None}, **extra)

    # --- the device step: built, and tuned when batch_size="auto" ------------------------------
    def _runner_factory(self, compute, *, compute_dtype: str):
        """``make(jit_compile, batch_size)`` -> a DeviceRunner as this Embedder runs it. Without XLA, on
        one device, in float32 with the export's own front-end precision, the step is the export's
        restored ``embed_windows`` (the same graph, already traced: no tracing at start-up)."""
        from vggish_tf2.runner import DeviceRunner

        def make(jit_compile: bool, batch_size: int) -> DeviceRunner:
            reuse = (not jit_compile and compute_dtype == "float32" and compute.frontend_device is None
                     and len(self.plan.device_names) == 1
                     and self.metadata.get("frontend_precision") == self.frontend_precision)
            return DeviceRunner(
                self._export.module.network,
                device_names=self.plan.device_names,
                batch_size=batch_size,
                frontend_precision=self.frontend_precision,
                compute_dtype=compute_dtype,
                jit_compile=jit_compile,
                frontend_device=compute.frontend_device,
                prebuilt_step=self._export.module.embed_windows if reuse else None,
            )

        return make

    def _make_runner(self, compute, *, batch_size, jit_compile, compute_dtype: str):
        """The runner with the batch size and compile mode asked, or measured (vggish_tf2.tuning)
        when batch_size is "auto": both, or only the mode at a given size when jit_compile is
        "auto", or only the size when it is a bool. A given batch size with jit_compile "auto" means
        no XLA and no probe. Metal: graph only (XLA has no compiler there)."""
        from vggish_tf2 import devices as device_module
        from vggish_tf2 import tuning

        make = self._runner_factory(compute, compute_dtype=compute_dtype)
        if batch_size != "auto":
            return make(jit_compile if isinstance(jit_compile, bool) else False, batch_size)
        if isinstance(jit_compile, bool):
            modes = [compute.jit_compile]  # Metal turned an asked True off, with a warning
        else:
            modes = [False] if self.plan.device_type is device_module.DeviceType.METAL else [False, True]
        key = tuning.machine_key(
            device_names=self.plan.device_names, device_descriptions=tuning.device_descriptions(self.plan),
            model_fingerprint=self._model_fingerprint(), frontend_precision=self.frontend_precision,
            compute_dtype=compute_dtype)
        window_dtype = np.float64 if self.frontend_precision == "float64" else np.float32
        choice, runners = tuning.resolve(make, key=key, modes=modes, window_dtype=window_dtype,
                                         max_batch_size=self._max_probe_batch(self.plan))
        self.tuning = choice
        runner = runners.get(choice.jit_compile) or make(choice.jit_compile, choice.batch_size)
        runner.batch_size = choice.batch_size
        runner.stats.__init__()  # the probe's steps are not the run's
        return runner

    @staticmethod
    def _max_probe_batch(plan) -> int:
        """The largest batch the probe may try: the memory bound on accelerators; on the CPU
        CPU_MAX_PROBE_BATCH (slices run one after another, so a step's memory is one slice's
        whatever its size; beyond ~100 rows a step only delays the first output)."""
        from vggish_tf2 import devices as device_module

        if plan.device_type is device_module.DeviceType.CPU:
            return CPU_MAX_PROBE_BATCH
        return device_module.suggest_batch_size(plan)

    def _model_fingerprint(self) -> str:
        from vggish_tf2.hashing import export_fingerprint

        try:
            return export_fingerprint(Path(self.model_path))
        except VGGishError:
            return f"path:{Path(self.model_path).resolve()}"

    @property
    def jit_compile(self) -> bool:
        """Whether the device step is XLA-compiled (asked, or chosen by tuning). It decides float32
        roundings: the pipeline records it in run_config.json."""
        return bool(self._runner is not None and self._runner.jit_compile)

    # --- model -------------------------------------------------------------------------------
    @staticmethod
    def _check_model_location(model) -> Path | None:
        """The export directory `model` names (None for a TF Hub handle), checked without TF."""
        if isinstance(model, str) and _is_hub_handle(model):
            return None
        if model is not None and not isinstance(model, (str, os.PathLike)):
            raise InvalidArgumentError(f"model={model!r} must be a model directory path or a TF Hub handle")
        path = Path(model) if model is not None else default_model_dir()
        if not path.exists():
            raise ModelNotFoundError(
                f"{path}: no model here. Convert Google's checkpoint once with "
                "`python -m convert.checkpoint_to_savedmodel --download` (or --checkpoint/--pca-params for your own "
                "copies); `bash scripts/demo.sh` makes a SYNTHETIC one (not VGGish numbers) for trying things out; "
                "or pass model=DIR (on the command line: --model DIR) or set VGGISH_MODEL_DIR"
            )
        return path

    def _load_model(self, model, path: Path | None, *, verify_hashes: bool) -> None:
        self._export = None
        self._hub_model = None
        if path is None:
            try:
                import tensorflow_hub as hub
            except ImportError as e:
                raise InvalidArgumentError(
                    f"model={model!r} is a TF Hub handle, which needs tensorflow-hub: pip install 'vggish-tf2[hub]'"
                ) from e

            # A TF Hub VGGish (google/vggish/1): one waveform per call, tf.signal's mel matrix,
            # no PCA. Supported for comparison; batching and exact reference numbers need an export.
            self._hub_model = hub.load(model)
            self.model_path = model
            self.metadata: dict[str, Any] = {"source": model, "has_pca": False, "synthetic_weights": False}
            return
        from vggish_tf2.model import load_export

        self._export = load_export(path, verify_hashes=verify_hashes)
        self.model_path = str(path)
        self.metadata = self._export.metadata
        if self._export.synthetic_weights:
            logger.warning("%s: SYNTHETIC WEIGHTS: these are not VGGish embeddings", path)

    @property
    def device(self) -> str:
        """Where the device step runs, e.g. '/device:CPU:0' or '/device:GPU:0, /device:GPU:1'."""
        names = self._runner.device_names if self._runner is not None else self.plan.device_names
        return ", ".join(names)

    @property
    def batch_size(self) -> int:
        """Examples per device per step: a multiple of vggish_tf2.step.STEP_EXAMPLES (1 for TF Hub)."""
        return self._runner.batch_size if self._runner is not None else 1

    @property
    def has_pca(self) -> bool:
        return bool(self.metadata.get("has_pca"))

    @property
    def synthetic_weights(self) -> bool:
        return bool(self.metadata.get("synthetic_weights"))

    # --- the device stage ----------------------------------------------------------------------
    def embed_windows(self, example_windows: np.ndarray) -> np.ndarray:
        """Embeddings float32 [n, 128] of example windows [n, 15600] (16 kHz, float32 or float64).

        Each row's embedding depends on that row alone, bit for bit: not on n, its place or the
        other rows (see vggish_tf2.step).
        """
        with self._wall_clock():
            return self.embed_rows(example_windows)

    def embed_rows(self, example_windows: np.ndarray) -> np.ndarray:
        """``embed_windows`` without adding to ``stats.wall_seconds``: for stages that count their
        own wall time (vggish_tf2.corpus.embed), so that no second is counted twice."""
        example_windows = np.asarray(example_windows)
        if example_windows.ndim != 2 or example_windows.shape[1] != params.EXAMPLE_WINDOW_SAMPLES:
            raise InvalidArgumentError(f"windows.shape={example_windows.shape} must be [n, {params.EXAMPLE_WINDOW_SAMPLES}]")
        if self._runner is not None:
            started = time.perf_counter()
            out = self._runner.run(example_windows.astype(self.sample_dtype, copy=False))
            self.stats.add(device_seconds=time.perf_counter() - started, examples=len(out))
            return out
        # TF Hub model: each window is exactly one example of its 1-D signature.
        rows = [np.asarray(self._hub_model(w.astype(np.float32)))[:1] for w in example_windows]
        return np.concatenate(rows) if rows else np.zeros((0, params.EMBEDDING_SIZE), np.float32)

    @property
    def rows_per_step(self) -> int:
        """Rows one device step takes now (all devices; follows a batch halved on OOM)."""
        return self._runner.rows_per_step if self._runner is not None else 1

    @contextlib.contextmanager
    def _wall_clock(self):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.stats.add(wall_seconds=time.perf_counter() - started)

    def postprocess(self, embeddings: np.ndarray) -> np.ndarray:
        """AudioSet's PCA + 8-bit quantization: float32 [N, 128] -> uint8 [N, 128]."""
        if not self.has_pca:
            raise ModelError(f"{self.model_path}: this model has no PCA parameters (convert with --pca-params)")
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[1] != params.EMBEDDING_SIZE:
            raise InvalidArgumentError(f"embeddings.shape={embeddings.shape} must be [N, {params.EMBEDDING_SIZE}]")
        return np.asarray(self._export.module.postprocess(embeddings))

    # --- waveforms -----------------------------------------------------------------------------
    def embed(self, waveform: np.ndarray, *, sample_rate: int) -> np.ndarray:
        """Embeddings float32 [N, 128] of a mono [samples] or multichannel [samples, channels] waveform."""
        with self._wall_clock():
            rows, samples = waveform_windows(waveform, sample_rate=sample_rate, resampler=self.resampler,
                                             hop_samples=self.hop_samples, short_clips=self.short_clips,
                                             dtype=self.sample_dtype)
            self.stats.add(audio_seconds=samples / params.SAMPLE_RATE)
            return self.embed_rows(rows)

    def timestamps(self, count: int) -> np.ndarray:
        """Start time in seconds of each of `count` examples."""
        return windows.example_start_seconds(count, hop_samples=self.hop_samples)

    # --- files ---------------------------------------------------------------------------------
    def embed_file(self, path: str | os.PathLike) -> np.ndarray:
        """Embeddings float32 [N, 128] of an audio file (streamed: memory is flat in its length)."""
        results = self.embed_files([path])
        try:
            result = next(results)
        finally:
            results.close()
        if result.error is not None:
            raise result.error
        return result.embedding

    def embed_files(self, paths: Iterable[str | os.PathLike]) -> Iterator[FileResult]:
        """FileResult per path, in input order. Files are decoded ahead on `workers` threads and their
        examples packed into full device batches (vggish_tf2.corpus.embed). A file that cannot be
        read or decoded yields a FileResult with `.error` set (the others go on); anything else (a
        bug) raises InternalError naming the file. Closing the iterator early (break, Ctrl-C)
        stops the decoding threads."""
        from vggish_tf2.corpus.embed import embed_files

        return embed_files(self, paths)

    def log_stats(self) -> None:
        s = self.stats
        s.device = self.device  # the runner may have fallen back to the CPU since
        rate = s.examples / s.device_seconds if s.device_seconds else 0.0
        logger.info(
            "%d files (%d failed), %d examples, %.1f audio s on %s (batch %d): device %.1f s (%.1f ex/s), decode %.1f s",
            s.files, s.failed_files, s.examples, s.audio_seconds, s.device, self.batch_size, s.device_seconds, rate, s.decode_seconds,
        )
