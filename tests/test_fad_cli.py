"""`vggish-tf2 fad` and `vggish-tf2 stats` on generated corpora, with the synthetic export.

Google's distorted-sine test, scaled down: sines at 100..1000 Hz as 16-bit WAV, and copies with
Gaussian noise added (stddev relative to the peak, as gen_test_files.add_noise). With synthetic
weights only the trend is checked (FAD grows with the noise), not Google's figures.

The commands run through the main CLI (vggish_tf2.cli.main, which registers them). One Embedder
is shared by the module (building one takes seconds).
"""
import importlib.util
import json
import sys

import numpy as np
import pytest
import soundfile as sf

from vggish_tf2 import cli as main_cli
from vggish_tf2 import audio, windows
from vggish_tf2.fad import cli as fad_cli
from vggish_tf2.fad import load_stats
from vggish_tf2.fad.corpus import FadSettings, google_windows, load_side

RATE = 16000
# Noise stddevs relative to the peak; Google's test uses 1e-4 and 1e-5. With the synthetic weights
# FAD (40 examples a side) measured 0.52, 11.3, 57.2 at these levels, then saturates: 73.0 at
# 0.03, 65.2 at 0.1, 59.0 at 0.3 (6-s files, 110 examples: the same within 1 %).
LEVELS = (0.0001, 0.001, 0.01)


@pytest.fixture(scope="module")
def embedder(exported_model):
    from vggish_tf2.embedder import Embedder

    return Embedder(exported_model, device="cpu", batch_size=32, workers=1, hop_seconds=0.5)


@pytest.fixture
def run(monkeypatch, embedder):
    """Run `vggish-tf2 ARGS...` through vggish_tf2.cli.main."""

    def shared(self, settings):
        self.embedder = embedder
        return embedder

    monkeypatch.setattr(fad_cli._EmbedderCache, "__call__", shared)

    def run(*argv):
        return main_cli.main([str(a) for a in argv])
    return run


def sine(freq, seconds=3.0, noise=0.0, seed=0):
    t = np.arange(int(seconds * RATE)) / RATE
    samples = np.sin(2 * np.pi * freq * t)
    if noise:
        samples = samples + np.random.default_rng(seed).normal(0, noise, len(samples))
    return np.clip(samples, -1, 32767 / 32768)


def write_corpus(root, noise=0.0, count=8, seconds=3.0):
    root.mkdir(parents=True, exist_ok=True)
    for i, freq in enumerate(np.linspace(100, 1000, count)):
        sf.write(root / f"sin_{freq:.0f}.wav", sine(freq, seconds, noise, seed=i), RATE, subtype="PCM_16")
    return root


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("fad_corpora")
    return {
        "background": write_corpus(root / "background"),
        **{level: write_corpus(root / f"noise_{level}", noise=level) for level in LEVELS},
    }


# --- the google preset ------------------------------------------------------------------------------
@pytest.mark.parametrize("length", [15599, 15600, 15999, 16000, 23599, 23600, 23999, 24000, 40000, 47950])
def test_google_windows_are_googles_slices(length):
    rng = np.random.default_rng(length)
    x = rng.uniform(-0.05, 0.05, length)  # quiet: the max(0.1, ...) floor applies
    got = google_windows(x)
    starts = list(range(0, length - 16000 + 1, 8000))  # Google: a slice every 8000 while 16000 fit
    assert len(got) == len(starts)
    for row, start in zip(got, starts):
        np.testing.assert_array_equal(row, (x[start:start + 15600] / 0.1).astype(np.float32))
    # Our Embedder at hop 0.5 s makes one more example exactly when a window fits but a slice does not.
    embedder_count = windows.count_examples(length, hop_samples=8000)
    assert embedder_count - len(starts) == (1 if length >= 15600 and (length - 15600) % 8000 < 400 else 0)


def test_google_scaling_uses_the_signed_maximum():
    x = np.r_[np.full(16000, -0.8), [0.4]]
    np.testing.assert_allclose(google_windows(x)[0][:3], [-2.0, -2.0, -2.0])  # -0.8 / 0.4, not / 0.8
    with pytest.raises(ValueError, match="44100 Hz; the google preset does no resampling"):
        google_windows(x, path="song.wav", sample_rate=44100)


def test_presets_state_their_choices():
    google = FadSettings.for_preset("google").as_dict()
    assert (google["hop_seconds"], google["short_clips"], google["resampler"], google["embedding"]) == (0.5, "drop", None, "raw")
    assert google["loudness_normalization"] == "x / max(0.1, max(x)) per file"
    default = FadSettings.for_preset("default", hop_seconds=0.48)
    assert default.hop_seconds == 0.48 and default.resampler == audio.DEFAULT_RESAMPLER == "kaiser_best" and not default.peak_normalize
    with pytest.raises(ValueError, match="preset='fadtk'"):
        FadSettings.for_preset("fadtk")


# --- the commands -------------------------------------------------------------------------------------
def test_corpus_against_itself_is_zero(run, corpora, tmp_path, capsys):
    report_path = tmp_path / "r.json"
    assert run("fad", corpora["background"], corpora["background"], "--preset", "google", "--report", report_path) == 0
    report = json.loads(report_path.read_text())
    assert report["fad"] == 0.0
    assert report["baseline"]["examples"] == 8 * 5 and report["baseline"]["files_ok"] == 8  # 3 s: slices at 0..2 s
    settings = report["settings"]
    assert (settings["preset"], settings["hop_seconds"], settings["resampler"], settings["embedding"]) == ("google", 0.5, None, "raw")
    assert settings["synthetic_weights"] is True and settings["model_hash"].startswith("sha256")
    out = capsys.readouterr()
    assert "FAD                0" in out.out and "SYNTHETIC WEIGHTS" in out.err


def test_fad_grows_with_the_distortion(embedder, corpora):
    """Google's distorted-sine test's trend (synthetic weights: the trend only)."""
    settings = FadSettings.for_preset("google")
    base = load_side(corpora["background"], settings, embedder_factory=lambda s: embedder)
    from vggish_tf2.fad import frechet_distance

    values = [frechet_distance(base.stats, load_side(corpora[level], settings, embedder_factory=lambda s: embedder).stats)
              for level in LEVELS]
    assert 0 < values[0] < values[1] < values[2], values


@pytest.fixture(scope="module")
def embedded(tmp_path_factory, corpora, embedder):
    """`vggish-tf2 embed` outputs (npz) of the background and of the 0.001-noise copy."""
    from vggish_tf2.pipeline import embed_corpus

    root = tmp_path_factory.mktemp("fad_embedded")
    for name in ("background", 0.001):
        embed_corpus([corpora[name]], out_dir=root / str(name), embedder=embedder)
    return root / "background", root / "0.001"


def test_stats_files_of_every_format_are_sides(run, embedded, tmp_path, capsys):
    background, noisy = embedded
    for file_format in ("vggish-tf2", "fadtk", "google"):
        assert run("stats", background, "--out", tmp_path / file_format, "--format", file_format) == 0
    assert "40 examples from 8 files (0 skipped, 0 failed)" in capsys.readouterr().out  # 3 s at hop 0.5: 5 each
    ours, info = load_stats(tmp_path / "vggish-tf2")
    assert ours.count == 40 and info["metadata"]["settings"]["hop_seconds"] == 0.5
    # Our float64 file against the embed outputs it came from: identical statistics, exactly 0.
    assert run("fad", tmp_path / "vggish-tf2", background, "--report", tmp_path / "r.json") == 0
    assert json.loads((tmp_path / "r.json").read_text())["fad"] == 0.0
    reference = None
    for file_format in ("vggish-tf2", "fadtk", "google"):
        assert run("fad", tmp_path / file_format, noisy, "--report", tmp_path / "r.json") == 0
        value = json.loads((tmp_path / "r.json").read_text())["fad"]
        reference = value if reference is None else reference
        assert value == pytest.approx(reference, rel=1e-4)  # google: float32-rounded statistics
    # Refuses to replace a statistics file unless asked; converts formats.
    assert run("stats", background, "--out", tmp_path / "fadtk", "--format", "fadtk") == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert run("stats", tmp_path / "google", "--out", tmp_path / "converted.npz") == 0


def test_interval_inf_per_file_kad_and_plot(run, embedded, tmp_path, capsys):
    background, noisy = embedded
    report_path, plot_path = tmp_path / "r.json", tmp_path / "fad.png"
    # --plot implies --inf and --per-file; without matplotlib (not in the dev extra) ask for them.
    plotting = importlib.util.find_spec("matplotlib") is not None
    extra = ["--plot", plot_path] if plotting else ["--inf", "--per-file"]
    status = run("fad", background, noisy, "--ci", "0.9", "--bootstrap", "30", "--kad", *extra, "--report", report_path)
    assert status == 0
    report = json.loads(report_path.read_text())
    assert report["ci"]["low"] <= report["fad"] <= report["ci"]["high"] and report["ci"]["replicates"] == 30
    # The last FAD-inf point is all 40 examples; its statistics are summed in another order than the
    # per-file ones, and 40 < 128 examples (rank-deficient) amplify the rounding: measured 4.7e-9.
    assert report["fad_inf"]["points"][-1] == [40, pytest.approx(report["fad"], rel=1e-6)]
    assert len(report["per_file"]) == 8 and {"file", "delta", "relative", "fad_alone", "examples"} <= set(report["per_file"][0])
    assert report["kad"]["kernel"] == "gaussian_rbf" and report["kad"]["baseline_examples"] == 40
    if plotting:
        assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "90% interval" in out and "FAD-inf" in out and "KAD" in out


def test_bad_inputs_name_the_file_and_the_problem(run, embedded, corpora, tmp_path, capsys):
    import shutil

    background, _ = embedded
    broken = tmp_path / "broken"
    shutil.copytree(background, broken)
    victim = sorted(broken.glob("*.npz"))[0]
    np.savez(victim, embedding=np.full((3, 128), np.nan, np.float32))
    assert run("fad", background, broken, "--report", tmp_path / "r.json") == 1
    err = capsys.readouterr().err
    assert f"{victim.name}: embedding holds non-finite values" in err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["eval"]["files_failed"] == 1 and report["eval"]["files_ok"] == 7

    (tmp_path / "junk.bin").write_bytes(b"\x00\x01garbage")
    assert run("fad", tmp_path / "junk.bin", background) == 2
    assert "junk.bin: not a statistics file" in capsys.readouterr().err

    assert run("stats", background, "--out", tmp_path / "s.npz") == 0
    assert run("fad", tmp_path / "s.npz", tmp_path / "s.npz", "--ci", "0.95", "--report", tmp_path / "r.json") == 2
    assert "needs the files of at least one side" in capsys.readouterr().err

    loud = tmp_path / "rate"
    loud.mkdir()
    sf.write(loud / "a.wav", sine(440, 2.0), 22050)
    sf.write(loud / "b.wav", sine(440, 3.0), RATE)
    sf.write(loud / "c.wav", sine(440, 3.0), RATE)
    assert run("fad", corpora["background"], loud, "--preset", "google", "--report", tmp_path / "r.json") == 1
    assert "a.wav: 22050 Hz; the google preset does no resampling" in capsys.readouterr().err


def test_plot_without_matplotlib_says_how_to_install(run, embedded, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    background, noisy = embedded
    assert run("fad", background, noisy, "--plot", tmp_path / "p.png", "--report", tmp_path / "r.json") == 2
    assert "--plot needs matplotlib: pip install 'vggish-tf2[plot]'" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()  # refused before any work
