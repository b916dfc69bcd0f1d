"""VGGish embeddings of a Ray Dataset you already hold: of audio file paths, or of waveforms.

    import ray
    from vggish_tf2.corpus.ray_api import embed_paths, embed_waveforms

    ds = ray.data.from_items([{"path": "clips/a.wav", "label": 3}, ...])
    rows = embed_paths(ds)                       # one row per example
    rows.write_parquet("embeddings/")            # or .iter_batches(), .groupby("path"), ...

    waves = ray.data.from_items([{"waveform": np.zeros(44100), "sample_rate": 44100, "id": 1}])
    rows = embed_waveforms(waves, sample_rate_column="sample_rate")

Both return a lazy :class:`ray.data.Dataset` with **one row per example** (0.96 s of audio by
default): the input row's other columns, repeated for each of its examples (the waveform column
itself is left out: it is the audio the rows come from), then

- ``example`` int64: the example's number in its file or waveform, from 0;
- ``start_seconds``, ``end_seconds`` float64: where the example starts and ends in the audio
  (a padded or repeated short clip ends where the audio ends), as the corpus outputs have them;
- ``embedding`` float32 [128]: the raw VGGish embedding;
- ``postprocessed`` uint8 [128]: AudioSet's PCA + 8-bit rows, when the model has PCA parameters
  and ``options.postprocess`` (the default).

The numbers are :class:`~vggish_tf2.embedder.Embedder`'s for the same settings
(:class:`~vggish_tf2.options.RunOptions`: model, resampler, hop, short clips, precision, compile
mode, batch size; ``jit_compile`` None means no XLA). Rows come in no particular order; sort by
(your key, ``example``) if order matters. A clip shorter than one example has no row unless
``short_clips`` is "pad" or "repeat".

The work runs on the corpus engine's stages (:mod:`vggish_tf2.corpus.ray_stages`): decoding and
resampling on CPU tasks that see no GPU, then a fixed pool of embedder actors (one per GPU of the
cluster by default, ``options.ray_actors`` to choose; a GPU shared by several actors gives each
its share of the memory limit). Every node must reach the model directory (``options.model``, or
VGGISH_MODEL_DIR, or models/vggish) and, for paths, the files, at the same paths, and have
vggish-tf2 installed. If Ray is not connected yet, a local instance is started (or
``options.ray_address`` joined) and left running for your session.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from vggish_tf2 import audio, embedder, params, windows
from vggish_tf2.corpus import ray_stages
from vggish_tf2.corpus.ray_decode import DecodeSettings, error_from_row, file_rows
from vggish_tf2.errors import InvalidArgumentError
from vggish_tf2.options import RunOptions

if TYPE_CHECKING:
    import ray.data

logger = logging.getLogger(__name__)

ON_ERROR = ("raise", "drop")  # a file that cannot be decoded: fail the dataset, or leave it out (logged)
EXAMPLE_SECONDS = params.EXAMPLE_WINDOW_SECONDS  # nominal span of one example


def embed_paths(ds: "ray.data.Dataset", *, column: str = "path", options: RunOptions | None = None,
                on_error: str = "raise") -> "ray.data.Dataset":
    """Embeddings of the audio files ``ds[column]`` names (str or bytes paths), one row per example
    (see the module doc). ``on_error``: "raise" (default) fails the dataset with the file's error
    (an :class:`~vggish_tf2.errors.InvalidAudioError` naming it) when one cannot be decoded;
    "drop" leaves that file out, with a warning in the task's log."""
    if on_error not in ON_ERROR:
        raise InvalidArgumentError(f"on_error={on_error!r} must be one of {', '.join(ON_ERROR)}")
    settings, env = _settings(options)
    decoded = ds.map_batches(decode_paths, fn_kwargs={"settings": settings.decode, "column": column,
                                                      "on_error": on_error},
                             batch_size=1, num_cpus=1, runtime_env={"env_vars": {**env, **ray_stages.NO_GPU_ENV}})
    return ray_stages.embed_windows_stage(decoded, settings.actor, settings.placement, env=env)


def embed_waveforms(ds: "ray.data.Dataset", *, column: str = "waveform", sample_rate: int | None = None,
                    sample_rate_column: str | None = None, options: RunOptions | None = None) -> "ray.data.Dataset":
    """Embeddings of the waveforms in ``ds[column]`` (float, mono [samples] or [samples,
    channels], in [-1, 1]), one row per example (see the module doc). Their rate is
    ``sample_rate`` (Hz, the same for all) or each row's ``sample_rate_column``. A waveform that
    is not valid audio (NaN, integers, channels first) fails the dataset, as
    :meth:`~vggish_tf2.embedder.Embedder.embed` refuses it."""
    if (sample_rate is None) == (sample_rate_column is None):
        raise InvalidArgumentError("pass one of sample_rate= (Hz, for every row) or sample_rate_column= (each row's)")
    if sample_rate is not None:
        audio._check_rate("sample_rate", sample_rate)
    settings, env = _settings(options)
    decoded = ds.map_batches(decode_waveforms, fn_kwargs={
        "settings": settings.decode, "column": column, "sample_rate": sample_rate,
        "sample_rate_column": sample_rate_column},
        batch_size=1, num_cpus=1, runtime_env={"env_vars": {**env, **ray_stages.NO_GPU_ENV}})
    return ray_stages.embed_windows_stage(decoded, settings.actor, settings.placement, env=env)


def _settings(options: RunOptions | None) -> tuple[ray_stages.StageSettings, dict[str, str]]:
    import ray

    from vggish_tf2.hashing import read_export_metadata

    options = options or RunOptions()
    model_path = ray_stages.model_directory(options)
    has_pca = bool(read_export_metadata(model_path).get("has_pca"))  # no TensorFlow on the driver
    ray_stages.connect(options.ray_address)
    settings = ray_stages.stage_settings(options, model_path=model_path,
                                         cluster_gpus=float(ray.cluster_resources().get("GPU", 0)),
                                         postprocess_in_actors=options.postprocess and has_pca)
    return settings, ray_stages.forwarded_env(local=options.ray_address is None)


# --- decoding (Ray tasks) -----------------------------------------------------------------------------
def _example_rows(carried: dict[str, np.ndarray], example_windows: np.ndarray, first: int, *, hop_samples: int,
                  duration_seconds: float | None) -> dict[str, np.ndarray]:
    """The rows of ``example_windows`` (examples ``first``...): ``carried`` (each column's value
    for this input, shape [1, ...]) repeated, then example, start/end seconds and the window. A
    window ends at most where the audio does (``duration_seconds``, known at its last block)."""
    n = len(example_windows)
    starts = windows.example_start_seconds(first + n, hop_samples=hop_samples)[first:]
    ends = starts + EXAMPLE_SECONDS
    if duration_seconds is not None:
        ends = np.minimum(ends, max(duration_seconds, 0.0))
    rows = {name: np.repeat(value, n, axis=0) for name, value in carried.items()}
    rows.update(example=np.arange(first, first + n, dtype=np.int64), start_seconds=starts, end_seconds=ends,
                window=example_windows)
    return rows


def _carried(batch: dict[str, np.ndarray], index: int, *, leave_out: str | None = None) -> dict[str, np.ndarray]:
    return {name: column[index:index + 1] for name, column in batch.items() if name != leave_out}


def decode_paths(batch: dict[str, np.ndarray], *, settings: DecodeSettings, column: str,
                 on_error: str) -> Iterator[dict[str, Any]]:
    """map_batches function: rows naming files -> example rows with windows (see the module doc)."""
    if column not in batch:
        raise InvalidArgumentError(f"column={column!r} is not a column of the dataset ({', '.join(batch)})")
    for index, value in enumerate(batch[column]):
        path = Path(os.fsdecode(bytes(value) if isinstance(value, (bytes, np.bytes_)) else str(value)))
        carried = _carried(batch, index)
        for rows in file_rows(index, path, settings):
            if rows["error_type"][-1]:  # the file's own fault
                error = error_from_row(str(rows["error_type"][-1]), str(rows["error"][-1]))
                if on_error == "raise":
                    raise error
                logger.warning("dropped: %s", error)
                break
            computed = rows["example"] >= 0  # a marker row (no window: too short) has no example
            if computed.any():
                duration = rows["samples"][-1] / params.SAMPLE_RATE if rows["end"][-1] else None
                yield _example_rows(carried, rows["window"][computed], int(rows["example"][computed][0]),
                                    hop_samples=settings.hop_samples, duration_seconds=duration)


def waveform_windows(waveform: np.ndarray, *, sample_rate: int, settings: DecodeSettings) -> tuple[np.ndarray, int]:
    """Example windows of one waveform and its length in 16 kHz samples, as
    :meth:`~vggish_tf2.embedder.Embedder.embed` makes them (:func:`vggish_tf2.embedder.waveform_windows`)."""
    return embedder.waveform_windows(waveform, sample_rate=sample_rate, resampler=settings.resampler,
                                     hop_samples=settings.hop_samples, short_clips=settings.short_clips,
                                     dtype=np.dtype(settings.sample_dtype).type)


def decode_waveforms(batch: dict[str, np.ndarray], *, settings: DecodeSettings, column: str,
                     sample_rate: int | None, sample_rate_column: str | None) -> Iterator[dict[str, Any]]:
    """map_batches function: rows holding waveforms -> example rows with windows."""
    for name in (column, sample_rate_column):
        if name is not None and name not in batch:
            raise InvalidArgumentError(f"{name!r} is not a column of the dataset ({', '.join(batch)})")
    for index, waveform in enumerate(batch[column]):
        rate = sample_rate if sample_rate is not None else int(batch[sample_rate_column][index])
        example_windows, samples = waveform_windows(waveform, sample_rate=rate, settings=settings)
        if len(example_windows):
            yield _example_rows(_carried(batch, index, leave_out=column), example_windows, 0,
                                hop_samples=settings.hop_samples, duration_seconds=samples / params.SAMPLE_RATE)


__all__ = ["ON_ERROR", "embed_paths", "embed_waveforms", "waveform_windows"]
