"""The library's exceptions: one base, and subclasses that also derive from the built-in they refine,
so callers can catch either ``VGGishError`` or the usual ``ValueError``/``OSError``."""
from __future__ import annotations


def one_line(text: object) -> str:
    """`text` with every run of white space (newlines included) folded to one space: error
    messages go on one line of a manifest or of stderr."""
    return " ".join(str(text).split())


class VGGishError(Exception):
    """Base class of every error raised on purpose by vggish_tf2."""


class InvalidArgumentError(VGGishError, ValueError):
    """An argument has a value the library cannot use (the message names it)."""


class InvalidAudioError(VGGishError, ValueError):
    """Audio that cannot be embedded: undecodable, empty, non-finite, wrong shape."""


class AudioDecodeError(InvalidAudioError):
    """A file could not be decoded (the message names the file and the decoder's reason)."""


class ModelError(VGGishError, ValueError):
    """A model directory that is missing, is not a VGGish export, or is incompatible."""


class ModelNotFoundError(ModelError, FileNotFoundError):
    """No model where one was expected."""


class CheckpointError(VGGishError, ValueError):
    """A TF1 checkpoint or PCA file that does not hold what VGGish needs."""


class ConversionError(VGGishError, RuntimeError):
    """The converted model disagrees with the checkpoint beyond the stated tolerance."""


class DownloadError(VGGishError, OSError):
    """A download failed, was truncated, or did not match its published hash."""


class DeviceError(VGGishError, RuntimeError):
    """A device could not be configured as asked."""


class OutputError(VGGishError, OSError):
    """An output could not be written (disk full, path escapes the output directory, ...)."""


class OutputInUseError(OutputError):
    """The output directory is held by another running run (the message names its pid and host)."""


class InternalError(VGGishError, RuntimeError):
    """A bug in vggish-tf2, not a fault of the input: the message names the file being worked on."""
