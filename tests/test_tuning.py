"""Batch size and compile mode by measurement (vggish_tf2.tuning), the cached export verification,
and the compile mode recorded in run_config.json (issue 10).

The choice logic and the cache run on fake runners (no TensorFlow work); one test probes the real
device step (graph mode only, a short budget) and checks that the tuned Embedder gives the same
bits as a fixed batch size.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from vggish_tf2 import hashing, pipeline, tuning
from vggish_tf2.corpus import run_config
from vggish_tf2.errors import InvalidArgumentError, ModelError
from vggish_tf2.params import STEP_EXAMPLES


# --- The choice ---------------------------------------------------------------------------------------
def test_xla_is_chosen_only_when_faster_by_more_than_the_margin():
    rates = {"graph|48": 100.0, "graph|96": 101.0, "xla|48": 104.0, "xla|96": 105.0}
    assert tuning.choose(rates, modes=[False, True], candidates=[48, 96]) == (False, 48)
    rates.update({"xla|48": 100.0, "xla|96": 107.0})  # > 5 % over the graph's best
    assert tuning.choose(rates, modes=[False, True], candidates=[48, 96]) == (True, 96)
    assert tuning.choose(rates, modes=[False], candidates=[48, 96]) == (False, 48)


def test_the_smallest_batch_within_the_margin_of_the_best_wins():
    rates = {"graph|48": 90.0, "graph|96": 99.0, "graph|192": 100.0}
    assert tuning.choose(rates, modes=[False], candidates=[48, 96, 192]) == (False, 96)
    assert tuning.choose(rates, modes=[False], candidates=[48]) == (False, 48)


def test_batch_candidates_are_whole_slices_up_to_the_bound():
    step = STEP_EXAMPLES
    assert tuning.batch_candidates(step + 1) == (step,)
    assert tuning.batch_candidates(2 * step) == (step, 2 * step)
    assert tuning.batch_candidates(1) == (step,)
    sizes = tuning.batch_candidates(10_000)
    assert sizes[0] == step and sizes[-1] <= tuning.MAX_PROBE_BATCH and all(b == 2 * a for a, b in zip(sizes, sizes[1:]))


# --- Probe and cache, with a fake runner --------------------------------------------------------------
class FakeRunner:
    def __init__(self, jit_compile: bool, batch_size: int, calls: list):
        self.jit_compile, self.batch_size, self.calls = jit_compile, batch_size, calls

    def run(self, rows):
        self.calls.append((self.jit_compile, len(rows)))
        return np.zeros((len(rows), 128), np.float32)


def test_probe_once_then_the_cache_answers(tmp_path):
    calls: list = []
    made: list = []

    def make(jit_compile, batch_size):
        made.append((jit_compile, batch_size))
        return FakeRunner(jit_compile, batch_size, calls)

    cache = tmp_path / "cache" / "tuning.json"
    kwargs = dict(key="machine-a", modes=[False, True], max_batch_size=2 * STEP_EXAMPLES, window_dtype=np.float32, path=cache,
                  seconds_per_mode=0.0)
    choice, runners = tuning.resolve(make, **kwargs)
    assert choice.source == "probe" and set(runners) == {False, True}
    assert {k.split("|")[0] for k in choice.rates} == {"graph", "xla"}
    assert choice.batch_size in (STEP_EXAMPLES, 2 * STEP_EXAMPLES)
    probed = len(calls)
    assert probed >= 2 * 3  # per mode: a warm-up and at least two sizes
    again, runners = tuning.resolve(make, **kwargs)
    assert again.source == "cache" and runners == {} and len(calls) == probed
    assert (again.batch_size, again.jit_compile) == (choice.batch_size, choice.jit_compile)
    # Another machine or model: probed anew, both kept.
    other, _ = tuning.resolve(make, **{**kwargs, "key": "machine-b"})
    assert other.source == "probe"
    assert set(json.loads(cache.read_text())["entries"]) == {"machine-a", "machine-b"}


def test_a_fixed_batch_size_probes_only_the_modes_and_a_corrupt_cache_is_ignored(tmp_path):
    calls: list = []
    cache = tmp_path / "tuning.json"
    cache.write_text("{not json")
    choice, _ = tuning.resolve(lambda j, b: FakeRunner(j, b, calls), key="k", modes=[False, True], max_batch_size=768,
                               window_dtype=np.float64, batch_size=96, path=cache, seconds_per_mode=0.0)
    assert choice.batch_size == 96 and set(choice.rates) == {"graph|96", "xla|96"}
    assert json.loads(cache.read_text())["version"] == tuning.CACHE_VERSION


# --- The real device step -------------------------------------------------------------------------------
def test_tuned_embedder_probes_the_real_step_once_and_gives_the_fixed_batch_bits(exported_model, tmp_path,
                                                                                  monkeypatch):
    from vggish_tf2 import Embedder

    monkeypatch.setattr(tuning, "cache_dir", lambda: tmp_path / "cache")
    monkeypatch.setattr(tuning, "PROBE_SECONDS", 0.0)
    rng = np.random.default_rng(3)
    waveform = rng.uniform(-0.5, 0.5, 16000 * 4)
    tuned = Embedder(exported_model, device="cpu", jit_compile=False)
    assert tuned.tuning is not None and tuned.tuning.source == "probe" and tuned.jit_compile is False
    assert tuned.batch_size % STEP_EXAMPLES == 0 and tuned._runner.stats.examples == 0  # probe steps not counted
    cached = Embedder(exported_model, device="cpu", jit_compile=False)
    assert cached.tuning.source == "cache" and cached.batch_size == tuned.batch_size
    fixed = Embedder(exported_model, device="cpu", batch_size=STEP_EXAMPLES)
    assert fixed.tuning is None and fixed.jit_compile is False
    np.testing.assert_array_equal(tuned.embed(waveform, sample_rate=16000), fixed.embed(waveform, sample_rate=16000))


def test_jit_compile_values_are_checked(exported_model):
    from vggish_tf2 import Embedder

    with pytest.raises(InvalidArgumentError, match=r"jit_compile='yes' must be True, False or 'auto'"):
        Embedder(exported_model, device="cpu", jit_compile="yes")


# --- Cached verification of an export's files ------------------------------------------------------------
def _count_hashing(monkeypatch) -> list:
    hashed: list = []
    original = hashing.sha256_file

    def counting(path):
        hashed.append(Path(path).name)
        return original(path)

    monkeypatch.setattr(hashing, "sha256_file", counting)
    return hashed


def test_verified_export_is_not_rehashed_until_a_file_changes(exported_model, tmp_path, monkeypatch):
    copy = tmp_path / "export"
    shutil.copytree(exported_model, copy, copy_function=os.link)
    cache = tmp_path / "cache" / "verified.json"
    hashed = _count_hashing(monkeypatch)
    hashing.verify_file_hashes_cached(copy, cache)
    assert "saved_model.pb" in hashed
    hashed.clear()
    hashing.verify_file_hashes_cached(copy, cache)
    assert hashed == [hashing.FILE_HASHES]  # only the small hash list itself
    # Tampered in place with its mtime put back: the ctime moves, the file is re-hashed and refused.
    pb = copy / "saved_model.pb"
    stat = pb.stat()
    data = bytearray(pb.read_bytes())
    data[len(data) // 3] ^= 0x01
    pb.unlink()  # break the hard link: the session's export stays intact
    pb.write_bytes(bytes(data))
    os.utime(pb, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(ModelError, match=r"saved_model\.pb: sha256 differs from the one recorded at conversion"):
        hashing.verify_file_hashes_cached(copy, cache)
    # No cache file: always the full check.
    with pytest.raises(ModelError, match=r"sha256 differs"):
        hashing.verify_file_hashes_cached(copy, None)


# --- The compile mode in run_config.json -----------------------------------------------------------------
def _audio(path: Path) -> Path:
    import soundfile as sf

    t = np.arange(int(1.5 * 16000)) / 16000
    sf.write(str(path), 0.3 * np.sin(2 * np.pi * 440 * t), 16000)
    return path


def test_run_config_records_the_compile_mode_and_a_resume_keeps_it(exported_model, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    _audio(corpus / "a.wav")
    out = tmp_path / "out"
    common = dict(out_dir=out, model=exported_model, device="cpu", batch_size=STEP_EXAMPLES, workers=1)
    pipeline.embed_corpus([corpus], **common)
    config = json.loads((out / pipeline.RUN_CONFIG_NAME).read_text())
    assert config["jit_compile"] is False
    with np.load(out / "a.wav.npz", allow_pickle=False) as archive:
        assert json.loads(str(archive["metadata"]))["jit_compile"] is False
    assert run_config.recorded_jit_compile(out) is False
    with pytest.raises(InvalidArgumentError, match=r"jit_compile False then, True now"):
        pipeline.embed_corpus([corpus], **common, jit_compile=True)
    # A directory made before the mode was recorded was made without XLA: it resumes as such.
    del config["jit_compile"]
    (out / pipeline.RUN_CONFIG_NAME).write_text(json.dumps(config))
    assert run_config.recorded_jit_compile(out) is False
    summary = pipeline.embed_corpus([corpus], **common)
    assert summary.already_done == 1
    config["jit_compile"] = True
    (out / pipeline.RUN_CONFIG_NAME).write_text(json.dumps(config))
    assert run_config.recorded_jit_compile(out) is True
