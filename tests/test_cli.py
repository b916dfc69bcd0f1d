"""The vggish-tf2 command end to end: every input format in a nested tree, outputs mirroring it,
exit statuses (0 ok, 1 a file failed, 2 usage, 130 interrupted), resume, settings refusal,
``info`` and ``devices``, and errors as one line without a traceback."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from vggish_tf2 import audio, cli, outputs, windows

try:
    import av
except ImportError:  # m4a needs PyAV
    av = None

# (relative path, seconds, sample rate, soundfile format, subtype); 1.2-3.1 s: 1-3 examples each.
SOUNDFILE_INPUTS = [
    ("wav/pcm16.wav", 2.0, 16000, "WAV", "PCM_16"),
    ("wav/pcm24.wav", 1.5, 22050, "WAV", "PCM_24"),
    ("wav/float.wav", 2.2, 44100, "WAV", "FLOAT"),
    ("lossless/x.flac", 3.1, 48000, "FLAC", "PCM_16"),
    ("lossy/ogg/vorbis.ogg", 2.0, 44100, "OGG", "VORBIS"),
    ("lossy/ogg/speech.opus", 2.0, 48000, "OGG", "OPUS"),
    ("lossy/mp3/song.mp3", 2.5, 44100, "MP3", "MPEG_LAYER_III"),
    ("apple/clip.aiff", 1.2, 44100, "AIFF", "PCM_16"),
]
CLI_BASE = ["--device", "cpu", "--batch-size", "16", "--workers", "2", "--quiet"]


def noise(seconds, rate, seed):
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(int(round(seconds * rate)))).astype(np.float32)


def write_m4a(path, seconds, rate=44100, seed=0):
    samples = noise(seconds, rate, seed)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(samples[np.newaxis, :], format="flt", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


@pytest.fixture
def tree(tmp_path):
    """Every format, nested; plus a broken file. Returns (root, relative paths of the good files)."""
    root = tmp_path / "corpus"
    good = []
    for i, (relative, seconds, rate, fmt, subtype) in enumerate(SOUNDFILE_INPUTS):
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, noise(seconds, rate, i), rate, format=fmt, subtype=subtype)
        good.append(relative)
    if av is not None:
        (root / "apple").mkdir(exist_ok=True)
        write_m4a(root / "apple" / "voice.m4a", 2.1)
        good.append("apple/voice.m4a")
    (root / "lossy" / "mp3" / "broken.mp3").write_bytes(b"ID3" + b"\x00" * 7 + os.urandom(64))
    return root, sorted(good)


def run(capsys, *args):
    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def manifest(out_dir):
    return {r["input"]: r for r in map(json.loads, (out_dir / outputs.MANIFEST_NAME).read_text().splitlines())}


# --- Fast paths: no TensorFlow ---------------------------------------------------------------------
def test_help_is_fast_and_imports_no_tensorflow():
    code = ("import sys\nfrom vggish_tf2 import cli\n"
            "status = cli.main(['--help'])\nassert 'tensorflow' not in sys.modules, 'TF imported'\nsys.exit(status)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "embed" in done.stdout and "devices" in done.stdout and "info" in done.stdout


def test_embed_help_lists_every_flag(capsys):
    code, out, _ = run(capsys, "embed", "--help")
    assert code == 0
    for flag in ("--out", "--from-list", "--format", "--postprocess", "--no-postprocess", "--model", "--device",
                 "--memory-fraction", "--batch-size", "--resampler", "--frontend-precision", "--short-clips",
                 "--hop-seconds", "--overwrite", "--quiet", "--workers", "--jit-compile", "--no-verify-model",
                 "--layout", "--shard-rows", "--pool", "--engine", "--ray-address", "--ray-actors"):
        assert flag in out
    # A step is whole 12-row slices (runner.rows_per_device), not "a multiple of 48" as the help once said.
    assert "multiple of 48" not in out and "slices of 12 rows" in " ".join(out.split())


def test_every_option_field_has_its_flag_and_back(capsys):
    """Each RunOptions field is set by its own flag: parsing the flags gives the options asked."""
    from vggish_tf2.cli import build_parser, options_from_args
    from vggish_tf2.options import RunOptions

    args = build_parser().parse_args(
        ["embed", "x.wav", "--out", "o", "--model", "m", "--device", "cpu", "--memory-fraction", "0.5",
         "--batch-size", "24", "--no-jit-compile", "--resampler", "soxr_hq", "--frontend-precision", "float32",
         "--short-clips", "pad", "--hop-seconds", "0.5", "--workers", "2", "--no-verify-model", "--format", "parquet",
         "--layout", "shards", "--shard-rows", "7", "--pool", "mean", "--no-postprocess", "--overwrite",
         "--engine", "ray", "--ray-address", "auto", "--ray-actors", "3"])
    assert options_from_args(args) == RunOptions(
        model="m", device="cpu", memory_fraction=0.5, batch_size=24, jit_compile=False, resampler="soxr_hq",
        frontend_precision="float32", short_clips="pad", hop_seconds=0.5, workers=2, verify_model_hashes=False,
        output_format="parquet", layout="shards", shard_rows=7, pool="mean", postprocess=False, overwrite=True,
        engine="ray", ray_address="auto", ray_actors=3)
    assert options_from_args(build_parser().parse_args(["embed", "x.wav", "--out", "o"])) == RunOptions()


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "usage: vggish-tf2"),
        (["embed", "--out", "o"], "error: embed needs at least one PATH or --from-list FILE"),
        (["embed", "x.wav", "--out", "o", "--format", "csv"], "invalid choice: 'csv'"),
        (["embed", "x.wav", "--out", "o", "--batch-size", "0"], "'0' must be >= 1"),
        (["embed", "x.wav", "--out", "o", "--device", "tpu"], "invalid choice: 'tpu'"),
        (["embed", "x.wav"], "the following arguments are required: --out"),
        (["embed", "x.wav", "--out", "o", "--format", "tfrecord", "--no-postprocess"],
         "error: format 'tfrecord' stores AudioSet's post-processed uint8 embeddings"),
        # Library errors name the flag as typed, not the parameter (issue 8).
        (["embed", "x.wav", "--out", "o", "--hop-seconds", "0.015"], "error: --hop-seconds 0.015 must be a multiple of 0.01"),
        (["embed", "x.wav", "--out", "o", "--memory-fraction", "1.5"], "argument --memory-fraction: '1.5' must be in (0, 1]"),
        (["embed", "--from-list", "absent.txt", "--out", "o"], "error: absent.txt: cannot read the list file"),
        (["embed", "x.wav", "--out", "o", "--layout", "shards"],
         "error: --layout 'shards' writes parquet or tfrecord shards, not npz"),
        (["embed", "x.wav", "--out", "o", "--format", "tfrecord", "--pool", "mean"], "error: --pool 'mean' gives one vector"),
        (["embed", "x.wav", "--out", "o", "--ray-actors", "2"], "error: --ray-actors 2 needs --engine 'ray'"),
        (["embed", "x.wav", "--out", "o", "--shard-rows", "0"], "argument --shard-rows: '0' must be >= 1"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_usage_errors_exit_2(capsys, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.wav").write_bytes(b"RIFF")
    code, out, err = run(capsys, *args)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.startswith("vggish-tf2 ")


# --- embed end to end ------------------------------------------------------------------------------
def test_embed_every_format_mirrors_tree_then_resumes(capsys, tree, tmp_path, exported_model):
    root, good = tree
    out_dir = tmp_path / "out"
    code, out, err = run(capsys, "embed", root, "--out", out_dir, "--model", exported_model, *CLI_BASE)
    assert code == 1, err  # the broken mp3
    assert f"{len(good) + 1} total: {len(good)} ok, 1 failed" in out
    # Once per run, in one wording: the Embedder's warning when it loads the model (issue 8).
    assert err.count("SYNTHETIC WEIGHTS") == 1 and "SYNTHETIC WEIGHTS" not in out
    assert f"WARNING: {exported_model}: SYNTHETIC WEIGHTS: these are not VGGish embeddings" in err
    assert "failed     lossy/mp3/broken.mp3:" in out
    assert "throughput" in out and "examples/s" in out and "audio s/s" in out
    assert "Traceback" not in err

    written = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*.npz"))
    assert written == sorted(g + ".npz" for g in good)  # the tree, mirrored
    records = manifest(out_dir)
    assert records["lossy/mp3/broken.mp3"]["status"] == "failed" and records["lossy/mp3/broken.mp3"]["error"]
    for relative in good:
        record = records[relative]
        decoded = audio.load_audio(root / relative)
        expected = windows.count_examples(len(decoded))
        assert record["status"] == "ok" and record["examples"] == expected >= 1, relative
        assert record["duration_seconds"] == pytest.approx(len(decoded) / 16000)
        data = outputs.read_npz(out_dir / record["output"])
        assert data["embedding"].shape == (expected, 128) and data["embedding"].dtype == np.float32
        assert data["postprocessed"].shape == (expected, 128) and data["postprocessed"].dtype == np.uint8
        np.testing.assert_allclose(data["timestamps"], np.arange(expected) * 0.96)
        assert np.isfinite(data["embedding"]).all()
        assert data["metadata"]["input"] == relative and data["metadata"]["synthetic_weights"] is True

    # Fix the broken file; rerun the same command: only it is done, exit 0.
    (root / "lossy" / "mp3" / "broken.mp3").unlink()
    sf.write(root / "lossy" / "mp3" / "broken.mp3", noise(1.0, 44100, 99), 44100, format="MP3",
             subtype="MPEG_LAYER_III")
    before = {p: p.stat().st_mtime_ns for p in out_dir.rglob("*.npz")}
    code, out, err = run(capsys, "embed", root, "--out", out_dir, "--model", exported_model, *CLI_BASE)
    assert code == 0, err
    assert f"1 ok, 0 failed, 0 skipped (too short), {len(good)} already done" in out
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert (out_dir / "lossy" / "mp3" / "broken.mp3.npz").is_file()


def test_embed_tfrecord_and_parquet_from_a_list(capsys, tmp_path, exported_model, monkeypatch):
    import pyarrow.parquet as pq
    import tensorflow as tf

    monkeypatch.chdir(tmp_path)
    for name, seconds in (("a/one.wav", 2.0), ("b/two.flac", 1.0), ("b/tiny.wav", 0.3)):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / name, noise(seconds, 16000, len(name)), 16000)
    (tmp_path / "list.txt").write_text("a/one.wav\nb/two.flac\n# b/ignored.wav\nb/tiny.wav\n")

    code, out, err = run(capsys, "embed", "--from-list", "list.txt", "--out", "tf", "--format", "tfrecord",
                         "--model", exported_model, *CLI_BASE)
    assert code == 0, err
    assert "2 ok, 0 failed, 1 skipped (too short)" in out
    record = next(iter(tf.data.TFRecordDataset("tf/b/two.flac.tfrecord")))
    context, sequence = tf.io.parse_single_sequence_example(
        record, context_features={"video_id": tf.io.FixedLenFeature([], tf.string)},
        sequence_features={"audio_embedding": tf.io.FixedLenSequenceFeature([], tf.string)})
    assert context["video_id"].numpy() == b"b/two.flac"
    assert tf.io.decode_raw(sequence["audio_embedding"], tf.uint8).shape == (1, 128)
    assert manifest(tmp_path / "tf")["b/tiny.wav"]["status"] == "skipped"

    code, out, err = run(capsys, "embed", "a", "b", "--out", "pq", "--format", "parquet", "--no-postprocess",
                         "--short-clips", "repeat", "--model", exported_model, *CLI_BASE)
    assert code == 0, err
    assert "3 ok, 0 failed, 0 skipped" in out
    table = pq.read_table("pq/a/one.wav.parquet")
    assert table.num_rows == 2 and "postprocessed" not in table.column_names
    assert pq.read_table("pq/b/tiny.wav.parquet").num_rows == 1  # repeated to one example


def test_settings_change_exit_2_then_overwrite(capsys, tmp_path, exported_model):
    sf.write(tmp_path / "a.wav", noise(1.0, 16000, 0), 16000)
    out_dir = tmp_path / "out"
    assert run(capsys, "embed", tmp_path / "a.wav", "--out", out_dir, "--model", exported_model, *CLI_BASE)[0] == 0
    code, out, err = run(capsys, "embed", tmp_path / "a.wav", "--out", out_dir, "--model", exported_model,
                         "--hop-seconds", "0.5", *CLI_BASE)
    assert code == 2
    assert "error: " in err and "hop_samples 15360 then, 8000 now" in err and "--overwrite" in err
    code, out, err = run(capsys, "embed", tmp_path / "a.wav", "--out", out_dir, "--model", exported_model,
                         "--hop-seconds", "0.5", "--overwrite", *CLI_BASE)
    assert code == 0 and "1 ok" in out
    assert json.loads((out_dir / "run_config.json").read_text())["hop_samples"] == 8000


def test_interrupt_exits_130_with_summary(capsys, tmp_path, exported_model, monkeypatch):
    for i in range(3):
        sf.write(tmp_path / f"f{i}.wav", noise(1.0, 16000, i), 16000)
    real = outputs.write_npz
    calls = []

    def interrupt_second(path, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(path, **kwargs)

    monkeypatch.setattr(outputs, "write_npz", interrupt_second)
    code, out, err = run(capsys, "embed", tmp_path, "--out", tmp_path / "out", "--model", exported_model, *CLI_BASE)
    assert code == 130
    assert "INTERRUPTED: rerun the same command to resume" in out and "1 ok" in out
    assert "3 total: 1 ok, 0 failed, 0 skipped (too short), 0 already done, 2 not done" in out  # issue 8
    assert [r["status"] for r in manifest(tmp_path / "out").values()] == ["ok"]


def test_missing_model_is_one_line_error_exit_1(capsys, tmp_path):
    sf.write(tmp_path / "a.wav", noise(1.0, 16000, 0), 16000)
    code, out, err = run(capsys, "embed", tmp_path / "a.wav", "--out", tmp_path / "out", "--model",
                         tmp_path / "nowhere", *CLI_BASE)
    assert code == 1
    assert err.startswith("error: ") and "no model here" in err and "convert" in err
    assert "Traceback" not in err and out == ""


def test_real_process_exit_status_and_no_traceback(tmp_path):
    sf.write(tmp_path / "a.wav", noise(1.0, 16000, 0), 16000)
    done = subprocess.run(
        [sys.executable, "-m", "vggish_tf2", "embed", str(tmp_path / "a.wav"), "--out", str(tmp_path / "out"),
         "--model", str(tmp_path / "nowhere"), "--quiet"],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert done.returncode == 1
    assert "error: " in done.stderr and "no model here" in done.stderr and "Traceback" not in done.stderr


def test_a_bug_stops_the_run_with_one_line_naming_the_file_and_keeps_what_finished(capsys, tmp_path, exported_model,
                                                                                   monkeypatch):
    """A TypeError while writing is a bug, not a file that "cannot be written": the run stops at
    once (exit 1) with one line naming the file and saying so; -v adds the traceback (issue 8)."""
    for i in range(3):
        sf.write(tmp_path / f"f{i}.wav", noise(1.0, 16000, i), 16000)
    real = outputs.write_npz
    calls = []

    def buggy_second(path, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise TypeError("unsupported operand type(s) for +: 'NoneType' and 'int'")
        real(path, **kwargs)

    monkeypatch.setattr(outputs, "write_npz", buggy_second)
    code, out, err = run(capsys, "embed", tmp_path, "--out", tmp_path / "out", "--model", exported_model, *CLI_BASE)
    assert code == 1
    (line,) = [line for line in err.splitlines() if line.startswith("error: ")]
    assert line.startswith(f"error: {tmp_path / 'f1.wav'}: TypeError: unsupported operand") and "a bug" in line
    assert "Traceback" not in err
    assert "STOPPED" in out and "1 ok, 0 failed, 0 skipped (too short), 0 already done, 2 not done" in out
    records = manifest(tmp_path / "out")
    assert {r["input"]: r["status"] for r in records.values()} == {"f0.wav": "ok"}  # f1 is not "failed"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["f0.wav.npz", "manifest.jsonl", "run_config.json"]

    calls.clear()
    code, out, err = run(capsys, "-v", "embed", tmp_path, "--out", tmp_path / "out2", "--model", exported_model,
                         *CLI_BASE)
    assert code == 1 and "Traceback" in err and "TypeError" in err


def test_export_without_hash_list_is_refused_unless_no_verify_model(capsys, tmp_path, exported_model):
    import shutil

    from vggish_tf2 import hashing

    copy = tmp_path / "model"
    shutil.copytree(exported_model, copy, copy_function=os.link)
    (copy / hashing.FILE_HASHES).unlink()
    sf.write(tmp_path / "a.wav", noise(1.0, 16000, 0), 16000)
    code, out, err = run(capsys, "embed", tmp_path / "a.wav", "--out", tmp_path / "out", "--model", copy, *CLI_BASE)
    assert code == 1 and "Traceback" not in err
    assert f"error: {copy / hashing.FILE_HASHES}: no recorded file hashes" in err and "--no-verify-model" in err
    assert not (tmp_path / "out").exists()
    code, out, err = run(capsys, "embed", tmp_path / "a.wav", "--out", tmp_path / "out", "--model", copy,
                         "--no-verify-model", *CLI_BASE)
    assert code == 0, err
    assert "without checking its files" in err
    # The fingerprint names every file: the same as the intact export's.
    assert json.loads((tmp_path / "out" / "run_config.json").read_text())["model_hash"] == \
        hashing.export_fingerprint(exported_model)


@pytest.mark.parametrize("command", [["info", "--verify"], ["info"], ["embed"]])
def test_corrupt_hash_list_is_one_line_error_exit_1(capsys, tmp_path, exported_model, command):
    import shutil

    from vggish_tf2 import hashing

    copy = tmp_path / "model"
    shutil.copytree(exported_model, copy, copy_function=os.link)
    (copy / hashing.FILE_HASHES).unlink()
    (copy / hashing.FILE_HASHES).write_text('{"saved_model.pb": ')  # cut short
    sf.write(tmp_path / "a.wav", noise(1.0, 16000, 0), 16000)
    if command[0] == "info":
        args = [command[0], copy, *command[1:]]
    else:
        args = ["embed", tmp_path / "a.wav", "--out", tmp_path / "out", "--model", copy, *CLI_BASE]
    code, out, err = run(capsys, *args)
    assert code == 1 and "Traceback" not in err and out == ""
    assert err.startswith(f"error: {copy / hashing.FILE_HASHES}: corrupt file-hash list, not JSON")


# --- info and devices --------------------------------------------------------------------------------
def test_info_prints_metadata_and_synthetic_warning(capsys, exported_model):
    code, out, err = run(capsys, "info", exported_model, "--verify")
    assert code == 0, err
    assert out.startswith(f"WARNING: {exported_model}: SYNTHETIC WEIGHTS: these are not")  # the Embedder's wording
    assert "vggish-tf2-export v" in out and "PCA + uint8        yes" in out and "float64" in out
    assert "fingerprint        sha256-files:" in out and "(files verified)" in out


def test_info_imports_no_tensorflow(exported_model):
    """info reads the metadata JSON and (--verify) hashes the files: no TensorFlow, so it takes well
    under a second instead of ~10 s (issue 8)."""
    code = ("import sys\nfrom vggish_tf2 import cli\n"
            f"status = cli.main(['info', {str(exported_model)!r}, '--verify'])\n"
            "assert 'tensorflow' not in sys.modules, 'TF imported'\nsys.exit(status)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "(files verified)" in done.stdout


def test_tensorflow_startup_noise_is_hidden(tmp_path):
    """No cudart_stub / absl / cuInit lines on a machine without CUDA, unless asked (-v or the
    user's own TF_CPP_MIN_LOG_LEVEL). `devices` imports TF and initialises its devices."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-m", "vggish_tf2", "devices"], capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    for noise_line in ("cudart_stub", "absl::InitializeLog", "cuInit"):
        assert noise_line not in done.stderr, done.stderr


def test_embed_hides_tensorflow_startup_lines_but_not_warnings(tmp_path, exported_model):
    """An embed run shows the run's own warnings and summary, not TensorFlow's start-up lines
    (oneDNN's note was shown twice per run on the AVX-512 EPYC before it joined cli._TF_NOISE)."""
    import numpy as np
    import soundfile as sf

    sf.write(tmp_path / "a.wav", 0.1 * np.random.default_rng(0).standard_normal(32000), 16000)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-m", "vggish_tf2", "embed", str(tmp_path / "a.wav"), "--out",
                           str(tmp_path / "out"), "--model", str(exported_model), *map(str, CLI_BASE)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    for noise_line in ("oneDNN custom operations", "cudart_stub", "absl::InitializeLog", "cuInit"):
        assert noise_line not in done.stderr, done.stderr
    assert "SYNTHETIC WEIGHTS: these are not VGGish embeddings" in done.stderr
    assert "1 ok, 0 failed" in done.stdout


def test_info_on_a_directory_that_is_not_an_export(capsys, tmp_path):
    code, out, err = run(capsys, "info", tmp_path)
    assert code == 1
    assert err.startswith("error: ") and "not a SavedModel" in err and "Traceback" not in err


def test_devices_prints_the_report(capsys):
    code, out, err = run(capsys, "devices")
    assert code == 0
    assert "TensorFlow" in out and '"auto" picks' in out
