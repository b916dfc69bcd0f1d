"""The exported VGGish SavedModel: its Module, signatures, metadata, and loading with checks.

An export is a directory with saved_model.pb, variables/, and assets/vggish_tf2.json (the
parameters and front end it was built with, its source files' sha256, library versions). Loading
checks that asset, so an export made for other parameters is refused rather than silently wrong.

Signatures (all tf.functions, usable from tf.saved_model.load, tensorflow_hub.load,
hub.KerasLayer and keras.layers.TFSMLayer):
  __call__ / serving_default    waveform [T] float32 (or float64) 16 kHz -> [N, 128] float32 (TF Hub google/vggish/1 style)
  embed_batch                   waveforms [B, T] float32 or float64 -> [B, N, 128]
  embed_log_mel                 log-mel examples [B, 96, 64] -> [B, 128]
  embed_windows                 example windows [B, 15600] float32 or float64 -> [B, 128] (the device step)
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

from vggish_tf2 import frontend, params, step
from vggish_tf2.errors import ModelError
from vggish_tf2.hashing import (  # noqa: F401 (FILE_HASHES, METADATA_ASSET, the hash functions: re-exported)
    FILE_HASHES,
    METADATA_ASSET,
    export_fingerprint,
    read_export_metadata,
    read_file_hashes,
    sha256_file,
    verify_file_hashes,
    verify_file_hashes_cached,
    write_file_hashes,
)
from vggish_tf2.network import VGGishNetwork
from vggish_tf2.postprocess import Postprocessor, postprocess

logger = logging.getLogger(__name__)

EXPORT_FORMAT = "vggish-tf2-export"
EXPORT_FORMAT_VERSION = 2  # 2: fixed-shape network calls, float64 inputs. Bump when signatures or the metadata schema change incompatibly


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
        # Rows of every network call in the signatures: the Embedder computes the same bits only
        # with the same slice (vggish_tf2.step), so loading checks it.
        "step_examples": params.STEP_EXAMPLES,
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


def _specs(shape: list, name: str) -> tuple[tf.TensorSpec, tf.TensorSpec]:
    """float32 and float64 specs of one input: every signature also takes float64, so samples
    can stay float64 from decoding to a float64 front end (the reference's precision)."""
    return tf.TensorSpec(shape, tf.float32, name=name), tf.TensorSpec(shape, tf.float64, name=name)


_WAVEFORM_SPECS = _specs([None], "waveform")
_WAVEFORMS_SPECS = _specs([None, None], "waveforms")
_WINDOWS_SPECS = _specs([None, params.EXAMPLE_WINDOW_SAMPLES], "windows")
_LOG_MEL_SPEC = tf.TensorSpec([None, params.NUM_FRAMES, params.NUM_BANDS], tf.float32, name="log_mel")


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
        # Trace every method for both input dtypes, so the saved object accepts either.
        for method, specs in (
            (self.__call__, _WAVEFORM_SPECS),
            (self.waveform_to_log_mel, _WAVEFORM_SPECS),
            (self.embed_batch, _WAVEFORMS_SPECS),
            (self.embed_windows, _WINDOWS_SPECS),
        ):
            for spec in specs:
                method.get_concrete_function(spec)

    # The methods below are the export's signatures: every network call inside them goes through
    # vggish_tf2.step (one fixed shape), the same graph the Embedder runs, so they give the
    # Embedder's numbers bit for bit. `self._precision` is a Python constant baked into the graph.
    def _waveform_embeddings(self, waveform):
        windows = frontend.waveform_to_windows(waveform)  # [N,15600]
        return step.embed_windows(self.network, windows, precision=self._precision)  # [N,128]

    @tf.function
    def __call__(self, waveform):
        return self._waveform_embeddings(waveform)

    @tf.function
    def waveform_to_log_mel(self, waveform):
        return step.log_mel(frontend.waveform_to_windows(waveform), precision=self._precision)  # [N,96,64]

    @tf.function
    def embed_batch(self, waveforms):
        spec = tf.TensorSpec([None, params.EMBEDDING_SIZE], tf.float32)
        return tf.map_fn(self._waveform_embeddings, waveforms, fn_output_signature=spec)  # [B,N,128]

    @tf.function
    def embed_windows(self, windows):
        return step.embed_windows(self.network, windows, precision=self._precision)  # [B,128]

    @tf.function(input_signature=[_LOG_MEL_SPEC])
    def embed_log_mel(self, log_mel):
        return step.embed_log_mel(self.network, log_mel)  # [B,128]

    def signatures(self) -> dict:
        """Serving signatures (float32 inputs, as TF Hub's); the restored object's methods also take float64."""
        sigs = {
            "serving_default": self.__call__.get_concrete_function(_WAVEFORM_SPECS[0]),
            "embed_batch": self.embed_batch.get_concrete_function(_WAVEFORMS_SPECS[0]),
            "embed_windows": self.embed_windows.get_concrete_function(_WINDOWS_SPECS[0]),
            "embed_log_mel": self.embed_log_mel,
            "waveform_to_log_mel": self.waveform_to_log_mel.get_concrete_function(_WAVEFORM_SPECS[0]),
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
    if metadata.get("step_examples") != params.STEP_EXAMPLES:
        raise ModelError(
            f"{source}: its signatures run {metadata.get('step_examples')!r}-row network calls, this vggish-tf2 "
            f"runs {params.STEP_EXAMPLES}-row calls (and the numbers depend on it); re-convert it with this "
            "version's converter"
        )


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
    ``verify_hashes=False`` loads it unchecked, with a warning: only for a directory you trust.
    A directory verified before whose files have not changed since (size, mtime, ctime, inode,
    and the hash list itself) is not re-hashed: see :func:`vggish_tf2.hashing.verify_file_hashes_cached`
    and :func:`vggish_tf2.tuning.verified_exports_file`."""
    from vggish_tf2 import tuning

    export_dir = Path(export_dir)
    metadata = read_metadata(export_dir)
    if verify_hashes:
        verify_file_hashes_cached(export_dir, tuning.verified_exports_file())
    else:
        logger.warning("%s: loading without checking its files against the recorded hashes (verification off)",
                       export_dir)
    try:
        module = tf.saved_model.load(str(export_dir))
    except Exception as e:  # TF raises a variety of types for a corrupt SavedModel
        raise ModelError(f"{export_dir}: cannot load the SavedModel ({type(e).__name__}: {e})") from e
    return LoadedExport(path=export_dir, module=module, metadata=metadata)
