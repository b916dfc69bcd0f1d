"""Reading audio files: decode, mix to mono, resample to 16 kHz, in bounded chunks. CPU only, no TF.

Decoders: soundfile (libsndfile: WAV in every PCM width, float, u-law/A-law and ADPCM; FLAC;
Ogg Vorbis/Opus; MP3; AIFF; ...) first, then PyAV (FFmpeg: m4a/AAC and other containers) when it
is installed (``pip install vggish-tf2[formats]``).

Scaling: samples are read as floats, so integer formats are scaled by their own full scale
(24-bit audio keeps all 24 bits, float files are not touched). Google's reader reads int16 and
divides by 32768, which keeps only the top 16 bits of 24-bit audio and wrecks float files; we do
not copy that. Float files whose samples go beyond +-1 are kept as they are: not clipped, not
wrapped (the front end is defined for any finite value). NaN or Inf samples are rejected.

Every failure raises :class:`~vggish_tf2.errors.InvalidAudioError` (or its subclass
:class:`~vggish_tf2.errors.AudioDecodeError`) whose message starts with the file path and gives a
one-line reason.
"""
from __future__ import annotations

import dataclasses
import errno
import logging
import math
import os
import re
import stat
from typing import Iterator, Union

import numpy as np
import soundfile as sf
import soxr

from vggish_tf2 import params
from vggish_tf2.errors import AudioDecodeError, InvalidArgumentError, InvalidAudioError, one_line
from vggish_tf2.windows import check_sample_dtype

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

RESAMPLERS = ("soxr_hq", "kaiser_best")  # soxr for speed; kaiser_best is the reference's (resampy's filter, ours: vggish_tf2.kaiser)
# The reference's resampler by default: Google's numbers out of the box, for ~5 % more whole-process
# time than soxr_hq on a 2-core CPU (issue 10; benchmarks/README.md, "Whole process").
DEFAULT_RESAMPLER = "kaiser_best"
DEFAULT_CHUNK_SECONDS = 60.0

# MP3 frame counts come from the Xing/LAME header or an estimate from the bitrate; a shortfall
# smaller than this is estimation noise, a bigger one is a truncated file.
_MP3_TRUNCATION_TOLERANCE = 0.01  # fraction of the declared frames
_MP3_TRUNCATION_MIN_SECONDS = 0.1
# WAV writers that stream to a pipe put a placeholder in the data size field (0xFFFFFFFF or
# sox's 0x7FFFF000); such a header does not claim that the data is there.
_STREAMED_SIZE_PLACEHOLDER = 0x7FFFF000
_CHUNK_SIZE_MISMATCH = re.compile(r"^\s*(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
# Magic numbers of common non-audio files, to give a precise reason instead of a decoder's.
_NON_AUDIO_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"),
)
_SNIFF_BYTES = 512


@dataclasses.dataclass(frozen=True)
class AudioInfo:
    """What a file holds, before resampling. For files read through PyAV, ``frames`` (and so
    ``duration_seconds``) is the container's estimate; for soundfile it is the decoder's count."""

    sample_rate: int
    channels: int
    frames: int
    duration_seconds: float
    format: str  # soundfile's major format ("WAV", "FLAC", ...) or FFmpeg's container name
    subtype: str  # soundfile's subtype ("PCM_24", "FLOAT", ...) or FFmpeg's codec name


def _soundfile_reason(e: Exception) -> str:
    # LibsndfileError's str() repeats the path ("Error opening '<path>': ..."); keep the reason.
    return one_line(getattr(e, "error_string", None) or e)


def _fail(path: PathLike, reason: str) -> AudioDecodeError:
    return AudioDecodeError(f"{os.fspath(path)}: {one_line(reason)}")


# --- Checks before any decoder sees the file -------------------------------------------------
def _check_file(path: PathLike) -> bytes:
    """Return the first bytes of a readable, non-empty regular file; raise a precise reason otherwise."""
    try:
        st = os.stat(path)
    except FileNotFoundError as e:
        reason = "broken symbolic link" if os.path.islink(path) else "no such file"
        raise _fail(path, reason) from e
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _fail(path, "symbolic link loop") from e
        raise _fail(path, f"cannot stat ({e.strerror or e})") from e
    if stat.S_ISDIR(st.st_mode):
        raise _fail(path, "is a directory, not an audio file")
    if not stat.S_ISREG(st.st_mode):
        # FIFOs and devices would block or never end; a corpus is made of files.
        raise _fail(path, "not a regular file")
    if st.st_size == 0:
        raise _fail(path, "empty file (0 bytes)")
    try:
        with open(path, "rb") as f:
            return f.read(_SNIFF_BYTES)
    except PermissionError as e:
        raise _fail(path, "permission denied") from e
    except OSError as e:
        raise _fail(path, f"cannot read ({e.strerror or e})") from e


def _non_audio_kind(head: bytes) -> str | None:
    """Name the kind of a file that is clearly not audio, or None when it might be audio."""
    for magic, kind in _NON_AUDIO_MAGIC:
        if head.startswith(magic):
            return kind
    # Text files go no further: FFmpeg would read a text playlist (m3u8, ffconcat, sdp) and open
    # whatever files or URLs it names, which an untrusted corpus must not be able to trigger.
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character cut at the sniff boundary is still text.
        try:
            text = head[:-4].decode("utf-8")
        except UnicodeDecodeError:
            return None
    if text and all(ch.isprintable() or ch in "\t\r\n\f" for ch in text):
        return "a text file"
    return None


# --- Decoders: each yields float blocks [n, channels] at the file's own rate -----------------
def _finite(block: np.ndarray, path: PathLike, dtype: type) -> np.ndarray:
    if not np.isfinite(block).all():
        raise InvalidAudioError(f"{os.fspath(path)}: contains non-finite samples (NaN or Inf)")
    if block.dtype != np.float32:
        # Refused whatever the output dtype, so a file is accepted or refused alike by the
        # float64 and the float32 front end (which would turn such samples into Inf).
        peak = float(np.max(np.abs(block))) if block.size else 0.0
        if peak > float(np.finfo(np.float32).max):
            raise InvalidAudioError(f"{os.fspath(path)}: samples beyond the float32 range (max |x| = {peak:.3g})")
    return block.astype(dtype, copy=False)


class _SoundfileSource:
    def __init__(self, path: PathLike, handle: sf.SoundFile):
        self.path = path
        self._f = handle
        self.info = AudioInfo(
            sample_rate=int(handle.samplerate),
            channels=int(handle.channels),
            frames=int(handle.frames),
            duration_seconds=float(handle.frames) / handle.samplerate if handle.samplerate > 0 else 0.0,
            format=str(handle.format),
            subtype=str(handle.subtype),
        )

    def check_complete_header(self) -> None:
        """Reject files whose header declares more data than the file holds (cut downloads)."""
        for declared, present in _CHUNK_SIZE_MISMATCH.findall(self._f.extra_info):
            declared, present = int(declared), int(present)
            if present < declared < _STREAMED_SIZE_PLACEHOLDER:
                raise _fail(self.path, f"truncated: header declares {declared} data bytes, file holds {present}")
        if self.info.format == "OGG" and not _ogg_ends_with_eos(self.path):
            raise _fail(self.path, "truncated: the last Ogg page is not an end-of-stream page")

    def blocks(self, block_frames: int, dtype: type = np.float32) -> Iterator[np.ndarray]:
        # Read float64 for float64 output (exact for every integer width) and for float64 files,
        # so that values beyond the float32 range are caught before the cast instead of turning
        # into Inf. soundfile never reads past the declared frame count: an MP3 whose count is
        # an underestimate (no Xing/LAME header) loses its tail.
        read_dtype = "float64" if (dtype is np.float64 or self.info.subtype == "DOUBLE") else "float32"
        total = 0
        while True:
            try:
                block = self._f.read(block_frames, dtype=read_dtype, always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as e:
                raise _fail(self.path, f"cannot decode after {total} frames ({_soundfile_reason(e)})") from e
            if len(block) == 0:
                break
            total += len(block)
            yield _finite(block, self.path, dtype)
        shortfall = self.info.frames - total
        if shortfall > 0:
            if self.info.format == "MP3":
                allowed = max(_MP3_TRUNCATION_TOLERANCE * self.info.frames,
                              _MP3_TRUNCATION_MIN_SECONDS * self.info.sample_rate)
            else:
                allowed = 0
            if shortfall > allowed:
                raise _fail(self.path, f"truncated: header declares {self.info.frames} frames, decoded {total}")
            logger.debug("%s: decoded %d of %d estimated frames", self.path, total, self.info.frames)

    def close(self) -> None:
        self._f.close()


def _ogg_ends_with_eos(path: PathLike) -> bool:
    """True when the file ends with a whole Ogg page flagged end-of-stream.

    A page is at most 27 + 255 + 255 * 255 bytes, so the last one lies in that tail. A capture
    pattern ("OggS") counts only if its page ends exactly at the end of the file, so the bytes
    "OggS" inside compressed data cannot pass for the last page.
    """
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - (27 + 255 + 255 * 255)))
        tail = f.read()
    at = len(tail)
    while True:
        at = tail.rfind(b"OggS", 0, at)
        if at < 0:
            return False
        if at + 27 <= len(tail) and tail[at + 4] == 0:  # stream structure version 0
            segments = tail[at + 26]
            body = sum(tail[at + 27:at + 27 + segments])
            if at + 27 + segments + body == len(tail):
                return bool(tail[at + 5] & 0x04)  # header_type flag 0x04: end of stream


def _pyav_to_float(frame, dtype: type = np.float32) -> np.ndarray:
    """One decoded PyAV frame as floats [n, channels], scaled by the sample format's full scale."""
    data = frame.to_ndarray()
    channels = frame.layout.nb_channels
    if frame.format.is_planar:
        data = data.T  # [channels, n] -> [n, channels]
    else:
        data = data.reshape(-1, channels)  # packed: [1, n * channels]
    if data.dtype.kind == "f":
        return data
    if data.dtype == np.uint8:
        return (data.astype(dtype) - 128.0) / 128.0
    if data.dtype.kind == "i":
        full_scale = float(2 ** (8 * data.dtype.itemsize - 1))
        return (data.astype(np.float64) / full_scale).astype(dtype, copy=False)
    raise ValueError(f"unsupported sample format {frame.format.name}")


class _PyAVSource:
    def __init__(self, path: PathLike, container):
        self.path = path
        self._container = container
        audio = container.streams.audio
        if not audio:
            container.close()
            raise _fail(path, f"not audio: no audio stream (FFmpeg reads it as '{container.format.name}')")
        self._stream = audio[0]
        ctx = self._stream.codec_context
        rate = int(ctx.sample_rate or self._stream.rate or 0)
        channels = int(ctx.channels or 0)
        if self._stream.duration is not None and self._stream.time_base is not None:
            duration = float(self._stream.duration * self._stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1e6  # AV_TIME_BASE is microseconds
        else:
            duration = 0.0
        self.info = AudioInfo(
            sample_rate=rate,
            channels=channels,
            frames=int(round(duration * rate)),
            duration_seconds=duration,
            format=str(container.format.name),
            subtype=str(ctx.name),
        )

    def check_complete_header(self) -> None:
        """FFmpeg reports damage while decoding; nothing to check up front."""

    def blocks(self, block_frames: int, dtype: type = np.float32) -> Iterator[np.ndarray]:
        import av  # already imported by _open_source; local so the module never needs it

        pending: list[np.ndarray] = []
        pending_frames = 0
        try:
            for frame in self._container.decode(self._stream):
                if frame.sample_rate != self.info.sample_rate or frame.layout.nb_channels != self.info.channels:
                    raise _fail(self.path, "sample rate or channel count changes inside the stream")
                data = _finite(_pyav_to_float(frame, dtype), self.path, dtype)
                pending.append(data)
                pending_frames += len(data)
                if pending_frames >= block_frames:
                    joined = np.concatenate(pending)
                    yield joined[:block_frames]
                    pending, pending_frames = [joined[block_frames:]], len(joined) - block_frames
        except (av.error.FFmpegError, ValueError) as e:
            if isinstance(e, InvalidAudioError):
                raise
            raise _fail(self.path, f"cannot decode ({e})") from e
        # Re-block the tail the same way so block sizes never depend on FFmpeg's frame sizes.
        if pending_frames:
            joined = np.concatenate(pending)
            for start in range(0, len(joined), block_frames):
                yield joined[start:start + block_frames]

    def close(self) -> None:
        self._container.close()


def _open_source(path: PathLike):
    head = _check_file(path)
    try:
        # Bytes, not str: soundfile encodes a str name strictly as UTF-8, which fails on names
        # that are not valid UTF-8 (surrogate escapes); the bytes are the name as on disk.
        source = _SoundfileSource(path, sf.SoundFile(os.fsencode(path)))
    except (sf.LibsndfileError, RuntimeError) as e:
        soundfile_error = _soundfile_reason(e)
        logger.debug("%s: soundfile cannot open it (%s); trying PyAV", path, soundfile_error)
        source = _open_with_pyav(path, head, soundfile_error, e)
    try:
        if source.info.sample_rate <= 0:
            raise _fail(path, f"invalid sample rate {source.info.sample_rate}")
        if source.info.channels <= 0:
            raise _fail(path, f"invalid channel count {source.info.channels}")
        source.check_complete_header()
    except BaseException:
        source.close()
        raise
    return source


def _open_with_pyav(path: PathLike, head: bytes, soundfile_error: str, cause: Exception):
    kind = _non_audio_kind(head)
    if kind is not None:
        raise _fail(path, f"not audio ({kind})") from cause
    try:
        import av
    except ImportError as e:
        raise _fail(
            path,
            f"cannot decode ({soundfile_error}); m4a/aac and other containers need PyAV: "
            "install vggish-tf2[formats]",
        ) from e
    try:
        container = av.open(os.fspath(path), mode="r")
    except (av.error.FFmpegError, ValueError, OSError) as e:
        raise _fail(path, f"not a recognised audio file (soundfile: {soundfile_error}; FFmpeg: {one_line(e)})") from e
    return _PyAVSource(path, container)


# --- Public API -------------------------------------------------------------------------------
def audio_info(path: PathLike) -> AudioInfo:
    """Sample rate, channels, frames, duration, format and subtype of an audio file, without decoding it."""
    source = _open_source(path)
    source.close()
    return source.info


def read_audio(path: PathLike, *, dtype: type = np.float32) -> tuple[np.ndarray, int]:
    """The whole file as ``dtype`` [n, channels] at its own sample rate (scaled as the module doc says)."""
    dtype = check_sample_dtype(dtype)
    source = _open_source(path)
    try:
        rate = source.info.sample_rate
        blocks = list(source.blocks(_block_frames(DEFAULT_CHUNK_SECONDS, rate), dtype))
    finally:
        source.close()
    if not blocks:
        raise InvalidAudioError(f"{os.fspath(path)}: contains 0 samples")
    return np.concatenate(blocks), rate


def to_mono(samples: np.ndarray, *, dtype: type = np.float32) -> np.ndarray:
    """Mean over channels: [n, channels] (or already-mono [n]) -> ``dtype`` [n]."""
    dtype = check_sample_dtype(dtype)
    samples = np.asarray(samples)
    if samples.ndim == 1:
        return samples.astype(dtype, copy=True)
    if samples.ndim != 2 or samples.shape[1] == 0:
        raise InvalidArgumentError(f"samples.shape={samples.shape} must be [n] or [n, channels>0]")
    if samples.shape[1] == 1:
        return samples[:, 0].astype(dtype, copy=True)
    # Sum in float64 so the mean of float32 channels is rounded once, column by column: the same
    # sequential sum that mean(axis=1, dtype=float64) does for few channels, but 30x faster on
    # interleaved stereo (measured 1.5 vs 44 ms per 60 s), where the mean was most of decoding.
    total = samples[:, 0].astype(np.float64)
    for channel in range(1, samples.shape[1]):
        total += samples[:, channel]
    total /= samples.shape[1]
    return total.astype(dtype, copy=False)


def resample(
    samples_mono: np.ndarray,
    orig_sr: float,
    *,
    target_sr: int = params.SAMPLE_RATE,
    resampler: str = DEFAULT_RESAMPLER,
    dtype: type = np.float32,
) -> np.ndarray:
    """Resample mono float samples from ``orig_sr`` to ``target_sr`` Hz; returns ``dtype`` [m].

    ``"soxr_hq"`` uses soxr's streaming resampler in one call: the same filter and the same
    numbers as :func:`stream_audio` gives chunk by chunk. ``"kaiser_best"`` is the reference's
    resampler (resampy's filter and phases, as a polyphase product: :mod:`vggish_tf2.kaiser`),
    computed in float64 whatever ``dtype``; it needs integer rates.
    """
    _check_rate("orig_sr", orig_sr)
    _check_rate("target_sr", target_sr)
    _check_resampler(resampler)
    dtype = check_sample_dtype(dtype)
    samples = np.asarray(samples_mono)
    if samples.ndim != 1:
        raise InvalidArgumentError(f"samples_mono.shape={samples.shape} must be 1-D; mix down with to_mono first")
    if not np.isfinite(samples).all():
        raise InvalidAudioError("samples contain non-finite values (NaN or Inf)")
    if orig_sr == target_sr:
        return samples.astype(dtype, copy=True)
    if resampler == "soxr_hq":
        stream = _soxr_stream(orig_sr, target_sr, dtype)
        return stream.resample_chunk(samples.astype(dtype, copy=False), last=True)
    from vggish_tf2 import kaiser

    out = kaiser.resample_kaiser_best(samples.astype(np.float64, copy=False), _integer_rate("orig_sr", orig_sr),
                                      target_sr=_integer_rate("target_sr", target_sr))
    return out.astype(dtype, copy=False)


def stream_audio(
    path: PathLike,
    *,
    resampler: str = DEFAULT_RESAMPLER,
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
    dtype: type = np.float32,
) -> Iterator[np.ndarray]:
    """Decode ``path`` block by block into mono 16 kHz chunks of ``dtype``, in bounded memory.

    The file is opened (and checked) when this is called; decoding happens as the iterator is
    consumed. Chunk lengths vary (resampling delay, the last block): callers must not rely on
    them. The concatenation equals :func:`load_audio` exactly, whatever ``chunk_seconds``: 16 kHz
    input is only mixed down, and soxr's streaming resampler gives the same samples for any
    chunking, and so does ``"kaiser_best"`` (:class:`vggish_tf2.kaiser.KaiserBestStream`). With
    ``dtype=float64`` samples stay float64 from decoding on (the reference's precision). An error
    found mid-file (truncation, NaN) is raised after the chunks before it were yielded: discard them.
    """
    _check_resampler(resampler)
    dtype = check_sample_dtype(dtype)
    if not (isinstance(chunk_seconds, (int, float)) and math.isfinite(chunk_seconds) and chunk_seconds > 0):
        raise InvalidArgumentError(f"chunk_seconds={chunk_seconds!r} must be a finite number > 0")
    source = _open_source(path)
    if source.info.frames == 0 and isinstance(source, _SoundfileSource):
        source.close()
        raise InvalidAudioError(f"{os.fspath(path)}: contains 0 samples")
    return _stream(source, resampler, chunk_seconds, dtype)


def load_audio(path: PathLike, *, resampler: str = DEFAULT_RESAMPLER, dtype: type = np.float32) -> np.ndarray:
    """The whole file as mono 16 kHz ``dtype`` [n]: by construction the concatenation of :func:`stream_audio`."""
    chunks = list(stream_audio(path, resampler=resampler, dtype=dtype))
    if not chunks:
        return np.zeros(0, check_sample_dtype(dtype))
    return np.concatenate(chunks)


# --- Helpers ----------------------------------------------------------------------------------
def _stream(source, resampler: str, chunk_seconds: float, dtype: type) -> Iterator[np.ndarray]:
    target = params.SAMPLE_RATE
    try:
        rate = source.info.sample_rate
        block_frames = _block_frames(chunk_seconds, rate)
        decoded = 0
        if rate == target:
            stream = None
        elif resampler == "soxr_hq":
            stream = _soxr_stream(rate, target, dtype)
        else:
            from vggish_tf2 import kaiser

            stream = kaiser.KaiserBestStream(_integer_rate(f"{os.fspath(source.path)}: sample rate", rate), target_sr=target)
        for block in source.blocks(block_frames, dtype):
            decoded += len(block)
            mono = to_mono(block, dtype=dtype)
            out = mono if stream is None else _resample_chunk(stream, mono, dtype)
            if out.size:
                yield out
        if stream is not None and decoded:
            tail = _resample_chunk(stream, None, dtype)
            if tail.size:
                yield tail
        if decoded == 0:
            raise InvalidAudioError(f"{os.fspath(source.path)}: contains 0 samples")
        logger.debug("%s: %d frames at %d Hz decoded", source.path, decoded, rate)
    finally:
        source.close()


def _resample_chunk(stream, mono: np.ndarray | None, dtype: type) -> np.ndarray:
    """One chunk through a soxr or kaiser_best stream; ``None`` flushes it."""
    if isinstance(stream, soxr.ResampleStream):
        if mono is None:
            return stream.resample_chunk(np.zeros(0, dtype), last=True)
        return stream.resample_chunk(mono)
    out = stream.flush() if mono is None else stream.process(mono)  # float64
    return out.astype(dtype, copy=False)


def _soxr_stream(orig_sr: float, target_sr: float, dtype: type = np.float32) -> soxr.ResampleStream:
    return soxr.ResampleStream(orig_sr, target_sr, 1, dtype=np.dtype(dtype).name, quality="HQ")


def _integer_rate(name: str, value: float) -> int:
    # kaiser_best's polyphase filter needs a rational ratio; every real file has an integer rate.
    if float(value) != int(value):
        raise InvalidArgumentError(f"{name}={value!r} must be a whole number of Hz for resampler='kaiser_best'")
    return int(value)


def _block_frames(chunk_seconds: float, rate: float) -> int:
    return max(1, int(round(chunk_seconds * rate)))


def _check_rate(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidArgumentError(f"{name}={value!r} must be a number")
    if not (math.isfinite(value) and value > 0):
        raise InvalidArgumentError(f"{name}={value!r} must be > 0")


def _check_resampler(resampler: str) -> None:
    if resampler not in RESAMPLERS:
        raise InvalidArgumentError(f"resampler={resampler!r} must be one of {', '.join(RESAMPLERS)}")


__all__ = [
    "AudioInfo",
    "RESAMPLERS",
    "audio_info",
    "load_audio",
    "read_audio",
    "resample",
    "stream_audio",
    "to_mono",
]
