"""The exported VGGish SavedModel: its Module, signatures, metadata, and loading with checks.

An export is a directory with saved_model.pb, variables/, and assets/vggish_tf2.json (the
parameters and front end it was built with, its source files' sha256, library versions). Loading
checks that asset, so an export made for other parameters is refused rather than silently wrong.

Signatures (all tf.functions, usable from tf.saved_model.load, tensorflow_hub.load,
hub.KerasLayer and keras.layers.TFSMLayer):
  __call__ / serving_default    waveform [T] float32 16 kHz -> [N, 128] float32 (TF Hub google/vggish/1 style)
  embed_batch                   waveforms [B, T] -> [B, N, 128]
  embed_log_mel                 log-mel examples [B, 96, 64] -> [B, 128]
  embed_windows                 example windows [B, 15600] -> [B, 128] (the fixed-shape device step)
  postprocess                   [B, 128] float32 -> [B, 128] uint8 (only when the export has PCA)
  waveform_to_log_mel           waveform [T] -> [N, 96, 64] float32
"""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import tensorflow as tf

from vggish_tf2 import frontend, params
from vggish_tf2.errors import ModelError
from vggish_tf2.hashing import (  # noqa: F401 (FILE_HASHES, METADATA_ASSET, the hash functions: re-exported)
    FILE_HASHES,
    METADATA_ASSET,
    export_fingerprint,
    read_export_metadata,
    read_file_hashes,
    sha256_file,
    verify_file_hashes,
    write_file_hashes,
)
from vggish_tf2.network import VGGishNetwork, forward
from vggish_tf2.postprocess import Postprocessor, postprocess

logger = logging.getLogger(__name__)

EXPORT_FORMAT = "vggish-tf2-export"
EXPORT_FORMAT_VERSION = 1  # bump when signatures or the metadata schema change incompatibly
# Rows per step inside the 1-D signatures: bounds their memory on long inputs.
SIGNATURE_BATCH_EXAMPLES = 64


def library_versions() -> dict[str, str]:
    from importlib import metadata as importlib_metadata

    versions = {"tensorflow": tf.__version__, "numpy": np.__version__}
    try:
        versions["vggish_tf2"] = importlib_metadata.version("vggish-tf2")
    except importlib_metadata.PackageNotFoundError:
        versions["vggish_tf2"] = "unknown"
    return versions


def make_metadata(
    *,
    frontend_precision: str,
    sources: Mapping[str, Any],
    has_pca: bool,
    synthetic_weights: bool,
    extra: Mapping[str, Any] | None = None,
) -> dict:
    """The metadata every export carries (written as assets/vggish_tf2.json)."""
    metadata = {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "frontend": params.FRONTEND.as_dict(),
        "frontend_precision": frontend.check_precision(frontend_precision),
        "mel_matrix": "reference (vggish mel_features.spectrogram_to_mel_matrix), not tf.signal",
        "embedding_size": params.EMBEDDING_SIZE,
        "has_pca": bool(has_pca),
        "synthetic_weights": bool(synthetic_weights),
        "sources": dict(sources),
        "versions": library_versions(),
    }
    if synthetic_weights:
        metadata["warning"] = "SYNTHETIC WEIGHTS: these are not VGGish embeddings"
    if extra:
        metadata.update(extra)
    return metadata


_WAVEFORM = tf.TensorSpec([None], tf.float32, name="waveform")


def _in_batches(fn, rows, out_shape: list, out_dtype):
    """fn over SIGNATURE_BATCH_EXAMPLES rows at a time, so a long waveform never materializes
    every example's activations at once. rows [N, ...] -> [N, *out_shape]."""
    n = tf.shape(rows)[0]
    batch = SIGNATURE_BATCH_EXAMPLES
    padded_n = ((n + batch - 1) // batch) * batch
    padding = tf.concat([[[0, padded_n - n]], tf.zeros([tf.rank(rows) - 1, 2], tf.int32)], 0)
    chunks = tf.reshape(tf.pad(rows, padding), tf.concat([[padded_n // batch, batch], tf.shape(rows)[1:]], 0))
    spec = tf.TensorSpec([batch] + out_shape, out_dtype)
    out = tf.map_fn(fn, chunks, fn_output_signature=spec, parallel_iterations=1)
    return tf.reshape(out, [-1] + out_shape)[:n]


class VGGishExport(tf.Module):
    """What gets saved: the network, optional PCA, the metadata asset, and the signatures."""

    def __init__(
        self,
        weights: Mapping[str, np.ndarray],
        pca: Mapping[str, np.ndarray] | None,
        *,
        frontend_precision: str,
        metadata_path: str,
    ):
        super().__init__(name="vggish_export")
        self.network = VGGishNetwork(weights)
        self.postprocessor = Postprocessor(pca) if pca is not None else None
        # An Asset is copied into assets/ when saved (so the file may change until then) and
        # its path is restored on load.
        self.metadata_asset = tf.saved_model.Asset(metadata_path)
        self._precision = frontend.check_precision(frontend_precision)
        if self.postprocessor is not None:
            # An instance attribute, not a method, so an export without PCA has no such signature.
            self.postprocess = tf.function(
                lambda embeddings: postprocess(self.postprocessor, embeddings),
                input_signature=[tf.TensorSpec([None, params.EMBEDDING_SIZE], tf.float32, name="embeddings")],
            )

    # The methods below are the export's signatures. Traced at save time; `self._precision` is
    # a Python constant baked into the graph.
    def _embed_windows(self, windows):
        features = frontend.log_mel_windows(windows, precision=self._precision)  # [B,96,64]
        return forward(self.network, tf.cast(features, tf.float32))  # [B,128]

    def _waveform_embeddings(self, waveform):
        windows = frontend.waveform_to_windows(waveform)  # [N,15600]
        return _in_batches(self._embed_windows, windows, [params.EMBEDDING_SIZE], tf.float32)

    @tf.function(input_signature=[_WAVEFORM])
    def __call__(self, waveform):
        return self._waveform_embeddings(waveform)

    @tf.function(input_signature=[_WAVEFORM])
    def waveform_to_log_mel(self, waveform):
        windows = frontend.waveform_to_windows(waveform)  # [N,15600]

        def log_mel(w):
            return tf.cast(frontend.log_mel_windows(w, precision=self._precision), tf.float32)

        return _in_batches(log_mel, windows, [params.NUM_FRAMES, params.NUM_BANDS], tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="waveforms")])
    def embed_batch(self, waveforms):
        spec = tf.TensorSpec([None, params.EMBEDDING_SIZE], tf.float32)
        return tf.map_fn(self._waveform_embeddings, waveforms, fn_output_signature=spec)  # [B,N,128]

    @tf.function(input_signature=[tf.TensorSpec([None, params.EXAMPLE_WINDOW_SAMPLES], tf.float32, name="windows")])
    def embed_windows(self, windows):
        return self._embed_windows(windows)

    @tf.function(input_signature=[tf.TensorSpec([None, params.NUM_FRAMES, params.NUM_BANDS], tf.float32, name="log_mel")])
    def embed_log_mel(self, log_mel):
        return forward(self.network, log_mel)

    def signatures(self) -> dict:
        sigs = {
            "serving_default": self.__call__,
            "embed_batch": self.embed_batch,
            "embed_windows": self.embed_windows,
            "embed_log_mel": self.embed_log_mel,
            "waveform_to_log_mel": self.waveform_to_log_mel,
        }
        if self.postprocessor is not None:
            sigs["postprocess"] = self.postprocess
        return sigs


def save_export(module: VGGishExport, export_dir: str | os.PathLike) -> Path:
    """Save `module` as a SavedModel in `export_dir` (which must not exist) and record its files' sha256."""
    export_dir = Path(export_dir)
    if export_dir.exists():
        raise ModelError(f"{export_dir}: already exists; refusing to overwrite")
    tf.saved_model.save(module, str(export_dir), signatures=module.signatures())
    write_file_hashes(export_dir)
    return export_dir


def read_metadata(export_dir: str | os.PathLike) -> dict:
    """The metadata of an export, checked for compatibility; ModelError when it is not one.
    (The files are read without TensorFlow by :func:`vggish_tf2.hashing.read_export_metadata`.)"""
    metadata = read_export_metadata(export_dir)
    check_metadata(metadata, source=str(export_dir))
    return metadata


def check_metadata(metadata: Mapping[str, Any], *, source: str) -> None:
    if metadata.get("format") != EXPORT_FORMAT:
        raise ModelError(f"{source}: not a vggish-tf2 export (format={metadata.get('format')!r})")
    version = metadata.get("format_version")
    if version != EXPORT_FORMAT_VERSION:
        raise ModelError(
            f"{source}: export format version {version!r} is not supported by this vggish-tf2 "
            f"(supports {EXPORT_FORMAT_VERSION}); re-convert it with this version's converter"
        )
    if metadata.get("frontend") != params.FRONTEND.as_dict():
        raise ModelError(f"{source}: built with front-end parameters {metadata.get('frontend')}, "
                         f"this library computes {params.FRONTEND.as_dict()}")
    frontend.check_precision(metadata.get("frontend_precision", ""))


@dataclasses.dataclass(frozen=True)
class LoadedExport:
    """A loaded export: the restored object (signatures, network variables) and its metadata."""

    path: Path
    module: Any
    metadata: dict

    @property
    def has_pca(self) -> bool:
        return bool(self.metadata.get("has_pca"))

    @property
    def synthetic_weights(self) -> bool:
        return bool(self.metadata.get("synthetic_weights"))


def load_export(export_dir: str | os.PathLike, *, verify_hashes: bool = True) -> LoadedExport:
    """Load and check an export. `verify_hashes` re-hashes its files against those recorded at
    conversion; an export without its hash list (or with a corrupt one) is then refused.
    ``verify_hashes=False`` loads it unchecked, with a warning: only for a directory you trust."""
    export_dir = Path(export_dir)
    metadata = read_metadata(export_dir)
    if verify_hashes:
        verify_file_hashes(export_dir)
    else:
        logger.warning("%s: loading without checking its files against the recorded hashes (verification off)",
                       export_dir)
    try:
        module = tf.saved_model.load(str(export_dir))
    except Exception as e:  # TF raises a variety of types for a corrupt SavedModel
        raise ModelError(f"{export_dir}: cannot load the SavedModel ({type(e).__name__}: {e})") from e
    return LoadedExport(path=export_dir, module=module, metadata=metadata)
