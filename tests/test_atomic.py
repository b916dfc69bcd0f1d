"""Atomic writes leave no temporary behind; temporaries of a killed run are found and removed."""
import os
import subprocess
import sys

import numpy as np
import pytest

from vggish_tf2 import atomic, outputs
from vggish_tf2.errors import OutputError


# --- Temporaries left by a killed run -------------------------------------------------------------------------------
def test_remove_stale_temporaries(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    (tmp_path / "a").mkdir()
    stale = [tmp_path / f".x.wav.npz.tmp-{dead_pid}-0123abcd", tmp_path / "a" / f".y.parquet.tmp-{dead_pid}-deadbeef"]
    live = tmp_path / f".z.npz.tmp-{os.getpid()}-00000000"  # this process: may be mid-write
    keep = [tmp_path / "x.wav.npz", tmp_path / ".hidden", tmp_path / f".x.tmp-{dead_pid}-nothex!!", live]
    for path in stale + keep:
        path.write_bytes(b"x")
    outside = tmp_path.parent / f"outside-{dead_pid}"
    outside.mkdir(exist_ok=True)
    (outside / f".o.npz.tmp-{dead_pid}-0123abcd").write_bytes(b"x")
    os.symlink(outside, tmp_path / "link")  # not followed
    removed = atomic.remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted(stale)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in stale)
    assert (outside / f".o.npz.tmp-{dead_pid}-0123abcd").exists()


def test_temporary_names_match_the_cleanup_pattern(tmp_path, monkeypatch):
    """A write killed mid-way leaves a file that remove_stale_temporaries recognises."""
    seen = []
    real_replace = os.replace

    def spy_replace(src, dst):
        seen.append(os.path.basename(src))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy_replace)
    long_name = "n" * 250 + ".npz"
    outputs.write_npz(tmp_path / long_name, embedding=np.zeros((1, 128), np.float32), postprocessed=None,
                      timestamps=[0.0], metadata={})
    assert len(seen) == 1 and atomic._TEMP_PATTERN.match(seen[0]) and len(seen[0]) < 256


def test_atomic_output_lets_bugs_through_unchanged(tmp_path):
    """atomic_output turns OS errors into OutputError naming the file, and nothing else."""
    with pytest.raises(MemoryError):
        with atomic.atomic_output(tmp_path / "a.npz"):
            raise MemoryError
    with pytest.raises(OutputError, match=r"a\.npz: cannot write \(No space left on device\)"):
        with atomic.atomic_output(tmp_path / "a.npz"):
            raise OSError(28, "No space left on device")
    assert list(tmp_path.iterdir()) == []
