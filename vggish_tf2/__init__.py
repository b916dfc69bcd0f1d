"""vggish-tf2: Google's VGGish audio embeddings, TF2-native.

    from vggish_tf2 import Embedder
    embeddings = Embedder().embed_file("clip.wav")   # float32 [N, 128]

Importing the package does not import TensorFlow (~7 s): that happens when an Embedder is made,
after the devices are configured.
"""
from vggish_tf2.devices import DeviceInfo, DeviceType, detect_available_devices, log_device_info, select_device
from vggish_tf2.embedder import Embedder, FileResult
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
from vggish_tf2.legacy import embed_wav_file, load_vggish_model


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
    "VGGishError",
    "__version__",
    "detect_available_devices",
    "embed_wav_file",
    "load_vggish_model",
    "log_device_info",
    "select_device",
]
