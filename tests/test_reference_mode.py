"""Reference mode (kaiser_best + float64 front end) against Google's pipeline, on recordings.

Google's pipeline, as its code runs it: soundfile int16 / 32768, mean over channels, resampy
kaiser_best in float64, the NumPy float64 log-mel (convert.reference_numpy, written from the spec),
cast to float32, then the TF1 graph (convert.tf1_graph, tf.compat.v1 ops in a Session) on the
checkpoint. Ours: Embedder(resampler="kaiser_best", frontend_precision="float64").embed_file.

Measured here (2-core AMD EPYC, AVX2, TF 2.21; espeak-ng speech at 8 rates, 1-3 channels, WAV and
FLAC, plus sine, noise and silence; `python -m pytest tests/test_reference_mode.py`):
  resampled samples vs resampy      max 1.8e-15
  log-mel after the float32 cast    equal on 100 % of values (368,640)
  raw embeddings                    max |ours - ref| / max |ref| = 5.0e-7
  uint8 codes                       identical on 100 % (7,680)
The embeddings differ only by the network's float32 roundings: the TF1 graph runs each file as one
batch, we run fixed 12-row slices, and oneDNN rounds by shape. Google's own pipeline differs from
itself by 2.6e-6 x max|ref| between per-file batches and 64-example batches (issue 8): that is the
bound below. The issue's targets: log-mel equal on >= 99.99 %, uint8 identical on >= 99.99 % and
never more than 1 apart.
"""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from convert import reference_numpy
from vggish_tf2 import Embedder, audio, frontend, params, windows

sf = pytest.importorskip("soundfile")
resampy = pytest.importorskip("resampy")
soxr = pytest.importorskip("soxr")

REFERENCE_BATCH_NOISE = 2.6e-6  # Google's pipeline against itself, per-file vs 64-example batches
MIN_EQUAL_FRACTION = 0.9999


def _write_recordings(folder) -> dict[str, object]:
    """Speech at many rates and channel counts (when espeak-ng exists), and sine, noise, silence."""
    rng = np.random.default_rng(5)
    files = {}

    def put(name, samples, rate):
        path = folder / name
        sf.write(path, np.clip(samples, -1, 1), rate, subtype="PCM_16")
        files[name] = path

    exe = shutil.which("espeak-ng")
    if exe is not None:
        spoken = folder / "espeak.wav"
        text = "The quick brown fox jumps over the lazy dog. Audio embeddings need real clips, at many rates."
        subprocess.run([exe, "-w", str(spoken), text], check=True, capture_output=True, timeout=60)
        speech, rate = sf.read(spoken, dtype="float64")
        put(f"speech_{rate}.wav", speech, rate)
        for target in (8000, 11025, 16000, 32000, 44100, 48000, 96000):
            y = soxr.resample(speech, rate, target, "VHQ")
            if target == 44100:  # stereo: the second channel different from the first
                y = np.stack([y, 0.5 * y + 0.05 * rng.standard_normal(len(y))], 1)
            if target == 32000:  # three channels
                y = np.stack([y, -y, 0.1 * rng.standard_normal(len(y))], 1)
            put(f"speech_{target}." + ("flac" if target in (11025, 44100) else "wav"), y, target)
    t = np.arange(44100 * 5) / 44100
    put("sine_44100.wav", 0.5 * np.sin(2 * np.pi * 1000 * t), 44100)
    put("noise_48000.wav", 0.3 * rng.standard_normal(48000 * 4), 48000)
    put("silence_22050.wav", np.zeros(22050 * 3), 22050)
    return files


def _google_pipeline(path, tf1_reference):
    """(float32 log-mel examples, raw embeddings) as Google's code computes them."""
    data, rate = sf.read(path, dtype="int16", always_2d=True)
    waveform = (data / 32768.0).mean(axis=1)
    if rate != params.SAMPLE_RATE:
        waveform = resampy.resample(waveform, rate, params.SAMPLE_RATE, filter="kaiser_best")
    examples = reference_numpy.waveform_to_examples(waveform).astype(np.float32)
    return examples, tf1_reference.embed(examples)


@pytest.fixture(scope="module")
def comparisons(tmp_path_factory, synthetic_files, exported_model):
    from convert.tf1_graph import TF1Reference

    checkpoint, pca_path = synthetic_files
    pca = np.load(pca_path, allow_pickle=False)
    files = _write_recordings(tmp_path_factory.mktemp("recordings"))
    embedder = Embedder(exported_model, device="cpu", resampler="kaiser_best", frontend_precision="float64")
    rows = {}
    with TF1Reference(checkpoint) as tf1_reference:
        for name, path in files.items():
            ref_log_mel, ref_embedding = _google_pipeline(path, tf1_reference)
            ours = embedder.embed_file(path)
            samples = audio.load_audio(path, resampler="kaiser_best", dtype=np.float64)
            our_windows = windows.frame_windows(samples, dtype=np.float64)
            our_log_mel = np.asarray(frontend.log_mel_windows(our_windows, precision="float64")).astype(np.float32)
            rows[name] = {
                "ref_log_mel": ref_log_mel, "our_log_mel": our_log_mel,
                "ref": ref_embedding, "ours": ours,
                "ref_codes": reference_numpy.postprocess(ref_embedding, pca["pca_eigen_vectors"], pca["pca_means"]),
                "our_codes": embedder.postprocess(ours),
            }
    return rows


def test_recordings_cover_rates_channels_and_signals(comparisons):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed: only sine, noise and silence were compared")
    assert len(comparisons) == 11


def test_log_mel_equals_the_reference_after_the_float32_cast(comparisons):
    equal = sum(int((r["ref_log_mel"] == r["our_log_mel"]).sum()) for r in comparisons.values())
    total = sum(r["ref_log_mel"].size for r in comparisons.values())
    assert total > 0 and equal / total >= MIN_EQUAL_FRACTION  # measured: 100 %


@pytest.mark.parametrize("name_filter", ["speech", "sine", "noise", "silence"])
def test_embeddings_within_the_references_own_batch_noise(comparisons, name_filter):
    chosen = {n: r for n, r in comparisons.items() if n.startswith(name_filter)}
    if not chosen:
        pytest.skip(f"no {name_filter} recording (espeak-ng missing)")
    for name, r in chosen.items():
        assert r["ours"].shape == r["ref"].shape, name
        rel = np.abs(r["ours"] - r["ref"]).max() / np.abs(r["ref"]).max()
        assert rel <= REFERENCE_BATCH_NOISE, (name, rel)  # measured: <= 5.0e-7


def test_uint8_codes_match_the_reference(comparisons):
    differences = np.concatenate([
        np.abs(r["ref_codes"].astype(int) - r["our_codes"].astype(int)).ravel() for r in comparisons.values()
    ])
    assert differences.max() <= 1
    assert (differences == 0).mean() >= MIN_EQUAL_FRACTION  # measured: 100 %
