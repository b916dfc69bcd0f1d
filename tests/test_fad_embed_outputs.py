"""FAD sides from every layout `vggish-tf2 embed` writes (vggish_tf2.fad.embed_output).

One small noise corpus is embedded once per layout with the synthetic export; each layout's
statistics must equal those of the per-file npz folder of the same corpus exactly (the same rows,
merged file by file in the same order).
"""
import json
import re
import shutil

import numpy as np
import pytest
import soundfile as sf

from vggish_tf2 import cli as main_cli
from vggish_tf2.corpus.run import embed_corpus
from vggish_tf2.errors import InvalidArgumentError
from vggish_tf2.fad import embed_output
from vggish_tf2.fad.corpus import FadSettings, load_side

pytest.importorskip("pyarrow")

# 2..4.6 s of noise (2..4 examples at the default 0.96 s hop), and one 0.5-s clip: skipped.
SECONDS = (2.0, 3.1, 4.6, 2.5, 3.7, 2.2, 4.1, 0.5)
SHARD_ROWS = 8  # a few shards from the ~23 examples

LAYOUTS = {
    "npz": dict(output_format="npz"),
    "parquet": dict(output_format="parquet"),
    "parquet_shards": dict(output_format="parquet", layout="shards", shard_rows=SHARD_ROWS),
    "tfrecord": dict(output_format="tfrecord"),
    "tfrecord_shards": dict(output_format="tfrecord", layout="shards", shard_rows=SHARD_ROWS),
    "npz_mean": dict(output_format="npz", pool="mean"),
    "parquet_shards_mean": dict(output_format="parquet", layout="shards", shard_rows=SHARD_ROWS, pool="mean"),
}
RAW, PCA = FadSettings(), FadSettings(embedding="pca")


@pytest.fixture(scope="module")
def embedder(exported_model):
    from vggish_tf2.embedder import Embedder

    return Embedder(exported_model, device="cpu", batch_size=12)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("fad_layouts_corpus")
    rng = np.random.default_rng(9)
    for i, seconds in enumerate(SECONDS):
        sf.write(root / f"clip{i}.wav", (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32), 16000)
    return root


@pytest.fixture(scope="module")
def made(tmp_path_factory, corpus, embedder):
    """made(layout) -> the embed output folder of the corpus in that layout (embedded once)."""
    root = tmp_path_factory.mktemp("fad_layouts")
    done = {}

    def make(layout):
        if layout not in done:
            embed_corpus([corpus], out_dir=root / layout, embedder=embedder, **LAYOUTS[layout])
            done[layout] = root / layout
        return done[layout]
    return make


def same_stats(a, b):
    assert a.stats.count == b.stats.count
    np.testing.assert_array_equal(a.stats.mean, b.stats.mean)
    np.testing.assert_array_equal(a.stats.cov, b.stats.cov)


def rewrite_manifest(directory, keep):
    """Keep the manifest lines for which ``keep(record)`` is true; returns the dropped records."""
    path = directory / "manifest.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(r) + "\n" for r in records if keep(r)))
    return [r for r in records if not keep(r)]


def test_parquet_files_and_shards_equal_npz(made):
    npz = load_side(made("npz"), RAW, keep_files=True)
    assert npz.files_ok == 7 and npz.files_skipped == 1 and npz.stats.count > 2 * SHARD_ROWS
    assert len(list((made("parquet_shards") / "embeddings").glob("part-*.parquet"))) >= 3
    for layout in ("parquet", "parquet_shards"):
        side = load_side(made(layout), RAW, keep_files=True)
        same_stats(side, npz)
        assert (side.files_ok, side.files_skipped, side.failures) == (7, 1, [])
        assert side.files.names == npz.files.names
        np.testing.assert_array_equal(side.files.counts, npz.files.counts)
        assert side.synthetic_weights is True and side.settings["model_hash"] == npz.settings["model_hash"]
        same_stats(load_side(made(layout), PCA), load_side(made("npz"), PCA))


def test_shards_are_read_one_at_a_time(made, monkeypatch):
    reads = []
    original = embed_output._read_parquet
    monkeypatch.setattr(embed_output, "_read_parquet", lambda path, columns: reads.append(path) or original(path, columns))
    items, _, _ = embed_output.read_embed_output(made("parquet_shards"), "raw")
    first_ok = next(item for item in items if item.embedding is not None)
    assert first_ok.name == "clip0.wav" and len(reads) == 1  # the first shard only, not the dataset
    list(items)
    shards = sorted((made("parquet_shards") / "embeddings").glob("part-*.parquet"))
    assert sorted(reads) == shards  # each shard once


def test_rows_no_record_names_are_not_counted(made, tmp_path):
    sharded, per_file = tmp_path / "sharded", tmp_path / "per_file"
    shutil.copytree(made("parquet_shards"), sharded)
    shutil.copytree(made("npz"), per_file)
    # A kill while a shard's records were being appended: it holds the rows of its last file, no
    # record names them (the shard is still read for its other files).
    records = [json.loads(line) for line in (sharded / "manifest.jsonl").read_text().splitlines()]
    by_shard = {}
    for record in records:
        by_shard.setdefault(record.get("output"), []).append(record["input"])
    shared = [names for output, names in by_shard.items() if output and len(names) >= 2]
    dropped = shared[-1][-1]
    for directory in (sharded, per_file):
        assert len(rewrite_manifest(directory, lambda r: r["input"] != dropped)) == 1
    # An orphan shard (no record names it), and a file whose rows were moved to another shard: the
    # old shard still holds them, only the new one is read.
    first = records[0]
    old = sharded / first["output"]
    shutil.copy(old, old.with_name("part-orphan-00000.parquet"))
    shutil.copy(old, old.with_name("part-moved-00000.parquet"))
    with open(sharded / "manifest.jsonl", "a") as f:
        f.write(json.dumps({**first, "output": "embeddings/part-moved-00000.parquet", "moved_from": first["output"]}) + "\n")

    side, expected = load_side(sharded, RAW, keep_files=True), load_side(per_file, RAW, keep_files=True)
    same_stats(side, expected)
    assert side.files_ok == 6 and dropped not in side.files.names and side.files.names == expected.files.names
    assert side.stats.count < load_side(made("npz"), RAW).stats.count


def test_missing_shards_and_bad_records_are_failures_naming_them(made, tmp_path):
    sharded = tmp_path / "sharded"
    shutil.copytree(made("parquet_shards"), sharded)
    records = {r["input"]: r for r in map(json.loads, (sharded / "manifest.jsonl").read_text().splitlines())}
    gone = records["clip0.wav"]["output"]
    (sharded / gone).unlink()
    lost = sorted(name for name, r in records.items() if r.get("output") == gone)
    with open(sharded / "manifest.jsonl", "a") as f:
        f.write(json.dumps({**records["clip6.wav"], "rows": [0, 10_000]}) + "\n")
        f.write(json.dumps({**records["clip5.wav"], "output": "../elsewhere.parquet"}) + "\n")
    side = load_side(sharded, RAW)
    errors = {f["file"]: f["error"] for f in side.failures}
    assert sorted(errors) == sorted(lost + ["clip5.wav", "clip6.wav"])
    for name in lost:
        assert f"{sharded / gone}: cannot read" in errors[name]
    assert re.search(r"part-.*\.parquet: the manifest names rows \[0, 10000\) of clip6\.wav; the shard holds \d+",
                     errors["clip6.wav"])
    assert "manifest.jsonl: ok record of clip5.wav names '../elsewhere.parquet', not a embeddings/part-*" in errors["clip5.wav"]
    assert side.files_ok == 7 - len(errors)


@pytest.mark.parametrize("layout", ["npz_mean", "parquet_shards_mean"])
def test_pooled_folders_are_refused(made, layout):
    directory = made(layout)
    assert json.loads((directory / "run_config.json").read_text())["pool"] == "mean"
    for settings in (RAW, PCA):
        with pytest.raises(InvalidArgumentError, match=re.escape(str(directory)) + r": made with --pool mean: it holds "
                           r"one mean vector per file, not the per-example embeddings .*; embed again with --pool none"):
            load_side(directory, settings)


@pytest.mark.parametrize("layout", ["tfrecord", "tfrecord_shards"])
def test_tfrecord_raw_is_refused_pca_is_read(made, layout):
    directory = made(layout)
    with pytest.raises(InvalidArgumentError, match=re.escape(str(directory)) + r": made with --format tfrecord, which "
                       r"holds only AudioSet's post-processed uint8 rows .*; embed with --format npz or --format parquet"):
        load_side(directory, RAW)
    side, expected = load_side(directory, PCA, keep_files=True), load_side(made("npz"), PCA, keep_files=True)
    same_stats(side, expected)
    assert (side.files_ok, side.files_skipped, side.failures) == (7, 1, [])
    assert side.files.names == expected.files.names


def test_fad_cli_reads_shards_and_refuses_pooled(made, tmp_path, capsys):
    report = tmp_path / "r.json"
    assert main_cli.main(["fad", str(made("parquet_shards")), str(made("npz")), "--report", str(report)]) == 0
    assert json.loads(report.read_text())["fad"] == 0.0
    assert main_cli.main(["fad", str(made("npz_mean")), str(made("npz"))]) == 2
    assert f"{made('npz_mean')}: made with --pool mean" in capsys.readouterr().err
