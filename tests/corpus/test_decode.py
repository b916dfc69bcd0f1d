"""corpus.decode: one file -> blocks of windows; DecodeAhead: input order, a file's fault vs a bug,
closing early. No model."""
import threading

import numpy as np
import pytest
import soundfile as sf

from vggish_tf2 import audio, params, windows
from vggish_tf2.corpus import decode
from vggish_tf2.corpus.decode import DecodeAhead, as_file_error, file_blocks
from vggish_tf2.errors import AudioDecodeError, InternalError, InvalidAudioError

W = params.EXAMPLE_WINDOW_SAMPLES
HOP = params.EXAMPLE_HOP_SAMPLES


def write_noise(path, seconds, *, rate=16000, seed=0):
    samples = (0.1 * np.random.default_rng(seed).standard_normal(int(round(seconds * rate)))).astype(np.float32)
    sf.write(path, samples, rate, subtype="FLOAT")
    return path


def test_file_blocks_are_the_whole_files_windows_in_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(decode, "BLOCK_WINDOWS", 3)
    path = write_noise(tmp_path / "a.wav", 8.0)
    blocks = list(file_blocks(path, resampler="kaiser_best", hop_samples=HOP, short_clips="drop", dtype=np.float64))
    assert [len(b) for b, _ in blocks] == [3, 3, 2]  # 8 examples; the last block the rest
    assert blocks[-1][1] == 8 * 16000  # samples decoded, at the end all of them
    whole = audio.load_audio(path, dtype=np.float64)
    np.testing.assert_array_equal(np.concatenate([b for b, _ in blocks]),
                                  windows.frame_windows(whole, hop_samples=HOP, dtype=np.float64))


def test_file_blocks_of_a_short_clip_end_with_an_empty_block(tmp_path):
    path = write_noise(tmp_path / "short.wav", 0.5)
    ((block, samples),) = file_blocks(path, resampler="kaiser_best", hop_samples=HOP, short_clips="drop",
                                      dtype=np.float32)
    assert block.shape == (0, W) and block.dtype == np.float32 and samples == 8000


def fake_blocks(spec):
    """blocks_of for DecodeAhead: spec[path] is a number of one-window blocks or an exception."""
    def blocks_of(path):
        what = spec[path]
        if isinstance(what, BaseException):
            raise what
        for i in range(what):
            yield np.full((1, W), float(i), np.float32), (i + 1) * 100
    return blocks_of


def test_blocks_come_in_input_order_with_each_files_outcome():
    spec = {"a": 3, "b": AudioDecodeError("b: not audio"), "c": 0, "d": 2}
    with DecodeAhead(list(spec), workers=3, blocks_of=fake_blocks(spec), dtype=np.float32) as ahead:
        seen = []
        for index, block, final in ahead.blocks():
            seen.append((index, len(block), final))
            if final:
                outcome = ahead.outcome(index)
                seen.append((index, outcome.samples, type(outcome.error).__name__))
    assert seen == [(0, 1, False), (0, 1, False), (0, 1, True), (0, 300, "NoneType"),
                    (1, 0, True), (1, 0, "AudioDecodeError"),
                    (2, 0, True), (2, 0, "NoneType"),
                    (3, 1, False), (3, 1, True), (3, 200, "NoneType")]
    assert ahead.decode_seconds >= 0


def test_a_bug_while_decoding_raises_internal_error_naming_the_file():
    spec = {"a": 1, "b": TypeError("unexpected keyword")}
    ahead = DecodeAhead(list(spec), workers=1, blocks_of=fake_blocks(spec), dtype=np.float32)
    with pytest.raises(InternalError, match=r"^b: TypeError while decoding: unexpected keyword \(this is a bug"):
        for _ in ahead.blocks():
            pass
    ahead.close()


def test_closing_early_stops_threads_blocked_on_a_full_queue(monkeypatch):
    monkeypatch.setattr(decode, "PREFETCH_BLOCKS", 1)
    spec = {name: 10_000 for name in "abcd"}
    ahead = DecodeAhead(list(spec), workers=2, blocks_of=fake_blocks(spec), dtype=np.float32)
    next(ahead.blocks())
    closed = threading.Event()
    threading.Thread(target=lambda: (ahead.close(), closed.set()), daemon=True).start()
    assert closed.wait(timeout=30), "close() waited on a decoding thread"


def test_as_file_error_keeps_ours_and_wraps_others(tmp_path):
    ours = AudioDecodeError("x.wav: not audio")
    assert as_file_error(tmp_path / "x.wav", ours) is ours
    wrapped = as_file_error(tmp_path / "x.wav", OSError(5, "Input/output error"))
    assert isinstance(wrapped, InvalidAudioError) and str(wrapped).endswith("x.wav: OSError: [Errno 5] Input/output error")
