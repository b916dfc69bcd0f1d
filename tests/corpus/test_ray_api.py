"""vggish_tf2.corpus.ray_api: a Ray Dataset of paths or of waveforms -> one row per example.

A local Ray instance (2 CPUs, the ray_session fixture of tests/conftest.py) serves the module. The reference is the Embedder (embed_file,
embed, postprocess) on the same synthetic export, batch size and compile mode: equal bit for bit.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("ray.data")

from vggish_tf2 import params  # noqa: E402
from vggish_tf2.corpus.ray_api import embed_paths, embed_waveforms  # noqa: E402
from vggish_tf2.errors import InvalidArgumentError, VGGishError  # noqa: E402
from vggish_tf2.options import RunOptions  # noqa: E402

FIELDS = {"batch_size": 12, "jit_compile": False, "device": "cpu"}


def noise(seconds: float, rate: int, channels: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal((int(round(seconds * rate)), channels))).astype(np.float32)


@pytest.fixture(scope="module")
def embedder(exported_model):
    from vggish_tf2.embedder import Embedder

    return Embedder(exported_model, workers=1, **FIELDS)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ray_api")
    made = {}
    for name, (seconds, rate, channels) in {"a.wav": (3.5, 16000, 1), "b.flac": (13.0, 44100, 2),
                                            "short.wav": (0.4, 16000, 1)}.items():
        made[name] = root / name
        sf.write(made[name], noise(seconds, rate, channels, seed=len(made)), rate)
    made["bad.wav"] = root / "bad.wav"
    made["bad.wav"].write_text("not audio")
    return made


def by_key(rows: dict[str, np.ndarray], key: str) -> dict:
    """{key value: {column: values in example order}}."""
    out = {}
    for value in np.unique(rows[key]):
        picked = rows[key] == value
        order = np.argsort(rows["example"][picked], kind="stable")
        out[value] = {name: column[picked][order] for name, column in rows.items()}
    return out


def collect(ds) -> dict[str, np.ndarray]:
    batches = list(ds.iter_batches(batch_size=None, batch_format="numpy"))
    return {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}


def test_embed_paths_rows_equal_the_embedder_and_carry_the_other_columns(ray_session, exported_model, embedder,
                                                                         files):
    import ray

    items = [{"path": str(path), "label": index} for index, path in enumerate(files.values())]
    rows = collect(embed_paths(ray.data.from_items(items), options=RunOptions(model=exported_model, **FIELDS),
                               on_error="drop"))
    assert set(rows) == {"path", "label", "example", "start_seconds", "end_seconds", "embedding", "postprocessed"}
    grouped = by_key(rows, "path")
    # short.wav has no example (dropped, as the local engine skips it); bad.wav was left out
    assert sorted(grouped) == sorted(str(files[name]) for name in ("a.wav", "b.flac"))
    for name in ("a.wav", "b.flac"):
        got = grouped[str(files[name])]
        expected = embedder.embed_file(files[name])
        assert np.array_equal(got["embedding"], expected)
        assert np.array_equal(got["postprocessed"], embedder.postprocess(expected))
        assert got["example"].tolist() == list(range(len(expected)))
        assert np.array_equal(got["start_seconds"], embedder.timestamps(len(expected)))
        assert np.array_equal(got["end_seconds"], got["start_seconds"] + params.EXAMPLE_WINDOW_SECONDS)
        assert set(got["label"].tolist()) == {list(files).index(name)}


def test_embed_paths_raises_the_files_error_by_default(ray_session, exported_model, files):
    import ray

    ds = embed_paths(ray.data.from_items([{"path": str(files["bad.wav"])}]),
                     options=RunOptions(model=exported_model, **FIELDS))
    with pytest.raises(Exception, match=r"bad\.wav: not audio"):
        ds.materialize()


def test_embed_waveforms_rows_equal_embedder_embed(ray_session, exported_model, embedder):
    import ray

    waves = [noise(5.0, 44100, 2, seed=7), noise(2.5, 16000, 1, seed=8)[:, 0], noise(0.5, 22050, 1, seed=9)]
    items = [{"id": i, "waveform": w, "rate": rate} for i, (w, rate) in enumerate(zip(waves, (44100, 16000, 22050)))]
    options = RunOptions(model=exported_model, short_clips="pad", postprocess=False, **FIELDS)
    rows = collect(embed_waveforms(ray.data.from_items(items), sample_rate_column="rate", options=options))
    assert set(rows) == {"id", "rate", "example", "start_seconds", "end_seconds", "embedding"}
    grouped = by_key(rows, "id")
    assert sorted(grouped) == [0, 1, 2]
    pad = RunOptions(model=exported_model, short_clips="pad", **FIELDS)
    from vggish_tf2.embedder import Embedder

    padding = Embedder(exported_model, short_clips=pad.short_clips, workers=1, **FIELDS)
    for i, (wave, rate) in enumerate(zip(waves, (44100, 16000, 22050))):
        assert np.array_equal(grouped[i]["embedding"], padding.embed(wave, sample_rate=rate)), i
    # the padded 0.5-s clip's one example ends where its audio does
    assert grouped[2]["end_seconds"].tolist() == [0.5]


@pytest.mark.parametrize("waveform, rate", [
    (np.zeros((2, 2, 2), np.float32), 16000),
    (np.zeros(20000, np.int16), 16000),
    (np.full(20000, np.nan, np.float32), 16000),
    (noise(3.0, 16000, 2, seed=9).T, 16000),  # channels first
    (np.zeros(20000, np.float32), 0),
])
def test_a_waveform_embed_refuses_is_refused_by_the_decoding_task_in_the_same_words(embedder, waveform, rate):
    """The decoding task (called here without Ray) runs Embedder.embed's own checks."""
    from vggish_tf2.corpus.ray_api import decode_waveforms
    from vggish_tf2.corpus.ray_decode import DecodeSettings

    with pytest.raises(VGGishError) as by_embed:
        embedder.embed(waveform, sample_rate=rate)
    column = np.empty(1, dtype=object)
    column[0] = waveform
    settings = DecodeSettings(resampler=embedder.resampler, hop_samples=embedder.hop_samples, short_clips="drop",
                              sample_dtype="float64")
    with pytest.raises(type(by_embed.value)) as by_task:
        list(decode_waveforms({"waveform": column, "rate": np.array([rate])}, settings=settings, column="waveform",
                              sample_rate=None, sample_rate_column="rate"))
    assert str(by_task.value) == str(by_embed.value)


def test_arguments_are_checked_before_any_work(exported_model):
    with pytest.raises(InvalidArgumentError, match="on_error='skip'"):
        embed_paths(None, on_error="skip")
    with pytest.raises(InvalidArgumentError, match="one of sample_rate"):
        embed_waveforms(None, options=RunOptions(model=exported_model))
