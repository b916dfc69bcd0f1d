"""Statistics files: ours, fadtk's npz and Google's TFRecord, read and written.

| format | layout | precision | count |
|---|---|---|---|
| ``vggish-tf2`` (ours) | npz: ``mean`` [d], ``cov`` [d, d], ``count``, ``metadata`` (JSON: settings), ``format_version`` | float64 | yes |
| ``fadtk`` | npz: ``<model>.mu`` [d], ``<model>.cov`` [d, d] (fadtk's model name, e.g. ``vggish``) | float64 | no |
| ``google`` | TFRecord holding one ``tf.train.Example``: ``mu`` (float_list, d), ``sigma`` (float_list, d*d, row-major), ``embedding_count``, ``embedding_length`` (int64_list) | float32 | yes |

:func:`load_stats` recognises the format from the file's content (Google's files usually have
no extension). npz files are read with ``allow_pickle=False``. Every file is written atomically.
Google's format rounds to float32: a FAD computed from such files differs from the float64 one
(measured in tests/test_fad_formats.py).
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Union

import numpy as np

from vggish_tf2.errors import InvalidArgumentError, OutputError
from vggish_tf2.fad.stats import GaussianStats
from vggish_tf2.outputs import atomic_output

PathLike = Union[str, os.PathLike]

FORMATS = ("vggish-tf2", "fadtk", "google")
FORMAT_VERSION = 1
DEFAULT_FADTK_MODEL = "vggish"  # fadtk's name for VGGish


class StatsFileError(InvalidArgumentError):
    """A statistics file that cannot be read or does not hold statistics (the message names it)."""


# --- write --------------------------------------------------------------------------------------
def save_stats(path: PathLike, stats: GaussianStats, *, file_format: str = "vggish-tf2",
               metadata: dict | None = None, fadtk_model: str = DEFAULT_FADTK_MODEL) -> Path:
    """Write ``stats`` to ``path`` in ``file_format`` (one of :data:`FORMATS`); returns the path."""
    if file_format not in FORMATS:
        raise InvalidArgumentError(f"file_format={file_format!r} must be one of {', '.join(FORMATS)}")
    path = Path(path)
    if file_format == "google":
        if stats.count is None:
            raise InvalidArgumentError("Google's statistics format needs the embedding count, which these statistics lack")
        payload = _google_example(stats)
        with atomic_output(path) as temp:
            _write_tfrecord(temp, payload)
        return path
    if file_format == "fadtk":
        if not fadtk_model or "." in fadtk_model:
            raise InvalidArgumentError(f"fadtk_model={fadtk_model!r} must be a non-empty name without '.'")
        arrays = {f"{fadtk_model}.mu": stats.mean, f"{fadtk_model}.cov": stats.cov}
    else:
        arrays = {
            "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
            "mean": stats.mean, "cov": stats.cov,
            "count": np.array(-1 if stats.count is None else stats.count, dtype=np.int64),
            "metadata": np.array(json.dumps(metadata or {}, sort_keys=True, allow_nan=False)),
        }
    with atomic_output(path) as temp:
        with open(temp, "xb") as f:
            np.savez(f, **arrays)
    return path


def _google_example(stats: GaussianStats) -> bytes:
    import tensorflow as tf  # lazily: ~7 s, only for Google's format

    feature = {
        "embedding_count": tf.train.Feature(int64_list=tf.train.Int64List(value=[stats.count])),
        "embedding_length": tf.train.Feature(int64_list=tf.train.Int64List(value=[stats.dim])),
        "mu": tf.train.Feature(float_list=tf.train.FloatList(value=stats.mean.astype(np.float32))),
        "sigma": tf.train.Feature(float_list=tf.train.FloatList(value=stats.cov.astype(np.float32).ravel())),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(deterministic=True)


def _write_tfrecord(path: Path, payload: bytes) -> None:
    import tensorflow as tf

    with tf.io.TFRecordWriter(os.fspath(path)) as writer:
        writer.write(payload)


# --- read ---------------------------------------------------------------------------------------
def load_stats(path: PathLike, *, fadtk_model: str | None = None) -> tuple[GaussianStats, dict]:
    """Read a statistics file of any of :data:`FORMATS`: (statistics, info) where info holds
    ``format`` and, for ours, the ``metadata`` (settings) it was written with."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise StatsFileError(f"{path}: cannot read ({e.strerror or e})") from e
    if head.startswith(b"PK"):
        return _load_npz(path, fadtk_model)
    return _load_google(path)


def _load_npz(path: Path, fadtk_model: str | None) -> tuple[GaussianStats, dict]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            data = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise StatsFileError(f"{path}: cannot read npz ({e})") from e
    if "mean" in data and "cov" in data:
        count = int(data["count"]) if "count" in data else -1
        try:
            metadata = json.loads(str(data["metadata"][()])) if "metadata" in data else {}
        except ValueError as e:
            raise StatsFileError(f"{path}: metadata is not valid JSON ({e})") from e
        return _checked(path, data["mean"], data["cov"], None if count < 0 else count), {"format": "vggish-tf2", "metadata": metadata}
    models = sorted(name[:-3] for name in data if name.endswith(".mu") and f"{name[:-3]}.cov" in data)
    if not models:
        raise StatsFileError(
            f"{path}: npz holds no statistics (keys {sorted(data)}; expected 'mean'/'cov' or fadtk's '<model>.mu'/'<model>.cov')"
        )
    if fadtk_model is None:
        if len(models) > 1:
            raise StatsFileError(f"{path}: holds statistics of several models ({', '.join(models)}); choose one (--fadtk-model)")
        fadtk_model = models[0]
    elif fadtk_model not in models:
        raise StatsFileError(f"{path}: no statistics for model {fadtk_model!r} (it has {', '.join(models)})")
    stats = _checked(path, data[f"{fadtk_model}.mu"], data[f"{fadtk_model}.cov"], None)
    return stats, {"format": "fadtk", "fadtk_model": fadtk_model, "metadata": {}}


def _check_tfrecord_framing(path: Path) -> None:
    """A TFRecord starts with its first record's length (uint64 LE), a 4-byte CRC, the record and
    another CRC: refuse files that cannot be one before handing them to TensorFlow."""
    size = path.stat().st_size
    if size == 0:
        raise StatsFileError(f"{path}: empty file, no statistics")
    with open(path, "rb") as f:
        head = f.read(8)
    length = int.from_bytes(head, "little") if len(head) == 8 else None
    if length is None or size < 16 + length:
        raise StatsFileError(
            f"{path}: not a statistics file (neither npz, ours or fadtk's, nor a TFRecord of Google's statistics)"
        )


def _load_google(path: Path) -> tuple[GaussianStats, dict]:
    _check_tfrecord_framing(path)
    import tensorflow as tf

    try:
        record = next(iter(tf.data.TFRecordDataset(os.fspath(path)).take(1)), None)
    except (tf.errors.OpError, ValueError) as e:
        raise StatsFileError(f"{path}: not a statistics file (neither npz nor a readable TFRecord: {e.message if hasattr(e, 'message') else e})") from e
    if record is None:
        raise StatsFileError(f"{path}: empty TFRecord, no statistics")
    try:
        example = tf.train.Example.FromString(record.numpy())
    except Exception as e:  # protobuf's DecodeError
        raise StatsFileError(f"{path}: TFRecord does not hold a tf.train.Example ({e})") from e
    feature = example.features.feature
    missing = [key for key in ("mu", "sigma", "embedding_length") if key not in feature]
    if missing:
        raise StatsFileError(f"{path}: Google statistics lack {', '.join(missing)} (an empty set has no mu/sigma)")
    length = int(feature["embedding_length"].int64_list.value[0])
    mu = np.array(feature["mu"].float_list.value, dtype=np.float32)
    sigma = np.array(feature["sigma"].float_list.value, dtype=np.float32)
    if len(mu) != length or len(sigma) != length * length:
        raise StatsFileError(f"{path}: mu has {len(mu)} and sigma {len(sigma)} values; embedding_length {length} wants {length} and {length * length}")
    count = int(feature["embedding_count"].int64_list.value[0]) if "embedding_count" in feature else None
    return _checked(path, mu, sigma.reshape(length, length), count), {"format": "google", "metadata": {}}


def _checked(path: Path, mean, cov, count) -> GaussianStats:
    try:
        return GaussianStats(mean=np.asarray(mean), cov=np.asarray(cov), count=count)
    except InvalidArgumentError as e:
        raise StatsFileError(f"{path}: {e}") from e


def is_stats_file(path: PathLike) -> bool:
    """Whether ``path`` is a file that :func:`load_stats` can read (cheap for npz; TFRecord via TF)."""
    try:
        load_stats(path)
    except (StatsFileError, OutputError):
        return False
    return True
