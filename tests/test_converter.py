"""python -m convert.checkpoint_to_savedmodel: end to end through main(argv), and every bad input
failing with exit 1 / CheckpointError that names the file and the problem, before the expensive
part, leaving nothing behind."""
from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from convert import verify
from convert.checkpoint_to_savedmodel import convert, main
from convert.synthetic import write_checkpoint
from vggish_tf2 import model
from vggish_tf2.errors import CheckpointError, ConversionError, ModelError


def _leftovers(parent: Path) -> list[str]:
    """Staging or backup directories a conversion may have left in `parent`."""
    return sorted(p.name for p in parent.iterdir() if ".converting-" in p.name or ".replaced-" in p.name)


def _fingerprint(export_dir: Path) -> dict:
    return {
        str(p.relative_to(export_dir)): (p.stat().st_mtime_ns, p.stat().st_size)
        for p in export_dir.rglob("*") if p.is_file()
    }


# --- end to end ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_export(tmp_path_factory):
    """Where test_cli_synthetic_weights_end_to_end writes its export; the next tests reuse it."""
    return tmp_path_factory.mktemp("cli") / "vggish"


def test_cli_synthetic_weights_end_to_end(cli_export, capsys):
    assert main(["--synthetic-weights", "7", "--output", str(cli_export)]) == 0
    captured = capsys.readouterr()
    assert f"wrote {cli_export}" in captured.out
    assert "max rel embedding error" in captured.out
    assert "SYNTHETIC WEIGHTS" in captured.err
    assert captured.err.count("SYNTHETIC") >= 2  # before and after the conversion
    loaded = model.load_export(cli_export)
    assert loaded.synthetic_weights and loaded.has_pca
    assert "SYNTHETIC" in loaded.metadata["warning"]
    assert _leftovers(cli_export.parent) == []
    assert sorted(p.name for p in cli_export.parent.iterdir()) == ["vggish"]


def test_cli_refuses_existing_output_and_keeps_it(cli_export, synthetic_files, capsys):
    if not (cli_export / "saved_model.pb").exists():
        pytest.skip("needs test_cli_synthetic_weights_end_to_end's export")
    before = _fingerprint(cli_export)
    checkpoint, pca = synthetic_files
    code = main(["--checkpoint", str(checkpoint), "--pca-params", str(pca), "--output", str(cli_export)])
    assert code == 1
    assert f"{cli_export}: already exists; pass --overwrite" in capsys.readouterr().err
    assert _fingerprint(cli_export) == before
    assert _leftovers(cli_export.parent) == []


def test_cli_overwrite_replaces_with_a_v2_checkpoint(cli_export, synthetic_weights, synthetic_files, tmp_path, capsys):
    if not (cli_export / "saved_model.pb").exists():
        pytest.skip("needs test_cli_synthetic_weights_end_to_end's export")
    old_sources = model.read_metadata(cli_export)["sources"]
    prefix = write_checkpoint(tmp_path / "v2", synthetic_weights, version="V2")
    assert Path(f"{prefix}.index").is_file() and not prefix.exists()
    code = main(["--checkpoint", str(prefix), "--pca-params", str(synthetic_files[1]),
                 "--output", str(cli_export), "--overwrite"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "SYNTHETIC" not in captured.err  # a user's checkpoint is not called synthetic
    metadata = model.load_export(cli_export).metadata
    assert metadata["synthetic_weights"] is False and "warning" not in metadata
    files = sorted(record["file"] for record in metadata["sources"]["checkpoint"])
    assert files == ["vggish_model.ckpt.data-00000-of-00001", "vggish_model.ckpt.index"]
    assert metadata["sources"] != old_sources
    assert _leftovers(cli_export.parent) == []


# --- bad inputs: each fails before the conversion, naming the file and the problem -----------------
def _fail(argv_extra: list[str], tmp_path: Path, capsys, synthetic_files, *, checkpoint=None, pca=None) -> str:
    output = tmp_path / "out" / "vggish"
    argv = ["--checkpoint", str(checkpoint or synthetic_files[0]),
            "--pca-params", str(pca or synthetic_files[1]), "--output", str(output), *argv_extra]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert not output.exists()
    if output.parent.exists():
        assert _leftovers(output.parent) == []
    return err


def test_missing_checkpoint(tmp_path, capsys, synthetic_files):
    missing = tmp_path / "nope.ckpt"
    err = _fail([], tmp_path, capsys, synthetic_files, checkpoint=missing)
    assert f"{missing}: no such checkpoint" in err


def test_checkpoint_directory_instead_of_file(tmp_path, synthetic_files):
    with pytest.raises(CheckpointError, match=r"is a directory; give the checkpoint file"):
        convert(checkpoint=tmp_path, pca_params=synthetic_files[1], output=tmp_path / "out")


def test_truncated_checkpoint(tmp_path, capsys, synthetic_files):
    truncated = tmp_path / "vggish_model.ckpt"
    data = synthetic_files[0].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    err = _fail([], tmp_path, capsys, synthetic_files, checkpoint=truncated)
    assert f"{truncated}: cannot read the checkpoint" in err


def test_garbage_checkpoint(tmp_path, synthetic_files):
    garbage = tmp_path / "vggish_model.ckpt"
    garbage.write_bytes(b"not a checkpoint at all" * 100)
    with pytest.raises(CheckpointError, match=rf"{garbage}: cannot read the checkpoint"):
        convert(checkpoint=garbage, pca_params=synthetic_files[1], output=tmp_path / "out")


def test_missing_variable(tmp_path, capsys, synthetic_weights, synthetic_files):
    weights = {k: v for k, v in synthetic_weights.items() if k not in ("vggish/fc2/biases", "vggish/fc1/fc1_1/weights")}
    path = write_checkpoint(tmp_path / "ckpt", weights)
    err = _fail([], tmp_path, capsys, synthetic_files, checkpoint=path)
    assert f"{path}: not a VGGish checkpoint (missing: vggish/fc1/fc1_1/weights, vggish/fc2/biases)" in err


def test_wrong_shape_and_unexpected_variable(tmp_path, synthetic_weights, synthetic_files):
    weights = dict(synthetic_weights)
    weights["vggish/fc2/biases"] = np.zeros(64, np.float32)
    weights["vggish/fc3/weights"] = np.zeros((2, 2), np.float32)
    path = write_checkpoint(tmp_path / "ckpt", weights)
    with pytest.raises(CheckpointError, match=(
        rf"{path}: not a VGGish checkpoint \(unexpected: vggish/fc3/weights \| "
        r"wrong shape: vggish/fc2/biases: \(64,\), expected \(128,\)\)"
    )):
        convert(checkpoint=path, pca_params=synthetic_files[1], output=tmp_path / "out")


def test_wrong_dtype(tmp_path, capsys, synthetic_weights, synthetic_files):
    weights = dict(synthetic_weights)
    weights["vggish/conv1/biases"] = weights["vggish/conv1/biases"].astype(np.float64)
    path = write_checkpoint(tmp_path / "ckpt", weights)
    err = _fail([], tmp_path, capsys, synthetic_files, checkpoint=path)
    assert "wrong dtype: vggish/conv1/biases: float64, expected float32" in err


def test_missing_pca_file(tmp_path, capsys, synthetic_files):
    missing = tmp_path / "nope.npz"
    err = _fail([], tmp_path, capsys, synthetic_files, pca=missing)
    assert f"{missing}: no such PCA parameters file" in err


def test_pickled_npz_is_refused_unexecuted(tmp_path, capsys, synthetic_files):
    pickled = tmp_path / "vggish_pca_params.npz"
    np.savez(pickled, pca_eigen_vectors=np.array([{"evil": 1}], dtype=object), pca_means=np.zeros(128))
    err = _fail([], tmp_path, capsys, synthetic_files, pca=pickled)
    assert f"{pickled}: refusing to load pickled data" in err


def test_npz_with_wrong_pca_shapes(tmp_path, capsys, synthetic_files):
    bad = tmp_path / "vggish_pca_params.npz"
    np.savez(bad, pca_eigen_vectors=np.eye(128)[:, :64], pca_means=np.zeros(127))
    err = _fail([], tmp_path, capsys, synthetic_files, pca=bad)
    assert f"{bad}: not VGGish PCA parameters" in err
    assert "'pca_eigen_vectors' has shape (128, 64), expected (128, 128)" in err
    assert "'pca_means' has shape (127,), expected (128,)" in err


def test_npz_missing_key_and_not_a_zip(tmp_path, synthetic_files):
    partial = tmp_path / "partial.npz"
    np.savez(partial, pca_eigen_vectors=np.eye(128))
    with pytest.raises(CheckpointError, match=rf"{partial}: not VGGish PCA parameters \(missing 'pca_means'\)"):
        convert(checkpoint=synthetic_files[0], pca_params=partial, output=tmp_path / "out")
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match=rf"{text}: not a readable .npz file"):
        convert(checkpoint=synthetic_files[0], pca_params=text, output=tmp_path / "out")


def test_checkpoint_needs_pca_params(tmp_path, capsys, synthetic_files):
    with pytest.raises(SystemExit) as excinfo:
        main(["--checkpoint", str(synthetic_files[0]), "--output", str(tmp_path / "out")])
    assert excinfo.value.code == 2
    assert "--checkpoint needs --pca-params" in capsys.readouterr().err


def test_existing_output_is_refused_before_reading_anything(tmp_path):
    output = tmp_path / "vggish"
    output.mkdir()
    (output / "keep.txt").write_text("mine")
    # Inputs do not even exist: the output check comes first.
    with pytest.raises(ModelError, match=rf"{output}: already exists; pass --overwrite"):
        convert(checkpoint=tmp_path / "nope.ckpt", pca_params=tmp_path / "nope.npz", output=output)
    assert (output / "keep.txt").read_text() == "mine"


# --- verification failure -----------------------------------------------------------------------
def test_verification_failure_after_reloading_leaves_nothing_behind(monkeypatch, tmp_path, synthetic_files):
    # The old export must survive a failed --overwrite, and the staged (already saved) export must go.
    output = tmp_path / "vggish"
    output.mkdir()
    (output / "keep.txt").write_text("the previous export")
    real_verify = verify.verify_export

    def strict_after_reload(export, **kwargs):
        if kwargs["stage"] == "after reloading":
            monkeypatch.setitem(verify.TOLERANCES, kwargs["frontend_precision"],
                                {"log_mel_max_abs": 0.0, "embedding_max_rel": 0.0, "min_cosine": 1.0, "uint8_max_diff": 0})
        return real_verify(export, **kwargs)

    monkeypatch.setattr(verify, "verify_export", strict_after_reload)
    seen_staging = []
    real_save = model.save_export

    def recording_save(module, export_dir):
        seen_staging.append(Path(export_dir))
        return real_save(module, export_dir)

    monkeypatch.setattr(model, "save_export", recording_save)
    with pytest.raises(ConversionError, match=r"(?s)after reloading: the export disagrees .*embedding max rel error"):
        convert(checkpoint=synthetic_files[0], pca_params=synthetic_files[1], output=output, overwrite=True,
                synthetic_weights=True)
    assert seen_staging and seen_staging[0].parent.parent == tmp_path  # it did stage and save
    assert not seen_staging[0].exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vggish"]
    assert [p.name for p in output.iterdir()] == ["keep.txt"]


def test_verification_failure_before_saving_exits_1(monkeypatch, tmp_path, capsys, synthetic_files):
    monkeypatch.setitem(verify.TOLERANCES, "float64",
                        {"log_mel_max_abs": 0.0, "embedding_max_rel": 0.0, "min_cosine": 1.0, "uint8_max_diff": 0})
    output = tmp_path / "vggish"
    code = main(["--checkpoint", str(synthetic_files[0]), "--pca-params", str(synthetic_files[1]), "--output", str(output)])
    assert code == 1
    err = capsys.readouterr().err
    assert "before saving: the export disagrees with the checkpoint's float64 reference" in err
    assert "all figures:" in err
    assert list(tmp_path.iterdir()) == []


# --- --download against a local mirror ------------------------------------------------------------
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_cli_download_from_local_mirror(tmp_path, capsys, synthetic_files):
    served = tmp_path / "mirror"
    served.mkdir()
    for path in synthetic_files:
        shutil.copy(path, served / path.name)
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        output = tmp_path / "out" / "vggish"
        cache = tmp_path / "cache"
        code = main(["--download", "--base-url", f"http://127.0.0.1:{server.server_address[1]}/",
                     "--cache-dir", str(cache), "--output", str(output)])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    for path in synthetic_files:
        assert (cache / path.name).read_bytes() == path.read_bytes()
    metadata = model.load_export(output).metadata
    assert metadata["sources"]["pca_params"]["sha256"] == model.sha256_file(synthetic_files[1])
    assert _leftovers(output.parent) == []


def test_plain_http_download_refused_off_loopback(tmp_path, capsys):
    code = main(["--download", "--base-url", "http://example.com/", "--cache-dir", str(tmp_path / "cache"),
                 "--output", str(tmp_path / "out")])
    assert code == 1
    assert "http://example.com/" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
