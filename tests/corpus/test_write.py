"""The write stage, layout "files": one output per input, written before its record is returned."""
import json
import numpy as np
import pytest

from vggish_tf2 import outputs, params
from vggish_tf2.corpus import write
from vggish_tf2.corpus.write import FileWriter, open_writer
from vggish_tf2.options import RunOptions
from writer_cases import BASE_METADATA, failed, ok, skipped, task


def file_writer(out_dir, output_format="npz", pool="none"):
    return FileWriter(out_dir, output_format=output_format, pool=pool, base_metadata=BASE_METADATA)


def test_ok_npz_record_and_bytes(tmp_path):
    t = task(tmp_path, "sub/a.wav")
    embedded = ok(t, 3, duration=2.5)
    assert file_writer(tmp_path).write(embedded) == [{
        "input": "sub/a.wav", "status": "ok", "format": "npz", "input_size": 1000, "input_mtime_ns": 123,
        "examples": 3, "duration_seconds": 2.5, "output": "sub/a.wav.npz"}]
    # The bytes of a direct write with the metadata the run has always written.
    outputs.write_npz(tmp_path / "direct.npz", embedding=embedded.result.embedding,
                      postprocessed=embedded.postprocessed, timestamps=np.arange(3) * 0.96,
                      metadata={**BASE_METADATA, "input": "sub/a.wav", "duration_seconds": 2.5, "examples": 3})
    assert (tmp_path / "sub" / "a.wav.npz").read_bytes() == (tmp_path / "direct.npz").read_bytes()


def test_parquet_and_tfrecord_rows_end_where_the_audio_ends(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    t = task(tmp_path, "a.wav", suffix=".parquet")
    # 2 examples, audio 1.5 s: the second example starts at 0.96 and is cut at 1.5.
    assert file_writer(tmp_path, "parquet").write(ok(t, 2, duration=1.5))[0]["output"] == "a.wav.parquet"
    table = pq.read_table(tmp_path / "a.wav.parquet")
    assert table.column("end_seconds").to_pylist() == [pytest.approx(params.EXAMPLE_WINDOW_SECONDS), 1.5]
    meta = json.loads(table.schema.metadata[outputs.PARQUET_METADATA_KEY])
    assert meta == {**BASE_METADATA, "input": "a.wav", "duration_seconds": 1.5, "examples": 2}
    tf = pytest.importorskip("tensorflow")
    t = task(tmp_path, "b.wav", suffix=".tfrecord")
    embedded = ok(t, 2, duration=1.5)
    assert file_writer(tmp_path, "tfrecord").write(embedded)[0]["output"] == "b.wav.tfrecord"
    (record,) = list(tf.data.TFRecordDataset(str(tmp_path / "b.wav.tfrecord")))
    assert record.numpy() == outputs.sequence_example(video_id="b.wav", postprocessed=embedded.postprocessed,
                                                      start_time_seconds=0.0, end_time_seconds=1.5)


def test_failed_and_skipped_records_write_nothing(tmp_path):
    writer = file_writer(tmp_path)
    assert writer.write(failed(task(tmp_path, "bad.mp3"), "/corpus/bad.mp3: cannot decode")) == [{
        "input": "bad.mp3", "status": "failed", "format": "npz", "input_size": 1000, "input_mtime_ns": 123,
        "error": "/corpus/bad.mp3: cannot decode"}]
    (record,) = writer.write(skipped(task(tmp_path, "short.wav", signature=None), 0.5))
    assert record == {"input": "short.wav", "status": "skipped", "format": "npz", "input_size": None,
                      "input_mtime_ns": None, "examples": 0, "duration_seconds": 0.5, "reason": write.skip_reason(0.5)}
    assert record["reason"].startswith("0.500 s is shorter than one example (0.975 s)")
    assert writer.finish() == []
    assert list(tmp_path.iterdir()) == []


def test_an_oserror_writing_is_the_files_failure_and_a_bug_propagates(tmp_path, monkeypatch):
    t = task(tmp_path, "a.wav")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs, "write_npz", disk_full)
    (record,) = file_writer(tmp_path).write(ok(t, 2, duration=2.0))
    assert record == {"input": "a.wav", "status": "failed", "format": "npz", "input_size": 1000,
                      "input_mtime_ns": 123, "examples": 2, "duration_seconds": 2.0,
                      "error": f"{t.output}: cannot write ([Errno 28] No space left on device)"}
    monkeypatch.setattr(outputs, "write_npz", lambda *a, **k: (_ for _ in ()).throw(
        outputs.OutputError(f"{t.output}: cannot write (Read-only file system)")))
    (record,) = file_writer(tmp_path).write(ok(t, 2))
    assert record["error"] == f"{t.output}: cannot write (Read-only file system)"  # ours names the path already
    monkeypatch.setattr(outputs, "write_npz", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        file_writer(tmp_path).write(ok(t, 2))


def test_open_writer_picks_the_layout(tmp_path):
    writer = open_writer(tmp_path, options=RunOptions(output_format="parquet"), facts=None, base_metadata=BASE_METADATA,
                         previous={})
    assert isinstance(writer, FileWriter) and writer.output_format == "parquet" and writer.pool == "none"
