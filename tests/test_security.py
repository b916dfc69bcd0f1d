"""Security (issue 5): nothing is ever unpickled, model files are checked against their recorded
hashes, no output escapes --out, downloads are https-only and hash-checked.

What other files already prove is not repeated: tests/test_converter.py (a pickled PCA npz is
refused), tests/test_export.py (tampered variables, an added file), tests/test_outputs.py and
tests/corpus/test_run.py (safe_output_path and a symlinked directory inside out_dir),
tests/test_download.py (non-https URLs, redirects to http, hash mismatches).
"""
from __future__ import annotations

import ast
import json
import os
import pathlib
import shutil
from pathlib import Path

import numpy as np
import pytest

import reliability_corpus as corpus_kinds
from vggish_tf2 import cli, model, outputs
from vggish_tf2.errors import CheckpointError, DownloadError, ModelError, OutputError

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("vggish_tf2", "convert")
CLI_BASE = ["--device", "cpu", "--batch-size", "16", "--workers", "1", "--quiet"]


# --- Never unpickle ---------------------------------------------------------------------------------
def _np_load_calls(tree: ast.AST):
    """Calls of numpy's load however it is spelled: np.load, numpy.load, or a name imported from numpy."""
    from_numpy = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                  and node.module == "numpy" for alias in node.names if alias.name == "load"}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if (isinstance(func, ast.Attribute) and func.attr == "load" and isinstance(func.value, ast.Name)
                and func.value.id in ("np", "numpy")) or (isinstance(func, ast.Name) and func.id in from_numpy):
            yield node


def test_every_np_load_in_the_package_sources_passes_allow_pickle_false():
    sources = sorted(p for package in PACKAGES for p in (REPO / package).rglob("*.py"))
    assert len(sources) > 20
    calls, offending = 0, []
    for path in sources:
        tree = ast.parse(path.read_text(), filename=str(path))
        for call in _np_load_calls(tree):
            calls += 1
            keyword = {k.arg: k.value for k in call.keywords}.get("allow_pickle")
            if not (isinstance(keyword, ast.Constant) and keyword.value is False):
                offending.append(f"{path.relative_to(REPO)}:{call.lineno}")
        for node in ast.walk(tree):  # nor pickle by another route
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                assert not {"pickle", "cPickle", "dill", "joblib"} & set(names), f"{path}:{node.lineno} imports pickle"
    assert calls >= 2  # outputs.read_npz and convert.checkpoint.read_pca_params at least
    assert offending == []


def test_the_source_check_catches_a_bad_call():
    # Control: the check above is not vacuous.
    bad = ast.parse("import numpy as np\nfrom numpy import load as L\nnp.load(p)\nL(p, allow_pickle=True)\n"
                    "np.load(p, allow_pickle=False)\n")
    calls = list(_np_load_calls(bad))
    assert len(calls) == 3
    assert [any(k.arg == "allow_pickle" and k.value.value is False for k in c.keywords) for c in calls] == [
        False, False, True]


class _Payload:
    """Unpickling this creates ``marker``: proof that a pickle was executed."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def _pickle_npz(path: Path, marker: Path, **arrays) -> Path:
    payload = np.empty(1, dtype=object)
    payload[0] = _Payload(marker)
    np.savez(path, **arrays, payload=payload)
    return path


def test_a_live_pickle_payload_is_refused_by_read_pca_params_and_read_npz(tmp_path):
    marker = tmp_path / "pwned"
    pca = _pickle_npz(tmp_path / "vggish_pca_params.npz", marker, pca_eigen_vectors=np.eye(128),
                      pca_means=np.zeros(128))
    from convert.checkpoint import read_pca_params

    with pytest.raises(CheckpointError, match=r"vggish_pca_params.npz: refusing to load pickled data"):
        read_pca_params(pca)
    embeddings = _pickle_npz(tmp_path / "a.wav.npz", marker, embedding=np.zeros((1, 128), np.float32))
    with pytest.raises(OutputError, match=r"a\.wav\.npz: cannot read npz \(.*allow_pickle=False"):
        outputs.read_npz(embeddings)
    assert not marker.exists()
    # Control: the payload is live; numpy with allow_pickle=True would have run it.
    with np.load(embeddings, allow_pickle=True) as archive:
        archive["payload"]
    assert marker.exists()


# --- Model files against their recorded hashes ----------------------------------------------------------
def _link_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, copy_function=os.link)
    return dst


def _rewrite(path: Path, data: bytes) -> None:
    path.unlink()  # break the hard link: the session's export stays intact
    path.write_bytes(data)


def test_tampered_saved_model_pb_is_refused(exported_model, tmp_path):
    copy = _link_copy(exported_model, tmp_path / "tampered_graph")
    graph = bytearray((copy / "saved_model.pb").read_bytes())
    graph[len(graph) // 2] ^= 0x01
    _rewrite(copy / "saved_model.pb", bytes(graph))
    with pytest.raises(ModelError, match=r"saved_model\.pb: sha256 differs from the one recorded at conversion"):
        model.load_export(copy)


def test_metadata_edited_to_look_real_is_refused(exported_model, tmp_path):
    """Valid metadata (it passes every compatibility check) whose bytes differ from the recorded ones:
    e.g. someone clearing the synthetic-weights flag."""
    copy = _link_copy(exported_model, tmp_path / "relabelled")
    meta_path = copy / "assets" / model.METADATA_ASSET
    metadata = json.loads(meta_path.read_text())
    metadata["synthetic_weights"] = False
    metadata.pop("warning", None)
    _rewrite(meta_path, json.dumps(metadata).encode())
    model.check_metadata(metadata, source="edited")  # compatible: only the hash gives it away
    with pytest.raises(ModelError, match=r"vggish_tf2\.json: sha256 differs from the one recorded at conversion"):
        model.load_export(copy)


def test_a_tampered_export_is_refused_by_the_cli_before_any_output(exported_model, tmp_path, capsys):
    copy = _link_copy(exported_model, tmp_path / "tampered")
    (data,) = sorted((copy / "variables").glob("variables.data-*"))
    content = bytearray(data.read_bytes())
    content[-1] ^= 0x80
    _rewrite(data, bytes(content))
    corpus_kinds._audio(seed=1)(tmp_path / "a.wav")
    code = cli.main(["embed", str(tmp_path / "a.wav"), "--out", str(tmp_path / "out"), "--model", str(copy), *CLI_BASE])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "sha256 differs from the one recorded at conversion" in err
    assert not (tmp_path / "out").exists()
    code = cli.main(["info", str(copy), "--verify"])
    assert code == 1 and "sha256 differs" in capsys.readouterr().err


# --- No output path escapes --out (CLI level) -------------------------------------------------------
def manifest_records(out_dir: Path) -> dict:
    return {r["input"]: r for r in map(json.loads, (out_dir / outputs.MANIFEST_NAME).read_text().splitlines())}


def _files(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file() or p.is_symlink())


def test_dotdot_and_absolute_inputs_land_inside_out(exported_model, tmp_path, monkeypatch, capsys):
    """Inputs named with ../ and absolute paths are named relative to their common root, which never
    holds '..': outputs stay under --out, whatever the spelling."""
    work = tmp_path / "work"
    (work / "deep").mkdir(parents=True)
    corpus_kinds._audio(seed=2)(tmp_path / "outside.wav")
    corpus_kinds._audio(seed=3)(work / "deep" / "inside.wav")
    monkeypatch.chdir(work / "deep")
    (work / "deep" / "list.txt").write_text("../../outside.wav\n")
    code = cli.main(["embed", "../deep/../../outside.wav", "inside.wav", str(tmp_path / "outside.wav"),
                     "--from-list", "list.txt", "--out", "out", "--model", str(exported_model), *CLI_BASE])
    assert code == 0, capsys.readouterr().err
    out = work / "deep" / "out"
    # The common root of the three spellings is tmp_path: names relative to it hold no '..'.
    assert _files(out) == ["manifest.jsonl", "outside.wav.npz", "run_config.json", "work/deep/inside.wav.npz"]
    assert sorted(manifest_records(out)) == ["outside.wav", "work/deep/inside.wav"]
    assert _files(tmp_path) == sorted(["outside.wav", "work/deep/inside.wav", "work/deep/list.txt",
                                       *(f"work/deep/out/{f}" for f in _files(out))])


def test_planted_output_link_pointing_outside_is_refused(exported_model, tmp_path, capsys):
    corpus_kinds._audio(seed=4)(tmp_path / "a.wav")
    corpus_kinds._audio(seed=5)(tmp_path / "b.wav")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(victim, out / "a.wav.npz")
    code = cli.main(["embed", str(tmp_path / "a.wav"), str(tmp_path / "b.wav"), "--out", str(out),
                     "--model", str(exported_model), *CLI_BASE])
    assert code == 1
    assert victim.read_text() == "precious"
    records = manifest_records(out)
    assert records["a.wav"]["status"] == "failed" and "outside the output directory" in records["a.wav"]["error"]
    assert records["b.wav"]["status"] == "ok"
    assert os.readlink(out / "a.wav.npz") == str(victim)  # the link itself is left alone


def test_planted_manifest_link_is_refused_and_its_target_untouched(exported_model, tmp_path, capsys):
    corpus_kinds._audio(seed=6)(tmp_path / "a.wav")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious, without a final newline")  # the torn-tail repair would cut all of it
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(victim, out / outputs.MANIFEST_NAME)
    code = cli.main(["embed", str(tmp_path / "a.wav"), "--out", str(out), "--model", str(exported_model), *CLI_BASE])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert f"error: {out / outputs.MANIFEST_NAME}: is a symbolic link" in err and "refusing to follow it" in err
    assert victim.read_text() == "precious, without a final newline"
    with pytest.raises(OutputError, match="is a symbolic link"):
        outputs.Manifest(out).append({"input": "x.wav", "status": "ok"})
    assert victim.read_text() == "precious, without a final newline"


def test_planted_manifest_link_with_overwrite_stops_before_any_output(exported_model, tmp_path, capsys):
    corpus_kinds._audio(seed=6)(tmp_path / "a.wav")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(victim, out / outputs.MANIFEST_NAME)
    code = cli.main(["embed", str(tmp_path / "a.wav"), "--out", str(out), "--model", str(exported_model),
                     "--overwrite", *CLI_BASE])
    assert code == 1 and "is a symbolic link" in capsys.readouterr().err
    assert victim.read_text() == "precious"
    assert not (out / "a.wav.npz").exists()  # refused before anything was embedded or written


def test_symlinked_out_directory_is_followed_once_and_contained(exported_model, tmp_path, capsys):
    """--out may itself be a link (to a bigger disk): the outputs land in its target, and nowhere else."""
    (tmp_path / "in" / "sub").mkdir(parents=True)
    corpus_kinds._audio(seed=7)(tmp_path / "in" / "sub" / "a.wav")
    target = tmp_path / "big_disk"
    target.mkdir()
    os.symlink(target, tmp_path / "out_link")
    code = cli.main(["embed", str(tmp_path / "in"), "--out", str(tmp_path / "out_link"),
                     "--model", str(exported_model), *CLI_BASE])
    assert code == 0, capsys.readouterr().err
    assert _files(target) == ["manifest.jsonl", "run_config.json", "sub/a.wav.npz"]
    assert _files(tmp_path / "in") == ["sub/a.wav"]


# --- Downloads ------------------------------------------------------------------------------------------------
def test_a_sources_manifest_listing_plain_http_is_refused_before_any_request(tmp_path, monkeypatch):
    """test_download.py refuses non-https base URLs; the URLs of the manifest itself are checked too."""
    from convert import download

    manifest_path = tmp_path / "manifest.json"
    manifest_path.write_text(json.dumps({"sources": [
        {"name": "vggish_model.ckpt", "urls": ["http://storage.googleapis.com/audioset/vggish_model.ckpt"],
         "sha256": None, "size_bytes": None}]}))

    def no_network(*args, **kwargs):
        raise AssertionError("a request was made")

    monkeypatch.setattr(download.urllib.request, "urlopen", no_network)
    with pytest.raises(DownloadError, match=r"http://storage\.googleapis\.com/audioset/vggish_model\.ckpt.*https"):
        download.download_released_files(tmp_path / "cache", manifest_path=manifest_path)
    assert not list((tmp_path / "cache").iterdir())
