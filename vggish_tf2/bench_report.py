"""``vggish-tf2 bench``: its command line, the report a person reads, and the JSON to share.

    vggish-tf2 bench                          # ~30-60 s on a 2-core CPU
    vggish-tf2 bench --json bench.json        # also write the figures as JSON
    vggish-tf2 bench --json - > bench.json    # JSON on stdout, the report on stderr

The measurements are :mod:`vggish_tf2.bench`'s; this module only reads its result. Importing it
does not import TensorFlow (the parser is built for every command).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from vggish_tf2.errors import InvalidArgumentError

GIB = 1 << 30
CHOSEN = {"cache": "from the tuning cache", "probe": "measured now, and cached", "given": "as given"}
# The RunOptions fields the bench takes, with the flags, types and choices ``embed`` gives them.
SHARED_FLAGS = ("model", "device", "batch_size", "jit_compile", "resampler")
HELP = {
    "model": "converted model directory (default: VGGISH_MODEL_DIR or models/vggish)",
    "device": "where to run (default: VGGISH_DEVICE_PREFERENCE or auto)",
    "batch_size": "examples per device per step (default: auto, as embed: the tuning cache, or measured and "
                  "cached once per machine and model; a given size leaves the cache alone)",
    "jit_compile": "XLA-compile the device step (default: as embed chooses it)",
    "resampler": "the end-to-end run's resampler (default kaiser_best); decoding is measured with each",
}


def add_bench_command(commands) -> argparse.ArgumentParser:
    """The ``bench`` subcommand on ``commands`` (the CLI's subparsers)."""
    from vggish_tf2.bench import DEFAULT_CLIPS, DEFAULT_SECONDS  # numpy only: no TF at parse time
    from vggish_tf2.options import RunOptions, positive_float, positive_int

    bench = commands.add_parser(
        "bench", help="measure this machine: device step, end to end, decoding; print and write JSON",
        description="Measure VGGish on this machine: the device step's examples/s, the whole pipeline's "
                    "examples/s and audio hours/s on generated clips, the CPU cost of decoding, and the "
                    "decoding cores one device needs. Each figure is the median and min-max of a few repeats.")
    fields = {field.name: field for field in dataclasses.fields(RunOptions)}
    for name in SHARED_FLAGS:
        meta = fields[name].metadata
        bench.add_argument(meta["flag"], dest=name, default=None if name != "batch_size" else "auto",
                           help=HELP[name], **meta["argparse"])
    bench.add_argument("--seconds", type=positive_float, default=DEFAULT_SECONDS, metavar="S",
                       help=f"time budget of each measurement (default {DEFAULT_SECONDS:g})")
    bench.add_argument("--clips", type=positive_int, default=DEFAULT_CLIPS, metavar="N",
                       help=f"generated 10-s clips per end-to-end pass (default {DEFAULT_CLIPS})")
    bench.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH ('-': stdout, "
                                                      "and the report goes to stderr)")
    bench.set_defaults(handler=run_command, parser=bench)
    return bench


def run_command(args: argparse.Namespace, handler=None) -> int:
    """``vggish-tf2 bench``: measure, print the report, write the JSON; 0 when done."""
    from vggish_tf2.bench import BenchSettings, run_bench

    if args.json not in (None, "-") and Path(args.json).is_dir():
        raise InvalidArgumentError(f"--json {args.json}: is a directory; give a file name")
    settings = BenchSettings(model=args.model, device=args.device, batch_size=args.batch_size,
                             jit_compile=args.jit_compile, resampler=args.resampler, seconds=args.seconds,
                             clips=args.clips)
    report_stream = sys.stderr if args.json == "-" else sys.stdout
    result = run_bench(settings, on_phase=lambda text: print(f"bench: {text}", file=sys.stderr, flush=True))
    print(format_report(result), file=report_stream, flush=True)
    if args.json == "-":
        print(to_json(result), flush=True)
    elif args.json is not None:
        write_json(result, args.json)
    return 0


def to_json(result) -> str:
    return json.dumps(result.as_dict(), indent=2)


def write_json(result, path) -> Path:
    """``result`` as JSON at ``path``, written atomically (OutputError naming it when it cannot be)."""
    from vggish_tf2.atomic import atomic_output

    with atomic_output(path) as temp:
        temp.write_text(to_json(result) + "\n", encoding="utf-8")
    return Path(path)


def _gib(n: int | None) -> str:
    return "unknown" if n is None else f"{n / GIB:.1f} GiB"


def _spread(spread, unit: str, digits: str = ".1f") -> str:
    return (f"{spread.median:{digits}} {unit} (median of {spread.repeats}, "
            f"{spread.min:{digits}}-{spread.max:{digits}})")


def _load(load) -> str:
    return "unknown" if load is None else " ".join(f"{x:.2f}" for x in load)


def _gpu_lines(machine) -> list[str]:
    if not machine.gpus:
        return ["  GPU            none"]
    lines = []
    for gpu in machine.gpus:
        memory = _gib(gpu.memory_bytes) + (f" ({_gib(gpu.free_memory_bytes)} free)" if gpu.free_memory_bytes else "")
        memory += " unified (host RAM)" if gpu.kind == "metal" else ""
        extra = f", compute capability {gpu.compute_capability}" if gpu.compute_capability else ""
        where = f"{gpu.tf_name or 'hidden'}{', used' if gpu.used else ''}"
        lines.append(f"  GPU            {gpu.name}, {memory}{extra} ({where})")
    return lines


def _machine_lines(result) -> list[str]:
    machine = result.machine
    cuda = f"CUDA {machine.tensorflow_cuda} build" if machine.tensorflow_cuda else "no CUDA"
    lines = [
        "machine",
        f"  CPU            {machine.cpu_model}, {machine.logical_cores} cores ({machine.usable_cores} usable), "
        f"{_gib(machine.host_memory_bytes)} RAM",
        f"  CPU flags      {' '.join(machine.cpu_flags) or 'none of those oneDNN uses'}",
        f"  oneDNN cap     {f'ONEDNN_MAX_CPU_ISA={cap}' if (cap := machine.onednn_max_cpu_isa) else 'none'}",
        *_gpu_lines(machine),
        f"  TensorFlow     {machine.tensorflow} ({cuda}), Python {machine.python}, {machine.platform}",
        f"  device         {machine.device} ({', '.join(machine.device_names)}), "
        f"preference {machine.device_preference}",
    ]
    if machine.environment:
        lines.append("  environment    " + " ".join(f"{k}={v}" for k, v in machine.environment.items()))
    return lines


def format_report(result) -> str:
    """The readable summary of a BenchResult: the machine, then each figure with its spread."""
    step, e2e = result.device_step, result.end_to_end
    lines = [f"vggish-tf2 {result.vggish_tf2_version or ''} bench, {result.started_at}, {result.wall_seconds:.0f} s; "
             "load average (1, 5, 15 min) "
             f"{_load(result.load_average_before)} before, {_load(result.load_average_after)} after"]
    if result.model.get("synthetic_weights"):
        lines.append("note: SYNTHETIC WEIGHTS (not VGGish numbers; the same speed as the real ones)")
    lines += _machine_lines(result)
    lines.append(f"  model          {result.model['path']} ({result.model['frontend_precision']} front end)")
    mode = "XLA" if step.jit_compile else "graph"
    lines += [
        "figures",
        f"  device step    {_spread(step.examples_per_second, 'examples/s')}",
        f"                 batch {step.batch_size} per device, {mode} ({CHOSEN.get(step.tuning, step.tuning)})",
        f"  end to end     {_spread(e2e.examples_per_second, 'examples/s')}, "
        f"{e2e.share_of_device_step:.0%} of the device step",
        f"                 {_spread(e2e.audio_hours_per_second, 'audio hours/s', '.4f')}, "
        f"{e2e.audio_hours_per_second.median * 3600:.3g} hours of audio per hour",
        f"                 {e2e.clips} generated clips of {e2e.clip_seconds:g} s, {e2e.clip_rate_hz} Hz, "
        f"{e2e.clip_channels} channels, {e2e.resampler}, {e2e.workers} decoding "
        f"thread{'s' if e2e.workers != 1 else ''}",
    ]
    # The end-to-end run's resampler first: the figures a user of these settings needs.
    decodings = sorted(result.decoding, key=lambda d: d.resampler != e2e.resampler)
    for index, decoding in enumerate(decodings):
        lines.append(f"  {'decoding' if index == 0 else '':<15}{decoding.resampler:<12} "
                     f"{_spread(decoding.cpu_seconds_per_audio_second, 'CPU s per audio s', '.5f')}")
    first, *others = decodings
    lines.append(f"  decoding cores {first.cores_per_device:.3g} per device with {first.resampler}"
                 + "".join(f" ({d.cores_per_device:.3g} with {d.resampler})" for d in others)
                 + ": the CPU cores")
    lines.append("                 that decode as fast as one device embeds")
    return "\n".join(lines)


__all__ = ["add_bench_command", "format_report", "run_command", "to_json", "write_json"]
