"""vggish_tf2.corpus.ray_decode: a decoding task's rows, called directly (no Ray, no model).

A file longer than one decoding block (256 windows) comes out as several batches of rows.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from vggish_tf2 import params
from vggish_tf2.corpus.ray_decode import DecodeSettings, file_rows


def write_noise(path: Path, seconds: float, *, seed: int, rate: int = 16000) -> Path:
    rng = np.random.default_rng(seed)
    sf.write(path, (0.1 * rng.standard_normal(int(round(seconds * rate)))).astype(np.float32), rate)
    return path


def test_file_rows_of_a_file_longer_than_one_block_are_its_windows_in_order(tmp_path):
    """262 windows come from file_blocks in two blocks (256 + 6): the rows number them 0..261,
    hold exactly file_blocks' windows, and only the last row ends the file (with its samples)."""
    from vggish_tf2.corpus.decode import BLOCK_WINDOWS, file_blocks

    path = write_noise(tmp_path / "long.wav", 252.0, seed=4)
    settings = DecodeSettings(resampler="kaiser_best", hop_samples=params.EXAMPLE_HOP_SAMPLES,
                              short_clips="drop", sample_dtype="float64")
    batches = list(file_rows(7, path, settings))
    rows = {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}
    assert len(batches) == 2 and len(batches[0]["example"]) == BLOCK_WINDOWS
    assert rows["example"].tolist() == list(range(262))
    assert set(rows["task"].tolist()) == {7}
    blocks = list(file_blocks(path, resampler="kaiser_best", hop_samples=params.EXAMPLE_HOP_SAMPLES,
                              short_clips="drop", dtype=np.float64))
    assert np.array_equal(rows["window"], np.concatenate([b for b, _ in blocks]))
    assert rows["window"].dtype == np.float64
    assert rows["end"].tolist() == [False] * 261 + [True]
    assert rows["samples"][-1] == blocks[-1][1] == 252 * 16000
    assert set(rows["error"].tolist()) == {""}


def test_file_rows_of_a_file_without_windows_is_one_marker(tmp_path):
    settings = DecodeSettings(resampler="soxr_hq", hop_samples=params.EXAMPLE_HOP_SAMPLES,
                              short_clips="drop", sample_dtype="float32")
    short = write_noise(tmp_path / "short.wav", 0.5, seed=1)
    [row] = list(file_rows(0, short, settings))
    assert row["example"].tolist() == [-1] and row["end"].tolist() == [True] and row["samples"].tolist() == [8000]
    assert row["window"].shape == (1, params.EXAMPLE_WINDOW_SAMPLES) and row["window"].dtype == np.float32
    bad = tmp_path / "bad.wav"
    bad.write_text("text")
    [row] = list(file_rows(1, bad, settings))
    assert row["example"].tolist() == [-1] and row["error_type"][0] == "AudioDecodeError"
    assert str(row["error"][0]).startswith(f"{bad}: ")
