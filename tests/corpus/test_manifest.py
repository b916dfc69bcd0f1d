"""The manifest: whole lines, torn tails cut, last record wins, survives a kill between lines."""
import json
import os
import subprocess
import sys

import pytest

from vggish_tf2.corpus.manifest import Manifest
from vggish_tf2.errors import InvalidArgumentError


# --- Manifest -------------------------------------------------------------------------------------------------------
def test_manifest_round_trip_and_last_record_wins(tmp_path):
    with Manifest(tmp_path) as manifest:
        manifest.append({"input": "a.wav", "status": "failed", "error": "a.wav: truncated\nsecond line"})
        manifest.append({"input": "b\nweird ü.wav", "status": "ok", "examples": 3, "duration_seconds": 3.0,
                         "output": tmp_path / "b.npz", "resampler": "soxr_hq"})
        manifest.append({"input": "a.wav", "status": "ok", "examples": 1, "duration_seconds": 1.0, "output": "a.npz"})
    records = Manifest.load(tmp_path)
    assert set(records) == {"a.wav", "b\nweird ü.wav"}
    assert records["a.wav"] == {"input": "a.wav", "status": "ok", "examples": 1, "duration_seconds": 1.0,
                                "output": "a.npz", "error": None}
    assert records["b\nweird ü.wav"]["resampler"] == "soxr_hq"
    assert records["b\nweird ü.wav"]["output"] == os.fspath(tmp_path / "b.npz")
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 3
    assert json.loads(lines[0])["error"] == "a.wav: truncated second line"


def test_manifest_torn_last_line(tmp_path):
    with Manifest(tmp_path) as manifest:
        manifest.append({"input": "a.wav", "status": "ok"})
    with open(tmp_path / "manifest.jsonl", "ab") as f:
        f.write(b'{"input": "b.wav", "sta')  # killed mid-write
    with pytest.warns(UserWarning, match="torn last line"):
        assert set(Manifest.load(tmp_path)) == {"a.wav"}
    with pytest.warns(UserWarning, match="removing a torn last line"):
        with Manifest(tmp_path) as manifest:
            manifest.append({"input": "c.wav", "status": "skipped"})
    assert set(Manifest.load(tmp_path)) == {"a.wav", "c.wav"}
    assert (tmp_path / "manifest.jsonl").read_bytes().count(b"\n") == 2


def test_manifest_torn_first_line_and_garbage(tmp_path):
    (tmp_path / "manifest.jsonl").write_bytes(b'{"inp')
    with pytest.warns(UserWarning, match="removing a torn last line"):
        Manifest(tmp_path).append({"input": "a.wav", "status": "ok"})
    assert (tmp_path / "manifest.jsonl").read_bytes().startswith(b'{"dur')
    with open(tmp_path / "manifest.jsonl", "ab") as f:
        f.write(b"not json\n[1, 2]\n")
    with pytest.warns(UserWarning) as caught:
        assert set(Manifest.load(tmp_path)) == {"a.wav"}
    assert [str(w.message).split(": ", 1)[1] for w in caught] == [
        "ignoring line 2, which is not a manifest record", "ignoring line 3, which is not a manifest record"]
    assert Manifest.load(tmp_path / "nowhere") == {}


def test_manifest_validation(tmp_path):
    manifest = Manifest(tmp_path)
    with pytest.raises(InvalidArgumentError, match="status"):
        manifest.append({"input": "a", "status": "done"})
    with pytest.raises(InvalidArgumentError, match=r"record\['input'\]"):
        manifest.append({"status": "ok"})
    with pytest.raises(InvalidArgumentError, match="not JSON-serialisable"):
        manifest.append({"input": "a", "status": "ok", "x": float("nan")})
    manifest.close()
    assert not (tmp_path / "manifest.jsonl").exists() or (tmp_path / "manifest.jsonl").read_bytes() == b""


def test_manifest_survives_kill_between_lines(tmp_path):
    """A process killed right after append() leaves whole lines only."""
    code = (
        "import os, sys\n"
        "from vggish_tf2.corpus.manifest import Manifest\n"
        "m = Manifest(sys.argv[1])\n"
        "for i in range(5):\n"
        "    m.append({'input': f'f{i}.wav', 'status': 'ok', 'examples': i})\n"
        "os.kill(os.getpid(), 9)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert result.returncode == -9
    records = Manifest.load(tmp_path)
    assert [records[f"f{i}.wav"]["examples"] for i in range(5)] == list(range(5))
