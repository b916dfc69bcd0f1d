"""Example windows: counts against the reference's frame/patch arithmetic, chunked == whole."""
import numpy as np
import pytest

from vggish_tf2 import params
from vggish_tf2.errors import InvalidArgumentError, InvalidAudioError
from vggish_tf2.windows import (
    WINDOW_SAMPLES,
    count_examples,
    example_start_seconds,
    frame_windows,
    iter_windows,
)

LENGTHS = [0, 1, 239, 240, 399, 400, 15599, 15600, 15601, 15760, 30960, 30961, 16000 * 7 + 123]
HOPS = [15360, 160, 8000, 16000, 15680, 32000]  # overlapping, exact, gapped hops


def reference_count(num_samples: int) -> int:
    """The reference's arithmetic: frames of 400 every 160, then 96-frame patches every 96 frames."""
    if num_samples < 400:
        return 0
    frames = 1 + (num_samples - 400) // 160
    return 0 if frames < 96 else 1 + (frames - 96) // 96


def random_chunks(signal: np.ndarray, rng: np.random.Generator):
    """Split into chunks of random sizes: tiny (< 240), medium and larger than a window."""
    position = 0
    while position < len(signal):
        size = int(rng.choice([rng.integers(1, 240), rng.integers(240, 16000), rng.integers(16000, 40000)]))
        yield signal[position:position + size]
        position += size


@pytest.mark.parametrize("num_samples", LENGTHS + list(range(15500, 15700, 7)) + [10**6])
def test_count_matches_reference(num_samples):
    assert count_examples(num_samples) == reference_count(num_samples)


@pytest.mark.parametrize("hop", HOPS)
@pytest.mark.parametrize("num_samples", LENGTHS)
def test_windows_are_the_right_slices(num_samples, hop):
    signal = np.arange(num_samples, dtype=np.float32)
    windows = frame_windows(signal, hop_samples=hop)
    assert windows.dtype == np.float32
    assert windows.shape == (count_examples(num_samples, hop_samples=hop), WINDOW_SAMPLES)
    for k, window in enumerate(windows):
        np.testing.assert_array_equal(window, signal[hop * k: hop * k + WINDOW_SAMPLES])
    if len(windows):  # the last window is the last one that fits
        assert hop * (len(windows) - 1) + WINDOW_SAMPLES <= num_samples < hop * len(windows) + WINDOW_SAMPLES


@pytest.mark.parametrize("policy", ["drop", "pad", "repeat"])
@pytest.mark.parametrize("hop", HOPS)
@pytest.mark.parametrize("num_samples", LENGTHS)
def test_chunked_equals_whole(num_samples, hop, policy):
    rng = np.random.default_rng(num_samples * 31 + hop)
    signal = rng.standard_normal(num_samples).astype(np.float32)
    if num_samples == 0 and policy != "drop":
        with pytest.raises(InvalidAudioError, match="0 samples"):
            frame_windows(signal, hop_samples=hop, short_clips=policy)
        with pytest.raises(InvalidAudioError, match="0 samples"):
            list(iter_windows(random_chunks(signal, rng), hop_samples=hop, short_clips=policy))
        return
    whole = frame_windows(signal, hop_samples=hop, short_clips=policy)
    for _ in range(3):
        chunked = list(iter_windows(random_chunks(signal, rng), hop_samples=hop, short_clips=policy))
        stacked = np.stack(chunked) if chunked else np.zeros((0, WINDOW_SAMPLES), np.float32)
        assert stacked.dtype == np.float32
        np.testing.assert_array_equal(stacked, whole)
    # One sample at a time, and empty chunks in between, give the same windows too.
    if num_samples <= 31000:
        one_by_one = [signal[i:i + 1] for i in range(num_samples)] + [signal[:0]]
        chunked = list(iter_windows(one_by_one, hop_samples=hop, short_clips=policy))
        assert len(chunked) == len(whole)
        for got, want in zip(chunked, whole):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("num_samples", [1, 239, 400, 7000, 15599])
def test_short_clip_policies(num_samples):
    clip = np.linspace(-1, 1, num_samples, dtype=np.float32) + 0.5
    assert frame_windows(clip, short_clips="drop").shape == (0, WINDOW_SAMPLES)
    assert count_examples(num_samples, short_clips="drop") == 0
    assert count_examples(num_samples, short_clips="pad") == 1
    padded = frame_windows(clip, short_clips="pad")
    assert padded.shape == (1, WINDOW_SAMPLES)
    np.testing.assert_array_equal(padded[0, :num_samples], clip)
    assert not padded[0, num_samples:].any()
    repeated = frame_windows(clip, short_clips="repeat")
    assert repeated.shape == (1, WINDOW_SAMPLES)
    np.testing.assert_array_equal(repeated[0], clip[np.arange(WINDOW_SAMPLES) % num_samples])


def test_policy_only_applies_to_short_clips():
    signal = np.ones(15600 + 15359, np.float32)  # one full example and a partial tail
    for policy in ("drop", "pad", "repeat"):
        assert frame_windows(signal, short_clips=policy).shape == (1, WINDOW_SAMPLES)
        assert count_examples(len(signal), short_clips=policy) == 1


def test_zero_samples():
    assert count_examples(0, short_clips="pad") == 0
    assert list(iter_windows([])) == []
    assert frame_windows(np.zeros(0, np.float32)).shape == (0, WINDOW_SAMPLES)
    with pytest.raises(InvalidAudioError, match="0 samples"):
        list(iter_windows([np.zeros(0, np.float32)], short_clips="repeat"))


def test_memory_stays_bounded():
    """The generator keeps no reference to old chunks: only the overlap survives between chunks."""
    import gc
    import weakref

    class Chunk(np.ndarray):
        pass

    refs = []

    def chunks():
        for _ in range(50):
            chunk = np.random.default_rng(0).standard_normal(16000).astype(np.float32).view(Chunk)
            refs.append(weakref.ref(chunk))
            yield chunk

    produced = 0
    for window in iter_windows(chunks()):
        produced += 1
        del window
    gc.collect()
    assert produced == count_examples(50 * 16000)
    assert all(ref() is None for ref in refs)


def test_windows_do_not_alias_input_or_each_other():
    signal = np.random.default_rng(1).standard_normal(40000).astype(np.float32)
    buffer = signal.copy()
    windows = list(iter_windows([buffer[:20000], buffer[20000:]], hop_samples=160 * 90))
    expected = frame_windows(signal, hop_samples=160 * 90)
    windows[0][:] = 0  # overlapping windows must not share memory
    buffer[:] = 7  # a caller reusing its buffer must not change what was yielded
    np.testing.assert_array_equal(windows[1], expected[1])
    assert not np.shares_memory(frame_windows(signal)[0], signal)


def test_example_start_seconds():
    np.testing.assert_array_equal(example_start_seconds(4), [0.0, 0.96, 1.92, 2.88])
    starts = example_start_seconds(100_000, hop_samples=160)
    assert starts.dtype == np.float64
    assert starts[-1] == 99_999 * 160 / 16000  # no accumulated rounding
    assert example_start_seconds(0).shape == (0,)
    assert params.EXAMPLE_HOP_SAMPLES == 15360


@pytest.mark.parametrize("hop", [0, -160, 100, 15361, 160.0, True])
def test_bad_hop(hop):
    with pytest.raises(InvalidArgumentError, match="hop_samples"):
        count_examples(20000, hop_samples=hop)
    with pytest.raises(InvalidArgumentError, match="hop_samples"):
        frame_windows(np.zeros(20000, np.float32), hop_samples=hop)
    with pytest.raises(InvalidArgumentError, match="hop_samples"):
        list(iter_windows([], hop_samples=hop))


def test_bad_arguments():
    with pytest.raises(InvalidArgumentError, match="short_clips='loop'"):
        frame_windows(np.zeros(10, np.float32), short_clips="loop")
    with pytest.raises(InvalidArgumentError, match="num_samples=-1"):
        count_examples(-1)
    with pytest.raises(InvalidArgumentError, match="count=-1"):
        example_start_seconds(-1)
    with pytest.raises(InvalidAudioError, match="must be 1-D"):
        frame_windows(np.zeros((20000, 2), np.float32))
    with pytest.raises(InvalidAudioError, match="must be 1-D"):
        list(iter_windows([np.zeros((20000, 2), np.float32)]))
