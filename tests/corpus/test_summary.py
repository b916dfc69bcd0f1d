"""corpus.summary.RunSummary: counted from manifest records; its closing text. No model."""
from pathlib import Path

from vggish_tf2 import summary as old_summary
from vggish_tf2.corpus.summary import RunSummary


def test_count_records():
    summary = RunSummary(out_dir=Path("out"), output_format="npz", files=5)
    summary.count({"input": "a.wav", "status": "ok", "examples": 3, "duration_seconds": 3.1})
    summary.count({"input": "s.wav", "status": "skipped", "examples": 0, "duration_seconds": 0.5})
    summary.count({"input": "b.wav", "status": "failed", "error": "/in/b.wav: not audio\n(a text file)"},
                  path=Path("/in/b.wav"))
    # Decoded, then the write failed: its audio counts, its examples do not.
    summary.count({"input": "c.wav", "status": "failed", "examples": 2, "duration_seconds": 2.0,
                   "error": "/out/c.wav.npz: cannot write (No space left on device)"}, path=Path("/in/c.wav"))
    assert (summary.ok, summary.skipped, summary.failed, summary.not_done) == (1, 1, 2, 1)
    assert summary.examples == 3 and summary.audio_seconds == 3.1 + 0.5 + 2.0
    assert summary.failures == [("b.wav", "not audio (a text file)"),
                                ("c.wav", "/out/c.wav.npz: cannot write (No space left on device)")]
    assert summary.exit_status == 1
    assert "5 total: 1 ok, 2 failed, 1 skipped (too short), 0 already done, 1 not done" in summary.format()


def test_old_import_path():
    assert old_summary.RunSummary is RunSummary
