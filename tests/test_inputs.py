"""inputs.expand_inputs: files, directories (walked recursively), globs and list files, each named by
its path relative to the inputs' common root. No model needed."""
import numpy as np
import pytest
import soundfile as sf

from vggish_tf2.errors import InvalidArgumentError
from vggish_tf2.inputs import expand_inputs


def write_noise(path, seconds, *, rate=16000, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = (0.1 * np.random.default_rng(seed).standard_normal(int(round(seconds * rate)))).astype(np.float32)
    sf.write(path, samples, rate)
    return path


@pytest.fixture
def corpus(tmp_path):
    """corpus/{a.wav, sub/b.wav, sub/deeper/c.flac, sub/short.wav} + non-audio noise."""
    root = tmp_path / "corpus"
    write_noise(root / "a.wav", 0.2, seed=1)
    write_noise(root / "sub" / "b.wav", 0.2, seed=2)
    write_noise(root / "sub" / "deeper" / "c.flac", 0.2, seed=3)
    write_noise(root / "sub" / "short.wav", 0.1, seed=4)
    (root / "notes.txt").write_text("not audio")
    (root / ".hidden.wav").write_bytes(b"junk")
    return root


def test_expand_directory_walks_audio_only_and_mirrors(corpus):
    items = expand_inputs([corpus])
    assert [i.relative for i in items] == ["a.wav", "sub/b.wav", "sub/deeper/c.flac", "sub/short.wav"]
    assert all(i.path.is_absolute() for i in items)


def test_expand_globs_lists_files_dedupes_and_common_root(corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (corpus / "sub" / "UPPER.WAV").write_bytes(b"x")
    items = expand_inputs(["corpus/sub/**/*.wav", "corpus/a.wav", "corpus/a.wav"])
    # The glob's tree starts at corpus/sub; with corpus/a.wav the common root is corpus. Globs
    # match case as the shell does; directory walks take any case of an audio extension.
    assert [i.relative for i in items] == ["sub/b.wav", "sub/short.wav", "a.wav"]
    assert [i.relative for i in expand_inputs(["corpus/sub/*.wav"])] == ["b.wav", "short.wav"]
    assert "sub/UPPER.WAV" in [i.relative for i in expand_inputs(["corpus"])]

    listed = tmp_path / "list.txt"
    listed.write_text(f"# a comment\n\ncorpus/sub/deeper/c.flac\n{corpus / 'a.wav'}\ncorpus/missing.wav\n")
    items = expand_inputs([], list_files=[listed])
    assert [i.relative for i in items] == ["sub/deeper/c.flac", "a.wav", "missing.wav"]  # missing: fails in the run


def test_expand_two_directories_and_excludes_out_dir(corpus, tmp_path):
    other = tmp_path / "other"
    write_noise(other / "x.wav", 0.1)
    out_dir = corpus / "out"
    write_noise(out_dir / "leftover.wav", 0.1)
    relatives = [i.relative for i in expand_inputs([corpus, other], exclude=out_dir)]
    assert relatives[0] == "corpus/a.wav" and relatives[-1] == "other/x.wav"
    assert not any(r.startswith("corpus/out/") for r in relatives)


def test_expand_nothing_found_is_a_usage_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidArgumentError, match="no audio files found in .*empty"):
        expand_inputs([tmp_path / "empty", str(tmp_path / "*.nothing")])
    with pytest.raises(InvalidArgumentError, match="cannot read the list file"):
        expand_inputs([], list_files=[tmp_path / "absent.txt"])
