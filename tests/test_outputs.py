"""Writers: round trips, atomicity (no partial or temporary files), determinism, safe paths."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from vggish_tf2 import outputs
from vggish_tf2.errors import InvalidArgumentError, OutputError


def example_arrays(n=5, seed=0):
    rng = np.random.default_rng(seed)
    embedding = rng.standard_normal((n, 128)).astype(np.float32)
    postprocessed = rng.integers(0, 256, (n, 128), dtype=np.uint8)
    timestamps = np.arange(n) * 0.96
    return embedding, postprocessed, timestamps


METADATA = {"resampler": "soxr_hq", "model_sha256": "ab" * 32, "synthetic_weights": True, "hop_seconds": 0.96}


def listing(directory):
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*"))


# --- npz ------------------------------------------------------------------------------------------
def test_npz_round_trip_without_pickle(tmp_path):
    embedding, postprocessed, timestamps = example_arrays()
    path = tmp_path / "deep" / "a.wav.npz"
    outputs.write_npz(path, embedding=embedding, postprocessed=postprocessed, timestamps=timestamps, metadata=METADATA)
    with np.load(path, allow_pickle=False) as raw:  # every key loads without pickle
        assert sorted(raw.files) == ["embedding", "metadata", "postprocessed", "timestamps"]
        assert raw["metadata"].shape == () and raw["metadata"].dtype.kind == "U"
    back = outputs.read_npz(path)
    np.testing.assert_array_equal(back["embedding"], embedding)
    assert back["embedding"].dtype == np.float32
    np.testing.assert_array_equal(back["postprocessed"], postprocessed)
    assert back["postprocessed"].dtype == np.uint8
    np.testing.assert_array_equal(back["timestamps"], timestamps)
    assert back["timestamps"].dtype == np.float64
    assert back["metadata"] == METADATA
    assert listing(tmp_path) == ["deep", "deep/a.wav.npz"]


def test_npz_without_postprocessed_and_empty(tmp_path):
    outputs.write_npz(tmp_path / "e.npz", embedding=np.zeros((0, 128), np.float32), postprocessed=None,
                      timestamps=np.zeros(0), metadata={})
    back = outputs.read_npz(tmp_path / "e.npz")
    assert "postprocessed" not in back
    assert back["embedding"].shape == (0, 128) and back["metadata"] == {}


def test_outputs_are_byte_identical_across_runs(tmp_path):
    """Same inputs give the same bytes (np.savez would stamp the current time into the zip)."""
    embedding, postprocessed, timestamps = example_arrays()
    code = (
        "import numpy as np, sys\n"
        "from vggish_tf2 import outputs\n"
        "rng = np.random.default_rng(0)\n"
        "e = rng.standard_normal((5, 128)).astype(np.float32)\n"
        "p = rng.integers(0, 256, (5, 128), dtype=np.uint8)\n"
        "m = {'b': 1, 'a': [1, 2], 'c': 'x'}\n"
        "outputs.write_npz(sys.argv[1] + '.npz', embedding=e, postprocessed=p, timestamps=np.arange(5) * 0.96, metadata=m)\n"
        "outputs.write_parquet(sys.argv[1] + '.parquet', file='a.wav', embedding=e, start_seconds=np.arange(5) * 0.96,"
        " end_seconds=np.arange(5) * 0.96 + 0.975, postprocessed=p, metadata=m)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    for name in ("one", "two"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / name)], check=True, env=env)
        if name == "one":
            import time

            time.sleep(2.1)  # zip timestamps have 2-second resolution
    for suffix in (".npz", ".parquet"):
        assert (tmp_path / f"one{suffix}").read_bytes() == (tmp_path / f"two{suffix}").read_bytes()


def test_npz_validation(tmp_path):
    embedding, postprocessed, timestamps = example_arrays()
    path = tmp_path / "v.npz"
    with pytest.raises(InvalidArgumentError, match=r"embedding has shape \(5, 127\)"):
        outputs.write_npz(path, embedding=embedding[:, :127], postprocessed=None, timestamps=timestamps, metadata={})
    with pytest.raises(InvalidArgumentError, match="postprocessed has shape .* dtype float32; expected uint8"):
        outputs.write_npz(path, embedding=embedding, postprocessed=embedding, timestamps=timestamps, metadata={})
    with pytest.raises(InvalidArgumentError, match="postprocessed has 4 rows, embedding has 5"):
        outputs.write_npz(path, embedding=embedding, postprocessed=postprocessed[:4], timestamps=timestamps, metadata={})
    with pytest.raises(InvalidArgumentError, match=r"timestamps has shape \(4,\); expected \[5\]"):
        outputs.write_npz(path, embedding=embedding, postprocessed=None, timestamps=timestamps[:4], metadata={})
    with pytest.raises(InvalidArgumentError, match="metadata is not JSON-serialisable"):
        outputs.write_npz(path, embedding=embedding, postprocessed=None, timestamps=timestamps, metadata={"x": object()})
    assert listing(tmp_path) == []


def test_failed_write_leaves_nothing_and_keeps_old_file(tmp_path, monkeypatch):
    embedding, postprocessed, timestamps = example_arrays()
    path = tmp_path / "a.npz"
    outputs.write_npz(path, embedding=embedding, postprocessed=None, timestamps=timestamps, metadata={"v": 1})
    before = path.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np.lib.format, "write_array", disk_full)
    with pytest.raises(OutputError, match=r"^.*a\.npz: cannot write \(No space left on device\)$"):
        outputs.write_npz(path, embedding=embedding, postprocessed=None, timestamps=timestamps, metadata={"v": 2})
    assert path.read_bytes() == before  # the old output is untouched
    assert listing(tmp_path) == ["a.npz"]  # and no temporary is left


def test_real_full_disk_if_available(tmp_path):
    """/dev/full fails every write with ENOSPC: the error names the path and nothing is left behind."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this platform")
    embedding, _, timestamps = example_arrays()
    real_open = open

    def open_full(file, mode="r", *args, **kwargs):
        if "x" in mode:  # the writer's temporary: create it, then write into /dev/full
            real_open(file, mode, *args, **kwargs).close()
            return real_open("/dev/full", "wb")
        return real_open(file, mode, *args, **kwargs)

    import builtins

    builtins_open = builtins.open
    builtins.open = open_full
    try:
        with pytest.raises(OutputError, match=r"f\.npz: cannot write \(No space left on device\)"):
            outputs.write_npz(tmp_path / "f.npz", embedding=np.tile(embedding, (200, 1)), postprocessed=None,
                              timestamps=np.tile(timestamps, 200), metadata={})
    finally:
        builtins.open = builtins_open
    assert listing(tmp_path) == []


def test_unwritable_directory(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="cannot create directory"):
        outputs.write_npz(tmp_path / "file" / "a.npz", embedding=np.zeros((1, 128), np.float32), postprocessed=None,
                          timestamps=[0.0], metadata={})


# --- TFRecord ---------------------------------------------------------------------------------------------
def test_tfrecord_reads_back_with_audioset_feature_names(tmp_path):
    tf = pytest.importorskip("tensorflow")
    _, postprocessed, _ = example_arrays(7)
    path = tmp_path / "a.tfrecord"
    outputs.write_tfrecord(path, video_id="dir/a.wav", postprocessed=postprocessed, start_time_seconds=0.0,
                           end_time_seconds=6.735, labels=[3, 17])
    outputs.write_tfrecord(tmp_path / "b.tfrecord", video_id="b", postprocessed=postprocessed[:2],
                           start_time_seconds=1.0, end_time_seconds=2.0)
    context_features = {
        "video_id": tf.io.FixedLenFeature([], tf.string),
        "start_time_seconds": tf.io.FixedLenFeature([], tf.float32),
        "end_time_seconds": tf.io.FixedLenFeature([], tf.float32),
        "labels": tf.io.VarLenFeature(tf.int64),
    }
    sequence_features = {"audio_embedding": tf.io.FixedLenSequenceFeature([], tf.string)}
    records = list(tf.data.TFRecordDataset(str(path)))
    assert len(records) == 1  # one SequenceExample per file
    context, sequence = tf.io.parse_single_sequence_example(records[0], context_features, sequence_features)
    assert context["video_id"].numpy() == b"dir/a.wav"
    assert context["start_time_seconds"].numpy() == 0.0
    assert context["end_time_seconds"].numpy() == pytest.approx(6.735)
    assert list(tf.sparse.to_dense(context["labels"]).numpy()) == [3, 17]
    decoded = tf.io.decode_raw(sequence["audio_embedding"], tf.uint8).numpy()
    np.testing.assert_array_equal(decoded, postprocessed)
    (record,) = list(tf.data.TFRecordDataset(str(tmp_path / "b.tfrecord")))
    context, sequence = tf.io.parse_single_sequence_example(record, context_features, sequence_features)
    assert tf.sparse.to_dense(context["labels"]).numpy().size == 0  # empty, and still an int64 list
    np.testing.assert_array_equal(tf.io.decode_raw(sequence["audio_embedding"], tf.uint8).numpy(), postprocessed[:2])
    first = path.read_bytes()
    outputs.write_tfrecord(path, video_id="dir/a.wav", postprocessed=postprocessed, start_time_seconds=0.0,
                           end_time_seconds=6.735, labels=[3, 17])
    assert path.read_bytes() == first
    assert listing(tmp_path) == ["a.tfrecord", "b.tfrecord"]


def test_tfrecord_validation(tmp_path):
    with pytest.raises(InvalidArgumentError, match="postprocessed has shape"):
        outputs.write_tfrecord(tmp_path / "x.tfrecord", video_id="x", postprocessed=np.zeros((2, 128), np.float32),
                               start_time_seconds=0, end_time_seconds=1)
    with pytest.raises(InvalidArgumentError, match="video_id=3 must be a str"):
        outputs.write_tfrecord(tmp_path / "x.tfrecord", video_id=3, postprocessed=np.zeros((2, 128), np.uint8),
                               start_time_seconds=0, end_time_seconds=1)


# --- Parquet ------------------------------------------------------------------------------------------------
def test_parquet_round_trip(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    embedding, postprocessed, starts = example_arrays(4)
    path = tmp_path / "a.parquet"
    outputs.write_parquet(path, file="dir/a.wav", embedding=embedding, start_seconds=starts, end_seconds=starts + 0.975,
                          postprocessed=postprocessed, metadata=METADATA)
    table = pq.read_table(path)
    assert table.column_names == ["file", "index", "start_seconds", "end_seconds", "embedding", "postprocessed"]
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 128)
    assert table.schema.field("postprocessed").type == pa.list_(pa.uint8(), 128)
    assert table.column("file").to_pylist() == ["dir/a.wav"] * 4
    assert table.column("index").to_pylist() == [0, 1, 2, 3]
    np.testing.assert_array_equal(table.column("start_seconds").to_numpy(), starts)
    np.testing.assert_array_equal(table.column("end_seconds").to_numpy(), starts + 0.975)
    flat = table.column("embedding").combine_chunks().flatten().to_numpy()
    np.testing.assert_array_equal(flat.reshape(4, 128), embedding)
    flat = table.column("postprocessed").combine_chunks().flatten().to_numpy()
    np.testing.assert_array_equal(flat.reshape(4, 128), postprocessed)
    assert json.loads(table.schema.metadata[b"vggish_tf2"]) == METADATA
    outputs.write_parquet(tmp_path / "b.parquet", file="b.wav", embedding=embedding, start_seconds=starts,
                          end_seconds=starts + 0.975, postprocessed=None, metadata={})
    assert "postprocessed" not in pq.read_table(tmp_path / "b.parquet").column_names


def test_parquet_without_pyarrow_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(OutputError, match=r"install vggish-tf2\[formats\]"):
        outputs.write_parquet(tmp_path / "a.parquet", file="a", embedding=np.zeros((1, 128), np.float32),
                              start_seconds=[0.0], end_seconds=[0.975], postprocessed=None, metadata={})
    with pytest.raises(OutputError, match=r"install vggish-tf2\[formats\]"):
        outputs.check_output_format("parquet")
    outputs.check_output_format("npz")
    with pytest.raises(InvalidArgumentError, match="format='csv'"):
        outputs.check_output_format("csv")
    assert listing(tmp_path) == []


# --- Output paths -------------------------------------------------------------------------------------------------
def test_safe_output_path_mirrors_the_tree(tmp_path):
    out = tmp_path / "out"
    assert outputs.safe_output_path(out, "a/b/c.wav", ".npz") == out.resolve() / "a" / "b" / "c.wav.npz"
    assert outputs.safe_output_path(out, "./x y/ü.mp3", ".parquet") == out.resolve() / "x y" / "ü.mp3.parquet"
    assert outputs.safe_output_path(out, "-dash.wav", ".npz").name == "-dash.wav.npz"
    # b.wav and b.mp3 do not collide
    assert outputs.safe_output_path(out, "b.wav", ".npz") != outputs.safe_output_path(out, "b.mp3", ".npz")


@pytest.mark.parametrize("relative,reason", [
    ("../evil.wav", "contains '..'"),
    ("a/../../evil.wav", "contains '..'"),
    ("/etc/passwd", "not absolute"),
    ("", "no file name"),
    (".", "no file name"),
    ("a\0b.wav", "NUL"),
])
def test_safe_output_path_rejects_escapes(tmp_path, relative, reason):
    with pytest.raises(OutputError, match=reason.replace("not absolute", "must be relative.*not absolute")):
        outputs.safe_output_path(tmp_path / "out", relative, ".npz")


def test_safe_output_path_symlinks(tmp_path):
    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    os.symlink(outside, out / "link")
    with pytest.raises(OutputError, match="outside the output directory"):
        outputs.safe_output_path(out, "link/a.wav", ".npz")
    os.symlink(outside / "target.npz", out / "f.wav.npz")  # a planted output file pointing outside
    with pytest.raises(OutputError, match="outside the output directory"):
        outputs.safe_output_path(out, "f.wav", ".npz")
    # The output directory itself may be a symlink (to a bigger disk): checked against its target.
    os.symlink(outside, tmp_path / "out_link")
    assert outputs.safe_output_path(tmp_path / "out_link", "a/b.wav", ".npz") == outside.resolve() / "a" / "b.wav.npz"
    with pytest.raises(InvalidArgumentError, match="suffix"):
        outputs.safe_output_path(out, "a.wav", "npz")


# --- Names that moved out of this module ------------------------------------------------------------------------
def test_moved_names_still_import_from_outputs():
    """Manifest, OutputLock and the atomic writes moved (corpus.manifest, corpus.lock, atomic); code
    written against vggish_tf2.outputs keeps working."""
    from vggish_tf2 import atomic
    from vggish_tf2.corpus import lock, manifest
    from vggish_tf2.outputs import LOCK_NAME, MANIFEST_NAME, Manifest, OutputLock, atomic_output  # noqa: F401

    assert (outputs.Manifest, outputs.MANIFEST_NAME, outputs.STATUSES) == (
        manifest.Manifest, manifest.MANIFEST_NAME, manifest.STATUSES)
    assert (outputs.OutputLock, outputs.LOCK_NAME) == (lock.OutputLock, lock.LOCK_NAME)
    assert (outputs.atomic_output, outputs.remove_stale_temporaries, outputs.is_io_error) == (
        atomic.atomic_output, atomic.remove_stale_temporaries, atomic.is_io_error)
    with pytest.raises(AttributeError, match="has no attribute 'Manifesto'"):
        outputs.Manifesto
