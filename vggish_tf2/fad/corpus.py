"""One side of a comparison: its embeddings, file by file, and its statistics.

A side is given as any of:

- audio: a directory (walked recursively), an audio file, a glob, several paths, or a list file
  (one path a line, ``#`` comments, as ``vggish-tf2 embed --from-list``); embedded here;
- an output directory of ``vggish-tf2 embed`` (it holds ``run_config.json`` and
  ``manifest.jsonl``): the embeddings are read back, the run's settings come from its config.
  Per-file npz and Parquet and the sharded Parquet dataset (``--layout shards``; only the rows
  the manifest's ok records name, each file's once, streamed shard by shard) are read; TFRecord
  outputs (AudioSet's PCA + uint8 rows only) are read for ``embedding="pca"`` and refused for
  "raw"; ``--pool mean`` outputs (one mean vector per file) are refused. See
  :mod:`vggish_tf2.fad.embed_output`;
- a statistics file (ours, fadtk's npz, Google's TFRecord; see :mod:`vggish_tf2.fad.formats`).

How audio is embedded is decided by one frozen :class:`FadSettings`; ``preset="google"`` gives
the choices of Google's FAD tool (google-research ``frechet_audio_distance``):

1. raw (pre-PCA) float embeddings, not AudioSet's PCA + uint8 codes;
2. each file scaled by ``1 / max(0.1, max(x))``: the signed maximum sample, not the absolute
   one, as Google's ``np.amax(np_samples)`` (a file whose positive peak is under 0.1, -20 dBFS,
   is boosted by at most 20 dB);
3. 1-s slices (16000 samples) starting every 0.5 s (8000 samples), while a whole slice fits:
   a trailing partial slice and files under 1 s give nothing;
4. one VGGish example per slice, from its first 15600 samples (Google frames the slice's 98
   log-mel frames into 96-frame patches with hop 96, so the last 2 frames are unused);
5. no resampling: 16 kHz input only (other rates are an error naming the file);
6. channels averaged to mono (Google's tool takes mono only).

Our Embedder with ``hop_seconds=0.5`` makes the same examples except the last when
``(N - 15600) mod 8000 < 400`` (a window fits but a 1-s slice does not), so the preset slices
the audio itself and embeds the windows with ``Embedder.embed_windows``.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, Union

import numpy as np

from vggish_tf2 import audio, outputs, params
from vggish_tf2.errors import InvalidArgumentError, InvalidAudioError, VGGishError, one_line
from vggish_tf2.fad import formats
from vggish_tf2.fad.embed_output import Item as _Item
from vggish_tf2.fad.embed_output import RUN_CONFIG_NAME, read_embed_output
from vggish_tf2.fad.resampling import FileSet
from vggish_tf2.fad.stats import GaussianStats, StatsAccumulator, block_moments

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

PRESETS = ("default", "google")
EMBEDDINGS = ("raw", "pca")
GOOGLE_SLICE_SAMPLES = 16000  # Google's 1-s slice (vggish_params.SAMPLE_RATE samples)
GOOGLE_STEP_SAMPLES = 8000  # create_embeddings_main --model_step_size default: 0.5 s
GOOGLE_MIN_PEAK = 0.1  # 10 ** (-20 / 20): at most +20 dB of loudness normalization
WINDOWS_PER_CALL = 256  # example windows handed to the model at once in the google preset


@dataclasses.dataclass(frozen=True)
class FadSettings:
    """How audio becomes embeddings for FAD; every field is stated in the report."""

    preset: str = "default"
    embedding: str = "raw"  # "raw" float32 embeddings or "pca" (AudioSet's PCA + uint8 codes, as floats)
    hop_seconds: float = params.EXAMPLE_HOP_SECONDS
    short_clips: str = "drop"
    resampler: str | None = audio.DEFAULT_RESAMPLER  # None: no resampling (16 kHz input only)
    peak_normalize: bool = False  # x / max(0.1, max(x)) per file
    slicing: str = "embedder"  # "embedder" windows, or "google" 1-s slices (first 15600 samples each)

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise InvalidArgumentError(f"preset={self.preset!r} must be one of {', '.join(PRESETS)}")
        if self.embedding not in EMBEDDINGS:
            raise InvalidArgumentError(f"embedding={self.embedding!r} must be one of {', '.join(EMBEDDINGS)}")
        if self.slicing not in ("embedder", "google"):
            raise InvalidArgumentError(f"slicing={self.slicing!r} must be 'embedder' or 'google'")
        params.example_hop_samples(self.hop_seconds)  # validates
        if self.short_clips not in ("drop", "pad", "repeat"):
            raise InvalidArgumentError(f"short_clips={self.short_clips!r} must be drop, pad or repeat")
        if self.slicing == "google" and (params.example_hop_samples(self.hop_seconds) != GOOGLE_STEP_SAMPLES
                                         or self.short_clips != "drop" or self.resampler is not None):
            raise InvalidArgumentError("google slicing is 0.5 s hops, short clips dropped and no resampling")

    @classmethod
    def for_preset(cls, preset: str = "default", **overrides) -> "FadSettings":
        """The preset's settings with ``overrides`` (None values ignored)."""
        base = {"preset": preset}
        if preset == "google":
            base.update(embedding="raw", hop_seconds=0.5, short_clips="drop", resampler=None,
                        peak_normalize=True, slicing="google")
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)

    def as_dict(self) -> dict:
        return {
            **dataclasses.asdict(self),
            "loudness_normalization": "x / max(0.1, max(x)) per file" if self.peak_normalize else "none",
            "slicing_description": (
                "1-s slices every 0.5 s while a whole slice fits; one example from each slice's first 15600 samples"
                if self.slicing == "google" else
                f"15600-sample windows every {self.hop_seconds} s while a whole window fits; short clips: {self.short_clips}"
            ),
        }


@dataclasses.dataclass
class Side:
    """One side's statistics, per-file moments (when it has files), counts and settings."""

    source: str
    kind: str  # "audio", "embeddings" (a vggish-tf2 embed output) or "stats"
    stats: GaussianStats
    files: FileSet | None = None
    embeddings: np.ndarray | None = None  # all examples concatenated (only when asked for)
    files_ok: int = 0
    files_skipped: int = 0  # no example (too short for the settings)
    failures: list[dict] = dataclasses.field(default_factory=list)  # {"file", "error"}
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    synthetic_weights: bool | None = None

    def summary(self) -> dict:
        return {
            "source": self.source, "kind": self.kind, "examples": self.stats.count,
            "files_ok": self.files_ok if self.kind != "stats" else None,
            "files_skipped": self.files_skipped if self.kind != "stats" else None,
            "files_failed": len(self.failures) if self.kind != "stats" else None,
            "failures": self.failures, "settings": self.settings, "synthetic_weights": self.synthetic_weights,
        }


# --- what a side is -------------------------------------------------------------------------------
def classify(spec: Sequence[PathLike] | PathLike) -> str:
    """"audio", "embeddings", "stats" or "list" for a side given as a path (or several: audio)."""
    if not isinstance(spec, (str, os.PathLike)):
        specs = list(spec)
        if len(specs) != 1:
            return "audio"
        spec = specs[0]
    path = Path(spec)
    if path.is_dir():
        return "embeddings" if (path / RUN_CONFIG_NAME).is_file() and (path / outputs.MANIFEST_NAME).is_file() else "audio"
    if not path.is_file():
        return "audio"  # a glob, or a missing file (fails with its reason)
    from vggish_tf2.inputs import AUDIO_EXTENSIONS

    if path.suffix.lower() in AUDIO_EXTENSIONS:
        return "audio"
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as e:
        raise InvalidArgumentError(f"{path}: cannot read ({e.strerror or e})") from e
    if head.startswith(b"PK"):
        return "stats"  # npz: ours or fadtk's
    if b"\x00" in head[:12]:
        return "stats"  # binary: a TFRecord (its first 8 bytes are a little-endian length)
    return "list"


def load_side(
    spec: Sequence[PathLike] | PathLike,
    settings: FadSettings,
    *,
    embedder_factory: Callable[[FadSettings], Any] | None = None,
    keep_files: bool = False,
    keep_embeddings: bool = False,
    fadtk_model: str | None = None,
    on_file: Callable[[str], None] | None = None,
) -> Side:
    """Read or compute one side. ``embedder_factory(settings)`` makes the Embedder (called only
    when audio must be embedded). ``keep_files`` keeps per-file moments (for the bootstrap and
    per-file contributions), ``keep_embeddings`` all examples (for FAD-inf and KAD); otherwise
    memory is flat in the corpus size."""
    kind = classify(spec)
    source = os.fspath(spec) if isinstance(spec, (str, os.PathLike)) else " ".join(os.fspath(s) for s in spec)
    if kind == "stats":
        stats, info = formats.load_stats(spec if isinstance(spec, (str, os.PathLike)) else list(spec)[0], fadtk_model=fadtk_model)
        meta = info.get("metadata") or {}
        return Side(source=source, kind="stats", stats=stats, settings={"format": info["format"], **meta.get("settings", {})},
                    synthetic_weights=meta.get("synthetic_weights"))
    if kind == "embeddings":
        directory = Path(spec if isinstance(spec, (str, os.PathLike)) else list(spec)[0])
        items, side_settings, synthetic = read_embed_output(directory, settings.embedding)
    else:
        paths = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
        list_files = [p for p in paths if classify(p) == "list"]
        audio_paths = [p for p in paths if p not in list_files]
        embedder = embedder_factory(settings) if embedder_factory else _default_embedder(settings)
        items = _audio_items(audio_paths, list_files, settings, embedder)
        side_settings = describe_embedder(embedder, settings)
        synthetic = bool(embedder.synthetic_weights)
        kind = "audio"
    return _collect(items, source=source, kind=kind, settings=side_settings, synthetic=synthetic,
                    keep_files=keep_files, keep_embeddings=keep_embeddings, on_file=on_file)


def describe_embedder(embedder, settings: FadSettings) -> dict:
    from vggish_tf2.pipeline import model_fingerprint

    return {**settings.as_dict(), "model": str(embedder.model_path),
            "model_hash": model_fingerprint(str(embedder.model_path)),
            "synthetic_weights": bool(embedder.synthetic_weights)}


def _default_embedder(settings: FadSettings):
    from vggish_tf2.embedder import Embedder

    return make_embedder(Embedder, settings)


def make_embedder(embedder_class, settings: FadSettings, **options):
    """An Embedder for ``settings`` (``options``: model, device, batch_size...)."""
    return embedder_class(
        hop_seconds=settings.hop_seconds, short_clips=settings.short_clips,
        resampler=settings.resampler or audio.DEFAULT_RESAMPLER, **{k: v for k, v in options.items() if v is not None},
    )


def _collect(items: Iterator[_Item], *, source, kind, settings, synthetic, keep_files, keep_embeddings, on_file) -> Side:
    accumulator = StatsAccumulator()
    names, counts, means, scatters, kept = [], [], [], [], []
    side = Side(source=source, kind=kind, stats=None, settings=settings, synthetic_weights=synthetic)  # type: ignore[arg-type]
    for item in items:
        if on_file is not None:
            on_file(item.name)
        if item.error is not None:
            side.failures.append({"file": item.name, "error": item.error})
            continue
        if item.embedding is None or len(item.embedding) == 0:
            side.files_skipped += 1
            continue
        side.files_ok += 1
        n, mean, scatter = block_moments(item.embedding, dim=params.EMBEDDING_SIZE)
        accumulator.merge_moments(n, mean, scatter)
        if keep_files:
            names.append(item.name)
            counts.append(n)
            means.append(mean)
            scatters.append(scatter)
        if keep_embeddings:
            kept.append(np.asarray(item.embedding, dtype=np.float32))
    if accumulator.count < 2:
        problems = "; ".join(f"{f['file']}: {f['error']}" for f in side.failures[:3])
        raise InvalidArgumentError(
            f"{source}: {accumulator.count} embeddings from {side.files_ok} files "
            f"({len(side.failures)} failed, {side.files_skipped} too short); at least 2 are needed"
            + (f" ({problems})" if problems else "")
        )
    side.stats = accumulator.finish()
    if keep_files:
        side.files = FileSet(names, np.array(counts, dtype=np.int64), np.stack(means), np.stack(scatters))
    if keep_embeddings:
        side.embeddings = np.concatenate(kept)
    return side


# --- audio ----------------------------------------------------------------------------------------
def _audio_items(paths: list, list_files: list, settings: FadSettings, embedder) -> Iterator[_Item]:
    from vggish_tf2.inputs import expand_inputs

    inputs = expand_inputs(paths, list_files=list_files)
    if settings.slicing == "google":
        for item in inputs:
            try:
                embedding = _embed_google(item.path, settings, embedder)
            except (VGGishError, OSError) as e:
                yield _Item(item.relative, None, error=one_line(e))
                continue
            yield _Item(item.relative, _as_kind(embedding, settings, embedder))
        return
    for item, result in zip(inputs, embedder.embed_files([i.path for i in inputs])):
        if not result.ok:
            yield _Item(item.relative, None, error=one_line(result.error))
        else:
            yield _Item(item.relative, _as_kind(result.embedding, settings, embedder))


def _as_kind(embedding: np.ndarray, settings: FadSettings, embedder) -> np.ndarray:
    if settings.embedding == "raw" or len(embedding) == 0:
        return embedding
    return embedder.postprocess(embedding).astype(np.float64)


def google_windows(samples: np.ndarray, *, path: PathLike = "<waveform>", sample_rate: int = params.SAMPLE_RATE) -> np.ndarray:
    """Google FAD's example windows of one file: float32 [n, 15600] (see the module doc)."""
    if sample_rate != params.SAMPLE_RATE:
        raise InvalidAudioError(
            f"{os.fspath(path)}: {sample_rate} Hz; the google preset does no resampling (as Google's tool): "
            f"give {params.SAMPLE_RATE} Hz audio or use --preset default"
        )
    mono = audio.to_mono(samples).astype(np.float64) if np.ndim(samples) == 2 else np.asarray(samples, np.float64)
    if len(mono) == 0:
        raise InvalidAudioError(f"{os.fspath(path)}: contains 0 samples")
    scaled = mono / max(GOOGLE_MIN_PEAK, float(np.max(mono)))
    starts = range(0, len(scaled) - GOOGLE_SLICE_SAMPLES + 1, GOOGLE_STEP_SAMPLES)
    windows = np.zeros((len(starts), params.EXAMPLE_WINDOW_SAMPLES), dtype=np.float32)
    for row, start in enumerate(starts):
        windows[row] = scaled[start:start + params.EXAMPLE_WINDOW_SAMPLES]
    return windows


def _embed_google(path: Path, settings: FadSettings, embedder) -> np.ndarray:
    samples, rate = audio.read_audio(path)
    windows = google_windows(samples, path=path, sample_rate=rate)
    if len(windows) == 0:
        return np.zeros((0, params.EMBEDDING_SIZE), np.float32)
    return np.concatenate([embedder.embed_windows(windows[i:i + WINDOWS_PER_CALL])
                           for i in range(0, len(windows), WINDOWS_PER_CALL)])


def embed_waveforms_google(embedder, waveforms: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Google-preset embeddings of 16 kHz waveforms already in memory (one array per file)."""
    out = []
    for index, waveform in enumerate(waveforms):
        windows = google_windows(np.asarray(waveform), path=f"<waveform {index}>")
        out.append(embedder.embed_windows(windows) if len(windows) else np.zeros((0, params.EMBEDDING_SIZE), np.float32))
    return out
