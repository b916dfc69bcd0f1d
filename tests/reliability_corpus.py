"""A generated corpus of broken, awkward and valid audio files, for tests/test_reliability.py.

``build_bad_corpus(root)`` writes every kind in :data:`KINDS` under ``root`` and returns the list
of :class:`Case` (relative name, expected manifest status, expected reason pattern). Everything is
seeded: two calls give byte-identical files. Files are short (at most a few seconds, except the
long-silence kinds), so a run over the whole corpus costs seconds of model time.

Expected statuses are what a run with ``--short-clips drop`` must record: ``ok`` (embedded),
``skipped`` (shorter than one example, with a reason) or ``failed`` (with a one-line error
matching ``reason``).
"""
from __future__ import annotations

import dataclasses
import io
import os
import struct
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf

SR = 16000
ONE_EXAMPLE_SAMPLES = 15600  # 0.975 s at 16 kHz: the shortest clip that gives one example


@dataclasses.dataclass(frozen=True)
class Case:
    name: str  # path relative to the corpus root (may hold spaces, unicode, a newline, ...)
    status: str  # ok | skipped | failed
    reason: str | None = None  # regex the manifest's error (failed) or reason (skipped) must match
    via_list: bool = False  # a directory walk does not yield it: the run names it in a list file


def noise(seconds: float, rate: int = SR, *, seed: int, channels: int = 1, amplitude: float = 0.1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(round(seconds * rate))
    shape = (n,) if channels == 1 else (n, channels)
    return (amplitude * rng.standard_normal(shape)).astype(np.float32)


def _write(path: Path, data, rate: int = SR, *, format: str = "WAV", subtype: str = "PCM_16") -> Path:
    data = np.asarray(data)
    channels = 1 if data.ndim == 1 else data.shape[1]
    with sf.SoundFile(path, "w", rate, channels, format=format, subtype=subtype) as f:
        for start in range(0, len(data), 4096):  # in blocks: one long Vorbis write can crash libsndfile
            f.write(data[start:start + 4096])
    return path


def _encoded(format: str, subtype: str, seconds: float = 3.0, rate: int = 48000, seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    data = noise(seconds, rate, seed=seed)
    with sf.SoundFile(buffer, "w", rate, 1, format=format, subtype=subtype) as f:
        for start in range(0, len(data), 4096):
            f.write(data[start:start + 4096])
    return buffer.getvalue()


def _cut(format: str, subtype: str, seed: int) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        data = _encoded(format, subtype, seed=seed)
        path.write_bytes(data[: len(data) // 2])
    return make


def _header_claims_more(path: Path) -> None:
    """A complete-looking WAV whose RIFF and data sizes claim 10x the samples present."""
    data = bytearray(_encoded("WAV", "PCM_16", seconds=1.5, rate=SR, seed=11))
    at = data.index(b"data")
    present = struct.unpack("<I", data[at + 4:at + 8])[0]
    struct.pack_into("<I", data, at + 4, present * 10)
    struct.pack_into("<I", data, 4, len(data) - 8 + present * 9)
    path.write_bytes(bytes(data))


def _wav_with_late_nan(path: Path) -> None:
    """61 s of float noise whose last second holds a NaN: found after the first 60-s decoding chunk."""
    data = noise(61.0, seed=12)
    data[int(60.5 * SR)] = np.nan
    _write(path, data, subtype="FLOAT")


def _png(path: Path) -> None:
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(256)) * 8)


def _zip(path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo("a.txt", date_time=(1980, 1, 1, 0, 0, 0)), "hello" * 100)
    path.write_bytes(buffer.getvalue())


def _symlink(target: str) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        os.symlink(target, path)
    return make


def _loop(path: Path) -> None:
    other = path.with_name(path.name + ".other.wav")
    os.symlink(other.name, path)
    os.symlink(path.name, other)


def _unreadable(path: Path) -> None:
    _write(path, noise(1.5, seed=20))
    os.chmod(path, 0)


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _silence_flac(seconds: float) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        n = int(seconds * SR)
        block = np.zeros(SR * 60, np.int16)
        with sf.SoundFile(path, "w", SR, 1, format="FLAC", subtype="PCM_16") as f:
            for start in range(0, n, len(block)):
                f.write(block[: min(len(block), n - start)])
    return make


def _audio(seconds=1.5, rate=SR, *, seed, format="WAV", subtype="PCM_16", channels=1, amplitude=0.1):
    return lambda path: _write(path, noise(seconds, rate, seed=seed, channels=channels, amplitude=amplitude),
                               rate, format=format, subtype=subtype)


def _values(values, subtype="FLOAT"):
    return lambda path: _write(path, np.asarray(values), subtype=subtype)


def _with_value(value, *, seed, dtype=np.float32, subtype="FLOAT"):
    def make(path: Path) -> None:
        data = noise(1.5, seed=seed).astype(dtype)
        data[1000] = value
        _write(path, data, subtype=subtype)
    return make


SHORT = r"shorter than one example .*--short-clips"
LONG_NAME = "long_" + "x" * 245 + ".wav"  # a valid name, but name + ".npz" exceeds the 255-byte limit

# (name, how to make it, expected status, reason pattern, via a list file)
KINDS: list[tuple[str, Callable[[Path], None], str, str | None, bool]] = [
    # --- sizes -------------------------------------------------------------------------------------
    ("size/empty.wav", lambda p: p.write_bytes(b""), "failed", r"empty file \(0 bytes\)", False),
    ("size/zero_frames.wav", _values(np.zeros(0, np.float32), "PCM_16"), "failed", "contains 0 samples", False),
    ("size/one_sample.wav", _values(np.full(1, 0.5, np.float32), "PCM_16"), "skipped", SHORT, False),
    ("size/239_samples.wav", _audio(239 / SR, seed=1), "skipped", SHORT, False),
    ("size/400_samples.wav", _audio(400 / SR, seed=2), "skipped", SHORT, False),
    ("size/one_short_of_an_example.wav", _audio((ONE_EXAMPLE_SAMPLES - 1) / SR, seed=3), "skipped", SHORT, False),
    ("size/exactly_one_example.wav", _audio(ONE_EXAMPLE_SAMPLES / SR, seed=4), "ok", None, False),
    ("size/header_only_no_data_chunk.wav", lambda p: p.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt "), "failed",
     r"not a recognised audio file", False),
    # --- truncation --------------------------------------------------------------------------------
    ("cut/truncated.wav", _cut("WAV", "PCM_16", 5), "failed", "truncated: header declares", False),
    ("cut/truncated.flac", _cut("FLAC", "PCM_16", 6), "failed", "cannot decode", False),
    ("cut/truncated.mp3", _cut("MP3", "MPEG_LAYER_III", 7), "failed", "truncated: header declares", False),
    ("cut/truncated.ogg", _cut("OGG", "VORBIS", 8), "failed", "truncated: the last Ogg page", False),
    ("cut/truncated.opus", _cut("OGG", "OPUS", 9), "failed", "truncated: the last Ogg page", False),
    ("cut/header_claims_10x.wav", _header_claims_more, "failed", "truncated: header declares", False),
    # --- not audio, wrong extensions -----------------------------------------------------------------
    ("junk/text.wav", lambda p: p.write_text("these are my notes, not audio\n" * 10), "failed",
     r"not audio \(a text file\)", False),
    ("junk/playlist.mp3", lambda p: p.write_text("#EXTM3U\n#EXTINF:10,\n/etc/passwd\n"), "failed",
     r"not audio \(a text file\)", False),
    ("junk/image.png", _png, "failed", r"not audio \(a PNG image\)", True),
    ("junk/png_named.wav", _png, "failed", r"not audio \(a PNG image\)", False),
    ("junk/jpeg_named.mp3", lambda p: p.write_bytes(b"\xff\xd8\xff\xe0" + bytes(300)), "failed",
     r"not audio \(a JPEG image\)", False),
    ("junk/zip_named.flac", _zip, "failed", r"not audio \(a ZIP archive\)", False),
    ("junk/random_bytes.wav", lambda p: p.write_bytes(np.random.default_rng(13).bytes(6000)), "failed",
     "not a recognised audio file", False),
    ("junk/random_bytes.bin", lambda p: p.write_bytes(np.random.default_rng(14).bytes(6000)), "failed",
     "not a recognised audio file", True),
    ("junk/id3_tag_only.mp3", lambda p: p.write_bytes(b"ID3\x04\x00\x00\x00\x00\x00\x00"), "failed",
     "not a recognised audio file|cannot decode|0 samples", False),
    ("junk/directory.wav", lambda p: p.mkdir(), "failed", "is a directory, not an audio file", True),
    ("junk/fifo.wav", _fifo, "failed", "not a regular file", False),
    ("junk/wav_named.mp3", _audio(1.5, seed=15), "ok", None, False),
    ("junk/flac_named.ogg", _audio(1.5, seed=16, format="FLAC"), "ok", None, False),
    # --- sample values -------------------------------------------------------------------------------
    ("values/nan.wav", _with_value(np.nan, seed=17), "failed", r"contains non-finite samples \(NaN or Inf\)", False),
    ("values/inf.wav", _with_value(np.inf, seed=18), "failed", r"contains non-finite samples", False),
    ("values/minus_inf.wav", _with_value(-np.inf, seed=19), "failed", r"contains non-finite samples", False),
    ("values/nan_after_60_s.wav", _wav_with_late_nan, "failed", r"contains non-finite samples", False),
    ("values/huge_float32.wav", _with_value(3e38, seed=21), "ok", None, False),
    ("values/float_beyond_unity.wav", _audio(1.5, seed=22, subtype="FLOAT", amplitude=30.0), "ok", None, False),
    ("values/double_beyond_float32.wav", _with_value(1e300, seed=23, dtype=np.float64, subtype="DOUBLE"), "failed",
     "samples beyond the float32 range", False),
    ("values/full_scale_square.wav", _values(np.tile(np.r_[np.ones(40), -np.ones(40)], 300).astype(np.float32)),
     "ok", None, False),
    # --- sample formats, channels, rates -------------------------------------------------------------
    ("formats/pcm_u8.wav", _audio(seed=24, subtype="PCM_U8"), "ok", None, False),
    ("formats/pcm_24.wav", _audio(seed=25, subtype="PCM_24"), "ok", None, False),
    ("formats/pcm_32.wav", _audio(seed=26, subtype="PCM_32"), "ok", None, False),
    ("formats/float64.wav", _audio(seed=27, subtype="DOUBLE"), "ok", None, False),
    ("formats/ulaw.wav", _audio(seed=28, subtype="ULAW"), "ok", None, False),
    ("formats/ima_adpcm.wav", _audio(seed=29, subtype="IMA_ADPCM"), "ok", None, False),
    ("formats/pcm_24.aiff", _audio(seed=30, format="AIFF", subtype="PCM_24"), "ok", None, False),
    ("formats/six_channels.wav", _audio(seed=31, channels=6), "ok", None, False),
    ("formats/eight_channels.flac", _audio(seed=32, channels=8, format="FLAC"), "ok", None, False),
    ("formats/8_khz.wav", _audio(2.0, 8000, seed=33), "ok", None, False),
    ("formats/192_khz.wav", _audio(2.0, 192000, seed=34, subtype="PCM_24"), "ok", None, False),
    ("formats/silence_2_min.flac", _silence_flac(120.0), "ok", None, False),  # fast stand-in for 3 hours
    # --- file system ---------------------------------------------------------------------------------
    ("fs/unreadable.wav", _unreadable, "failed", "permission denied", False),
    ("fs/broken_link.wav", _symlink("does_not_exist.wav"), "failed", "broken symbolic link", False),
    ("fs/loop.wav", _loop, "failed", "symbolic link loop", False),
    ("fs/link_to_good.wav", _symlink("../names/with space.wav"), "ok", None, False),
    # --- names -------------------------------------------------------------------------------------
    ("names/with space.wav", _audio(seed=35), "ok", None, False),
    ("names/ünïcødé 日本語.flac", _audio(seed=36, format="FLAC"), "ok", None, False),
    ("names/new\nline.wav", _audio(seed=37), "ok", None, False),
    ("names/-leading-dash.wav", _audio(seed=38), "ok", None, False),
    ("names/--out=evil.wav", _audio(seed=39), "ok", None, False),
    ("names/two..dots.wav", _audio(seed=40), "ok", None, False),
    ("names/quote'\"$(x).wav", _audio(seed=41), "ok", None, False),
    ("names/" + os.fsdecode(b"latin1_\xe9t\xe9.wav"), _audio(seed=42), "ok", None, False),  # not valid UTF-8
    ("names/" + LONG_NAME, _audio(seed=43), "failed", "File name too long", False),
]


def build_bad_corpus(root: Path, *, extra: list | None = None) -> list[Case]:
    """Write every kind of :data:`KINDS` (plus ``extra``, same tuples) under ``root``; returns the cases.
    The ``fs/loop.wav`` pair counts once: its partner is named by the same case."""
    cases = []
    for name, make, status, reason, via_list in [*KINDS, *(extra or [])]:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.fsencode(name).decode("utf-8")
            make(path)
        except UnicodeDecodeError:  # soundfile cannot open a non-UTF-8 name: write, then rename
            make(path.with_name("_not_utf8.tmp"))
            os.rename(path.with_name("_not_utf8.tmp"), path)
        cases.append(Case(name, status, reason, via_list))
        if make is _loop:
            cases.append(Case(name + ".other.wav", status, reason, via_list))
    return cases


def write_list_file(path: Path, root: Path, cases: list[Case]) -> Path:
    """A list file naming the cases a directory walk does not yield (wrong extension, directories)."""
    path.write_text("".join(f"{root / case.name}\n" for case in cases if case.via_list))
    return path


def write_short_corpus(root: Path, count: int, *, seed: int = 0, min_seconds: float = 1.0,
                       max_seconds: float = 2.0) -> list[str]:
    """``count`` seeded PCM16 16-kHz noise files of ``min_seconds``..``max_seconds`` in 10
    subdirectories; returns their relative names in the order a run walks them."""
    rng = np.random.default_rng(seed)
    names = []
    for i in range(count):
        seconds = float(rng.uniform(min_seconds, max_seconds))
        name = f"d{i % 10}/f{i:05d}.wav"
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, noise(seconds, seed=seed * 100003 + i, amplitude=0.05), SR, subtype="PCM_16")
        names.append(name)
    return sorted(names, key=lambda n: Path(n).parts)


def write_straddling_corpus(root: Path, count: int = 40, *, seed: int = 0, min_seconds: float = 2.0,
                            max_seconds: float = 12.0) -> list[str]:
    """``count`` seeded stereo 44.1-kHz PCM16 noise files of different lengths (2-12 s: 2 to 12
    examples each), so that with a batch of 8 the rows of one file land in two device steps, and a
    run resumed after a kill puts them in other rows of other batches. Returns their names."""
    rng = np.random.default_rng(seed)
    names = []
    for i in range(count):
        seconds = float(rng.uniform(min_seconds, max_seconds))
        name = f"clip{i + 1:02d}.wav"
        _write(root / name, noise(seconds, 44100, seed=seed * 1009 + i, channels=2), 44100)
        names.append(name)
    return names
