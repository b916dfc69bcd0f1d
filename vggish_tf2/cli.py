"""The ``vggish-tf2`` command: ``embed``, ``devices``, ``info``.

    vggish-tf2 embed corpus/ --out embeddings/ --format npz
    vggish-tf2 devices
    vggish-tf2 info models/vggish

Exit status: 0 when every input was embedded (or skipped as too short, or already done), 1 when
any input failed or on a runtime error (a bug stopping the run included), 2 on a usage error or
when another run is writing the same ``--out``, 130 when interrupted. Errors are one line on
stderr (``error: <message>``, naming flags as typed: ``--memory-fraction``, not
``memory_fraction``), never a traceback (``-v`` adds one for a bug). TensorFlow is imported only
by ``embed`` and ``devices`` (``--help`` and ``info`` take well under a second), and its C++
start-up chatter (``cudart_stub``, ``cuInit`` on machines without CUDA) is hidden unless ``-v``
or ``TF_CPP_MIN_LOG_LEVEL`` is given.
"""
from __future__ import annotations

import argparse
import importlib.abc
import importlib.util
import logging
import os
import re
import signal
import sys
import tempfile
import traceback
from typing import Sequence

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

FORMATS = ("npz", "tfrecord", "parquet")
DEVICES = ("auto", "cpu", "gpu", "metal")
RESAMPLERS = ("soxr_hq", "kaiser_best")
PRECISIONS = ("float64", "float32")
SHORT_CLIPS = ("drop", "pad", "repeat")

logger = logging.getLogger("vggish_tf2.cli")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return value


def _batch_size(text: str) -> int | str:
    return text if text == "auto" else _positive_int(text)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be in (0, 1]")
    return value


# Library parameter -> the flag that sets it: errors from the library name the parameter, the
# command line shows the flag the user typed.
FLAG_OF_PARAMETER = {
    "memory_fraction": "--memory-fraction", "hop_seconds": "--hop-seconds", "batch_size": "--batch-size",
    "workers": "--workers", "short_clips": "--short-clips", "frontend_precision": "--frontend-precision",
    "resampler": "--resampler", "device": "--device", "format": "--format", "postprocess": "--postprocess",
    "model": "--model", "verify_model_hashes": "--no-verify-model", "jit_compile": "--jit-compile",
}
_PARAMETER = re.compile(r"(?<![\w.-])(" + "|".join(FLAG_OF_PARAMETER) + r")=")


def with_flag_names(message: str) -> str:
    """``memory_fraction=1.5 must be in (0, 1]`` -> ``--memory-fraction 1.5 must be in (0, 1]``."""
    return _PARAMETER.sub(lambda m: FLAG_OF_PARAMETER[m.group(1)] + " ", message)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number > 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vggish-tf2",
        description="Google's VGGish audio embeddings, TF2-native.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-v info, -vv debug)")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    embed = commands.add_parser(
        "embed", help="embed audio files into npz, TFRecord or Parquet files",
        description="Embed audio files. The output tree mirrors the input tree; rerunning the same "
                    "command resumes (inputs done are skipped, failed ones retried).",
    )
    embed.add_argument("paths", nargs="*", metavar="PATH",
                       help="audio files, directories (searched recursively) or glob patterns")
    embed.add_argument("--out", "-o", required=True, metavar="DIR", help="output directory")
    embed.add_argument("--from-list", action="append", default=[], metavar="FILE",
                       help="a file listing one input path a line (# comments); may be repeated")
    embed.add_argument("--format", choices=FORMATS, default="npz", help="output format (default: npz)")
    embed.add_argument("--postprocess", action=argparse.BooleanOptionalAction, default=True,
                       help="add AudioSet's PCA + uint8 embeddings (default: on; tfrecord needs them)")
    embed.add_argument("--model", metavar="DIR", help="converted model directory (default: VGGISH_MODEL_DIR or models/vggish)")
    embed.add_argument("--device", choices=DEVICES, help="where to run (default: VGGISH_DEVICE_PREFERENCE or auto)")
    embed.add_argument("--memory-fraction", type=_fraction, metavar="F",
                       help="share of each GPU's memory TensorFlow may use, in (0, 1] (default 0.8)")
    embed.add_argument("--batch-size", type=_batch_size, default="auto", metavar="N",
                       help="examples per device step, a multiple of 48 (default: auto, measured once per "
                            "machine and model and cached in ~/.cache/vggish-tf2/tuning.json)")
    embed.add_argument("--jit-compile", action=argparse.BooleanOptionalAction, default=None,
                       help="XLA-compile the device step (default: measured with the batch size, or the mode "
                            "the --out directory was made with; XLA rounds float32 otherwise, so it is recorded)")
    embed.add_argument("--resampler", choices=RESAMPLERS,
                       help="kaiser_best (default: the reference's resampy filter, Google's numbers) or "
                            "soxr_hq (a little faster, another filter)")
    embed.add_argument("--frontend-precision", choices=PRECISIONS,
                       help="log-mel front end precision (default float64; float32 on Metal)")
    embed.add_argument("--short-clips", choices=SHORT_CLIPS,
                       help="clips shorter than one example (0.975 s): drop (default, as the reference), pad, repeat")
    embed.add_argument("--hop-seconds", type=_positive_float, metavar="S",
                       help="seconds between example starts, a multiple of 0.01 (default 0.96)")
    embed.add_argument("--workers", type=_positive_int, metavar="N", help="decoding threads (default: cores - 1, at most 4)")
    embed.add_argument("--no-verify-model", dest="verify_model", action="store_false",
                       help="load the model without checking its files against their recorded hashes "
                            "(for an export without its hash list that you trust)")
    embed.add_argument("--overwrite", action="store_true",
                       help="redo every input, also when the output directory was made with other settings")
    embed.add_argument("--quiet", "-q", action="store_true", help="no progress line on stderr")
    embed.set_defaults(handler=_cmd_embed, parser=embed)

    devices = commands.add_parser("devices", help="show TensorFlow's devices and what 'auto' picks")
    devices.set_defaults(handler=_cmd_devices, parser=devices)

    info = commands.add_parser("info", help="show a converted model's metadata")
    info.add_argument("model_dir", metavar="MODEL_DIR")
    info.add_argument("--verify", action="store_true", help="also check every file against the hashes recorded at conversion")
    info.set_defaults(handler=_cmd_info, parser=info)
    from vggish_tf2.fad.cli import add_subcommands as add_fad_subcommands  # numpy only: no TF at parse time

    add_fad_subcommands(commands)
    return parser


class _ProgressAwareHandler(logging.StreamHandler):
    """Log to stderr, blanking the progress line first so the two never share a line."""

    progress = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.progress is not None:
            self.progress.clear()
        super().emit(record)


def _configure_logging(verbosity: int) -> _ProgressAwareHandler:
    handler = _ProgressAwareHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    package = logging.getLogger("vggish_tf2")
    package.addHandler(handler)
    package.setLevel(logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG)
    package.propagate = False
    return handler


def _cmd_embed(args: argparse.Namespace, handler: _ProgressAwareHandler) -> int:
    from vggish_tf2.pipeline import RunInterrupted, RunStopped, embed_corpus
    from vggish_tf2.progress import Progress

    if not args.paths and not args.from_list:
        raise _UsageError("embed needs at least one PATH or --from-list FILE")
    progress = Progress(enabled=False if args.quiet else None)
    handler.progress = progress
    try:
        summary = embed_corpus(
            args.paths, out_dir=args.out, list_files=args.from_list, output_format=args.format,
            postprocess=args.postprocess, overwrite=args.overwrite, progress=progress,
            model=args.model, device=args.device, memory_fraction=args.memory_fraction,
            batch_size=args.batch_size, resampler=args.resampler, frontend_precision=args.frontend_precision,
            short_clips=args.short_clips, hop_seconds=args.hop_seconds, workers=args.workers,
            verify_model_hashes=args.verify_model, jit_compile=args.jit_compile,
        )
    except RunInterrupted as e:
        print(e.summary.format(), flush=True)
        return EXIT_INTERRUPTED
    except RunStopped as e:  # a bug: the summary of what finished, then the one-line error
        print(e.summary.format(), flush=True)
        raise
    finally:
        handler.progress = None
    # No synthetic-weights line here: the Embedder warned once, on stderr, when it loaded the model.
    print(summary.format(), flush=True)
    return summary.exit_status


def _cmd_devices(args: argparse.Namespace, handler) -> int:
    from vggish_tf2.devices import devices_report

    print(devices_report())
    return EXIT_OK


def _cmd_info(args: argparse.Namespace, handler) -> int:
    # The metadata JSON and the hash list only: no TensorFlow (well under a second, not ~10 s).
    from pathlib import Path

    from vggish_tf2 import hashing

    path = Path(args.model_dir)
    metadata = hashing.read_export_metadata(path)
    if args.verify:
        hashing.verify_file_hashes(path)  # ModelError naming the file: missing, corrupt, or differing
    has_hashes = (path / hashing.FILE_HASHES).exists()
    print(format_info(path, metadata, fingerprint=hashing.export_fingerprint(path), verified=args.verify,
                      has_hashes=has_hashes))
    return EXIT_OK


def format_info(path, metadata: dict, *, fingerprint: str, verified: bool = False, has_hashes: bool = True) -> str:
    """The human summary of an export's metadata printed by ``vggish-tf2 info``."""
    lines = []
    synthetic = bool(metadata.get("synthetic_weights"))
    if synthetic:  # the Embedder's wording
        lines.append(f"WARNING: {path}: SYNTHETIC WEIGHTS: these are not VGGish embeddings")
    lines.append(f"model              {path}")
    lines.append(f"format             {metadata.get('format')} v{metadata.get('format_version')}")
    lines.append(f"weights            {'SYNTHETIC (test weights, not VGGish)' if synthetic else 'converted checkpoint'}")
    lines.append(f"front end          {metadata.get('frontend_precision')} ({metadata.get('mel_matrix', '')})")
    lines.append(f"PCA + uint8        {'yes' if metadata.get('has_pca') else 'no'}")
    lines.append(f"embedding size     {metadata.get('embedding_size')}")
    sources = metadata.get("sources") or {}
    for role, entries in sources.items():
        for entry in entries if isinstance(entries, list) else [entries]:
            if isinstance(entry, dict):
                lines.append(f"source             {role}: {entry.get('file')} sha256 {entry.get('sha256')}")
    versions = metadata.get("versions") or {}
    lines.append("built with         " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())))
    probes = (metadata.get("verification") or {}).get("probes") or []
    if probes:
        worst = max(p.get("embedding_max_rel", 0.0) for p in probes)
        lines.append(f"verified           {len(probes)} probes against the float64 reference, "
                     f"worst embedding relative error {worst:.3g}")
    if verified:
        note = " (files verified)"
    elif has_hashes:
        note = " (of the recorded hashes; --verify checks the files)"
    else:
        note = (" (of the files now: no recorded hashes, so loading refuses this export "
                "unless --no-verify-model)")
    lines.append(f"fingerprint        {fingerprint}{note}")
    return "\n".join(lines)


class _UsageError(Exception):
    pass


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


# TensorFlow's C++ start-up lines on a machine without CUDA. TF_CPP_MIN_LOG_LEVEL=3 hides the
# cuInit error but not these, which absl prints before its logging is initialised.
_TF_NOISE = re.compile(r"cudart_stub\.cc|All log messages before absl::InitializeLog|Unable to register cu\w+ factory")


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Imports tensorflow (whenever some module first does) with file descriptor 2 captured, then
    writes back to stderr every captured line but TF's known start-up noise."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        self.remove()
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def quiet_exec_module(module):
            with _stderr_without_tf_noise():
                exec_module(module)

        spec.loader.exec_module = quiet_exec_module
        return spec

    def install(self) -> None:
        if "tensorflow" not in sys.modules and self not in sys.meta_path:
            sys.meta_path.insert(0, self)

    def remove(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)


class _stderr_without_tf_noise:
    def __enter__(self):
        sys.stderr.flush()
        self.saved = os.dup(2)
        self.capture = tempfile.TemporaryFile()
        os.dup2(self.capture.fileno(), 2)

    def __exit__(self, *exc_info):
        sys.stderr.flush()
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.capture.seek(0)
        kept = [line for line in self.capture.read().decode(errors="replace").splitlines(keepends=True)
                if not _TF_NOISE.search(line)]
        self.capture.close()
        if kept:
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (never raises SystemExit itself)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) and usage errors (2)
        return int(e.code or 0) if isinstance(e.code, int) or e.code is None else EXIT_USAGE
    if args.version:
        from importlib import metadata as importlib_metadata

        print(f"vggish-tf2 {importlib_metadata.version('vggish-tf2')}")
        return EXIT_OK
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    quiet_import = _QuietTensorFlowImport()
    if args.verbose == 0 and "TF_CPP_MIN_LOG_LEVEL" not in os.environ:
        # Before TensorFlow is imported: hide its C++ start-up chatter (-v, or your own
        # TF_CPP_MIN_LOG_LEVEL, shows it).
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        quiet_import.install()
    package = logging.getLogger("vggish_tf2")
    saved_logging = (package.handlers[:], package.level, package.propagate)
    handler = _configure_logging(args.verbose)
    # SIGTERM (a job scheduler's stop) ends the run as cleanly as Ctrl-C does.
    previous_sigterm = None
    try:
        previous_sigterm = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    except ValueError:  # not the main thread
        pass
    from vggish_tf2.errors import InternalError, InvalidArgumentError, OutputInUseError, VGGishError

    try:
        return args.handler(args, handler)
    except _UsageError as e:
        args.parser.print_usage(sys.stderr)
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except InvalidArgumentError as e:
        print(f"error: {with_flag_names(str(e))}", file=sys.stderr)
        return EXIT_USAGE
    except OutputInUseError as e:  # nothing was done: wait for the other run, or use another --out
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except VGGishError as e:
        if isinstance(e, InternalError) and args.verbose:
            traceback.print_exception(e.__cause__ or e, file=sys.stderr)
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        quiet_import.remove()
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)
        # Leave the process's logging as it was (main() may be called from other code or tests).
        package.handlers[:] = saved_logging[0]
        package.setLevel(saved_logging[1])  # setLevel, not assignment: it clears the loggers' level caches
        package.propagate = saved_logging[2]


if __name__ == "__main__":
    sys.exit(main())
