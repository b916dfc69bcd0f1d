"""corpus.run.embed_corpus: mirrored outputs, npz/TFRecord/Parquet contents, manifest, resume
after interrupts and failures, settings changes, streamed vs whole-file identity, path escapes,
bugs that stop the run, the lock. (Input expansion: tests/test_inputs.py.)

One Embedder (synthetic export, CPU, batch 16) is shared by the module; clips are a few seconds.
"""
import json
import os

import numpy as np
import pytest
import soundfile as sf

from vggish_tf2 import audio, outputs, pipeline
from vggish_tf2.corpus import decode, run
from vggish_tf2.corpus.run import RunInterrupted, embed_corpus
from vggish_tf2.corpus.run_config import RUN_CONFIG_NAME
from vggish_tf2.errors import InternalError, InvalidArgumentError, OutputError, OutputInUseError
from vggish_tf2.options import RunOptions


@pytest.fixture(scope="module")
def embedder(exported_model):
    from vggish_tf2.embedder import Embedder

    return Embedder(exported_model, device="cpu", batch_size=16, workers=2)


def write_noise(path, seconds, *, rate=16000, seed=0, subtype="PCM_16", fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    samples = (0.1 * rng.standard_normal(int(round(seconds * rate)))).astype(np.float32)
    sf.write(path, samples, rate, subtype=subtype, format=fmt)
    return path


@pytest.fixture
def corpus(tmp_path):
    """corpus/{a.wav, sub/b.wav (44.1 kHz), sub/deeper/c.flac, sub/short.wav (0.5 s)} + non-audio noise."""
    root = tmp_path / "corpus"
    write_noise(root / "a.wav", 2.0, seed=1)
    write_noise(root / "sub" / "b.wav", 3.0, rate=44100, seed=2)
    write_noise(root / "sub" / "deeper" / "c.flac", 2.5, seed=3, subtype="PCM_24")
    write_noise(root / "sub" / "short.wav", 0.5, seed=4)
    (root / "notes.txt").write_text("not audio")
    (root / ".hidden.wav").write_bytes(b"junk")
    return root


def manifest_lines(out_dir):
    return [json.loads(line) for line in (out_dir / outputs.MANIFEST_NAME).read_text().splitlines()]


def listing(directory):
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


def test_tfrecord_without_postprocess_refused_before_any_work(corpus, tmp_path):
    with pytest.raises(InvalidArgumentError, match="tfrecord.*--no-postprocess"):
        embed_corpus([corpus], out_dir=tmp_path / "out", output_format="tfrecord", postprocess=False)
    with pytest.raises(InvalidArgumentError, match="format='csv'"):
        embed_corpus([corpus], out_dir=tmp_path / "out", output_format="csv")
    assert not (tmp_path / "out").exists()


# --- A run and its outputs ------------------------------------------------------------------------
def test_npz_run_outputs_manifest_and_summary(corpus, tmp_path, embedder):
    out_dir = tmp_path / "out"
    summary = embed_corpus([corpus], out_dir=out_dir, embedder=embedder)
    assert (summary.files, summary.ok, summary.skipped, summary.failed, summary.already_done) == (4, 3, 1, 0, 0)
    assert summary.exit_status == 0 and summary.synthetic_weights
    assert listing(out_dir) == ["a.wav.npz", "manifest.jsonl", "run_config.json", "sub/b.wav.npz",
                                "sub/deeper/c.flac.npz"]
    assert summary.examples == 2 + 3 + 2
    assert summary.audio_seconds == pytest.approx(2.0 + 3.0 + 2.5 + 0.5, abs=1e-3)
    assert summary.examples_per_second > 0 and summary.audio_seconds_per_second > 0
    text = summary.format()
    # No banner in the summary: the Embedder warned once when it loaded the model (issue 8).
    assert "SYNTHETIC WEIGHTS" not in text and "3 ok, 0 failed, 1 skipped" in text

    records = {r["input"]: r for r in manifest_lines(out_dir)}
    assert records["sub/b.wav"]["status"] == "ok" and records["sub/b.wav"]["examples"] == 3
    assert records["sub/b.wav"]["output"] == "sub/b.wav.npz"
    assert records["sub/b.wav"]["duration_seconds"] == pytest.approx(3.0, abs=1e-3)
    short = records["sub/short.wav"]
    assert short["status"] == "skipped" and short["output"] is None and short["examples"] == 0
    assert "shorter than one example" in short["reason"] and "--short-clips" in short["reason"]

    data = outputs.read_npz(out_dir / "sub" / "b.wav.npz")
    assert data["embedding"].shape == (3, 128) and data["embedding"].dtype == np.float32
    assert data["postprocessed"].shape == (3, 128) and data["postprocessed"].dtype == np.uint8
    np.testing.assert_array_equal(data["timestamps"], np.array([0.0, 0.96, 1.92]))
    meta = data["metadata"]
    assert meta["synthetic_weights"] is True and "SYNTHETIC" in meta["warning"]
    assert meta["model"]["hash"].startswith("sha256-files:") and meta["model"]["hash"] == summary_hash(out_dir)
    assert (meta["resampler"], meta["frontend_precision"], meta["short_clips"]) == ("kaiser_best", "float64", "drop")
    assert meta["hop_seconds"] == 0.96 and meta["input"] == "sub/b.wav" and meta["examples"] == 3
    assert {"vggish-tf2", "tensorflow", "numpy"} <= set(meta["versions"])

    # Same numbers as embedding the decoded file directly, and the PCA rows as the model's own.
    # (decoded in the embedder's sample dtype: float64 for the float64 front end, as the pipeline does)
    whole = embedder.embed(audio.load_audio(corpus / "sub" / "b.wav", dtype=embedder.sample_dtype), sample_rate=16000)
    np.testing.assert_array_equal(data["embedding"], whole)
    np.testing.assert_array_equal(data["postprocessed"], embedder.postprocess(whole))


def summary_hash(out_dir):
    return json.loads((out_dir / RUN_CONFIG_NAME).read_text())["model_hash"]


def test_no_postprocess_npz_has_no_postprocessed(corpus, tmp_path, embedder):
    out_dir = tmp_path / "out"
    embed_corpus([corpus / "a.wav"], out_dir=out_dir, embedder=embedder, postprocess=False)
    data = outputs.read_npz(out_dir / "a.wav.npz")
    assert "postprocessed" not in data and data["metadata"]["has_postprocessed"] is False


def test_streamed_long_file_equals_whole_file(tmp_path, embedder, monkeypatch):
    """A file spanning several blocks (BLOCK_WINDOWS made small) packed with other files gives
    exactly the embeddings of the whole decoded waveform embedded at once."""
    monkeypatch.setattr(decode, "BLOCK_WINDOWS", 4)
    long_file = write_noise(tmp_path / "in" / "long.wav", 23.0, rate=44100, seed=7, subtype="FLOAT")
    write_noise(tmp_path / "in" / "a_first.wav", 1.5, seed=8)  # so the long file's rows share batches
    out_dir = tmp_path / "out"
    summary = embed_corpus([tmp_path / "in"], out_dir=out_dir, embedder=embedder)
    assert summary.ok == 2
    streamed = outputs.read_npz(out_dir / "long.wav.npz")
    samples, rate = audio.read_audio(long_file)
    whole = embedder.embed(samples, sample_rate=rate)
    assert streamed["embedding"].shape == (23, 128) == whole.shape  # 23 examples > 5 blocks of 4
    np.testing.assert_array_equal(streamed["embedding"], whole)


def test_tfrecord_reads_back_with_audioset_feature_names(corpus, tmp_path, embedder):
    import tensorflow as tf

    out_dir = tmp_path / "out"
    summary = embed_corpus([corpus], out_dir=out_dir, embedder=embedder, output_format="tfrecord")
    assert summary.ok == 3 and (out_dir / "sub" / "deeper" / "c.flac.tfrecord").is_file()
    records = list(tf.data.TFRecordDataset(str(out_dir / "sub" / "deeper" / "c.flac.tfrecord")))
    assert len(records) == 1
    # The feature spec of AudioSet's released-file readers.
    context, sequence = tf.io.parse_single_sequence_example(
        records[0],
        context_features={
            "video_id": tf.io.FixedLenFeature([], tf.string),
            "start_time_seconds": tf.io.FixedLenFeature([], tf.float32),
            "end_time_seconds": tf.io.FixedLenFeature([], tf.float32),
            "labels": tf.io.VarLenFeature(tf.int64),
        },
        sequence_features={"audio_embedding": tf.io.FixedLenSequenceFeature([], tf.string)},
    )
    assert context["video_id"].numpy() == b"sub/deeper/c.flac"
    assert context["start_time_seconds"].numpy() == 0.0
    assert context["end_time_seconds"].numpy() == pytest.approx(0.96 + 0.96)  # 2 examples
    rows = tf.io.decode_raw(sequence["audio_embedding"], tf.uint8).numpy()
    whole = embedder.embed(audio.load_audio(corpus / "sub" / "deeper" / "c.flac"), sample_rate=16000)
    np.testing.assert_array_equal(rows, embedder.postprocess(whole))


def test_parquet_reads_back_one_row_per_example(corpus, tmp_path, embedder):
    import pyarrow.parquet as pq

    out_dir = tmp_path / "out"
    embed_corpus([corpus], out_dir=out_dir, embedder=embedder, output_format="parquet")
    table = pq.read_table(out_dir / "a.wav.parquet")
    assert table.column_names == ["file", "index", "start_seconds", "end_seconds", "embedding", "postprocessed"]
    assert table.num_rows == 2
    assert table.column("file").to_pylist() == ["a.wav", "a.wav"]
    assert table.column("start_seconds").to_pylist() == [0.0, 0.96]
    assert table.column("end_seconds").to_pylist() == pytest.approx([0.96, 1.92])
    embedding = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    whole = embedder.embed(audio.load_audio(corpus / "a.wav"), sample_rate=16000)
    np.testing.assert_array_equal(embedding, whole)
    meta = json.loads(table.schema.metadata[outputs.PARQUET_METADATA_KEY])
    assert meta["synthetic_weights"] is True and meta["input"] == "a.wav"


def test_pad_policy_embeds_short_clip_and_ends_with_the_audio(corpus, tmp_path, exported_model):
    out_dir = tmp_path / "out"
    summary = embed_corpus([corpus / "sub" / "short.wav"], out_dir=out_dir, model=exported_model, device="cpu",
                           batch_size=16, short_clips="pad", hop_seconds=0.48, output_format="parquet")
    assert summary.ok == 1 and summary.skipped == 0
    import pyarrow.parquet as pq

    table = pq.read_table(out_dir / "short.wav.parquet")
    assert table.column("end_seconds").to_pylist() == [pytest.approx(0.5)]
    config = json.loads((out_dir / RUN_CONFIG_NAME).read_text())
    assert (config["short_clips"], config["hop_samples"], config["format"]) == ("pad", 7680, "parquet")


def test_outputs_byte_identical_across_runs(corpus, tmp_path, embedder):
    for name in ("one", "two"):
        embed_corpus([corpus], out_dir=tmp_path / name, embedder=embedder)
    for relative in ("a.wav.npz", "sub/b.wav.npz", "sub/deeper/c.flac.npz"):
        assert (tmp_path / "one" / relative).read_bytes() == (tmp_path / "two" / relative).read_bytes()


# --- Failures, interrupts and resume --------------------------------------------------------------
REAL_WRITE_NPZ = outputs.write_npz


class CountingWriter:
    """Wraps outputs.write_npz: counts calls; raises KeyboardInterrupt on call number `interrupt_at`."""

    def __init__(self, interrupt_at=None):
        self.calls = []
        self.interrupt_at = interrupt_at
        self.real = REAL_WRITE_NPZ

    def __call__(self, path, **kwargs):
        self.calls.append(os.path.basename(path))
        if len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        return self.real(path, **kwargs)


def test_interrupted_run_resumes_without_redoing_work(tmp_path, embedder, monkeypatch):
    corpus = tmp_path / "corpus"
    for i in range(6):
        write_noise(corpus / f"d{i % 2}" / f"f{i}.wav", 1.0 + 0.1 * i, seed=i)
    out_dir = tmp_path / "out"
    writer = CountingWriter(interrupt_at=4)
    monkeypatch.setattr(outputs, "write_npz", writer)
    with pytest.raises(RunInterrupted) as caught:
        embed_corpus([corpus], out_dir=out_dir, embedder=embedder)
    summary = caught.value.summary
    assert summary.interrupted and summary.ok == 3 and summary.exit_status == 130
    assert isinstance(caught.value, KeyboardInterrupt)
    done = {r["input"] for r in manifest_lines(out_dir) if r["status"] == "ok"}
    assert done == {"d0/f0.wav", "d0/f2.wav", "d0/f4.wav"}  # sorted walk: d0 first
    # What is done is whole and recorded; nothing partial or temporary is left.
    assert listing(out_dir) == ["d0/f0.wav.npz", "d0/f2.wav.npz", "d0/f4.wav.npz", "manifest.jsonl", "run_config.json"]
    mtimes = {p: (out_dir / p).stat().st_mtime_ns for p in ("d0/f0.wav.npz", "d0/f2.wav.npz", "d0/f4.wav.npz")}

    writer = CountingWriter()
    monkeypatch.setattr(outputs, "write_npz", writer)
    summary = embed_corpus([corpus], out_dir=out_dir, embedder=embedder)
    assert sorted(writer.calls) == ["f1.wav.npz", "f3.wav.npz", "f5.wav.npz"]  # only what was left
    assert (summary.ok, summary.already_done, summary.failed) == (3, 3, 0)
    assert {p: (out_dir / p).stat().st_mtime_ns for p in mtimes} == mtimes

    writer = CountingWriter()
    monkeypatch.setattr(outputs, "write_npz", writer)
    summary = embed_corpus([corpus], out_dir=out_dir, embedder=embedder)
    assert writer.calls == [] and summary.already_done == 6 and summary.examples == 0


def test_failures_are_recorded_run_goes_on_and_are_retried(corpus, tmp_path, embedder, monkeypatch):
    bad = corpus / "sub" / "bad.mp3"
    bad.write_text("this is text, not audio")
    out_dir = tmp_path / "out"
    def failing_for_a(path, **kwargs):
        if os.path.basename(path) == "a.wav.npz":
            raise OSError(28, "No space left on device")
        return REAL_WRITE_NPZ(path, **kwargs)

    monkeypatch.setattr(outputs, "write_npz", failing_for_a)
    summary = embed_corpus([corpus], out_dir=out_dir, embedder=embedder)
    assert (summary.ok, summary.failed, summary.skipped) == (2, 2, 1) and summary.exit_status == 1
    records = {r["input"]: r for r in manifest_lines(out_dir)}
    assert records["sub/bad.mp3"]["status"] == "failed"
    assert "not audio (a text file)" in records["sub/bad.mp3"]["error"]
    assert "No space left on device" in records["a.wav"]["error"] and records["a.wav"]["output"] is None
    assert dict(summary.failures)["sub/bad.mp3"] == "not audio (a text file)"  # the path prefix dropped
    assert "\n" not in records["a.wav"]["error"]

    # Fix both: only they are redone; ok and skipped inputs are not.
    monkeypatch.setattr(outputs, "write_npz", CountingWriter())
    write_noise(bad, 1.2, seed=9, fmt="MP3", subtype="MPEG_LAYER_III")
    summary = embed_corpus([corpus], out_dir=out_dir, embedder=embedder)
    assert sorted(outputs.write_npz.calls) == ["a.wav.npz", "bad.mp3.npz"]
    assert (summary.ok, summary.failed, summary.already_done) == (2, 0, 3)


def test_changed_or_missing_outputs_and_changed_inputs_are_redone(corpus, tmp_path, embedder, monkeypatch):
    out_dir = tmp_path / "out"
    embed_corpus([corpus], out_dir=out_dir, embedder=embedder)
    (out_dir / "a.wav.npz").unlink()  # output lost
    (out_dir / "sub" / "b.wav.npz").write_bytes(b"")  # output emptied
    write_noise(corpus / "sub" / "deeper" / "c.flac", 3.5, seed=11)  # input re-recorded
    writer = CountingWriter()
    monkeypatch.setattr(outputs, "write_npz", writer)
    summary = embed_corpus([corpus], out_dir=out_dir, embedder=embedder)
    assert sorted(writer.calls) == ["a.wav.npz", "b.wav.npz", "c.flac.npz"]
    assert summary.already_done == 1  # the skipped short clip
    assert outputs.read_npz(out_dir / "sub" / "deeper" / "c.flac.npz")["embedding"].shape == (3, 128)


def test_settings_change_refused_unless_overwrite(corpus, tmp_path, embedder, monkeypatch):
    out_dir = tmp_path / "out"
    embed_corpus([corpus], out_dir=out_dir, embedder=embedder)
    with pytest.raises(InvalidArgumentError, match=r"other settings \(format 'npz' then, 'parquet' now\).*--overwrite"):
        embed_corpus([corpus], out_dir=out_dir, embedder=embedder, output_format="parquet")
    # Refused before the model loads when the difference is known from the arguments.
    with pytest.raises(InvalidArgumentError, match=r"short_clips 'drop' then, 'pad' now"):
        embed_corpus([corpus], out_dir=out_dir, model=tmp_path / "no-such-model", short_clips="pad")
    with pytest.raises(InvalidArgumentError, match=r"postprocess True then, False now"):
        embed_corpus([corpus], out_dir=out_dir, embedder=embedder, postprocess=False)
    assert not list(out_dir.rglob("*.parquet"))

    writer = CountingWriter()
    monkeypatch.setattr(outputs, "write_npz", writer)
    summary = embed_corpus([corpus], out_dir=out_dir, embedder=embedder, postprocess=False, overwrite=True)
    assert summary.ok == 3 and summary.already_done == 0 and len(writer.calls) == 3  # everything redone
    assert json.loads((out_dir / RUN_CONFIG_NAME).read_text())["postprocess"] is False
    assert "postprocessed" not in outputs.read_npz(out_dir / "a.wav.npz")


def test_embedder_and_its_options_are_exclusive(corpus, tmp_path, embedder):
    with pytest.raises(InvalidArgumentError, match="either embedder= or embedder options.*short_clips"):
        embed_corpus([corpus], out_dir=tmp_path / "out", embedder=embedder, short_clips="pad")


def test_stale_temporaries_removed_at_start(corpus, tmp_path, embedder):
    out_dir = tmp_path / "out"
    stale = out_dir / "sub" / ".b.wav.npz.tmp-999999999-0123abcd"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"partial")
    embed_corpus([corpus / "a.wav"], out_dir=out_dir, embedder=embedder)
    assert not stale.exists()


# --- Output paths never escape out_dir ----------------------------------------------------------------
def test_symlinked_directory_inside_out_dir_cannot_redirect_outputs(corpus, tmp_path, embedder):
    out_dir = tmp_path / "out"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out_dir.mkdir()
    (out_dir / "sub").symlink_to(elsewhere, target_is_directory=True)
    summary = embed_corpus([corpus], out_dir=out_dir, embedder=embedder)
    assert summary.ok == 1 and summary.failed == 3  # everything under sub/ is refused
    records = {r["input"]: r for r in manifest_lines(out_dir)}
    assert "outside the output directory" in records["sub/b.wav"]["error"]
    assert list(elsewhere.iterdir()) == []


def test_awkward_names_stay_inside_out_dir(tmp_path, embedder):
    corpus = tmp_path / "corpus"
    names = ["-leading dash.wav", "spaces and ünïcödé.wav", "new\nline.wav", "two..dots.wav"]
    for i, name in enumerate(names):
        write_noise(corpus / name, 1.0, seed=i)
    out_dir = tmp_path / "out"
    summary = embed_corpus([corpus], out_dir=out_dir, embedder=embedder, output_format="parquet")
    assert summary.ok == 4
    assert sorted(p.name for p in out_dir.glob("*.parquet")) == sorted(n + ".parquet" for n in names)
    assert {r["input"] for r in manifest_lines(out_dir)} == set(names)


def test_out_dir_that_is_a_file_is_refused(corpus, tmp_path, embedder):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="exists and is not a directory"):
        embed_corpus([corpus], out_dir=tmp_path / "file", embedder=embedder)


def test_progress_reports_files_and_finishes(corpus, tmp_path, embedder):
    import io

    from vggish_tf2.progress import Progress

    stream = io.StringIO()
    progress = Progress(stream=stream, enabled=True, min_interval_seconds=0.0)
    embed_corpus([corpus], out_dir=tmp_path / "out", embedder=embedder, progress=progress)
    text = stream.getvalue()
    assert text.endswith("\n") and "\r" in text
    last = text.rstrip("\n").split("\r")[-1]
    assert last.startswith("vggish-tf2: 4/4 files") and "h audio" in last and "ETA 0s" in last
    assert Progress(stream=io.StringIO()).enabled is False  # not a TTY: off


def test_format_seconds():
    from vggish_tf2.progress import format_seconds

    assert [format_seconds(s) for s in (0, 42.4, 185, 7620, float("nan"))] == ["0s", "42s", "3m05s", "2h07m", "?"]


@pytest.mark.parametrize("bad, message", [("0.96", "must be a number of seconds"), (0.015, "must be a multiple of 0.01")])
def test_bad_hop_refused_before_the_model_loads(corpus, tmp_path, bad, message):
    with pytest.raises(InvalidArgumentError, match=f"hop_seconds={bad!r} {message}"):
        embed_corpus([corpus], out_dir=tmp_path / "out", model=tmp_path / "no-such-model", hop_seconds=bad)


# --- Issue 8: bugs stop the run, the output directory's lock, one word for short clips -------------
def test_a_bug_in_writing_stops_the_run_naming_the_file(tmp_path, embedder, monkeypatch):
    """Only OS errors are a file's failure; a TypeError (a bug) stops the run at once, naming the
    file, with what finished recorded and nothing half-written."""
    corpus = tmp_path / "corpus"
    for i in range(4):
        write_noise(corpus / f"f{i}.wav", 1.0, seed=i)

    def buggy(path, **kwargs):
        if os.path.basename(path) == "f1.wav.npz":
            raise AttributeError("'NoneType' object has no attribute 'shape'")
        return REAL_WRITE_NPZ(path, **kwargs)

    monkeypatch.setattr(outputs, "write_npz", buggy)
    out_dir = tmp_path / "out"
    with pytest.raises(run.RunStopped, match=r"f1\.wav: AttributeError: 'NoneType' .*a bug in vggish-tf2") as caught:
        embed_corpus([corpus], out_dir=out_dir, embedder=embedder)
    assert isinstance(caught.value, InternalError) and isinstance(caught.value.__cause__, AttributeError)
    summary = caught.value.summary
    assert (summary.ok, summary.failed, summary.not_done, summary.exit_status) == (1, 0, 3, 1)
    assert [(r["input"], r["status"]) for r in manifest_lines(out_dir)] == [("f0.wav", "ok")]
    assert listing(out_dir) == ["f0.wav.npz", "manifest.jsonl", "run_config.json"]

    # Fixed: the rerun resumes from there.
    monkeypatch.setattr(outputs, "write_npz", REAL_WRITE_NPZ)
    summary = embed_corpus([corpus], out_dir=out_dir, embedder=embedder)
    assert (summary.ok, summary.already_done) == (3, 1)


def test_an_embedder_raising_a_bug_stops_the_run_naming_the_file(tmp_path, embedder, monkeypatch):
    corpus = tmp_path / "corpus"
    for i in range(3):
        write_noise(corpus / f"f{i}.wav", 1.0, seed=i)
    real = embedder.embed_files

    def embed_files(paths):
        results = real(paths)
        try:
            yield next(results)
            raise TypeError("bad operand")  # a bug in a decoding thread, re-raised by the Embedder
        finally:
            results.close()

    monkeypatch.setattr(embedder, "embed_files", embed_files)
    with pytest.raises(run.RunStopped, match=r"f1\.wav: TypeError: bad operand\. This is a bug") as caught:
        embed_corpus([corpus], out_dir=tmp_path / "out", embedder=embedder)
    assert (caught.value.summary.ok, caught.value.summary.not_done) == (1, 2)
    assert [r["status"] for r in manifest_lines(tmp_path / "out")] == ["ok"]


HOLD_LOCK = """
import sys, time
from vggish_tf2 import outputs
lock = outputs.OutputLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_a_second_run_into_a_locked_out_dir_stops_at_once_naming_the_first(corpus, tmp_path, embedder):
    """The lock is held by another process; killed with SIGKILL, it leaves its lock file, which
    no longer blocks anyone (the system released the lock with the process)."""
    import signal
    import socket
    import subprocess
    import sys

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputInUseError, match=rf"another vggish-tf2 run is writing here \(pid {holder.pid} on "
                                                   rf"host {socket.gethostname()}, started .*\).*another --out"):
            embed_corpus([corpus], out_dir=out_dir, embedder=embedder)
        assert listing(out_dir) == [outputs.LOCK_NAME]  # nothing touched
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (out_dir / outputs.LOCK_NAME).exists()  # left behind by the kill
    summary = embed_corpus([corpus], out_dir=out_dir, embedder=embedder)
    assert summary.ok == 3
    assert outputs.LOCK_NAME not in listing(out_dir)  # removed when the run ends


def test_interrupted_summary_counts_what_was_not_done(tmp_path, embedder, monkeypatch):
    corpus = tmp_path / "corpus"
    for i in range(5):
        write_noise(corpus / f"f{i}.wav", 1.0, seed=i)
    monkeypatch.setattr(outputs, "write_npz", CountingWriter(interrupt_at=3))
    with pytest.raises(RunInterrupted) as caught:
        embed_corpus([corpus], out_dir=tmp_path / "out", embedder=embedder)
    summary = caught.value.summary
    assert (summary.ok, summary.not_done) == (2, 3)
    assert "5 total: 2 ok, 0 failed, 0 skipped (too short), 0 already done, 3 not done" in summary.format()


def test_ctrl_c_while_the_engine_works_commits_the_open_shard(tmp_path, embedder, monkeypatch):
    """A sharded run interrupted between files (the engine was working) commits the files its
    open shard holds, so the resumed run does not embed them again (the shard would otherwise
    have waited for shard_rows examples or a minute)."""
    from vggish_tf2.corpus.local import LocalEngine

    corpus = tmp_path / "corpus"
    for i in range(5):
        write_noise(corpus / f"f{i}.wav", 1.0, seed=i)
    real_results = LocalEngine.results

    def interrupted_after_three(self, tasks):
        for count, embedded in enumerate(real_results(self, tasks)):
            if count == 3:
                raise KeyboardInterrupt
            yield embedded

    monkeypatch.setattr(LocalEngine, "results", interrupted_after_three)
    out_dir = tmp_path / "out"
    with pytest.raises(RunInterrupted) as caught:
        embed_corpus([corpus], out_dir=out_dir, embedder=embedder, output_format="parquet", layout="shards")
    assert caught.value.summary.ok == 3
    records = manifest_lines(out_dir)
    assert sorted(r["input"] for r in records) == ["f0.wav", "f1.wav", "f2.wav"]
    (shard,) = {r["output"] for r in records}
    assert (out_dir / shard).is_file() and listing(out_dir / "embeddings") == [shard.split("/")[-1]]

    monkeypatch.setattr(LocalEngine, "results", real_results)
    summary = embed_corpus([corpus], out_dir=out_dir, embedder=embedder, output_format="parquet", layout="shards")
    assert (summary.ok, summary.already_done) == (2, 3)


def test_a_short_clip_has_the_same_word_in_the_api_and_the_manifest(corpus, tmp_path, embedder):
    """A clip too short for one example: the API's FileResult and the CLI's manifest agree
    (issue 8: it was `ok` from the API and `skipped` from the CLI). Needs FileResult.status."""
    (result,) = list(embedder.embed_files([corpus / "sub" / "short.wav"]))
    embed_corpus([corpus / "sub" / "short.wav"], out_dir=tmp_path / "out", embedder=embedder)
    (record,) = manifest_lines(tmp_path / "out")
    assert result.status == record["status"] == "skipped"
    assert result.skipped and result.ok  # ok: not failed; skipped: no example


def test_the_old_pipeline_module_still_exports_the_run():
    """README's `from vggish_tf2.pipeline import embed_corpus` keeps working (a re-export)."""
    assert pipeline.embed_corpus is embed_corpus and pipeline.RunStopped is run.RunStopped
    assert pipeline.RUN_CONFIG_NAME == RUN_CONFIG_NAME and pipeline.expand_inputs is not None


def test_options_object_or_its_fields_not_both(corpus, tmp_path):
    with pytest.raises(InvalidArgumentError, match="either options= or its fields as keywords.*postprocess"):
        embed_corpus([corpus], out_dir=tmp_path / "out", options=RunOptions(), postprocess=False)
    with pytest.raises(TypeError, match="unexpected keyword arguments: batch"):
        embed_corpus([corpus], out_dir=tmp_path / "out", batch=4)
    assert not (tmp_path / "out").exists()


def test_options_object_gives_the_same_bytes_as_keywords(corpus, tmp_path, embedder):
    by_keywords = tmp_path / "keywords"
    by_options = tmp_path / "options"
    embed_corpus([corpus], out_dir=by_keywords, embedder=embedder, output_format="parquet", postprocess=False)
    embed_corpus([corpus], out_dir=by_options, embedder=embedder,
                 options=RunOptions(output_format="parquet", postprocess=False))
    for name in ("a.wav.parquet", "sub/b.wav.parquet", "run_config.json"):
        assert (by_keywords / name).read_bytes() == (by_options / name).read_bytes()


def test_ray_engine_refuses_a_ready_embedder(corpus, tmp_path, embedder):
    with pytest.raises(InvalidArgumentError, match="embedder= runs on the local engine"):
        embed_corpus([corpus], out_dir=tmp_path / "out", embedder=embedder, engine="ray")
