"""vggish-tf2: Google's VGGish audio embeddings, TF2-native.

    from vggish_tf2 import Embedder
    embeddings = Embedder().embed_file("clip.wav")   # float32 [N, 128]

Importing the package does not import TensorFlow (~7 s): that happens when an Embedder is made,
after the devices are configured.
"""
from vggish_tf2.errors import (
    AudioDecodeError,
    CheckpointError,
    ConversionError,
    DeviceError,
    DownloadError,
    InvalidArgumentError,
    InvalidAudioError,
    ModelError,
    ModelNotFoundError,
    OutputError,
    VGGishError,
)

# Resolved on first use (PEP 562), so that `python -m vggish_tf2.devices` does not find its own
# module already imported by the package, and `import vggish_tf2` stays cheap.
_LAZY = {
    "DeviceInfo": "vggish_tf2.devices",
    "DeviceType": "vggish_tf2.devices",
    "detect_available_devices": "vggish_tf2.devices",
    "log_device_info": "vggish_tf2.devices",
    "select_device": "vggish_tf2.devices",
    "Embedder": "vggish_tf2.embedder",
    "FileResult": "vggish_tf2.embedder",
    "embed_wav_file": "vggish_tf2.legacy",
    "load_vggish_model": "vggish_tf2.legacy",
    "RunOptions": "vggish_tf2.options",
    "embed_corpus": "vggish_tf2.corpus.run",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vggish_tf2' has no attribute {name!r}")


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("vggish-tf2")
    except metadata.PackageNotFoundError:  # a source tree that was not installed
        return "unknown"


__version__ = _version()

__all__ = [
    "AudioDecodeError",
    "CheckpointError",
    "ConversionError",
    "DeviceError",
    "DeviceInfo",
    "DeviceType",
    "DownloadError",
    "Embedder",
    "FileResult",
    "InvalidArgumentError",
    "InvalidAudioError",
    "ModelError",
    "ModelNotFoundError",
    "OutputError",
    "RunOptions",
    "VGGishError",
    "__version__",
    "detect_available_devices",
    "embed_corpus",
    "embed_wav_file",
    "load_vggish_model",
    "log_device_info",
    "select_device",
]
