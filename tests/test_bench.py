"""``vggish-tf2 bench``: the command end to end on the synthetic export, its JSON and report, the
figures' arithmetic, and a GPU faked as tests/devices/fakes.py fakes what tf.config reports."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from devices.conftest import host  # noqa: F401 - the fake host fixture of tests/devices
from devices.fakes import cuda_host
from vggish_tf2 import bench, bench_report, params
from vggish_tf2.bench_machine import ONEDNN_CPU_FLAGS, describe_machine
from vggish_tf2.cli import main
from vggish_tf2.errors import InvalidArgumentError

REPO = Path(__file__).resolve().parent.parent
FIGURE_NAMES = ("device step", "end to end", "audio hours/s", "decoding", "kaiser_best", "soxr_hq",
                "decoding cores", "load average", "CPU flags", "oneDNN cap", "GPU", "TensorFlow")


def _check_spread(spread: dict, *, name: str) -> None:
    assert set(spread) == {"median", "min", "max", "repeats"}, name
    assert spread["repeats"] >= bench.MIN_REPEATS, name
    assert 0 < spread["min"] <= spread["median"] <= spread["max"] < math.inf, name


def test_bench_command_end_to_end(exported_model, tmp_path):
    """The command as a user runs it, on a tiny budget: exit 0, the report names every figure, the
    JSON holds every field with sane values, and a given batch size leaves the tuning cache alone."""
    cache_home = tmp_path / "cache"
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_home)}
    done = subprocess.run(
        [sys.executable, "-m", "vggish_tf2", "bench", "--model", str(exported_model), "--seconds", "0.1",
         "--clips", "1", "--batch-size", "12", "--no-jit-compile", "--json", str(tmp_path / "bench.json")],
        capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr
    for name in FIGURE_NAMES:
        assert name in done.stdout, name
    assert "bench: end to end" in done.stderr  # the phases, on stderr
    figures = json.loads((tmp_path / "bench.json").read_text())
    assert figures["schema"] == bench.SCHEMA and isinstance(figures["vggish_tf2_version"], str)
    assert figures["started_at"].endswith("Z") and 0 < figures["wall_seconds"] < 300
    assert figures["settings"] == {"model": str(exported_model), "device": None, "batch_size": 12,
                                   "jit_compile": False, "resampler": None, "seconds": 0.1, "clips": 1}
    assert figures["model"] == {"path": str(exported_model), "synthetic_weights": True, "frontend_precision": "float64"}
    machine = figures["machine"]
    assert machine["cpu_model"] and set(machine["cpu_flags"]) <= set(ONEDNN_CPU_FLAGS)
    assert machine["logical_cores"] >= machine["usable_cores"] >= 1
    assert machine["tensorflow"].startswith("2.") and machine["device"] == "cpu" and machine["gpus"] == []
    assert machine["device_names"] == ["/device:CPU:0"] and machine["device_preference"] == "auto"
    assert machine["onednn_max_cpu_isa"] == (os.environ.get("ONEDNN_MAX_CPU_ISA") or None)
    assert len(figures["load_average_before"]) == len(figures["load_average_after"]) == 3
    step = figures["device_step"]
    assert (step["batch_size"], step["rows_per_step"], step["jit_compile"], step["tuning"]) == (12, 12, False, "given")
    _check_spread(step["examples_per_second"], name="device step")
    e2e = figures["end_to_end"]
    assert (e2e["clips"], e2e["examples_per_pass"], e2e["resampler"]) == (1, 10, "kaiser_best")  # 10 s -> 10 examples
    _check_spread(e2e["examples_per_second"], name="end to end")
    _check_spread(e2e["audio_hours_per_second"], name="audio hours")
    # audio hours/s and examples/s of the same passes: 10 s of audio per 10 examples
    assert e2e["audio_hours_per_second"]["median"] * 3600 == pytest.approx(e2e["examples_per_second"]["median"])
    assert e2e["share_of_device_step"] > 0
    assert set(figures["decoding"]) == {"kaiser_best", "soxr_hq"}
    for resampler, decoding in figures["decoding"].items():
        _check_spread(decoding["cpu_seconds_per_audio_second"], name=resampler)
        assert decoding["audio_seconds_per_example"] == 1.0 and decoding["cores_per_device"] > 0
    assert figures["decoding_cores_per_device"] == figures["decoding"]["kaiser_best"]["cores_per_device"]
    assert not (cache_home / "vggish-tf2" / "tuning.json").exists()  # embed with --batch-size writes none either


def test_decoding_cores_are_device_rate_times_cost_per_example(tmp_path):
    """cores = examples/s x CPU s per audio s x audio s per example, on a generated 10-s clip."""
    clips = bench.write_clips(tmp_path, 1)
    embedder = types.SimpleNamespace(hop_samples=params.EXAMPLE_HOP_SAMPLES, short_clips="drop",
                                     sample_dtype=np.float64)
    decoding = bench.measure_decoding(clips, resampler="soxr_hq", embedder=embedder, seconds=0.0,
                                      examples_per_second_per_device=500.0)
    assert decoding.audio_seconds_per_example == 1.0  # 10 examples of a 10-s clip
    assert decoding.cpu_seconds_per_audio_second.repeats == bench.MIN_REPEATS  # no budget: the minimum
    assert decoding.cores_per_device == pytest.approx(500.0 * decoding.cpu_seconds_per_audio_second.median)
    assert 0 < decoding.cpu_seconds_per_audio_second.median < 1  # decoding is far faster than real time


def test_repeat_runs_the_minimum_then_while_the_budget_lasts():
    values = iter(range(1, 1000))
    spread = bench.repeat(lambda: float(next(values)), seconds=0.0)
    assert spread == bench.Spread(median=2.0, min=1.0, max=3.0, repeats=bench.MIN_REPEATS)
    spread = bench.repeat(lambda: 1.0, seconds=60.0)  # each call instant: the cap ends it
    assert spread.repeats == bench.MAX_REPEATS


def test_settings_refuse_bad_values():
    with pytest.raises(InvalidArgumentError, match=r"seconds=0 must be a number of seconds > 0"):
        bench.BenchSettings(seconds=0)
    with pytest.raises(InvalidArgumentError, match=r"clips=0 must be a positive integer"):
        bench.BenchSettings(clips=0)
    assert main(["bench", "--seconds", "0"]) == 2  # argparse's usage error, before anything runs


def _result(machine) -> bench.BenchResult:
    spread = bench.Spread(median=100.0, min=90.0, max=110.0, repeats=3)
    step = bench.DeviceStep(batch_size=96, rows_per_step=96, jit_compile=True, tuning="cache",
                            examples_per_second=spread)
    e2e = bench.EndToEnd(clips=8, clip_seconds=10.0, clip_rate_hz=44100, clip_channels=2, resampler="kaiser_best",
                         workers=3, examples_per_pass=80, examples_per_second=spread,
                         audio_hours_per_second=bench.Spread(median=0.0278, min=0.025, max=0.03, repeats=3),
                         share_of_device_step=1.0)
    cost = bench.Spread(median=0.002, min=0.001, max=0.003, repeats=3)
    decoding = tuple(bench.Decoding(resampler=r, cpu_seconds_per_audio_second=cost, audio_seconds_per_example=1.0,
                                    cores_per_device=0.2) for r in ("soxr_hq", "kaiser_best"))
    return bench.BenchResult(vggish_tf2_version="0.1.0", started_at="2026-12-03T00:00:00Z", wall_seconds=40.0,
                             settings=bench.BenchSettings(),
                             model={"path": "models/vggish", "synthetic_weights": False,
                                    "frontend_precision": "float32"},
                             machine=machine, load_average_before=(0.5, 0.4, 0.3), load_average_after=(1.5, 0.6, 0.4),
                             device_step=step, end_to_end=e2e, decoding=decoding)


def test_a_gpu_shows_its_model_and_memory(host, monkeypatch):  # noqa: F811 - the imported fixture
    """A CUDA GPU as tf.config and nvidia-smi report it (faked): named with its memory in the
    machine, the report and the JSON; the oneDNN cap is reported as set."""
    cuda_host(host)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    machine = describe_machine(device_preference="auto")
    assert (machine.device, machine.device_names, machine.onednn_max_cpu_isa) == ("gpu", ("/device:GPU:0",), "AVX2")
    (gpu,) = machine.gpus
    assert (gpu.name, gpu.memory_bytes, gpu.compute_capability, gpu.used) == (
        "NVIDIA GeForce RTX 3060", 12 << 30, "8.6", True)
    report = bench_report.format_report(_result(machine))
    assert "  GPU            NVIDIA GeForce RTX 3060, 12.0 GiB (11.7 GiB free), compute capability 8.6 " \
           "(/device:GPU:0, used)" in report.splitlines()
    assert "  oneDNN cap     ONEDNN_MAX_CPU_ISA=AVX2" in report.splitlines()
    figures = json.loads(bench_report.to_json(_result(machine)))
    assert figures["machine"]["gpus"][0]["name"] == "NVIDIA GeForce RTX 3060"
    assert figures["machine"]["gpus"][0]["memory_bytes"] == 12 << 30
    assert figures["decoding_cores_per_device"] == 0.2


def test_json_to_stdout_puts_the_report_on_stderr(monkeypatch, capsys):
    result = _result(describe_machine(device_preference="cpu"))
    monkeypatch.setattr(bench, "run_bench", lambda settings, on_phase: result)
    assert main(["bench", "--json", "-"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == json.loads(bench_report.to_json(result))
    assert "decoding cores 0.2 per device with kaiser_best (0.2 with soxr_hq): the CPU cores" in err


def test_a_missing_model_is_one_line_naming_it(tmp_path, capsys):
    assert main(["bench", "--model", str(tmp_path / "nowhere"), "--batch-size", "12"]) == 1
    err = capsys.readouterr().err
    assert f"error: {tmp_path / 'nowhere'}: no model here" in err and "Traceback" not in err


def test_json_path_that_is_a_directory_fails_before_measuring(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(bench, "run_bench", lambda settings, on_phase: pytest.fail("measured"))
    assert main(["bench", "--json", str(tmp_path)]) == 2
    assert f"error: --json {tmp_path}: is a directory; give a file name" in capsys.readouterr().err
