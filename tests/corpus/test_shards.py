"""Layout "shards": part files of bounded size, committed with their records; orphans of a kill removed."""
import json
import logging

import numpy as np
import pytest

from vggish_tf2 import outputs
from vggish_tf2.corpus import shards
from vggish_tf2.corpus.manifest import Manifest
from vggish_tf2.corpus.plan import is_done
from vggish_tf2.corpus.shards import DATASET_DIR, ShardWriter
from vggish_tf2.corpus.write import example_ends, open_writer
from vggish_tf2.options import RunOptions
from writer_cases import BASE_METADATA, failed, ok, rows, skipped, task

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
ds = pytest.importorskip("pyarrow.dataset")

# (name, examples): sizes around a shard_rows of 10, including one file bigger than a shard.
CORPUS = [("a.wav", 3), ("b.wav", 4), ("c.wav", 2), ("d/e.wav", 12), ("f.wav", 1), ("g.wav", 6), ("h.wav", 5),
          ("i.wav", 9), ("j.wav", 1)]


def embedded_corpus(out_dir, corpus=CORPUS):
    return [ok(task(out_dir, name, suffix=None), n, seed=i) for i, (name, n) in enumerate(corpus)]


def shard_writer(out_dir, *, previous=None, shard_rows=10, output_format="parquet", pool="none", clock=lambda: 0.0):
    return ShardWriter(out_dir, output_format=output_format, pool=pool, shard_rows=shard_rows,
                       base_metadata=BASE_METADATA, previous=previous or {}, clock=clock)


def run(out_dir, items, *, kill_at_append=None, **kwargs):
    """The run loop's writing part: write each item, append the records it returns, then finish.
    ``kill_at_append`` n: killed just before the n-th append (0-based)."""
    writer = shard_writer(out_dir, previous=Manifest.load(out_dir), **kwargs)
    appended = 0

    def batches():  # lazily: each call's records are appended before the next call
        for embedded in items:
            yield writer.write(embedded)
        yield writer.finish()

    with Manifest(out_dir) as manifest:
        for records in batches():
            for record in records:
                if appended == kill_at_append:
                    raise Killed
                manifest.append(record)
                appended += 1
    return writer


class Killed(BaseException):
    """Stands for SIGKILL between a shard's rename and its records' append."""


def resume_tasks(out_dir, items):
    """The plan's choice on resume: the items whose last record does not say done."""
    previous = Manifest.load(out_dir)
    return [e for e in items if not is_done(previous.get(e.task.item.relative), out_dir=out_dir, output_relative=None,
                                            signature=e.task.signature, layout="shards")]


def parts(out_dir):
    return sorted(p.name for p in (out_dir / DATASET_DIR).iterdir())


def rows_by_file(table):
    """{file: (index list, embedding [n, 128])} of a dataset table, failing on a file seen twice."""
    found = {}
    for file in dict.fromkeys(table.column("file").to_pylist()):
        mine = table.filter(pa.compute.equal(table.column("file"), file))
        found[file] = (mine.column("index").to_pylist(),
                       np.asarray(mine.column("embedding").combine_chunks().flatten()).reshape(-1, 128))
    return found


def test_parquet_shards_are_bounded_never_split_a_file_and_records_point_at_the_rows(tmp_path):
    writer = run(tmp_path, embedded_corpus(tmp_path))
    records = Manifest.load(tmp_path)
    assert set(records) == {name for name, _ in CORPUS}
    names = parts(tmp_path)
    assert names == [f"part-{writer.run_id}-{i:05d}.parquet" for i in range(len(names))]
    sizes = {name: pq.ParquetFile(tmp_path / DATASET_DIR / name).metadata.num_rows for name in names}
    for name, size in sizes.items():
        files_in_shard = [r for r in records.values() if r["output"] == f"{DATASET_DIR}/{name}"]
        assert size <= 10 or len(files_in_shard) == 1  # bounded, unless one file is bigger than a shard
        assert sum(r["rows"][1] - r["rows"][0] for r in files_in_shard) == size
    # Greedy filling in input order: [a b c] [d/e] [f g] [h] [i j]
    assert list(sizes.values()) == [9, 12, 7, 5, 10]
    for i, (name, n) in enumerate(CORPUS):
        record = records[name]
        assert {k: record[k] for k in ("status", "format", "examples", "layout")} == {
            "status": "ok", "format": "parquet", "examples": n, "layout": "shards"}
        first, end = record["rows"]
        table = pq.read_table(tmp_path / record["output"]).slice(first, end - first)
        assert table.column("file").to_pylist() == [name] * n  # the record's rows are the file's, all of them
        assert table.column("index").to_pylist() == list(range(n))
        np.testing.assert_array_equal(np.asarray(table.column("embedding").combine_chunks().flatten()).reshape(n, 128),
                                      rows(n, i)[0])
        np.testing.assert_array_equal(np.asarray(table.column("postprocessed").combine_chunks().flatten()).reshape(n, 128),
                                      rows(n, i)[1])
    metadata = json.loads(pq.read_schema(tmp_path / records["a.wav"]["output"]).metadata[outputs.PARQUET_METADATA_KEY])
    assert metadata == {**BASE_METADATA, "layout": "shards"}


def test_the_dataset_reads_as_one_table_with_pyarrow_pandas_and_duckdb(tmp_path):
    run(tmp_path, embedded_corpus(tmp_path))
    (tmp_path / "run_config.json").write_text("{}")  # beside the manifest, outside the dataset folder
    total = sum(n for _, n in CORPUS)
    table = ds.dataset(tmp_path / DATASET_DIR, format="parquet").to_table()
    assert table.num_rows == total
    assert table.column_names == ["file", "index", "start_seconds", "end_seconds", "embedding", "postprocessed"]
    found = rows_by_file(table)
    for i, (name, n) in enumerate(CORPUS):
        assert found[name][0] == list(range(n))
        np.testing.assert_array_equal(found[name][1], rows(n, i)[0])
    pd = pytest.importorskip("pandas")
    frame = pd.read_parquet(tmp_path / DATASET_DIR)
    assert len(frame) == total and frame.groupby("file").size().to_dict() == dict(CORPUS)
    duckdb = pytest.importorskip("duckdb")
    counts = duckdb.sql(f"SELECT file, count(*) FROM read_parquet('{tmp_path / DATASET_DIR}/*.parquet') "
                        "GROUP BY file").fetchall()
    assert dict(counts) == dict(CORPUS)


def test_failed_and_skipped_files_are_recorded_at_once_and_take_no_rows(tmp_path):
    writer = shard_writer(tmp_path)
    (record,) = writer.write(failed(task(tmp_path, "bad.mp3", suffix=None), "/corpus/bad.mp3: cannot decode"))
    assert record["status"] == "failed" and "output" not in record and "rows" not in record
    (record,) = writer.write(skipped(task(tmp_path, "short.wav", suffix=None)))
    assert record["status"] == "skipped"
    assert writer.write(ok(task(tmp_path, "a.wav", suffix=None), 2)) == []  # waits in the open shard
    (record,) = writer.finish()
    assert (record["input"], record["rows"]) == ("a.wav", [0, 2])
    assert writer.finish() == []


def test_a_shard_closes_after_a_minute(tmp_path):
    now = [0.0]
    writer = shard_writer(tmp_path, shard_rows=1000, clock=lambda: now[0])
    assert writer.write(ok(task(tmp_path, "a.wav", suffix=None), 2)) == []
    now[0] = shards.SHARD_SECONDS - 1
    assert writer.write(ok(task(tmp_path, "b.wav", suffix=None), 2)) == []
    now[0] = shards.SHARD_SECONDS
    closed = writer.write(ok(task(tmp_path, "c.wav", suffix=None), 2))  # the minute is up: c opens the next
    assert [(r["input"], r["rows"]) for r in closed] == [("a.wav", [0, 2]), ("b.wav", [2, 4])]
    now[0] = 2 * shards.SHARD_SECONDS - 1
    assert writer.write(ok(task(tmp_path, "d.wav", suffix=None), 2)) == []  # a new shard, a new minute
    assert [(r["input"], r["output"]) for r in writer.finish()] == [
        (name, f"{DATASET_DIR}/part-{writer.run_id}-00001.parquet") for name in ("c.wav", "d.wav")]


def test_an_oserror_writing_a_shard_fails_its_files_and_the_run_goes_on(tmp_path, monkeypatch):
    real = outputs.write_parquet_table
    calls = []

    def full_once(path, table, *, metadata):
        calls.append(path)
        if len(calls) == 1:
            raise outputs.OutputError(f"{path}: cannot write (No space left on device)")
        return real(path, table, metadata=metadata)

    monkeypatch.setattr(outputs, "write_parquet_table", full_once)
    writer = shard_writer(tmp_path, shard_rows=4)
    first = writer.write(ok(task(tmp_path, "a.wav", suffix=None), 4))
    assert [(r["input"], r["status"], r["error"]) for r in first] == [
        ("a.wav", "failed", f"{calls[0]}: cannot write (No space left on device)")]
    (second,) = writer.write(ok(task(tmp_path, "b.wav", suffix=None), 4))
    assert second["status"] == "ok" and parts(tmp_path) == [calls[1].name]


def test_orphan_shards_are_deleted_at_open_and_named_ones_kept(tmp_path, caplog):
    run(tmp_path, embedded_corpus(tmp_path, CORPUS[:3]))
    (kept,) = parts(tmp_path)
    dataset = tmp_path / DATASET_DIR
    orphan = dataset / "part-20260101T000000Z-abcdef-00000.parquet"
    orphan.write_bytes((dataset / kept).read_bytes())
    other = dataset / "notes.txt"
    other.write_text("mine")
    with caplog.at_level(logging.INFO, logger="vggish_tf2.corpus.shards"):
        writer = shard_writer(tmp_path, previous=Manifest.load(tmp_path))
    assert writer.removed_orphans == [orphan] and parts(tmp_path) == sorted([kept, "notes.txt"])
    assert f"removed orphan shard {orphan}" in caplog.text
    # Overwriting (no previous records): every part file is an orphan.
    shard_writer(tmp_path, previous={})
    assert parts(tmp_path) == ["notes.txt"]


def test_a_kill_between_shard_and_manifest_then_resume_leaves_every_files_rows_once(tmp_path, monkeypatch):
    reference_dir, out_dir = tmp_path / "reference", tmp_path / "out"
    run(reference_dir, embedded_corpus(reference_dir))
    reference = rows_by_file(ds.dataset(reference_dir / DATASET_DIR).to_table())

    real = outputs.write_parquet_table
    written = []

    def killed_after_second_shard(path, table, *, metadata):
        real(path, table, metadata=metadata)
        written.append(path)
        if len(written) == 2:
            raise Killed  # the shard is on disk; its records never reach the manifest

    monkeypatch.setattr(outputs, "write_parquet_table", killed_after_second_shard)
    with pytest.raises(Killed):
        run(out_dir, embedded_corpus(out_dir))
    monkeypatch.setattr(outputs, "write_parquet_table", real)
    assert len(parts(out_dir)) == 2 and set(Manifest.load(out_dir)) == {"a.wav", "b.wav", "c.wav"}

    # Resume: the plan redoes what the manifest does not hold; the writer drops the orphan.
    previous = Manifest.load(out_dir)
    todo = [e for e in embedded_corpus(out_dir)
            if not is_done(previous.get(e.task.item.relative), out_dir=out_dir, output_relative=None,
                           signature=e.task.signature, layout="shards")]
    assert [e.task.item.relative for e in todo] == [name for name, _ in CORPUS[3:]]
    writer = run(out_dir, todo)
    assert writer.removed_orphans == [written[1]]
    resumed = rows_by_file(ds.dataset(out_dir / DATASET_DIR).to_table())
    assert resumed.keys() == reference.keys()
    for name, (index, embedding) in reference.items():
        assert resumed[name][0] == index  # present once: 0..n-1, no repeats
        np.testing.assert_array_equal(resumed[name][1], embedding)
    records = Manifest.load(out_dir)
    assert all(is_done(records[name], out_dir=out_dir, output_relative=None, signature=(1000, 123), layout="shards")
               for name, _ in CORPUS)


def test_tfrecord_shards_hold_one_audioset_sequence_example_per_file(tmp_path):
    tf = pytest.importorskip("tensorflow")
    items = embedded_corpus(tmp_path)
    run(tmp_path, items, output_format="tfrecord")
    records = Manifest.load(tmp_path)
    by_shard = {}
    for embedded in items:
        record = records[embedded.task.item.relative]
        assert record["layout"] == "shards" and record["output"].endswith(".tfrecord")
        by_shard.setdefault(record["output"], []).append((record["rows"], embedded))
    assert [len(v) for v in by_shard.values()] == [3, 1, 2, 1, 2]  # the same bound as Parquet: 10 examples
    for output, entries in by_shard.items():
        serialised = [r.numpy() for r in tf.data.TFRecordDataset(str(tmp_path / output))]
        assert [rows for rows, _ in entries] == [[k, k + 1] for k in range(len(serialised))]
        for (first, _), embedded in entries:
            n = len(embedded.result.embedding)
            assert serialised[first] == outputs.sequence_example(
                video_id=embedded.task.item.relative, postprocessed=embedded.postprocessed, start_time_seconds=0.0,
                end_time_seconds=float(example_ends(np.arange(n) * 0.96, embedded.result.duration_seconds)[-1]))


def test_open_writer_gives_the_shard_writer(tmp_path):
    options = RunOptions(output_format="parquet", layout="shards", shard_rows=7)
    writer = open_writer(tmp_path, options=options, facts=None, base_metadata=BASE_METADATA, previous={})
    assert isinstance(writer, ShardWriter) and writer.shard_rows == 7 and writer.output_format == "parquet"


def test_a_kill_while_a_shards_records_are_appended_then_resume_rewrites_it_with_the_named_rows(tmp_path, caplog):
    reference_dir, out_dir = tmp_path / "reference", tmp_path / "out"
    run(reference_dir, embedded_corpus(reference_dir))
    reference = rows_by_file(ds.dataset(reference_dir / DATASET_DIR).to_table())
    with pytest.raises(Killed):
        run(out_dir, embedded_corpus(out_dir), kill_at_append=2)  # a and b appended; c, in the same shard, not
    (first_shard,) = parts(out_dir)
    assert set(Manifest.load(out_dir)) == {"a.wav", "b.wav"}
    todo = resume_tasks(out_dir, embedded_corpus(out_dir))
    assert todo[0].task.item.relative == "c.wav"
    with caplog.at_level(logging.INFO, logger="vggish_tf2.corpus.shards"):
        writer = run(out_dir, todo)
    assert f"rewrote shard {out_dir / DATASET_DIR / first_shard} as" in caplog.text and "without its 2 rows" in caplog.text
    assert first_shard not in parts(out_dir)
    resumed = rows_by_file(ds.dataset(out_dir / DATASET_DIR).to_table())
    assert resumed.keys() == reference.keys()
    for name, (index, embedding) in reference.items():
        assert resumed[name][0] == index
        np.testing.assert_array_equal(resumed[name][1], embedding)
    records = Manifest.load(out_dir)
    assert records["a.wav"]["output"] == records["b.wav"]["output"] == f"{DATASET_DIR}/part-{writer.run_id}-00000.parquet"
    assert (records["a.wav"]["rows"], records["b.wav"]["rows"]) == ([0, 3], [3, 7])
    assert records["a.wav"]["moved_from"] == f"{DATASET_DIR}/{first_shard}" and "moved_from" not in records["c.wav"]
    assert resume_tasks(out_dir, embedded_corpus(out_dir)) == []


def test_a_file_embedded_again_leaves_no_old_rows_behind(tmp_path):
    run(tmp_path, embedded_corpus(tmp_path, CORPUS[:3]))
    (old_shard,) = parts(tmp_path)
    changed = ok(task(tmp_path, "b.wav", suffix=None, signature=(2000, 456)), 2, seed=99)  # the input changed
    assert resume_tasks(tmp_path, embedded_corpus(tmp_path, CORPUS[:3])) == []
    writer = run(tmp_path, [changed])
    assert old_shard not in parts(tmp_path) and len(parts(tmp_path)) == 2
    found = rows_by_file(ds.dataset(tmp_path / DATASET_DIR).to_table())
    assert found["b.wav"][0] == [0, 1]
    np.testing.assert_array_equal(found["b.wav"][1], rows(2, 99)[0])
    for i, name in ((0, "a.wav"), (2, "c.wav")):
        np.testing.assert_array_equal(found[name][1], rows(CORPUS[i][1], i)[0])
    records = Manifest.load(tmp_path)
    assert records["a.wav"]["output"] == records["c.wav"]["output"] == f"{DATASET_DIR}/part-{writer.run_id}-00001.parquet"
    for name in ("a.wav", "b.wav", "c.wav"):
        first, end = records[name]["rows"]
        assert pq.read_table(tmp_path / records[name]["output"]).slice(first, end - first).column("file").to_pylist() \
            == [name] * (end - first)


def test_tfrecord_shards_are_rewritten_too(tmp_path):
    tf = pytest.importorskip("tensorflow")
    with pytest.raises(Killed):
        run(tmp_path, embedded_corpus(tmp_path), output_format="tfrecord", kill_at_append=1)
    (shard,) = parts(tmp_path)
    assert shards._shard_rows(tmp_path / DATASET_DIR / shard) == 3 == len(
        list(tf.data.TFRecordDataset(str(tmp_path / DATASET_DIR / shard))))
    writer = run(tmp_path, resume_tasks(tmp_path, embedded_corpus(tmp_path)), output_format="tfrecord")
    records = Manifest.load(tmp_path)
    assert records["a.wav"]["output"] == f"{DATASET_DIR}/part-{writer.run_id}-00000.tfrecord"
    ids = []
    for name in parts(tmp_path):
        for serialised in tf.data.TFRecordDataset(str(tmp_path / DATASET_DIR / name)):
            context, _ = tf.io.parse_single_sequence_example(
                serialised, {"video_id": tf.io.FixedLenFeature([], tf.string)},
                {"audio_embedding": tf.io.FixedLenSequenceFeature([], tf.string)})
            ids.append(context["video_id"].numpy().decode())
    assert sorted(ids) == sorted(name for name, _ in CORPUS)  # each file once


def test_records_naming_anything_but_a_part_file_are_ignored_and_a_broken_shard_is_named(tmp_path):
    run(tmp_path, embedded_corpus(tmp_path, CORPUS[:2]))
    outside = tmp_path.parent / f"{tmp_path.name}-outside.parquet"
    outside.write_bytes((tmp_path / Manifest.load(tmp_path)["a.wav"]["output"]).read_bytes())
    edited = {"x.wav": {"input": "x.wav", "status": "ok", "layout": "shards", "output": f"../{outside.name}",
                        "rows": [0, 1]}}
    assert shards.shard_records(edited) == {}
    shard_writer(tmp_path, previous={**Manifest.load(tmp_path), **edited})
    assert outside.exists()  # neither read nor rewritten nor deleted
    outside.unlink()
    (shard,) = parts(tmp_path)
    (tmp_path / DATASET_DIR / shard).write_bytes(b"PAR1 not really")
    with pytest.raises(outputs.OutputError, match=rf"{shard}: not a readable Parquet shard .*delete it and rerun"):
        shard_writer(tmp_path, previous=Manifest.load(tmp_path))
