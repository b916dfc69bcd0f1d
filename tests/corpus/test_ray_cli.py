"""What a user sees on stderr from `vggish-tf2 embed --engine ray` (vggish_tf2.cli): the local
engine's lines (its warnings, the summary on stdout), not Ray's start-up notes or the TensorFlow
start-up lines of the embedder actors; -v hides nothing; Ray's errors always pass.

The lines below are the ones a run printed on this machine (Ray 2.60, TensorFlow 2.21, no GPU)
before the CLI hid them, and lines of a run whose actors could not start (which must pass).
"""
from __future__ import annotations

import os
import subprocess
import sys
import numpy as np
import pytest
import soundfile as sf

from vggish_tf2 import cli

WORKER = "\x1b[36m(MapWorker(MapBatches(EmbedderActor)) pid=27936)\x1b[0m "
RAY_CHATTER = [
    "2026-12-02 12:54:48,405\tWARNING authentication_token_setup.py:85 -- Token authentication is enabled for this "
    "Ray cluster. Set RAY_AUTH_MODE=disabled to opt out. For more information, see "
    "https://docs.ray.io/en/latest/ray-security/token-auth.html",
    "[2026-12-02 12:54:52,089 E 27704 27704] core_worker.cc:2465: Actor with class name: "
    "'MapWorker(MapBatches(EmbedderActor))' and ID: '9f6ca99c95b8c2b14f891d2101000000' has constructor arguments in "
    "the object store and max_restarts > 0. If the arguments in the object store go out of scope or are lost, the "
    "actor restart will fail. See https://github.com/ray-project/ray/issues/53727 for more details.",
    "2026-12-02 12:54:52,090\tWARNING __init__.py:28 -- Progress bars disabled. To enable, set "
    "`ray.data.DataContext.get_current().enable_progress_bars = True`.",
    WORKER + "vggish: SYNTHETIC WEIGHTS: these are not VGGish embeddings",
    "2026-12-02 12:54:59,421\tINFO streaming_executor.py:371 -- \u2714\ufe0f  Dataset dataset_0357iC38jfJ6NltGWfzY7y_0 "
    "execution finished in 7.37 seconds",
]
TF_CHATTER = [
    WORKER + "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    WORKER + "I0000 00:00:1796216094.861143   27936 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders. To turn "
    "them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.",
    WORKER + "I0000 00:00:1796216094.862379   27936 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU "
    "will not be used.",
]
KEPT = [
    "WARNING: vggish: SYNTHETIC WEIGHTS: these are not VGGish embeddings",  # the driver's, once
    "WARNING: failed: /data/bad.wav: not audio (a text file)",
    "2026-12-02 13:00:34,053\tWARNING authentication_token_setup.py:73 -- Token authentication is disabled for this "
    "Ray cluster. Anyone with network access to the cluster can run arbitrary code and access its data.",
    "\x1b[36m(MapWorker(MapBatches(EmbedderActor)) pid=30622)\x1b[0m Exception raised in creation task: The actor died "
    "because of an error raised in its creation task",
    "\x1b[36m(MapWorker(MapBatches(EmbedderActor)) pid=30622)\x1b[0m vggish_tf2.errors.ModelNotFoundError: "
    "/data/elsewhere: no model here.",
    "2026-12-02 13:00:23,484\tERROR actor_pool_map_operator.py:414 -- MapBatches(EmbedderActor): actors died during "
    "initialization 1 consecutive time(s) (max_consecutive_actor_init_deaths=0); failing execution.",
    "2026-12-02 13:00:23,487\tINFO streaming_executor.py:371 -- \u26a0\ufe0f  Dataset dataset_0357iKNjZXY4EF0UeezRLd_0 "
    "execution failed",
    "error: an embedder actor could not start: /data/elsewhere: no model here.",
]


def through_filter(capfd, noise, writes: list[str]) -> str:
    """What reaches stderr of ``writes`` (each one write to file descriptor 2) through the filter."""
    capfd.readouterr()
    with cli._StderrFilter(noise):
        for text in writes:
            os.write(2, text.encode())
    return capfd.readouterr().err


def test_the_filter_drops_rays_chatter_and_keeps_warnings_errors_and_the_progress_line(capfd):
    noise = RAY_CHATTER + TF_CHATTER
    interleaved = [line + "\n" for pair in zip(noise, KEPT) for line in pair] + [line + "\n" for line in KEPT[len(noise):]]
    err = through_filter(capfd, cli._RAY_AND_TF_NOISE, ["\rfiles 1/2", "\r          \r", *interleaved, "\rfiles 2/2", "\n"])
    assert err == "\rfiles 1/2\r          \r" + "".join(line + "\n" for line in KEPT) + "\rfiles 2/2\n"


def test_the_filter_keeps_tensorflows_lines_when_the_user_set_its_log_level(capfd):
    err = through_filter(capfd, cli._RAY_NOISE, [line + "\n" for line in RAY_CHATTER + TF_CHATTER])
    assert err == "".join(line + "\n" for line in TF_CHATTER)


def test_verbose_hides_nothing(capfd, monkeypatch, tmp_path):
    """-v: what Ray writes during the run reaches stderr as it is (no filter on the way)."""
    from vggish_tf2.corpus import run
    from vggish_tf2.corpus.summary import RunSummary

    def chatty_run(*args, options, **kwargs):
        assert options.engine == "ray"
        for line in RAY_CHATTER + TF_CHATTER:
            os.write(2, (line + "\n").encode())
        return RunSummary(out_dir=tmp_path, output_format="npz")

    monkeypatch.setattr(run, "embed_corpus", chatty_run)
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)  # a user's environment (the CLI sets it)
    for verbosity, shown in ([], []), (["-v"], RAY_CHATTER + TF_CHATTER):
        capfd.readouterr()
        assert cli.main([*verbosity, "embed", str(tmp_path), "--out", str(tmp_path / "out"), "--engine", "ray"]) == 0
        assert [line for line in capfd.readouterr().err.splitlines() if line] == shown


def test_a_ray_run_shows_what_a_local_run_shows(exported_model, tmp_path):
    """A real run in a fresh process (a user's environment: no TF_CPP_MIN_LOG_LEVEL): stderr holds
    the driver's synthetic-weights warning once, no line of Ray's or of its workers."""
    pytest.importorskip("ray.data")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    sf.write(corpus / "a.wav", np.random.default_rng(0).uniform(-0.1, 0.1, 16000).astype(np.float32), 16000)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-m", "vggish_tf2", "embed", str(corpus), "--out", str(tmp_path / "out"),
                           "--model", str(exported_model), "--engine", "ray", "--device", "cpu", "--batch-size", "12",
                           "--no-jit-compile"], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert "files      1 total: 1 ok" in done.stdout
    assert done.stderr.count("SYNTHETIC WEIGHTS") == 1, done.stderr
    assert f"WARNING: {exported_model}: SYNTHETIC WEIGHTS" in done.stderr
    for marker in ("Token authentication is enabled", "Progress bars disabled", "execution finished",
                   "core_worker.cc", "absl::InitializeLog", "cudart_stub", "oneDNN", "pid="):
        assert marker not in done.stderr, done.stderr
