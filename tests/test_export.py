"""The converted SavedModel: every loader users have, every signature, the metadata asset, and
load_export's refusals (missing, foreign, future-format and tampered exports)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from convert import reference_numpy
from vggish_tf2 import model, params
from vggish_tf2.errors import ModelError, ModelNotFoundError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def waveform() -> np.ndarray:
    return np.asarray(reference_numpy.probe_signals()["speech"], dtype=np.float32)  # 3 s -> 3 examples


@pytest.fixture(scope="module")
def expected(loaded_export, waveform) -> np.ndarray:
    out = loaded_export.module(tf.constant(waveform)).numpy()
    assert out.shape == (3, 128)
    return out


# --- loaders ------------------------------------------------------------------------------------
def test_tf_saved_model_load(exported_model, waveform, expected):
    loaded = tf.saved_model.load(str(exported_model))
    np.testing.assert_array_equal(loaded(tf.constant(waveform)).numpy(), expected)
    out = loaded.signatures["serving_default"](waveform=tf.constant(waveform))
    np.testing.assert_array_equal(next(iter(out.values())).numpy(), expected)


def test_tensorflow_hub_load_is_a_drop_in_for_google_vggish(exported_model, waveform, expected):
    import tensorflow_hub as hub

    loaded = hub.load(str(exported_model))
    out = loaded(waveform)  # as with hub.load("https://tfhub.dev/google/vggish/1")(waveform)
    assert out.shape == (3, 128) and out.dtype == tf.float32
    np.testing.assert_array_equal(out.numpy(), expected)


def test_hub_keras_layer_with_tf_keras(exported_model, waveform, expected, tmp_path):
    # hub.KerasLayer needs tf-keras, chosen by TF_USE_LEGACY_KERAS=1 before TF is imported; that is
    # process-wide, so it runs in a subprocess.
    np.save(tmp_path / "waveform.npy", waveform)
    script = textwrap.dedent(f"""
        import numpy as np, tensorflow as tf, tensorflow_hub as hub, tf_keras
        assert tf.keras.__name__.startswith("tf_keras"), tf.keras.__name__
        layer = hub.KerasLayer({str(exported_model)!r}, trainable=False)
        out = layer(tf.constant(np.load({str(tmp_path / "waveform.npy")!r})))
        np.save({str(tmp_path / "out.npy")!r}, out.numpy())
    """)
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)


def test_keras3_tfsm_layer(exported_model, waveform, expected):
    import keras

    assert keras.__version__.startswith("3")
    layer = keras.layers.TFSMLayer(str(exported_model), call_endpoint="serving_default")
    out = layer(tf.constant(waveform))
    out = next(iter(out.values())) if isinstance(out, dict) else out
    np.testing.assert_array_equal(np.asarray(out), expected)


# --- signatures ---------------------------------------------------------------------------------
SIGNATURE_INPUTS = {
    # name: (input name, shape, dtype)
    "serving_default": ("waveform", [None], tf.float32),
    "embed_batch": ("waveforms", [None, None], tf.float32),
    "embed_log_mel": ("log_mel", [None, 96, 64], tf.float32),
    "embed_windows": ("windows", [None, params.EXAMPLE_WINDOW_SAMPLES], tf.float32),
    "postprocess": ("embeddings", [None, 128], tf.float32),
    "waveform_to_log_mel": ("waveform", [None], tf.float32),
}


def test_signatures_and_input_specs(loaded_export):
    signatures = loaded_export.module.signatures
    assert set(signatures) == set(SIGNATURE_INPUTS)
    for name, (arg, shape, dtype) in SIGNATURE_INPUTS.items():
        _, kwargs = signatures[name].structured_input_signature
        assert set(kwargs) == {arg}, name
        assert kwargs[arg].shape.as_list() == shape, name
        assert kwargs[arg].dtype == dtype, name


def _only(outputs: dict) -> np.ndarray:
    assert len(outputs) == 1
    return next(iter(outputs.values())).numpy()


def test_signature_outputs(loaded_export, waveform, expected):
    # Every signature runs its network calls through vggish_tf2.step (one fixed shape), so the
    # paths agree bit for bit, whatever else is in the batch (here a reversed copy).
    sig = loaded_export.module.signatures
    batch = np.stack([waveform, waveform[::-1].copy()])  # [2, 48000]
    out = _only(sig["embed_batch"](waveforms=tf.constant(batch)))
    assert out.shape == (2, 3, 128) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0], expected)
    np.testing.assert_array_equal(out[1], loaded_export.module(tf.constant(batch[1])).numpy())

    log_mel = _only(sig["waveform_to_log_mel"](waveform=tf.constant(waveform)))
    assert log_mel.shape == (3, 96, 64) and log_mel.dtype == np.float32

    from_log_mel = _only(sig["embed_log_mel"](log_mel=tf.constant(log_mel)))
    assert from_log_mel.shape == (3, 128) and from_log_mel.dtype == np.float32
    np.testing.assert_array_equal(from_log_mel, expected)

    windows = np.stack([waveform[k * 15360 : k * 15360 + 15600] for k in range(3)])
    from_windows = _only(sig["embed_windows"](windows=tf.constant(windows)))
    assert from_windows.shape == (3, 128)
    np.testing.assert_array_equal(from_windows, expected)

    quantized = _only(sig["postprocess"](embeddings=tf.constant(expected)))
    assert quantized.shape == (3, 128) and quantized.dtype == np.uint8


def test_methods_also_take_float64(loaded_export, waveform, expected):
    """float64 samples reach the float64 front end uncast: for float32-representable samples the
    numbers are the float32 call's, bit for bit; for others they are the float64 pipeline's."""
    module = loaded_export.module
    wide = waveform.astype(np.float64)
    np.testing.assert_array_equal(module(tf.constant(wide)).numpy(), expected)
    windows = np.stack([wide[k * 15360 : k * 15360 + 15600] for k in range(3)])
    np.testing.assert_array_equal(module.embed_windows(tf.constant(windows)).numpy(), expected)
    np.testing.assert_array_equal(module.embed_batch(tf.constant(wide[np.newaxis])).numpy()[0], expected)
    assert module.waveform_to_log_mel(tf.constant(wide)).shape == (3, 96, 64)
    # float64 samples that float32 cannot hold give other embeddings than their float32 casts:
    # they were not cast on the way (the cast moved Google's numbers by up to 3.9e-5, issue 8).
    noise = 0.3 * np.random.default_rng(11).standard_normal((3, 15600))
    assert not np.array_equal(module.embed_windows(tf.constant(noise)).numpy(),
                              module.embed_windows(tf.constant(noise.astype(np.float32))).numpy())


def test_embed_batch_of_short_waveforms_gives_zero_examples(loaded_export):
    out = loaded_export.module.embed_batch(tf.zeros([2, 15599])).numpy()
    assert out.shape == (2, 0, 128)


# --- metadata asset -----------------------------------------------------------------------------
def test_metadata_asset(exported_model, loaded_export, synthetic_files):
    metadata = model.read_metadata(exported_model)
    assert metadata == loaded_export.metadata
    assert metadata["format"] == model.EXPORT_FORMAT
    assert metadata["format_version"] == model.EXPORT_FORMAT_VERSION
    assert metadata["frontend"] == params.FRONTEND.as_dict()
    assert metadata["frontend"]["stft_window_samples"] == 400 and metadata["frontend"]["mel_max_hz"] == 7500.0
    assert metadata["frontend_precision"] == "float64"
    assert "not tf.signal" in metadata["mel_matrix"]
    assert metadata["embedding_size"] == 128 and metadata["has_pca"] is True
    assert metadata["versions"]["tensorflow"] == tf.__version__
    assert metadata["versions"]["numpy"] == np.__version__
    assert "vggish_tf2" in metadata["versions"]
    # Synthetic weights are said loudly.
    assert metadata["synthetic_weights"] is True and loaded_export.synthetic_weights
    assert "SYNTHETIC WEIGHTS" in metadata["warning"] and "not VGGish" in metadata["warning"]
    # The sources are the files converted, by hash.
    checkpoint, pca = synthetic_files
    (ckpt_record,) = metadata["sources"]["checkpoint"]
    assert ckpt_record["file"] == checkpoint.name
    assert ckpt_record["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert ckpt_record["size_bytes"] == checkpoint.stat().st_size
    assert metadata["sources"]["pca_params"]["sha256"] == hashlib.sha256(pca.read_bytes()).hexdigest()
    # The verification figures travel with the export.
    probes = {p["name"] for p in metadata["verification"]["probes"]}
    assert probes == {"sine", "noise", "silence", "chirp", "speech"}
    assert all(p["embedding_max_rel"] <= metadata["verification"]["tolerance"]["embedding_max_rel"]
               for p in metadata["verification"]["probes"])


def test_float32_export_records_its_precision(loaded_export_float32):
    assert loaded_export_float32.metadata["frontend_precision"] == "float32"


def test_export_files_hashes_recorded(exported_model):
    recorded = json.loads((exported_model / model.FILE_HASHES).read_text())
    assert "saved_model.pb" in recorded and f"assets/{model.METADATA_ASSET}" in recorded
    assert any(name.startswith("variables/variables.data") for name in recorded)
    for name, digest in recorded.items():
        assert hashlib.sha256((exported_model / name).read_bytes()).hexdigest() == digest, name


# --- refusals -----------------------------------------------------------------------------------
def _link_copy(src: Path, dst: Path) -> Path:
    """A copy of an export whose files are hard links (cheap). Replace a file before changing it."""
    shutil.copytree(src, dst, copy_function=os.link)
    return dst


def _rewrite(path: Path, data: bytes) -> None:
    path.unlink()  # break the hard link: the session's export must stay intact
    path.write_bytes(data)


def test_missing_directory_is_model_not_found(tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"no model here; convert .*python -m convert.checkpoint_to_savedmodel"):
        model.load_export(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError):  # also catchable as the built-in
        model.load_export(tmp_path / "nowhere")


def test_directory_that_is_not_a_saved_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelError, match=r"not a SavedModel \(no saved_model.pb\); convert"):
        model.load_export(tmp_path)


def test_saved_model_without_our_asset(tmp_path):
    other = tf.Module()
    other.f = tf.function(lambda x: x + 1.0, input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(other, str(tmp_path / "other"))
    with pytest.raises(ModelError, match=r"a SavedModel but not a vggish-tf2 export \(no assets/vggish_tf2.json\)"):
        model.load_export(tmp_path / "other")


def test_future_format_version_is_refused(exported_model, tmp_path):
    copy = _link_copy(exported_model, tmp_path / "future")
    meta_path = copy / "assets" / model.METADATA_ASSET
    metadata = json.loads(meta_path.read_text())
    metadata["format_version"] = model.EXPORT_FORMAT_VERSION + 1
    _rewrite(meta_path, json.dumps(metadata).encode())
    with pytest.raises(ModelError, match=rf"export format version {model.EXPORT_FORMAT_VERSION + 1} is not supported .*re-convert"):
        model.load_export(copy)
    assert model.read_metadata(exported_model)["format_version"] == model.EXPORT_FORMAT_VERSION


def test_other_network_call_rows_are_refused(exported_model, tmp_path):
    """An export whose signatures run other-size network calls would give other bits than the
    Embedder (vggish_tf2.step): refused, with the way out."""
    copy = _link_copy(exported_model, tmp_path / "other_step")
    meta_path = copy / "assets" / model.METADATA_ASSET
    metadata = json.loads(meta_path.read_text())
    assert metadata["step_examples"] == params.STEP_EXAMPLES
    metadata["step_examples"] = 48
    _rewrite(meta_path, json.dumps(metadata).encode())
    with pytest.raises(ModelError, match=r"signatures run 48-row network calls, this vggish-tf2 runs 12-row calls .*re-convert"):
        model.load_export(copy)


def test_other_frontend_parameters_are_refused(exported_model, tmp_path):
    copy = _link_copy(exported_model, tmp_path / "other_frontend")
    meta_path = copy / "assets" / model.METADATA_ASSET
    metadata = json.loads(meta_path.read_text())
    metadata["frontend"]["mel_max_hz"] = 8000.0
    _rewrite(meta_path, json.dumps(metadata).encode())
    with pytest.raises(ModelError, match=r"built with front-end parameters"):
        model.load_export(copy)


def test_unreadable_metadata_is_refused(exported_model, tmp_path):
    copy = _link_copy(exported_model, tmp_path / "garbled")
    _rewrite(copy / "assets" / model.METADATA_ASSET, b"{not json")
    with pytest.raises(ModelError, match=r"unreadable export metadata"):
        model.load_export(copy)


def test_tampered_variables_are_refused(exported_model, tmp_path):
    copy = _link_copy(exported_model, tmp_path / "tampered")
    (data,) = sorted((copy / "variables").glob("variables.data-*"))
    content = bytearray(data.read_bytes())
    content[len(content) // 2] ^= 0x01  # one flipped bit in the middle of a weight tensor
    _rewrite(data, bytes(content))
    with pytest.raises(ModelError, match=r"variables\.data-.*sha256 differs from the one recorded at conversion"):
        model.load_export(copy)


def test_added_file_is_refused(exported_model, tmp_path):
    copy = _link_copy(exported_model, tmp_path / "extra")
    (copy / "variables" / "stray.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match=r"files differ from those recorded.*extra: \['variables/stray.bin'\]"):
        model.load_export(copy)


def test_untampered_link_copy_loads(exported_model, tmp_path, waveform, expected):
    # Control for the refusals above: the copy mechanism itself does not break an export.
    copy = _link_copy(exported_model, tmp_path / "intact")
    loaded = model.load_export(copy)
    np.testing.assert_array_equal(loaded.module(tf.constant(waveform)).numpy(), expected)


# --- The recorded file hashes (issue 8) ---------------------------------------------------------------
def test_export_without_its_hash_list_is_refused_unless_the_caller_opts_out(exported_model, tmp_path, waveform,
                                                                             expected, caplog):
    copy = _link_copy(exported_model, tmp_path / "no_hashes")
    (copy / model.FILE_HASHES).unlink()
    with pytest.raises(ModelError, match=rf"{model.FILE_HASHES}: no recorded file hashes.*verify_hashes=False"):
        model.load_export(copy)
    loaded = model.load_export(copy, verify_hashes=False)  # explicitly: a directory the caller trusts
    assert "without checking its files" in caplog.text
    np.testing.assert_array_equal(loaded.module(tf.constant(waveform)).numpy(), expected)


@pytest.mark.parametrize("content, reason", [
    (b"{not json", r", not JSON"),
    (b"", r", not JSON"),
    (b"[1, 2]", r"expected a JSON object .* got a JSON list"),
    (b"{}", r"got an empty object"),
    (b'{"saved_model.pb": 5}', r"saved_model.pb: 5 is not a sha256"),
    (b'{"saved_model.pb": "abc"}', r"'abc' is not a sha256"),
    (b'{"../../etc/passwd": "' + b"0" * 64 + b'"}', r"'../../etc/passwd' is not a path inside the export"),
    (b'{"/etc/passwd": "' + b"0" * 64 + b'"}', r"'/etc/passwd' is not a path inside the export"),
])
def test_corrupt_hash_list_is_a_model_error_naming_it(exported_model, tmp_path, content, reason):
    copy = _link_copy(exported_model, tmp_path / "corrupt")
    _rewrite(copy / model.FILE_HASHES, content)
    with pytest.raises(ModelError, match=rf"{model.FILE_HASHES}: corrupt file-hash list.*{reason}"):
        model.load_export(copy)
    with pytest.raises(ModelError, match=rf"{model.FILE_HASHES}: corrupt file-hash list.*{reason}"):
        model.verify_file_hashes(copy)


def test_fingerprint_names_every_file_with_or_without_the_hash_list(exported_model, tmp_path):
    from vggish_tf2 import hashing
    from vggish_tf2.pipeline import model_fingerprint

    recorded = hashing.export_fingerprint(exported_model)
    assert recorded == model_fingerprint(str(exported_model)) == hashing.export_fingerprint(exported_model,
                                                                                           trust_recorded=False)
    copy = _link_copy(exported_model, tmp_path / "no_hashes")
    (copy / model.FILE_HASHES).unlink()
    assert model_fingerprint(str(copy)) == recorded  # the same files: the same fingerprint
    # A changed weight file (not saved_model.pb) changes it: every file counts.
    (data,) = sorted((copy / "variables").glob("variables.data-*"))
    content = bytearray(data.read_bytes())
    content[len(content) // 2] ^= 0x01
    _rewrite(data, bytes(content))
    assert model_fingerprint(str(copy)).startswith("sha256-files:") and model_fingerprint(str(copy)) != recorded
