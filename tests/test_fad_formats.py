"""Statistics files: ours (float64, exact round trip), fadtk's npz, Google's TFRecord (float32),
read back to the same numbers; files written by Google's own layout (tf.train.Example via TF) are
read; bad files name the file and the problem."""
import numpy as np
import pytest

from vggish_tf2.fad import GaussianStats, StatsFileError, compute_stats, frechet_distance, load_stats, save_stats


@pytest.fixture(scope="module")
def stats():
    rng = np.random.default_rng(0)
    return compute_stats(rng.standard_normal((500, 128)) @ rng.standard_normal((128, 128)) * 0.1 + 0.5)


def test_ours_round_trips_exactly_with_metadata(tmp_path, stats):
    path = save_stats(tmp_path / "base.npz", stats, metadata={"settings": {"hop_seconds": 0.5}})
    back, info = load_stats(path)
    np.testing.assert_array_equal(back.mean, stats.mean)
    np.testing.assert_array_equal(back.cov, stats.cov)
    assert back.count == 500 and info["format"] == "vggish-tf2" and info["metadata"]["settings"]["hop_seconds"] == 0.5
    assert frechet_distance(back, stats) == 0.0


def test_fadtk_npz_round_trips_and_names_models(tmp_path, stats):
    path = save_stats(tmp_path / "fadtk.npz", stats, file_format="fadtk")
    with np.load(path, allow_pickle=False) as data:
        assert sorted(data.files) == ["vggish.cov", "vggish.mu"]
    back, info = load_stats(path)
    np.testing.assert_array_equal(back.cov, stats.cov)
    assert back.count is None and info == {"format": "fadtk", "fadtk_model": "vggish", "metadata": {}}
    # A file of several models, as fadtk's bundled reference statistics.
    np.savez(tmp_path / "two.npz", **{"vggish.mu": stats.mean, "vggish.cov": stats.cov,
                                      "clap.mu": np.zeros(4), "clap.cov": np.eye(4)})
    with pytest.raises(StatsFileError, match=r"two\.npz: holds statistics of several models \(clap, vggish\)"):
        load_stats(tmp_path / "two.npz")
    assert load_stats(tmp_path / "two.npz", fadtk_model="clap")[0].dim == 4
    with pytest.raises(StatsFileError, match="no statistics for model 'encodec'"):
        load_stats(tmp_path / "two.npz", fadtk_model="encodec")


def test_google_tfrecord_round_trip_float32(tmp_path, stats):
    path = save_stats(tmp_path / "google_stats", stats, file_format="google")
    back, info = load_stats(path)
    assert info["format"] == "google" and back.count == 500
    np.testing.assert_array_equal(back.mean, stats.mean.astype(np.float32).astype(np.float64))
    np.testing.assert_array_equal(back.cov, stats.cov.astype(np.float32).astype(np.float64))
    # The float32 rounding of Google's format costs this much FAD against the float64 statistics
    # (measured 0.0: below the clipping at 0); against another set it moves FAD by < 1e-4 relative.
    other = compute_stats(np.random.default_rng(1).standard_normal((400, 128)))
    assert frechet_distance(back, other) == pytest.approx(frechet_distance(stats, other), rel=1e-4)


def test_reads_a_file_in_googles_layout_written_by_tensorflow(tmp_path):
    """As create_embeddings_beam.ComputeMeanAndCovariance writes it: one Example, float lists."""
    import tensorflow as tf

    rng = np.random.default_rng(2)
    x = rng.standard_normal((50, 128))
    mu, sigma = x.mean(axis=0), np.cov(x, rowvar=False)
    feature = {
        "embedding_count": tf.train.Feature(int64_list=tf.train.Int64List(value=[50])),
        "embedding_length": tf.train.Feature(int64_list=tf.train.Int64List(value=[128])),
        "mu": tf.train.Feature(float_list=tf.train.FloatList(value=list(mu.flatten()))),
        "sigma": tf.train.Feature(float_list=tf.train.FloatList(value=list(sigma.flatten()))),
    }
    path = tmp_path / "background_stats"
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    back, _ = load_stats(path)
    np.testing.assert_array_equal(back.cov, sigma.astype(np.float32).astype(np.float64))
    assert back.count == 50


def test_bad_files_name_the_file_and_the_problem(tmp_path, stats):
    (tmp_path / "text.txt").write_text("hello\n")
    with pytest.raises(StatsFileError, match=r"text\.txt: not a statistics file"):
        load_stats(tmp_path / "text.txt")
    np.savez(tmp_path / "other.npz", embedding=np.zeros((3, 128)))
    with pytest.raises(StatsFileError, match=r"other\.npz: npz holds no statistics \(keys \['embedding'\]"):
        load_stats(tmp_path / "other.npz")
    np.savez(tmp_path / "nan.npz", mean=np.full(128, np.nan), cov=np.eye(128))
    with pytest.raises(StatsFileError, match=r"nan\.npz: statistics hold non-finite values"):
        load_stats(tmp_path / "nan.npz")
    np.savez(tmp_path / "shape.npz", mean=np.zeros(128), cov=np.eye(127))
    with pytest.raises(StatsFileError, match=r"shape\.npz: mean\.shape=\(128,\) and cov\.shape=\(127, 127\)"):
        load_stats(tmp_path / "shape.npz")
    with pytest.raises(StatsFileError, match=r"absent\.npz: cannot read"):
        load_stats(tmp_path / "absent.npz")
    with pytest.raises(ValueError, match="needs the embedding count"):
        save_stats(tmp_path / "g", GaussianStats(stats.mean, stats.cov, None), file_format="google")
