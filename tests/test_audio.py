"""Audio reading: exact scaling per sample format, mono, resampling, stream == whole, and errors."""
import os
import sys

import numpy as np
import pytest
import soundfile as sf
import soxr

from vggish_tf2 import audio
from vggish_tf2.errors import AudioDecodeError, InvalidArgumentError, InvalidAudioError


def write(path, data, sample_rate, *, format=None, subtype=None, block=4096):
    """Write in blocks: one long write of Ogg Vorbis can crash libsndfile."""
    data = np.asarray(data)
    channels = 1 if data.ndim == 1 else data.shape[1]
    with sf.SoundFile(path, "w", sample_rate, channels, subtype=subtype, format=format) as f:
        for start in range(0, len(data), block):
            f.write(data[start:start + block])
    return path


def sine(frequency_hz, seconds, sample_rate, amplitude=0.5):
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    return (amplitude * np.sin(2 * np.pi * frequency_hz * t)).astype(np.float32)


def peak_frequency_hz(signal, sample_rate):
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    return np.fft.rfftfreq(len(signal), 1 / sample_rate)[np.argmax(spectrum)]


def encode_m4a(path, signal, sample_rate):
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=sample_rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(signal[np.newaxis, :], format="fltp", layout="mono")
        frame.sample_rate = sample_rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


# --- Scaling: every sample format comes back at its own full scale ------------------------------
def test_pcm16_exact(tmp_path):
    ints = np.array([-32768, -1, 0, 1, 12345, 32767], np.int16)
    path = write(tmp_path / "a.wav", ints, 16000, subtype="PCM_16")
    samples, rate = audio.read_audio(path)
    assert rate == 16000 and samples.dtype == np.float32 and samples.shape == (6, 1)
    np.testing.assert_array_equal(samples[:, 0], ints / 32768.0)


@pytest.mark.parametrize("container,format", [("wav", "WAV"), ("flac", "FLAC"), ("aiff", "AIFF")])
def test_24_bit_keeps_its_low_bits(tmp_path, container, format):
    rng = np.random.default_rng(0)
    ints24 = rng.integers(-(2**23), 2**23, size=1000, dtype=np.int32)
    ints24[:3] = [1, -1, 2**23 - 1]  # values below int16 resolution must survive
    path = write(tmp_path / f"a.{container}", ints24 << 8, 16000, format=format, subtype="PCM_24")
    samples, _ = audio.read_audio(path)
    np.testing.assert_array_equal(samples[:, 0], (ints24 / 2.0**23).astype(np.float32))
    # Google's int16 reader would drop these bits; ours does not.
    assert samples[0, 0] == 2.0**-23 and samples[1, 0] == -(2.0**-23)


def test_pcm32_and_u8(tmp_path):
    ints32 = np.array([-(2**31), -5, 0, 2**30, 2**31 - 1], np.int32)
    samples, _ = audio.read_audio(write(tmp_path / "a.wav", ints32, 16000, subtype="PCM_32"))
    np.testing.assert_array_equal(samples[:, 0], (ints32 / 2.0**31).astype(np.float32))
    ints16 = np.array([-32768, -256, 0, 256, 32512], np.int16)  # exactly representable in 8 bits
    samples, _ = audio.read_audio(write(tmp_path / "b.wav", ints16, 16000, subtype="PCM_U8"))
    np.testing.assert_array_equal(samples[:, 0], ints16 / 32768.0)


def test_float_wav_stays_float_beyond_unity(tmp_path):
    values = np.array([0.0, 1e-6, -0.25, 1.5, -3.75, 100.0], np.float32)
    samples, _ = audio.read_audio(write(tmp_path / "f.wav", values, 16000, subtype="FLOAT"))
    np.testing.assert_array_equal(samples[:, 0], values)  # not clipped, not wrapped, not rescaled
    double = np.array([0.1, -2.5, 1e-300, 12345.678], np.float64)
    samples, _ = audio.read_audio(write(tmp_path / "d.wav", double, 16000, subtype="DOUBLE"))
    np.testing.assert_array_equal(samples[:, 0], double.astype(np.float32))


@pytest.mark.parametrize("subtype", ["ULAW", "ALAW"])
def test_companded(tmp_path, subtype):
    path = write(tmp_path / "c.wav", sine(440, 0.5, 8000), 8000, subtype=subtype)
    samples, _ = audio.read_audio(path)
    # libsndfile expands to 16-bit values; as floats they are those values over 32768, exactly.
    np.testing.assert_array_equal(samples[:, 0], sf.read(path, dtype="int16")[0] / 32768.0)


@pytest.mark.parametrize("subtype", ["IMA_ADPCM", "MS_ADPCM"])
def test_adpcm(tmp_path, subtype):
    signal = sine(440, 1.0, 16000)
    samples = audio.load_audio(write(tmp_path / "a.wav", signal, 16000, subtype=subtype))
    n = min(len(samples), len(signal))
    assert abs(n - len(signal)) < 1024  # block codecs may pad the last block
    assert np.corrcoef(samples[:n], signal[:n])[0, 1] > 0.99


@pytest.mark.parametrize(
    "name,format,subtype",
    [("a.ogg", "OGG", "VORBIS"), ("a.opus", "OGG", "OPUS"), ("a.mp3", "MP3", "MPEG_LAYER_III"), ("a.flac", "FLAC", "PCM_16")],
)
def test_compressed_formats_resample_to_right_frequency(tmp_path, name, format, subtype):
    path = write(tmp_path / name, sine(1000, 2.0, 48000), 48000, format=format, subtype=subtype)
    info = audio.audio_info(path)
    assert (info.sample_rate, info.channels, info.format, info.subtype) == (48000, 1, format, subtype)
    samples = audio.load_audio(path)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) - 32000) < 1000  # codec delay/padding only
    assert abs(peak_frequency_hz(samples, 16000) - 1000) < 2
    assert 0.4 < np.max(np.abs(samples[4000:28000])) < 0.6


def test_m4a_through_pyav(tmp_path):
    path = encode_m4a(tmp_path / "a.m4a", sine(1000, 2.0, 44100), 44100)
    info = audio.audio_info(path)
    assert info.sample_rate == 44100 and info.channels == 1 and info.subtype == "aac"
    assert abs(info.duration_seconds - 2.0) < 0.1
    samples = audio.load_audio(path)
    assert abs(len(samples) - 32000) < 2000
    assert abs(peak_frequency_hz(samples, 16000) - 1000) < 2
    np.testing.assert_array_equal(np.concatenate(list(audio.stream_audio(path, chunk_seconds=0.3))), samples)
    raw, rate = audio.read_audio(path)
    assert rate == 44100 and raw.shape[1] == 1 and raw.dtype == np.float32


def test_m4a_without_pyav_names_the_extra(tmp_path, monkeypatch):
    path = encode_m4a(tmp_path / "a.m4a", sine(1000, 0.5, 44100), 44100)
    monkeypatch.setitem(sys.modules, "av", None)  # import av now raises ImportError
    with pytest.raises(AudioDecodeError, match=r"^.*a\.m4a: .*install vggish-tf2\[formats\]"):
        audio.load_audio(path)


def test_pyav_integer_formats_are_scaled():
    av = pytest.importorskip("av")
    ints = np.array([[-32768, 0, 16384, 32767]], np.int16)
    frame = av.AudioFrame.from_ndarray(ints, format="s16", layout="mono")
    np.testing.assert_array_equal(audio._pyav_to_float(frame)[:, 0], ints[0] / 32768.0)
    stereo = np.array([[0, 128, 255, 64]], np.uint8)  # packed: L R L R
    frame = av.AudioFrame.from_ndarray(stereo, format="u8", layout="stereo")
    np.testing.assert_array_equal(audio._pyav_to_float(frame), [[-1.0, 0.0], [127 / 128, -0.5]])


# --- Mono and resampling ---------------------------------------------------------------------------
def test_mono_is_channel_mean(tmp_path):
    rng = np.random.default_rng(2)
    six = (rng.standard_normal((16000, 6)) * 0.2).astype(np.float32)
    samples, _ = audio.read_audio(write(tmp_path / "six.wav", six, 16000, subtype="FLOAT"))
    assert samples.shape == (16000, 6)
    mono = audio.to_mono(samples)
    np.testing.assert_array_equal(mono, six.mean(axis=1, dtype=np.float64).astype(np.float32))
    np.testing.assert_array_equal(audio.load_audio(tmp_path / "six.wav"), mono)
    np.testing.assert_array_equal(audio.to_mono(six[:, :1]), six[:, 0])
    with pytest.raises(InvalidArgumentError, match="samples.shape"):
        audio.to_mono(np.zeros((3, 2, 2)))


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 192000])
@pytest.mark.parametrize("resampler", ["soxr_hq", "kaiser_best"])
def test_resample_sine_lands_at_right_frequency(rate, resampler):
    out = audio.resample(sine(1000, 1.5, rate), rate, resampler=resampler)
    assert out.dtype == np.float32
    assert abs(len(out) - 24000) <= 1
    assert abs(peak_frequency_hz(out, 16000) - 1000) < 1
    assert abs(np.max(np.abs(out[2000:-2000])) - 0.5) < 0.01


def test_kaiser_best_is_resampy_in_float64():
    resampy = pytest.importorskip("resampy")  # the oracle only; the library does not need it
    signal = sine(440, 0.5, 44100)
    expected = resampy.resample(signal.astype(np.float64), 44100, 16000, filter="kaiser_best")
    ours = audio.resample(signal, 44100, resampler="kaiser_best", dtype=np.float64)
    assert ours.dtype == np.float64 and ours.shape == expected.shape
    # Summation order only: measured 2.8e-15 at most over every rate in tests/test_kaiser.py.
    assert np.abs(ours - expected).max() <= 1e-12


def test_resample_at_target_rate_is_a_copy():
    signal = sine(440, 0.1, 16000)
    out = audio.resample(signal, 16000)
    np.testing.assert_array_equal(out, signal)
    assert not np.shares_memory(out, signal)


def test_resample_bad_arguments():
    with pytest.raises(InvalidArgumentError, match="orig_sr=0 must be > 0"):
        audio.resample(np.zeros(10, np.float32), 0)
    with pytest.raises(InvalidArgumentError, match="target_sr=-1"):
        audio.resample(np.zeros(10, np.float32), 8000, target_sr=-1)
    with pytest.raises(InvalidArgumentError, match="resampler='fast'"):
        audio.resample(np.zeros(10, np.float32), 8000, resampler="fast")
    with pytest.raises(InvalidArgumentError, match="to_mono"):
        audio.resample(np.zeros((10, 2), np.float32), 8000)
    with pytest.raises(InvalidAudioError, match="non-finite"):
        audio.resample(np.array([0.0, np.nan], np.float32), 8000)


def test_kaiser_best_needs_no_resampy_and_whole_hertz(monkeypatch):
    monkeypatch.setitem(sys.modules, "resampy", None)  # import resampy would fail
    assert audio.resample(np.zeros(800, np.float32), 8000, resampler="kaiser_best").shape == (1600,)
    with pytest.raises(InvalidArgumentError, match=r"orig_sr=8000.5 must be a whole number of Hz for resampler='kaiser_best'"):
        audio.resample(np.zeros(100, np.float32), 8000.5, resampler="kaiser_best")


@pytest.mark.parametrize("resampler", ["soxr_hq", "kaiser_best"])
def test_float64_stream_is_chunking_independent(tmp_path, resampler):
    """dtype=float64 (the float64 front end's input): every chunking gives the same samples."""
    rng = np.random.default_rng(8)
    stereo = (rng.standard_normal((44100 * 3 + 5, 2)) * 0.3)
    path = write(tmp_path / "f.wav", stereo, 44100, subtype="PCM_24")
    whole = audio.load_audio(path, resampler=resampler, dtype=np.float64)
    assert whole.dtype == np.float64
    for chunk_seconds in (0.05, 0.7, 60.0):
        chunks = list(audio.stream_audio(path, resampler=resampler, chunk_seconds=chunk_seconds, dtype=np.float64))
        assert all(c.dtype == np.float64 for c in chunks)
        np.testing.assert_array_equal(np.concatenate(chunks), whole)
    # 24-bit samples read in float64 keep all their bits: the mono mix is exact before resampling.
    data, _ = audio.read_audio(path, dtype=np.float64)
    assert data.dtype == np.float64 and np.all(data * 2**23 == np.round(data * 2**23))


# --- Streaming equals whole-file reading --------------------------------------------------------------
def test_stream_is_bit_identical_at_16k(tmp_path):
    rng = np.random.default_rng(3)
    stereo = (rng.standard_normal((16000 * 5 + 17, 2)) * 0.3).astype(np.float32)
    path = write(tmp_path / "s.wav", stereo, 16000, subtype="FLOAT")
    whole = audio.to_mono(audio.read_audio(path)[0])
    np.testing.assert_array_equal(audio.load_audio(path), whole)
    for chunk_seconds in (0.001, 0.37, 1.0, 100.0):
        chunks = list(audio.stream_audio(path, chunk_seconds=chunk_seconds))
        assert all(c.dtype == np.float32 and c.ndim == 1 for c in chunks)
        assert max(len(c) for c in chunks) <= max(1, round(chunk_seconds * 16000))
        np.testing.assert_array_equal(np.concatenate(chunks), whole)


@pytest.mark.parametrize("rate", [44100, 48000, 8000])
def test_resampled_stream_equals_whole_file(tmp_path, rate):
    rng = np.random.default_rng(rate)
    signal = (rng.standard_normal(rate * 4 + 3) * 0.3).astype(np.float32)
    path = write(tmp_path / "r.wav", signal, rate, subtype="FLOAT")
    whole = audio.load_audio(path, resampler="soxr_hq")
    np.testing.assert_array_equal(whole, audio.resample(signal, rate, resampler="soxr_hq"))
    for chunk_seconds in (0.01, 0.5, 1.3, 60.0):
        chunks = audio.stream_audio(path, resampler="soxr_hq", chunk_seconds=chunk_seconds)
        np.testing.assert_array_equal(np.concatenate(list(chunks)), whole)
    # And the streaming resampler agrees with soxr's one-shot resample (measured: identical).
    one_shot = soxr.resample(signal, rate, 16000, quality="HQ")
    assert one_shot.shape == whole.shape
    assert np.max(np.abs(one_shot - whole)) <= 1e-6


def test_kaiser_best_stream_equals_whole(tmp_path):
    signal = sine(700, 6.0, 22050)
    path = write(tmp_path / "k.wav", signal, 22050, subtype="FLOAT")
    whole = audio.load_audio(path, resampler="kaiser_best")
    np.testing.assert_array_equal(whole, audio.resample(signal, 22050, resampler="kaiser_best"))
    chunks = list(audio.stream_audio(path, resampler="kaiser_best", chunk_seconds=0.25))
    assert len(chunks) > 1  # streamed in blocks (about 2 s of output each), not read whole
    np.testing.assert_array_equal(np.concatenate(chunks), whole)


def test_audio_info(tmp_path):
    path = write(tmp_path / "i.flac", np.zeros((22050, 2), np.float32), 22050, subtype="PCM_24")
    assert audio.audio_info(path) == audio.AudioInfo(22050, 2, 22050, 1.0, "FLAC", "PCM_24")


def test_stream_arguments(tmp_path):
    path = write(tmp_path / "a.wav", np.zeros(100, np.float32), 16000)
    with pytest.raises(InvalidArgumentError, match="chunk_seconds=0"):
        audio.stream_audio(path, chunk_seconds=0)
    with pytest.raises(InvalidArgumentError, match="resampler='best'"):
        audio.load_audio(path, resampler="best")


# --- Errors: the message starts with the path and gives one reason ---------------------------------------
def expect_error(path, reason, error=AudioDecodeError):
    pattern = "^" + __import__("re").escape(os.fspath(path)) + ": " + reason
    for call in (audio.load_audio, audio.read_audio, lambda p: list(audio.stream_audio(p, chunk_seconds=0.1))):
        with pytest.raises(error, match=pattern) as caught:
            call(path)
        assert "\n" not in str(caught.value).replace(os.fspath(path), "")


def test_missing_directory_empty(tmp_path):
    expect_error(tmp_path / "nope.wav", "no such file")
    (tmp_path / "x.wav").mkdir()
    expect_error(tmp_path / "x.wav", "is a directory")
    (tmp_path / "empty.wav").write_bytes(b"")
    expect_error(tmp_path / "empty.wav", r"empty file \(0 bytes\)")


def test_symlinks(tmp_path):
    os.symlink(tmp_path / "gone.wav", tmp_path / "broken.wav")
    expect_error(tmp_path / "broken.wav", "broken symbolic link")
    os.symlink(tmp_path / "loop_b.wav", tmp_path / "loop_a.wav")
    os.symlink(tmp_path / "loop_a.wav", tmp_path / "loop_b.wav")
    expect_error(tmp_path / "loop_a.wav", "symbolic link loop")


def test_permission_denied(tmp_path, monkeypatch):
    path = write(tmp_path / "locked.wav", np.zeros(100, np.float32), 16000)
    if os.geteuid() != 0:
        os.chmod(path, 0)
    else:  # root reads anything: make the probe's open fail the way it would for a user
        real_open = open

        def denying_open(file, *args, **kwargs):
            if os.fspath(file) == os.fspath(path):
                raise PermissionError(13, "Permission denied", os.fspath(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr("builtins.open", denying_open)
    expect_error(path, "permission denied")


def test_not_audio(tmp_path):
    (tmp_path / "notes.wav").write_text("hello, these are my notes\n" * 20)
    expect_error(tmp_path / "notes.wav", r"not audio \(a text file\)")
    (tmp_path / "list.m3u8").write_text("#EXTM3U\n#EXTINF:10,\n/etc/passwd\n")
    expect_error(tmp_path / "list.m3u8", r"not audio \(a text file\)")
    (tmp_path / "image.wav").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    expect_error(tmp_path / "image.wav", r"not audio \(a PNG image\)")
    (tmp_path / "noise.mp3").write_bytes(np.random.default_rng(5).bytes(5000))
    expect_error(tmp_path / "noise.mp3", "not a recognised audio file")


def test_wrong_extensions_still_decode(tmp_path):
    signal = sine(1000, 1.0, 16000)
    wav_as_mp3 = write(tmp_path / "really_wav.mp3", signal, 16000, format="WAV", subtype="PCM_16")
    np.testing.assert_allclose(audio.load_audio(wav_as_mp3), signal, atol=1 / 32768)
    mp3_as_wav = write(tmp_path / "really_mp3.wav", signal, 16000, format="MP3", subtype="MPEG_LAYER_III")
    assert abs(peak_frequency_hz(audio.load_audio(mp3_as_wav), 16000) - 1000) < 2


@pytest.mark.parametrize(
    "name,format,subtype,reason",
    [
        ("t.wav", "WAV", "PCM_16", "truncated: header declares"),
        ("t.aiff", "AIFF", "PCM_16", "truncated: header declares"),
        ("t.flac", "FLAC", "PCM_16", "cannot decode"),
        ("t.mp3", "MP3", "MPEG_LAYER_III", "truncated: header declares"),
        ("t.ogg", "OGG", "VORBIS", "truncated: the last Ogg page"),
        ("t.opus", "OGG", "OPUS", "truncated: the last Ogg page"),
    ],
)
def test_truncated(tmp_path, name, format, subtype, reason):
    full = write(tmp_path / ("full_" + name), sine(440, 3.0, 48000), 48000, format=format, subtype=subtype)
    data = full.read_bytes()
    (tmp_path / name).write_bytes(data[: len(data) // 2])
    expect_error(tmp_path / name, reason)


def test_header_only_files(tmp_path):
    write(tmp_path / "zero.wav", np.zeros(0, np.float32), 16000)
    expect_error(tmp_path / "zero.wav", "contains 0 samples", InvalidAudioError)
    (tmp_path / "cut.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt ")
    expect_error(tmp_path / "cut.wav", r"not a recognised audio file \(soundfile: .*No .data. chunk")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(tmp_path, bad):
    values = np.zeros(1000, np.float32)
    values[500] = bad
    expect_error(write(tmp_path / "n.wav", values, 16000, subtype="FLOAT"), r"contains non-finite samples",
                 InvalidAudioError)


def test_double_beyond_float32_range(tmp_path):
    values = np.array([0.0, 1e300], np.float64)
    expect_error(write(tmp_path / "huge.wav", values, 16000, subtype="DOUBLE"), "samples beyond the float32 range",
                 InvalidAudioError)


@pytest.mark.parametrize("name", ["with space.wav", "ünïcødé.flac", "new\nline.wav", "-leading.wav"])
def test_awkward_names(tmp_path, name):
    format = "FLAC" if name.endswith(".flac") else "WAV"
    path = write(tmp_path / name, sine(440, 0.5, 16000), 16000, format=format, subtype="PCM_16")
    assert len(audio.load_audio(path)) == 8000
    os.remove(path)
    with pytest.raises(AudioDecodeError, match="^" + __import__("re").escape(os.fspath(path)) + ": no such file"):
        audio.load_audio(path)


def test_ogg_cut_at_a_page_boundary(tmp_path):
    full = write(tmp_path / "full.ogg", sine(440, 3.0, 48000), 48000, format="OGG", subtype="VORBIS")
    data = full.read_bytes()
    pages = [i for i in range(len(data)) if data.startswith(b"OggS", i)]
    assert len(pages) > 3
    (tmp_path / "cut.ogg").write_bytes(data[:pages[-1]])  # whole pages, but the end-of-stream page is gone
    expect_error(tmp_path / "cut.ogg", "truncated: the last Ogg page is not an end-of-stream page")
    assert len(audio.load_audio(full)) == 48000  # the intact file passes the same check


def test_streamed_wav_size_placeholder_is_not_truncation(tmp_path):
    """Writers that stream to a pipe put 0xFFFFFFFF in the size fields: the data is all there."""
    signal = sine(440, 1.0, 16000)
    data = bytearray(write(tmp_path / "p.wav", signal, 16000, subtype="PCM_16").read_bytes())
    at = data.index(b"data")
    data[4:8] = data[at + 4:at + 8] = b"\xff\xff\xff\xff"
    (tmp_path / "p.wav").write_bytes(bytes(data))
    np.testing.assert_allclose(audio.load_audio(tmp_path / "p.wav"), signal, atol=1 / 32768)


@pytest.mark.parametrize("resampler,dtype", [("soxr_hq", np.float32), ("kaiser_best", np.float64)])
def test_streaming_memory_does_not_grow_with_file_length(tmp_path, resampler, dtype):
    import tracemalloc

    from vggish_tf2.windows import count_examples, iter_windows

    rate = 8000
    # Warm up: kaiser_best builds (and caches) its polyphase filter matrices for a rate on first use
    # (~29 MB at 8 kHz, once per process), which is not per-file memory.
    audio.resample(np.zeros(rate, np.float32), rate, resampler=resampler, dtype=dtype)
    peaks = {}
    for seconds in (150, 600):
        path = tmp_path / f"long{seconds}.wav"
        with sf.SoundFile(path, "w", rate, 1, subtype="FLOAT") as f:
            for _ in range(seconds):
                f.write(np.random.default_rng(0).standard_normal(rate).astype(np.float32) * 0.1)
        tracemalloc.start()
        try:
            chunks = audio.stream_audio(path, resampler=resampler, chunk_seconds=2.0, dtype=dtype)
            windows = sum(1 for _ in iter_windows(chunks, dtype=dtype))
            _, peaks[seconds] = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert windows == count_examples(seconds * 16000)
    whole_file_bytes = 600 * 16000 * np.dtype(dtype).itemsize  # what load_audio would hold
    # Measured after the warm-up: soxr 0.9 MB at both lengths; kaiser_best (float64, ~2 s output
    # blocks) 4.5 MB at both; the whole 600-s file would be 38.4 (float32) or 76.8 MB (float64).
    assert peaks[600] < whole_file_bytes / 10
    assert peaks[600] < 1.1 * peaks[150]  # flat in file length
