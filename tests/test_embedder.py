"""The Embedder end to end on the real CPU path, against the export's own signatures; the legacy API;
argument and environment validation; counters; the package's import surface.

No tolerance: the Embedder and every export signature run the network in the same fixed-shape
slices (vggish_tf2.step), so where they get the same samples they give the same bits, on any CPU.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import subprocess
import sys
import warnings

import numpy as np
import pytest
import soundfile as sf

from vggish_tf2 import audio, config, legacy, params
from vggish_tf2.embedder import Embedder, FileResult
from vggish_tf2.errors import InvalidArgumentError, InvalidAudioError

SR = params.SAMPLE_RATE
WINDOW = params.EXAMPLE_WINDOW_SAMPLES
HOP = params.EXAMPLE_HOP_SAMPLES


def assert_same(actual, reference):
    assert actual.dtype == np.float32 and actual.shape == reference.shape
    np.testing.assert_array_equal(actual, reference)


def samples_for(examples: int) -> int:
    """16 kHz samples that make exactly `examples` examples at the default hop."""
    return WINDOW + (examples - 1) * HOP


def noise(n: int, seed: int, channels: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (n,) if channels is None else (n, channels)
    return (0.3 * rng.standard_normal(shape)).clip(-1, 1).astype(np.float32)


def write(path, data, sample_rate):
    sf.write(path, data, sample_rate)
    return path


@pytest.fixture(scope="module")
def embedder(exported_model):
    return Embedder(exported_model, device="cpu", batch_size=8, workers=2)


@pytest.fixture(scope="module")
def export(loaded_export):
    return loaded_export.module


@pytest.fixture
def fresh_settings(monkeypatch):
    """VGGISH_* cleared and get_settings' cache emptied before and after the test."""
    for name in (config.ENV_DEVICE_PREFERENCE, config.ENV_GPU_MEMORY_FRACTION, config.ENV_GPU_ALLOW_GROWTH, config.ENV_MODEL_DIR):
        monkeypatch.delenv(name, raising=False)
    config.get_settings.cache_clear()
    yield monkeypatch
    config.get_settings.cache_clear()


# --- embed(): waveforms vs the export's signature --------------------------------------------------


def test_device_and_counters_describe_the_cpu_run(embedder):
    assert embedder.device == "/device:CPU:0"
    # batch_size=8 asked; steps hold whole 12-row slices (vggish_tf2.step.STEP_EXAMPLES)
    assert embedder.stats.device == "/device:CPU:0" and embedder.stats.batch_size == 12
    assert embedder.batch_size == 12 and embedder.synthetic_weights and embedder.has_pca


def test_embed_mono_16k_matches_the_signature(embedder, export):
    waveform = noise(samples_for(5) + 1000, seed=1)
    out = embedder.embed(waveform, sample_rate=SR)
    reference = export(waveform).numpy()
    assert reference.shape == (5, params.EMBEDDING_SIZE)
    assert_same(out, reference)


@pytest.mark.parametrize("sample_rate,channels", [(44100, 2), (22050, 1)])
def test_embed_multichannel_and_other_rates_match_the_signature_on_the_same_16k_samples(embedder, export, sample_rate, channels):
    waveform = noise(int(3.2 * sample_rate), seed=2, channels=channels)  # [samples, channels]
    # float64 from mixing to the front end, as the Embedder does with the float64 front end
    mono_16k = audio.resample(audio.to_mono(waveform, dtype=np.float64), sample_rate, dtype=np.float64)
    out = embedder.embed(waveform, sample_rate=sample_rate)
    reference = export(mono_16k).numpy()
    assert reference.shape == (3, params.EMBEDDING_SIZE)
    assert_same(out, reference)


@pytest.mark.parametrize("waveform,match", [
    (np.zeros((2, 2, 2), np.float32), r"waveform.shape=\(2, 2, 2\) must be"),
    (np.zeros(20000, np.int16), "dtype int16 must be floating point"),
    (np.full(20000, np.nan, np.float32), "non-finite"),
])
def test_embed_rejects_bad_waveforms(embedder, waveform, match):
    with pytest.raises(InvalidAudioError, match=match):
        embedder.embed(waveform, sample_rate=SR)


def test_embed_is_waveform_windows_then_the_device_step(embedder):
    """embed's front half is one function (checks, mixing, resampling, framing), which the Ray
    Dataset API's decoding tasks run too: its windows through embed_windows are embed's rows, and
    embed counts the length it reports."""
    from vggish_tf2.embedder import waveform_windows

    stereo = noise(int(2.5 * 44100), seed=11, channels=2)
    rows, samples = waveform_windows(stereo, sample_rate=44100, resampler=embedder.resampler,
                                     hop_samples=embedder.hop_samples, short_clips=embedder.short_clips,
                                     dtype=embedder.sample_dtype)
    assert rows.shape == (2, WINDOW) and rows.dtype == embedder.sample_dtype and samples == 40000
    before = embedder.stats.audio_seconds
    assert_same(embedder.embed(stereo, sample_rate=44100), embedder.embed_windows(rows))
    assert embedder.stats.audio_seconds - before == samples / SR


# --- files ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("embedder_audio")
    files = {
        "stereo44k": write(d / "stereo44k.wav", noise(int(3.3 * 44100), seed=3, channels=2), 44100),  # 3 examples
        "bad": d / "bad.wav",
        "flac16k": write(d / "mono16k.flac", noise(samples_for(5) + 500, seed=4), SR),  # 5 examples
        "short": write(d / "short.wav", noise(8000, seed=5), SR),  # 0.5 s: no full example
        "mono16k": write(d / "mono16k.wav", noise(samples_for(7), seed=6), SR),  # 7 examples
    }
    files["bad"].write_text("this is not audio, just text in a file named .wav\n")
    return files


def test_embed_file_equals_embed_of_load_audio(embedder, audio_files):
    path = audio_files["stereo44k"]
    out = embedder.embed_file(path)
    assert out.shape == (3, params.EMBEDDING_SIZE)
    assert_same(out, embedder.embed(audio.load_audio(path, dtype=np.float64), sample_rate=SR))


def test_embed_file_raises_for_a_bad_file(embedder, audio_files):
    with pytest.raises(InvalidAudioError, match="bad.wav"):
        embedder.embed_file(audio_files["bad"])


def test_embed_files_packs_across_files_keeps_order_and_reports_the_bad_one(embedder, audio_files):
    order = ["stereo44k", "bad", "flac16k", "short", "mono16k"]
    one_at_a_time = {k: embedder.embed_file(audio_files[k]) for k in order if k != "bad"}
    before = dataclasses.replace(embedder.stats)
    batches_before = embedder._runner.stats.batches

    results = list(embedder.embed_files(audio_files[k] for k in order))

    assert [r.path for r in results] == [audio_files[k] for k in order]
    assert all(isinstance(r, FileResult) for r in results)
    bad = results[1]
    assert not bad.ok and bad.embedding is None and bad.timestamps is None
    assert isinstance(bad.error, InvalidAudioError) and "bad.wav" in str(bad.error)
    for key, result in zip(order, results):
        if key == "bad":
            continue
        assert result.ok, result.error
        assert_same(result.embedding, one_at_a_time[key])
        np.testing.assert_allclose(result.timestamps, np.arange(len(result.embedding)) * 0.96, rtol=0, atol=1e-12)
        assert result.duration_seconds == pytest.approx(len(audio.load_audio(audio_files[key])) / SR, abs=1e-9)
    assert [len(r.embedding) for r in results if r.ok] == [3, 5, 0, 7]
    # 15 rows packed into 12-row steps: 2 steps, where one file at a time took 3 (3, 5 and 7 rows).
    assert embedder._runner.stats.batches - batches_before == 2

    s = embedder.stats
    assert s.files - before.files == 5 and s.failed_files - before.failed_files == 1
    assert s.examples - before.examples == 15
    durations = sum(r.duration_seconds for r in results if r.ok)
    assert s.audio_seconds - before.audio_seconds == pytest.approx(durations, abs=1e-6)
    assert s.decode_seconds > before.decode_seconds and s.device_seconds > before.device_seconds


def test_embed_files_of_nothing(embedder):
    assert list(embedder.embed_files([])) == []


def test_postprocess_matches_the_signature(embedder, export, audio_files):
    embeddings = embedder.embed_file(audio_files["mono16k"])
    codes = embedder.postprocess(embeddings)
    assert codes.dtype == np.uint8 and codes.shape == (7, params.EMBEDDING_SIZE)
    np.testing.assert_array_equal(codes, export.postprocess(embeddings).numpy())
    assert len(np.unique(codes)) > 50  # not a constant (clipped) code


def test_postprocess_rejects_a_wrong_shape(embedder):
    with pytest.raises(InvalidArgumentError, match=r"embeddings.shape=\(3, 64\) must be \[N, 128\]"):
        embedder.postprocess(np.zeros((3, 64), np.float32))


# --- short clips and hop --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedder_pad(exported_model):
    return Embedder(exported_model, device="cpu", batch_size=8, short_clips="pad", verify_model_hashes=False)


@pytest.fixture(scope="module")
def embedder_half_hop_repeat(exported_model):
    return Embedder(exported_model, device="cpu", batch_size=8, hop_seconds=0.48, short_clips="repeat",
                    verify_model_hashes=False)


def test_short_clips_drop_pad_repeat(embedder, embedder_pad, embedder_half_hop_repeat, export):
    clip = noise(8000, seed=5)  # 0.5 s
    assert embedder.embed(clip, sample_rate=SR).shape == (0, params.EMBEDDING_SIZE)
    padded = np.zeros((1, WINDOW), np.float32)
    padded[0, :8000] = clip
    assert_same(embedder_pad.embed(clip, sample_rate=SR), export.embed_windows(padded).numpy())
    repeated = np.tile(clip, 2)[np.newaxis, :WINDOW]
    assert_same(embedder_half_hop_repeat.embed(clip, sample_rate=SR), export.embed_windows(repeated).numpy())


def test_short_file_with_pad_policy(embedder_pad, audio_files):
    (result,) = embedder_pad.embed_files([audio_files["short"]])
    assert result.ok and result.embedding.shape == (1, params.EMBEDDING_SIZE)
    np.testing.assert_array_equal(result.timestamps, [0.0])
    assert result.duration_seconds == 0.5


def test_half_hop_gives_twice_the_examples_interleaving_the_default_ones(embedder, embedder_half_hop_repeat, audio_files):
    waveform = audio.load_audio(audio_files["mono16k"])  # 7 examples at 0.96 s
    default = embedder.embed(waveform, sample_rate=SR)
    half = embedder_half_hop_repeat.embed(waveform, sample_rate=SR)
    assert len(default) == 7 and len(half) == 13  # (samples - 15600) // 7680 + 1 = 2 * 7 - 1
    assert_same(half[::2], default)  # window 2k at 0.48 s is window k at 0.96 s
    (result,) = embedder_half_hop_repeat.embed_files([audio_files["mono16k"]])
    assert_same(result.embedding, half)
    np.testing.assert_allclose(result.timestamps, np.arange(13) * 0.48, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(embedder_half_hop_repeat.timestamps(13), result.timestamps)


# --- arguments and environment --------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,match", [
    ({"memory_fraction": 0}, r"memory_fraction=0 must be in \(0, 1\]"),
    ({"memory_fraction": 1.5}, r"memory_fraction=1.5 must be in \(0, 1\]"),
    ({"memory_fraction": "0.5"}, r"memory_fraction='0.5' must be a number in \(0, 1\]"),
    ({"device": "tpu"}, r"device_preference='tpu' is not one of auto, cpu, gpu, metal"),
    ({"allow_growth": "false"}, r"allow_growth='false' must be True or False"),
    ({"batch_size": 0}, r"batch_size=0 must be a positive integer or 'auto'"),
    ({"batch_size": True}, r"batch_size=True must be a positive integer"),
    ({"hop_seconds": 0.005}, r"hop_seconds=0.005 must be a multiple of 0.01 s"),
    ({"hop_seconds": 0}, r"hop_seconds=0 must be finite and > 0"),
    ({"short_clips": "trim"}, r"short_clips='trim' must be one of drop, pad, repeat"),
    ({"compute_dtype": "float64"}, r"compute_dtype='float64' must be float32, float16 or bfloat16"),
    ({"workers": 0}, r"workers=0 must be a positive integer"),
    ({"resampler": "linear"}, r"linear"),
])
def test_invalid_arguments_raise_naming_the_value(exported_model, fresh_settings, kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        Embedder(exported_model, **kwargs)


@pytest.mark.parametrize("name,value,match", [
    (config.ENV_DEVICE_PREFERENCE, "tpu", r"VGGISH_DEVICE_PREFERENCE='tpu'.*not one of auto, cpu, gpu, metal"),
    (config.ENV_GPU_MEMORY_FRACTION, "1.5", r"VGGISH_GPU_MEMORY_FRACTION='1.5'.*must be in \(0, 1\]"),
    (config.ENV_GPU_MEMORY_FRACTION, "most", r"VGGISH_GPU_MEMORY_FRACTION='most' is not a number"),
    (config.ENV_GPU_ALLOW_GROWTH, "maybe", r"VGGISH_GPU_ALLOW_GROWTH='maybe' is not a boolean"),
])
def test_invalid_environment_raises_naming_the_variable(exported_model, fresh_settings, name, value, match):
    fresh_settings.setenv(name, value)
    with pytest.raises(InvalidArgumentError, match=match):
        Embedder(exported_model)
    with pytest.raises(InvalidArgumentError, match=match):
        legacy.load_vggish_model(exported_model)


def test_environment_defaults_and_explicit_arguments_override_them(exported_model, fresh_settings, audio_files):
    fresh_settings.setenv(config.ENV_DEVICE_PREFERENCE, "GPU")
    fresh_settings.setenv(config.ENV_MODEL_DIR, str(exported_model))
    fresh_settings.setenv(config.ENV_GPU_MEMORY_FRACTION, "0.5")
    fresh_settings.setenv(config.ENV_GPU_ALLOW_GROWTH, "off")
    assert config.get_settings() == config.Settings("gpu", 0.5, False, str(exported_model))
    # The environment's "gpu" applies (no model, no device argument): no GPU here, so it warns
    # and runs on the CPU, from VGGISH_MODEL_DIR.
    with pytest.warns(UserWarning, match=r'device preference "gpu" but TensorFlow lists no CUDA GPU.*running on CPU'):
        from_env = Embedder(verify_model_hashes=False)
    assert from_env.device == "/device:CPU:0" and from_env.model_path == str(exported_model)
    # An explicit argument wins over the environment: no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        explicit = Embedder(device="cpu", verify_model_hashes=False)
    assert explicit.plan.warnings == ()


# --- the legacy API ----------------------------------------------------------------------------------


@pytest.fixture
def no_default_model(monkeypatch):
    monkeypatch.setattr(legacy, "_default_model", None)


def reference_in_the_same_mode(model, embedder, exported_model):
    """``embedder``, or one like it in ``model``'s compile mode: a default model measures its mode
    (batch_size="auto"), and where XLA wins by > 5 % (seen with oneDNN capped at AVX2 on the
    AVX-512 EPYC: the whole suite run under ONEDNN_MAX_CPU_ISA=AVX2) its float32 rounding differs
    from the graph path's by up to 4e-6, so the two compare only in the same mode."""
    if model.jit_compile == embedder.jit_compile:
        return embedder
    return Embedder(exported_model, device="cpu", batch_size=embedder.batch_size, jit_compile=model.jit_compile,
                    workers=2)


def test_embed_wav_file_loads_the_default_model_from_the_environment(exported_model, fresh_settings, no_default_model, embedder, audio_files):
    fresh_settings.setenv(config.ENV_DEVICE_PREFERENCE, "cpu")
    fresh_settings.setenv(config.ENV_MODEL_DIR, str(exported_model))
    path = audio_files["stereo44k"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = legacy.embed_wav_file(path)
    model = legacy._default_model
    assert isinstance(model, Embedder) and model.model_path == str(exported_model) and model.device == "/device:CPU:0"
    embedder = reference_in_the_same_mode(model, embedder, exported_model)
    assert_same(out, embedder.embed_file(path))
    codes = legacy.embed_wav_file(path, postprocess=True)
    assert legacy._default_model is model  # loaded once
    np.testing.assert_array_equal(codes, embedder.postprocess(out))


def test_load_vggish_model_becomes_the_default_and_warns_on_a_missing_gpu(exported_model, fresh_settings, no_default_model, embedder, audio_files):
    with pytest.warns(UserWarning, match=r'device preference "gpu" but TensorFlow lists no CUDA GPU'):
        model = legacy.load_vggish_model(exported_model, device_preference="gpu", gpu_memory_fraction=0.5, gpu_allow_growth=False)
    assert legacy._default_model is model and model.device == "/device:CPU:0"
    path = audio_files["mono16k"]
    assert_same(legacy.embed_wav_file(path), reference_in_the_same_mode(model, embedder, exported_model).embed_file(path))
    # An explicit model is used as given, whatever the default.
    codes = legacy.embed_wav_file(path, model=embedder, postprocess=True)
    assert codes.dtype == np.uint8 and codes.shape == (7, params.EMBEDDING_SIZE)


@pytest.mark.parametrize("kwargs,match", [
    ({"gpu_memory_fraction": 0}, r"memory_fraction=0 must be in \(0, 1\]"),
    ({"device_preference": "tpu"}, r"device_preference='tpu' is not one of"),
    ({"gpu_allow_growth": 1}, r"allow_growth=1 must be True or False"),
])
def test_load_vggish_model_rejects_invalid_values(exported_model, fresh_settings, no_default_model, kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        legacy.load_vggish_model(exported_model, **kwargs)
    assert legacy._default_model is None


def test_legacy_device_functions_are_the_device_modules(caplog):
    from vggish_tf2 import devices

    assert legacy.detect_available_devices is devices.detect_available_devices
    assert legacy.log_device_info is devices.log_device_info
    infos = legacy.detect_available_devices()
    assert any(i.type is devices.DeviceType.CPU and i.available for i in infos)
    with caplog.at_level("INFO", logger="vggish_tf2.devices"):
        legacy.log_device_info()
    assert 'device preference "auto" selects ' in caplog.text and "device: cpu" in caplog.text


# --- the package ---------------------------------------------------------------------------------------


def test_package_exports_and_import_does_not_load_tensorflow():
    code = (
        "import sys, vggish_tf2\n"
        "missing = [n for n in vggish_tf2.__all__ if not hasattr(vggish_tf2, n)]\n"
        "print(missing, 'tensorflow' in sys.modules, vggish_tf2.__version__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]", "False", importlib.metadata.version("vggish-tf2")]

    import vggish_tf2

    for name in ("Embedder", "FileResult", "load_vggish_model", "embed_wav_file", "detect_available_devices",
                 "select_device", "log_device_info", "DeviceType", "DeviceInfo", "VGGishError", "InvalidArgumentError",
                 "RunOptions", "embed_corpus"):
        assert name in vggish_tf2.__all__
    assert vggish_tf2.Embedder is Embedder and vggish_tf2.load_vggish_model is legacy.load_vggish_model


# --- issue 8: closing early, bugs, layouts, statuses, counters ---------------------------------------


def test_embed_files_closed_early_returns_promptly(embedder, audio_files, monkeypatch):
    """A decoding thread whose queue is full must not block its last hand-over (the end marker)
    for good once the consumer has gone: closing the iterator used to hang in executor.shutdown."""
    import threading

    from vggish_tf2.corpus import decode

    monkeypatch.setattr(decode, "BLOCK_WINDOWS", 1)  # one window per block ...
    monkeypatch.setattr(decode, "PREFETCH_BLOCKS", 1)  # ... and a queue of one block
    paths = [audio_files["stereo44k"], audio_files["mono16k"], audio_files["mono16k"], audio_files["flac16k"]]
    done = threading.Event()

    def consume_one_then_close():
        results = embedder.embed_files(paths)
        next(results)
        results.close()  # what `break` or Ctrl-C does to the generator
        done.set()

    worker = threading.Thread(target=consume_one_then_close, daemon=True)
    worker.start()
    assert done.wait(timeout=120), "embed_files did not return after being closed"


def test_a_bug_while_decoding_stops_the_run_naming_the_file(embedder, audio_files, monkeypatch):
    from vggish_tf2.errors import InternalError

    def broken_stream(path, **kwargs):
        raise TypeError("unexpected keyword")  # a program bug, not bad audio

    monkeypatch.setattr(audio, "stream_audio", broken_stream)
    with pytest.raises(InternalError, match=r"mono16k.wav: TypeError while decoding: unexpected keyword .*bug"):
        list(embedder.embed_files([audio_files["mono16k"]]))


def test_channels_first_waveform_is_refused_not_silently_empty(embedder):
    stereo = noise(3 * SR, seed=9, channels=2)  # [samples, channels]
    with pytest.raises(InvalidAudioError, match=r"waveform.shape=\(2, 48000\) looks channels-first .*waveform.T"):
        embedder.embed(stereo.T, sample_rate=SR)
    assert embedder.embed(stereo, sample_rate=SR).shape == (3, params.EMBEDDING_SIZE)


def test_short_clip_is_ok_and_skipped_like_the_cli_says(embedder, audio_files):
    short, bad, full = embedder.embed_files([audio_files["short"], audio_files["bad"], audio_files["mono16k"]])
    assert short.ok and short.skipped and short.status == "skipped" and short.embedding.shape == (0, 128)
    assert not bad.ok and not bad.skipped and bad.status == "failed"
    assert full.ok and not full.skipped and full.status == "ok"


def test_device_seconds_never_exceed_wall_seconds(exported_model, audio_files):
    fresh = Embedder(exported_model, device="cpu", verify_model_hashes=False)
    fresh.embed(noise(samples_for(2), seed=3), sample_rate=SR)
    fresh.embed_windows(np.zeros((3, WINDOW), np.float32))
    list(fresh.embed_files([audio_files["mono16k"], audio_files["flac16k"]]))
    s = fresh.stats
    assert s.examples == 2 + 3 + 12
    assert 0 < s.device_seconds <= s.wall_seconds


def test_a_missing_model_fails_before_tensorflow_is_imported(tmp_path):
    """The error comes at once (no 7-s TensorFlow import first) and says how to get a model."""
    script = (
        "import sys\n"
        "from vggish_tf2 import Embedder\n"
        "from vggish_tf2.errors import ModelNotFoundError\n"
        "try:\n"
        f"    Embedder({str(tmp_path / 'nowhere')!r})\n"
        "except ModelNotFoundError as e:\n"
        "    print('tensorflow' in sys.modules, str(e))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.startswith("False ") and "nowhere: no model here" in out
    assert "--download" in out and "scripts/demo.sh" in out and "SYNTHETIC" in out
