"""pool="mean": one vector per file, the float64 mean of its raw embeddings, with the example count."""
import json

import numpy as np
import pytest

from vggish_tf2 import outputs
from vggish_tf2.corpus import pooling
from vggish_tf2.corpus.engine import Embedded
from vggish_tf2.corpus.manifest import Manifest
from vggish_tf2.corpus.shards import DATASET_DIR, ShardWriter
from vggish_tf2.corpus.write import FileWriter, example_ends
from vggish_tf2.errors import InternalError
from writer_cases import BASE_METADATA, failed, ok, skipped, task


def fake_postprocess(rows):
    """Stands for the model's PCA + quantisation: any deterministic float -> uint8 map."""
    return (np.clip(np.asarray(rows, np.float64), -2, 2) * 60 + 128).astype(np.uint8)


def pooled(embedded: Embedded) -> Embedded:
    """What an engine hands the writer with pool="mean"."""
    rows = pooling.postprocessed_rows(embedded.result, pool="mean", postprocess=fake_postprocess)
    return Embedded(task=embedded.task, result=embedded.result, postprocessed=rows)


def test_the_mean_is_taken_in_float64():
    # float32 accumulation loses each +1 against 2**24; float64 keeps them.
    column = np.array([2.0 ** 24, 1, 1, 1], np.float32)
    embedding = np.repeat(column[:, None], 128, axis=1)
    assert embedding.mean(axis=0, dtype=np.float32)[0] == 2.0 ** 22  # the float32 answer
    mean = pooling.mean_embedding(embedding)
    assert mean.dtype == np.float32 and mean.shape == (1, 128)
    assert mean[0, 0] == np.float32((2.0 ** 24 + 3) / 4) != 2.0 ** 22
    with pytest.raises(InternalError, match=r"cannot pool an embedding of shape \(0, 128\)"):
        pooling.mean_embedding(np.zeros((0, 128), np.float32))


def test_postprocessed_rows_is_postprocess_of_the_mean(tmp_path):
    embedded = ok(task(tmp_path, "a.wav"), 5, seed=3)
    result = embedded.result
    np.testing.assert_array_equal(pooling.postprocessed_rows(result, pool="none", postprocess=fake_postprocess),
                                  fake_postprocess(result.embedding))
    np.testing.assert_array_equal(pooling.postprocessed_rows(result, pool="mean", postprocess=fake_postprocess),
                                  fake_postprocess(result.embedding.astype(np.float64).mean(axis=0)[None]
                                                   .astype(np.float32)))
    assert pooling.postprocessed_rows(result, pool="mean", postprocess=None) is None
    assert pooling.postprocessed_rows(skipped(task(tmp_path, "s.wav")).result, pool="mean",
                                      postprocess=fake_postprocess) is None
    assert pooling.postprocessed_rows(failed(task(tmp_path, "f.wav"), "x").result, pool="none",
                                      postprocess=fake_postprocess) is None


def test_pooled_npz_holds_the_mean_of_the_per_example_rows_and_the_count(tmp_path):
    per_example = ok(task(tmp_path / "rows", "a.wav"), 7, seed=1, duration=6.9)
    (record,) = FileWriter(tmp_path / "rows", output_format="npz", pool="none", base_metadata=BASE_METADATA).write(
        per_example)
    example_rows = outputs.read_npz(tmp_path / "rows" / record["output"])
    one = ok(task(tmp_path / "mean", "a.wav"), 7, seed=1, duration=6.9)
    (record,) = FileWriter(tmp_path / "mean", output_format="npz", pool="mean", base_metadata=BASE_METADATA).write(
        pooled(one))
    assert record == {"input": "a.wav", "status": "ok", "format": "npz", "input_size": 1000, "input_mtime_ns": 123,
                      "examples": 7, "duration_seconds": 6.9, "output": "a.wav.npz", "pool": "mean"}
    data = outputs.read_npz(tmp_path / "mean" / "a.wav.npz")
    np.testing.assert_array_equal(data["embedding"],
                                  example_rows["embedding"].astype(np.float64).mean(axis=0, keepdims=True)
                                  .astype(np.float32))
    np.testing.assert_array_equal(data["postprocessed"], fake_postprocess(data["embedding"]))
    assert data["examples"] == 7 and data["examples"].dtype == np.int64
    assert data["timestamps"].tolist() == [0.0]
    assert data["metadata"] == {**BASE_METADATA, "input": "a.wav", "duration_seconds": 6.9, "examples": 7,
                                "pool": "mean"}


def test_pooled_parquet_file_has_one_row_with_the_count_and_the_span(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    embedded = ok(task(tmp_path, "a.wav", suffix=".parquet"), 4, seed=2, duration=3.5)
    FileWriter(tmp_path, output_format="parquet", pool="mean", base_metadata=BASE_METADATA).write(pooled(embedded))
    table = pq.read_table(tmp_path / "a.wav.parquet")
    assert table.column_names == ["file", "examples", "start_seconds", "end_seconds", "embedding", "postprocessed"]
    assert table.to_pydict()["examples"] == [4] and table.column("file").to_pylist() == ["a.wav"]
    ends = example_ends(np.arange(4) * 0.96, 3.5)
    assert table.column("start_seconds").to_pylist() == [0.0]
    assert table.column("end_seconds").to_pylist() == [ends[-1]] == [3.5]
    np.testing.assert_array_equal(np.asarray(table.column("embedding").combine_chunks().flatten()),
                                  pooling.mean_embedding(embedded.result.embedding)[0])
    assert json.loads(table.schema.metadata[outputs.PARQUET_METADATA_KEY])["pool"] == "mean"


def test_pooled_shards_hold_one_row_per_file(tmp_path):
    ds = pytest.importorskip("pyarrow.dataset")
    sizes = [3, 1, 5, 2, 8]
    items = [pooled(ok(task(tmp_path, f"f{i}.wav", suffix=None), n, seed=i)) for i, n in enumerate(sizes)]
    writer = ShardWriter(tmp_path, output_format="parquet", pool="mean", shard_rows=2, base_metadata=BASE_METADATA,
                         previous={})
    with Manifest(tmp_path) as manifest:
        for embedded in items:
            for record in writer.write(embedded):
                manifest.append(record)
        for record in writer.finish():
            manifest.append(record)
    records = Manifest.load(tmp_path)
    # shard_rows counts rows: 2 files a shard.
    assert [records[f"f{i}.wav"]["rows"] for i in range(5)] == [[0, 1], [1, 2], [0, 1], [1, 2], [0, 1]]
    assert all(records[f"f{i}.wav"]["pool"] == "mean" and records[f"f{i}.wav"]["examples"] == n
               for i, n in enumerate(sizes))
    table = ds.dataset(tmp_path / DATASET_DIR).to_table().sort_by("file")
    assert table.column("examples").to_pylist() == sizes
    vectors = np.asarray(table.column("embedding").combine_chunks().flatten()).reshape(-1, 128)
    for i, embedded in enumerate(items):
        np.testing.assert_array_equal(vectors[i], embedded.result.embedding.astype(np.float64).mean(axis=0)
                                      .astype(np.float32))


def test_a_pooled_file_must_come_with_one_postprocessed_row(tmp_path):
    per_example = ok(task(tmp_path, "a.wav"), 3)  # post-processed per example: an engine that did not pool
    with pytest.raises(InternalError, match=r"one post-processed row per file, got shape \(3, 128\)"):
        FileWriter(tmp_path, output_format="npz", pool="mean", base_metadata=BASE_METADATA).write(per_example)


@pytest.fixture(scope="module")
def embedder(exported_model):
    from vggish_tf2.embedder import Embedder

    return Embedder(exported_model, device="cpu", batch_size=16, workers=2)


def test_through_a_run_the_pooled_rows_are_the_mean_and_its_postprocessing(tmp_path, embedder):
    """The engine post-processes the mean (it has the model); the writer stores it with the count."""
    import soundfile as sf

    from vggish_tf2.corpus.run import embed_corpus

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rng = np.random.default_rng(5)
    for name, seconds in (("a.wav", 3.2), ("b.wav", 1.5)):
        sf.write(corpus / name, (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32), 16000)
    embed_corpus([corpus], out_dir=tmp_path / "rows", embedder=embedder)
    embed_corpus([corpus], out_dir=tmp_path / "mean", embedder=embedder, pool="mean")
    for name, examples in (("a.wav", 3), ("b.wav", 1)):
        rows = outputs.read_npz(tmp_path / "rows" / f"{name}.npz")
        mean = outputs.read_npz(tmp_path / "mean" / f"{name}.npz")
        assert len(rows["embedding"]) == examples == mean["examples"]
        expected = rows["embedding"].astype(np.float64).mean(axis=0, keepdims=True).astype(np.float32)
        np.testing.assert_array_equal(mean["embedding"], expected)
        np.testing.assert_array_equal(mean["postprocessed"], embedder.postprocess(expected))
    records = Manifest.load(tmp_path / "mean")
    assert {(r["input"], r["examples"], r["pool"]) for r in records.values()} == {("a.wav", 3, "mean"),
                                                                                  ("b.wav", 1, "mean")}
    pytest.importorskip("pyarrow")
    embed_corpus([corpus], out_dir=tmp_path / "shards", embedder=embedder, pool="mean", output_format="parquet",
                 layout="shards")
    import pyarrow.dataset as ds

    table = ds.dataset(tmp_path / "shards" / DATASET_DIR).to_table().sort_by("file")
    assert table.column("file").to_pylist() == ["a.wav", "b.wav"] and table.column("examples").to_pylist() == [3, 1]
    vectors = np.asarray(table.column("embedding").combine_chunks().flatten()).reshape(-1, 128)
    np.testing.assert_array_equal(vectors[0], outputs.read_npz(tmp_path / "mean" / "a.wav.npz")["embedding"][0])
