"""The old API, for users migrating from the TF1 system this package replaces.

    from vggish_tf2.legacy import load_vggish_model, embed_wav_file
    model = load_vggish_model(device_preference="gpu", gpu_memory_fraction=0.5)
    embeddings = embed_wav_file("clip.wav")                     # float32 [N, 128]
    codes = embed_wav_file("clip.wav", postprocess=True)        # uint8 [N, 128] (AudioSet's PCA)

Same arguments and meaning as before, built on :class:`vggish_tf2.Embedder`:

* ``device_preference`` "auto" (Metal, then CUDA GPU, then CPU), "cpu", "gpu" or "metal"; a
  missing device warns and falls back to CPU. ``gpu_memory_fraction`` in (0, 1] and
  ``gpu_allow_growth`` configure each GPU through ``tf.config`` (see ``vggish_tf2.devices``).
  Left as None they come from ``VGGISH_DEVICE_PREFERENCE``, ``VGGISH_GPU_MEMORY_FRACTION`` and
  ``VGGISH_GPU_ALLOW_GROWTH`` (defaults "auto", 0.8, True); ``model_dir`` from
  ``VGGISH_MODEL_DIR`` (default ``models/vggish``).
* The last model loaded is the module's default: ``embed_wav_file`` uses it when no ``model`` is
  given, and loads one with the defaults above if none was loaded yet.

One difference TF2 imposes: the TF1 system made a new ``tf.Session`` with its own ConfigProto per
load. TF2 configures devices once per process, before its runtime starts; a second
``load_vggish_model`` with other device settings runs where the first one configured TF and
warns about what it could not change.
"""
from __future__ import annotations

import logging
import os
import threading

import numpy as np

from vggish_tf2.devices import detect_available_devices, log_device_info
from vggish_tf2.embedder import Embedder

logger = logging.getLogger(__name__)

_default_model: Embedder | None = None
_default_lock = threading.Lock()  # two threads calling embed_wav_file first must not load twice


def load_vggish_model(
    model_dir: str | os.PathLike | None = None,
    *,
    device_preference: str | None = None,
    gpu_memory_fraction: float | None = None,
    gpu_allow_growth: bool | None = None,
) -> Embedder:
    """Load a converted VGGish model on the preferred device; it also becomes the default model.

    Arguments left as None take the ``VGGISH_*`` environment settings (module docstring).
    Invalid values raise ``InvalidArgumentError`` naming the value, before anything is loaded.
    """
    global _default_model
    model = _load(model_dir, device_preference, gpu_memory_fraction, gpu_allow_growth)
    with _default_lock:
        _default_model = model
    return model


def _load(model_dir, device_preference, gpu_memory_fraction, gpu_allow_growth) -> Embedder:
    # Embedder takes None as "from the VGGISH_* settings", exactly the old API's defaults.
    model = Embedder(
        model_dir, device=device_preference, memory_fraction=gpu_memory_fraction, allow_growth=gpu_allow_growth
    )
    logger.info("VGGish model %s loaded on %s", model.model_path, model.device)
    return model


def _get_default_model() -> Embedder:
    global _default_model
    with _default_lock:
        if _default_model is None:
            logger.info("no VGGish model loaded yet: loading the default one")
            _default_model = _load(None, None, None, None)
        return _default_model


def embed_wav_file(
    path: str | os.PathLike, *, model: Embedder | None = None, postprocess: bool = False
) -> np.ndarray:
    """Embeddings of an audio file: float32 [N, 128], or uint8 [N, 128] with ``postprocess``.

    Any format the package reads (WAV, FLAC, MP3, Ogg, ...) at any sample rate and channel count:
    mixed to mono, resampled to 16 kHz, one example per 0.96 s; a clip shorter than one example
    gives 0 rows, as before. ``postprocess`` applies AudioSet's PCA and 8-bit quantization and
    raises ``ModelError`` when the model was converted without PCA parameters.
    """
    embedder = model if model is not None else _get_default_model()
    embeddings = embedder.embed_file(path)
    return embedder.postprocess(embeddings) if postprocess else embeddings


__all__ = [
    "detect_available_devices",
    "embed_wav_file",
    "load_vggish_model",
    "log_device_info",
]
