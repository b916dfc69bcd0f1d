"""Where a small `vggish-tf2 embed` run's time goes: the real CLI in this process, with timestamps.

    .venv/bin/python benchmarks/startup.py MODEL_DIR AUDIO_DIR [extra embed flags...]

Wraps (without changing them) the stages of a run and prints, for each, when it started and how
long it took, from process start: importing TensorFlow (inside device configuration), checking
the export's file hashes, loading the SavedModel, building the device step, each device step (the
first one includes tracing), the model fingerprint, and the whole run. Figures go to stderr;
the run's own summary to stdout. See benchmarks/README.md (Start-up).
"""
from __future__ import annotations

import functools
import os
import sys
import tempfile
import time

STARTED = time.perf_counter()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
EVENTS: list[tuple[str, float, float]] = []


def _wrap(owner, name: str, label: str) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    def timed(*args, **kwargs):
        begin = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            EVENTS.append((label, begin - STARTED, time.perf_counter() - begin))

    setattr(owner, name, timed)


def main(argv: list[str]) -> int:
    model_dir, audio_dir, *extra = argv
    from vggish_tf2 import cli, devices, embedder, model, pipeline, runner, tuning  # no TensorFlow yet

    _wrap(devices, "configure_devices", "configure devices (imports TensorFlow)")
    # load_export calls the cached check (a full re-hash only when a file's identity changed).
    _wrap(model, "verify_file_hashes_cached", "verify export file hashes (cached)")
    _wrap(embedder.Embedder, "_load_model", "load export (hashes + SavedModel)")
    _wrap(embedder.Embedder, "__init__", "Embedder() total")
    _wrap(runner.DeviceRunner, "__init__", "DeviceRunner() (step built)")
    _wrap(runner.DeviceRunner, "_run_step", "device step")
    _wrap(pipeline, "model_fingerprint", "model fingerprint")
    _wrap(tuning, "resolve", "tuning (cache or probe)")
    import tensorflow  # noqa: F401  (only to time the saved_model loader below; already imported by the run)

    EVENTS.append(("(import tensorflow, for the loader hook)", 0.0, 0.0))
    _wrap(tensorflow.saved_model, "load", "tf.saved_model.load")
    with tempfile.TemporaryDirectory() as out:
        begin = time.perf_counter()
        verbose = [flag for flag in extra if flag in ("-v", "-vv")]
        extra = [flag for flag in extra if flag not in verbose]
        code = cli.main([*verbose, "embed", audio_dir, "--out", os.path.join(out, "o"), "--model", model_dir, "--quiet", *extra])
        EVENTS.append(("cli.main total", begin - STARTED, time.perf_counter() - begin))
    for label, at, seconds in EVENTS:
        print(f"{at:7.2f} s  {seconds:7.2f} s  {label}", file=sys.stderr)
    print(f"process CPU {time.process_time():.2f} s, wall {time.perf_counter() - STARTED:.2f} s", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
