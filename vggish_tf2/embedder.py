"""Embedder: waveforms and files -> VGGish embeddings, batched across files, on the chosen device(s).

    from vggish_tf2 import Embedder
    embedder = Embedder()                       # models/vggish, device="auto"
    embeddings = embedder.embed(waveform, sample_rate=44100)   # float32 [N, 128]
    for result in embedder.embed_files(paths):  # decoded ahead on CPU threads, packed into full batches
        ...

Devices are configured (tf.config) before the model is loaded, because loading initializes
TensorFlow's runtime, after which most device settings can no longer change.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from vggish_tf2 import audio, config, params, windows
from vggish_tf2.errors import InvalidArgumentError, InvalidAudioError, ModelError, VGGishError

logger = logging.getLogger(__name__)

DEFAULT_MODEL_SUBDIR = Path("models") / "vggish"
BLOCK_WINDOWS = 256  # windows per block handed from a decoding thread to the device stage
PREFETCH_BLOCKS = 4  # blocks a decoding thread may hold ahead of the device (bounds memory)


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
        return self.error is None


@dataclasses.dataclass
class EmbedderStats:
    """Counters, readable at any time as `embedder.stats`; logged at INFO by `log_stats()`."""

    device: str = ""
    batch_size: int = 0
    files: int = 0
    failed_files: int = 0
    examples: int = 0
    audio_seconds: float = 0.0
    decode_seconds: float = 0.0  # summed over decoding threads
    device_seconds: float = 0.0
    wall_seconds: float = 0.0

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
        jit_compile: bool = False,
        hop_seconds: float = params.EXAMPLE_HOP_SECONDS,
        short_clips: str = "drop",
        resampler: str = audio.DEFAULT_RESAMPLER,
        workers: int | None = None,
        verify_model_hashes: bool = True,
    ):
        from vggish_tf2 import devices as device_module

        settings = config.get_settings()
        preference = config.validate_device_preference(device if device is not None else settings.device_preference)
        fraction = config.validate_memory_fraction(memory_fraction if memory_fraction is not None else settings.gpu_memory_fraction)
        growth = config.validate_allow_growth(allow_growth if allow_growth is not None else settings.gpu_allow_growth)
        if compute_dtype not in ("float32", "float16", "bfloat16"):
            raise InvalidArgumentError(f"compute_dtype={compute_dtype!r} must be float32, float16 or bfloat16")
        if not (batch_size == "auto" or (isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size > 0)):
            raise InvalidArgumentError(f"batch_size={batch_size!r} must be a positive integer or 'auto'")
        if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
            raise InvalidArgumentError(f"workers={workers!r} must be a positive integer")
        self.hop_samples = params.example_hop_samples(hop_seconds)
        self.short_clips = short_clips
        windows.count_examples(0, hop_samples=self.hop_samples, short_clips=short_clips)  # validates both
        audio.resample(np.zeros(1, np.float32), params.SAMPLE_RATE, resampler=resampler)  # validates the name
        self.resampler = resampler
        self.workers = workers or max(1, min(4, (os.cpu_count() or 2) - 1))

        # Devices first: loading the model initializes TF's runtime.
        self.plan = device_module.configure_devices(preference, memory_fraction=fraction, allow_growth=growth, devices=devices)
        self._load_model(model, verify_hashes=verify_model_hashes)
        default_precision = "float32" if self.plan.device_type is device_module.DeviceType.METAL else "float64"
        self.frontend_precision = frontend_precision or default_precision
        per_device = device_module.suggest_batch_size(self.plan) if batch_size == "auto" else batch_size
        self._runner = None
        if self._export is not None:
            from vggish_tf2.runner import DeviceRunner

            self._runner = DeviceRunner(
                self._export.module.network,
                device_names=self.plan.device_names,
                batch_size=per_device,
                frontend_precision=self.frontend_precision,
                compute_dtype=compute_dtype,
                jit_compile=jit_compile,
            )
        self.compute_dtype = compute_dtype
        self.stats = EmbedderStats(device=", ".join(self.plan.device_names), batch_size=per_device)
        self._stats_lock = threading.Lock()

    # --- model -------------------------------------------------------------------------------
    def _load_model(self, model, *, verify_hashes: bool) -> None:
        self._export = None
        self._hub_model = None
        if isinstance(model, str) and _is_hub_handle(model):
            import tensorflow_hub as hub

            # A TF Hub VGGish (google/vggish/1): one waveform per call, tf.signal's mel matrix,
            # no PCA. Supported for comparison; batching and exact reference numbers need an export.
            self._hub_model = hub.load(model)
            self.model_path = model
            self.metadata: dict[str, Any] = {"source": model, "has_pca": False, "synthetic_weights": False}
            return
        if model is not None and not isinstance(model, (str, os.PathLike)):
            raise InvalidArgumentError(f"model={model!r} must be a model directory path or a TF Hub handle")
        from vggish_tf2.model import load_export

        path = Path(model) if model is not None else default_model_dir()
        self._export = load_export(path, verify_hashes=verify_hashes)
        self.model_path = str(path)
        self.metadata = self._export.metadata
        if self._export.synthetic_weights:
            logger.warning("%s holds SYNTHETIC WEIGHTS: its outputs are not VGGish embeddings", path)

    @property
    def device(self) -> str:
        """Where the device step runs, e.g. '/device:CPU:0' or '/device:GPU:0, /device:GPU:1'."""
        names = self._runner.device_names if self._runner is not None else self.plan.device_names
        return ", ".join(names)

    @property
    def batch_size(self) -> int:
        return self._runner.batch_size if self._runner is not None else 1

    @property
    def has_pca(self) -> bool:
        return bool(self.metadata.get("has_pca"))

    @property
    def synthetic_weights(self) -> bool:
        return bool(self.metadata.get("synthetic_weights"))

    # --- the device stage ----------------------------------------------------------------------
    def embed_windows(self, example_windows: np.ndarray) -> np.ndarray:
        """Embeddings float32 [n, 128] of example windows float32 [n, 15600] (16 kHz)."""
        example_windows = np.asarray(example_windows, dtype=np.float32)
        if example_windows.ndim != 2 or example_windows.shape[1] != params.EXAMPLE_WINDOW_SAMPLES:
            raise InvalidArgumentError(f"windows.shape={example_windows.shape} must be [n, {params.EXAMPLE_WINDOW_SAMPLES}]")
        if self._runner is not None:
            started = time.perf_counter()
            out = self._runner.run(example_windows)
            with self._stats_lock:
                self.stats.device_seconds += time.perf_counter() - started
                self.stats.examples += len(out)
            return out
        # TF Hub model: each window is exactly one example of its 1-D signature.
        rows = [np.asarray(self._hub_model(w))[:1] for w in example_windows]
        return np.concatenate(rows) if rows else np.zeros((0, params.EMBEDDING_SIZE), np.float32)

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
        audio._check_rate("sample_rate", sample_rate)  # named as the caller wrote it, not orig_sr
        waveform = np.asarray(waveform)
        if waveform.ndim not in (1, 2):
            raise InvalidAudioError(f"waveform.shape={waveform.shape} must be [samples] or [samples, channels]")
        if not np.issubdtype(waveform.dtype, np.floating):
            raise InvalidAudioError(f"waveform dtype {waveform.dtype} must be floating point in [-1, 1]")
        if not np.all(np.isfinite(waveform)):
            raise InvalidAudioError("waveform contains non-finite samples (NaN or Inf)")
        mono = audio.to_mono(waveform) if waveform.ndim == 2 else waveform.astype(np.float32)
        if sample_rate != params.SAMPLE_RATE:
            mono = audio.resample(mono, sample_rate, resampler=self.resampler)
        rows = windows.frame_windows(mono, hop_samples=self.hop_samples, short_clips=self.short_clips)
        with self._stats_lock:
            self.stats.audio_seconds += len(mono) / params.SAMPLE_RATE
        return self.embed_windows(rows)

    def timestamps(self, count: int) -> np.ndarray:
        """Start time in seconds of each of `count` examples."""
        return windows.example_start_seconds(count, hop_samples=self.hop_samples)

    # --- files ---------------------------------------------------------------------------------
    def embed_file(self, path: str | os.PathLike) -> np.ndarray:
        """Embeddings float32 [N, 128] of an audio file (streamed: memory is flat in its length)."""
        result = next(iter(self.embed_files([path])))
        if result.error is not None:
            raise result.error
        return result.embedding

    def _file_blocks(self, path: Path) -> Iterator[tuple[np.ndarray, float]]:
        """Blocks of windows of one file, and the number of 16 kHz samples decoded so far."""
        chunks = audio.stream_audio(path, resampler=self.resampler)
        decoded = 0

        def counted():
            nonlocal decoded
            for chunk in chunks:
                decoded += len(chunk)
                yield chunk

        block: list[np.ndarray] = []
        for window in windows.iter_windows(counted(), hop_samples=self.hop_samples, short_clips=self.short_clips):
            block.append(window)
            if len(block) == BLOCK_WINDOWS:
                yield np.stack(block), decoded
                block = []
        yield (np.stack(block) if block else np.zeros((0, params.EXAMPLE_WINDOW_SAMPLES), np.float32)), decoded

    def _decode_into(self, path: Path, out: queue.Queue, cancelled: threading.Event) -> None:
        started = time.perf_counter()
        try:
            for block, decoded in self._file_blocks(path):
                while not cancelled.is_set():
                    try:
                        out.put(("block", block, decoded), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if cancelled.is_set():
                    return
            out.put(("end", None, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which reports it per file
            out.put(("error", e, None))
        finally:
            with self._stats_lock:
                self.stats.decode_seconds += time.perf_counter() - started

    def embed_files(self, paths: Iterable[str | os.PathLike]) -> Iterator[FileResult]:
        """FileResult per path, in input order. Files are decoded ahead on `workers` threads and their
        examples packed into full device batches. A file that fails yields a FileResult with
        `.error` set (the others go on)."""
        from vggish_tf2.batching import pack_and_run

        paths = [Path(p) for p in paths]
        started = time.perf_counter()
        cancelled = threading.Event()
        queues: dict[int, queue.Queue] = {}
        outcome: dict[int, dict[str, Any]] = {}
        executor = concurrent.futures.ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="vggish-decode")
        lookahead = self.workers + 1
        submitted = 0

        def submit_up_to(limit: int) -> None:
            nonlocal submitted
            while submitted < min(limit, len(paths)):
                q: queue.Queue = queue.Queue(maxsize=PREFETCH_BLOCKS)
                queues[submitted] = q
                executor.submit(self._decode_into, paths[submitted], q, cancelled)
                submitted += 1

        def blocks() -> Iterator[tuple[int, np.ndarray, bool]]:
            for index in range(len(paths)):
                submit_up_to(index + 1 + lookahead)
                q = queues[index]
                state: dict[str, Any] = {"samples": 0, "error": None}
                outcome[index] = state
                pending_block = None
                while True:
                    kind, payload, decoded = q.get()
                    if kind == "block":
                        if pending_block is not None:
                            yield index, pending_block, False
                        pending_block = payload
                        state["samples"] = decoded
                    elif kind == "end":
                        yield index, pending_block if pending_block is not None else _EMPTY, True
                        break
                    else:
                        state["error"] = payload
                        # Rows already queued for this file are still computed; they are discarded.
                        yield index, _EMPTY, True
                        break
                del queues[index]

        try:
            runner = self._runner
            run = self.embed_windows
            rows_per_step = (lambda: runner.rows_per_step) if runner is not None else (lambda: 1)
            for index, embedding in pack_and_run(blocks(), run, rows_per_step=rows_per_step):
                state = outcome.pop(index)
                duration = state["samples"] / params.SAMPLE_RATE
                with self._stats_lock:
                    self.stats.device = self.device
                    self.stats.files += 1
                    self.stats.wall_seconds = time.perf_counter() - started
                    if state["error"] is not None:
                        self.stats.failed_files += 1
                    else:
                        self.stats.audio_seconds += duration
                if state["error"] is not None:
                    yield FileResult(paths[index], None, None, None, error=_as_vggish_error(paths[index], state["error"]))
                else:
                    yield FileResult(paths[index], embedding, self.timestamps(len(embedding)), duration)
        finally:
            cancelled.set()
            executor.shutdown(wait=True, cancel_futures=True)

    def log_stats(self) -> None:
        s = self.stats
        s.device = self.device  # the runner may have fallen back to the CPU since
        rate = s.examples / s.device_seconds if s.device_seconds else 0.0
        logger.info(
            "%d files (%d failed), %d examples, %.1f audio s on %s (batch %d): device %.1f s (%.1f ex/s), decode %.1f s",
            s.files, s.failed_files, s.examples, s.audio_seconds, s.device, self.batch_size, s.device_seconds, rate, s.decode_seconds,
        )


_EMPTY = np.zeros((0, params.EXAMPLE_WINDOW_SAMPLES), np.float32)


def _as_vggish_error(path: Path, error: BaseException) -> BaseException:
    if isinstance(error, VGGishError):
        return error
    if isinstance(error, (KeyboardInterrupt, SystemExit)):
        raise error
    wrapped = InvalidAudioError(f"{path}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
    wrapped.__cause__ = error
    return wrapped
