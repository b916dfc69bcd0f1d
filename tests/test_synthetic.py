"""Synthetic checkpoints (convert.synthetic) and the TF1 reference graph (convert.tf1_graph)."""
from __future__ import annotations

import numpy as np
import pytest

from convert import reference_numpy as ref
from convert import synthetic
from vggish_tf2.errors import CheckpointError, InvalidArgumentError, OutputError
from vggish_tf2.network import VARIABLE_SHAPES

tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def checkpoint_tensors(synthetic_files):
    reader = tf.train.load_checkpoint(str(synthetic_files[0]))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


@pytest.fixture(scope="module")
def probe_embeddings(checkpoint_tensors):
    return ref.forward(checkpoint_tensors, ref.probe_examples())  # [13, 128] float64


@pytest.fixture(scope="module")
def tf1_reference(synthetic_files):
    from convert.tf1_graph import TF1Reference

    with TF1Reference(synthetic_files[0]) as reference:
        yield reference


def test_checkpoint_is_one_v1_file_next_to_the_npz(synthetic_files):
    checkpoint, pca = synthetic_files
    assert checkpoint.name == "vggish_model.ckpt" and pca.name == "vggish_pca_params.npz"
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["vggish_model.ckpt", "vggish_pca_params.npz"]
    assert checkpoint.is_file() and checkpoint.stat().st_size > 72_141_184 * 4  # float32 tensors + table


def test_checkpoint_holds_the_real_names_shapes_and_dtypes(synthetic_files):
    reader = tf.train.load_checkpoint(str(synthetic_files[0]))
    assert reader.get_variable_to_shape_map() == {name: list(shape) for name, shape in VARIABLE_SHAPES.items()}
    assert set(reader.get_variable_to_dtype_map().values()) == {tf.float32}


def test_checkpoint_holds_the_seeded_weights(checkpoint_tensors, synthetic_files):
    from conftest import SYNTHETIC_SEED  # tests/ is on sys.path (pytest's default prepend import mode)

    expected = synthetic.synthetic_weights(SYNTHETIC_SEED)
    for name, value in expected.items():
        np.testing.assert_array_equal(checkpoint_tensors[name], value, err_msg=name)


def test_weights_are_seeded_and_he_scaled():
    first, again, other = (synthetic.synthetic_weights(s) for s in (5, 5, 6))
    for name in VARIABLE_SHAPES:
        np.testing.assert_array_equal(first[name], again[name])
        assert first[name].dtype == np.float32 and first[name].shape == VARIABLE_SHAPES[name]
        assert not np.array_equal(first[name], other[name])
    np.testing.assert_allclose(first["vggish/conv2/weights"].std(), np.sqrt(2 / (9 * 64)), rtol=0.02)
    np.testing.assert_allclose(first["vggish/fc1/fc1_1/weights"].std(), np.sqrt(2 / 12288), rtol=0.01)
    np.testing.assert_allclose(first["vggish/conv1/weights"].std(), np.sqrt(2 / 9) / synthetic.INPUT_RMS, rtol=0.2)
    assert 0 < np.abs(first["vggish/fc2/biases"]).max() < 0.1
    with pytest.raises(InvalidArgumentError, match="seed=-1 must be a non-negative integer"):
        synthetic.synthetic_weights(-1)


def test_pca_npz_has_only_the_released_keys_and_a_scaled_rotation(synthetic_files, probe_embeddings):
    with np.load(synthetic_files[1], allow_pickle=False) as npz:
        assert sorted(npz.files) == ["pca_eigen_vectors", "pca_means"]
        vectors, means = npz["pca_eigen_vectors"], npz["pca_means"]
    assert vectors.shape == (128, 128) and means.shape == (128,)
    scale = np.sqrt(np.mean(np.sum(vectors**2, axis=1)))
    np.testing.assert_allclose(vectors @ vectors.T, scale**2 * np.eye(128), atol=1e-9 * scale**2)
    np.testing.assert_allclose(means, probe_embeddings.mean(axis=0), rtol=1e-5, atol=1e-6)


def test_pca_params_are_deterministic(probe_embeddings):
    a = synthetic.synthetic_pca_params(probe_embeddings, seed=3)
    b = synthetic.synthetic_pca_params(probe_embeddings, seed=3)
    c = synthetic.synthetic_pca_params(probe_embeddings, seed=4)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.allclose(a[0], c[0])
    with pytest.raises(InvalidArgumentError, match="embeddings are all identical"):
        synthetic.synthetic_pca_params(np.ones((3, 128)), seed=0)


def test_embeddings_are_not_degenerate(probe_embeddings, synthetic_files):
    e = probe_embeddings
    assert np.all(np.isfinite(e))
    assert 0.1 < e.std() < 10.0, f"raw embedding std {e.std():.3g}"  # neither dead nor exploding
    assert e.std(axis=0).mean() > 0.1  # examples differ from one another, not just from zero
    per_signal = np.split(e, np.cumsum([3, 2, 2, 3])[:4])  # sine, noise, silence, chirp, speech
    centres = np.stack([block.mean(axis=0) for block in per_signal])
    distances = np.linalg.norm(centres[:, None] - centres[None], axis=-1)[np.triu_indices(5, 1)]
    assert distances.min() > 0.05 * np.linalg.norm(e, axis=1).mean()  # every probe lands elsewhere
    with np.load(synthetic_files[1], allow_pickle=False) as npz:
        q = ref.postprocess(e, npz["pca_eigen_vectors"], npz["pca_means"])
    assert q.std() > 40 and q.min() < 20 and q.max() > 235  # spread over the uint8 range
    assert np.mean((q == 0) | (q == 255)) < 0.15  # few values at the clip limits


def test_tf1_graph_has_googles_names():
    from convert.tf1_graph import build_tf1_graph

    graph, features, embedding = build_tf1_graph()
    assert features.name == "vggish/input_features:0" and features.shape.as_list() == [None, 96, 64]
    assert embedding.name == "vggish/embedding:0" and embedding.shape.as_list() == [None, 128]
    with graph.as_default():
        variables = {v.name[: -len(":0")]: tuple(v.shape.as_list()) for v in tf.compat.v1.global_variables()}
    assert variables == VARIABLE_SHAPES


def test_tf1_reference_agrees_with_the_float64_reference(tf1_reference, probe_embeddings):
    embeddings = tf1_reference.embed(ref.probe_examples())
    assert embeddings.dtype == np.float32 and embeddings.shape == (13, 128)
    relative = np.abs(embeddings - probe_embeddings).max(axis=1) / np.abs(probe_embeddings).max(axis=1)
    assert relative.max() < 1e-5  # float32 through nine layers; measured 2e-6
    with pytest.raises(InvalidArgumentError, match=r"shape \(2, 64\)"):
        tf1_reference.embed(np.zeros((2, 64)))


def test_v2_checkpoint_restores_to_the_same_numbers(tmp_path, checkpoint_tensors, tf1_reference):
    from convert.tf1_graph import TF1Reference

    prefix = synthetic.write_checkpoint(tmp_path, checkpoint_tensors, version="V2")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "vggish_model.ckpt.data-00000-of-00001", "vggish_model.ckpt.index"
    ]
    examples = ref.probe_examples()[:4]
    with TF1Reference(prefix) as reference:
        np.testing.assert_array_equal(reference.embed(examples), tf1_reference.embed(examples))


def test_missing_variable_is_a_checkpoint_error(tmp_path, checkpoint_tensors):
    from convert.tf1_graph import TF1Reference

    partial = {k: v for k, v in checkpoint_tensors.items() if k != "vggish/conv4/conv4_2/biases"}
    path = synthetic.write_checkpoint(tmp_path, partial, version="V1")
    with pytest.raises(CheckpointError, match=r"vggish_model\.ckpt: cannot restore VGGish variables \(missing: vggish/conv4/conv4_2/biases\)"):
        TF1Reference(path)


def test_wrong_shape_is_a_checkpoint_error(tmp_path, checkpoint_tensors):
    from convert.tf1_graph import TF1Reference

    broken = dict(checkpoint_tensors)
    broken["vggish/fc2/biases"] = np.zeros(64, np.float32)
    path = synthetic.write_checkpoint(tmp_path, broken, version="V2")
    with pytest.raises(CheckpointError, match=r"cannot restore VGGish variables \(vggish/fc2/biases: shape \(64,\), expected \(128,\)\)"):
        TF1Reference(path)


def test_wrong_dtype_and_unreadable_files_are_checkpoint_errors(tmp_path, checkpoint_tensors):
    from convert.tf1_graph import TF1Reference

    broken = dict(checkpoint_tensors)
    broken["vggish/conv1/biases"] = broken["vggish/conv1/biases"].astype(np.float64)
    path = synthetic.write_checkpoint(tmp_path / "dtype", broken, version="V2")
    with pytest.raises(CheckpointError, match=r"vggish/conv1/biases: dtype float64, expected float32"):
        TF1Reference(path)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint" * 100)
    with pytest.raises(CheckpointError, match=r"garbage\.ckpt: cannot read checkpoint"):
        TF1Reference(garbage)


def test_write_checkpoint_refuses_to_overwrite_and_unknown_versions(tmp_path):
    small = {"vggish/conv1/biases": np.zeros(64, np.float32)}
    synthetic.write_checkpoint(tmp_path, small)
    with pytest.raises(OutputError, match="vggish_model.ckpt: already exists"):
        synthetic.write_checkpoint(tmp_path, small)
    with pytest.raises(InvalidArgumentError, match="version='V3' must be 'V1' or 'V2'"):
        synthetic.write_checkpoint(tmp_path / "other", small, version="V3")


def test_write_synthetic_checkpoint_refuses_to_overwrite(synthetic_files):
    with pytest.raises(OutputError, match="vggish_pca_params.npz: already exists"):
        synthetic.write_synthetic_checkpoint(synthetic_files[0].parent, seed=0)


def test_synthetic_notice_says_what_it_is():
    assert synthetic.SYNTHETIC_NOTICE == "SYNTHETIC WEIGHTS: these are not VGGish embeddings"
