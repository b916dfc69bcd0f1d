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
or ``TF_CPP_MIN_LOG_LEVEL`` is given. With ``--engine ray`` Ray's start-up notes, and the
TensorFlow start-up lines its actors print, are hidden too unless ``-v``; its errors never are.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.abc
import importlib.util
import logging
import os
import re
import signal
import sys
import tempfile
import threading
import traceback
from typing import Sequence

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

logger = logging.getLogger("vggish_tf2.cli")


def _flag_of_parameter() -> dict[str, str]:
    """Library parameter -> the flag that sets it: errors from the library name the parameter, the
    command line shows the flag the user typed. Each RunOptions field declares its flag."""
    from vggish_tf2.options import FLAGS

    return {**FLAGS, "format": FLAGS["output_format"]}  # "format": outputs.check_output_format's word


FLAG_OF_PARAMETER = _flag_of_parameter()
_PARAMETER = re.compile(r"(?<![\w.-])(" + "|".join(sorted(FLAG_OF_PARAMETER, key=len, reverse=True)) + r")=")


def with_flag_names(message: str) -> str:
    """``memory_fraction=1.5 must be in (0, 1]`` -> ``--memory-fraction 1.5 must be in (0, 1]``."""
    return _PARAMETER.sub(lambda m: FLAG_OF_PARAMETER[m.group(1)] + " ", message)


def _add_option_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per RunOptions field, as the field declares it, in groups."""
    import dataclasses

    from vggish_tf2.options import RunOptions

    groups: dict[str, argparse._ArgumentGroup] = {}
    for field in dataclasses.fields(RunOptions):
        meta = field.metadata
        group = groups.get(meta["group"]) or groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        group.add_argument(meta["flag"], dest=field.name, default=field.default, help=meta["help"], **meta["argparse"])


def options_from_args(args: argparse.Namespace):
    """The RunOptions of parsed ``embed`` arguments."""
    import dataclasses

    from vggish_tf2.options import RunOptions

    return RunOptions(**{field.name: getattr(args, field.name) for field in dataclasses.fields(RunOptions)})


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
    _add_option_flags(embed)
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
    from vggish_tf2.bench_report import add_bench_command  # numpy only: no TF at parse time

    add_bench_command(commands)
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
    from vggish_tf2.corpus.run import RunInterrupted, RunStopped, embed_corpus
    from vggish_tf2.progress import Progress

    if not args.paths and not args.from_list:
        raise _UsageError("embed needs at least one PATH or --from-list FILE")
    progress = Progress(enabled=False if args.quiet else None)  # before fd 2 may become a pipe (isatty)
    handler.progress = progress
    options = options_from_args(args)
    try:
        with _run_stderr_filter(options.engine, verbose=args.verbose, tensorflow_noise_hidden=args.tensorflow_noise_hidden):
            summary = embed_corpus(args.paths, out_dir=args.out, list_files=args.from_list, options=options,
                                   progress=progress)
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


# TensorFlow's C++ start-up lines: CUDA's absence on a machine without it, and oneDNN's note
# (twice during the import on an AVX-512 EPYC). TF_CPP_MIN_LOG_LEVEL=3 hides the cuInit error but
# not these, which absl prints before its logging is initialised.
_TF_NOISE = re.compile(r"cudart_stub\.cc|All log messages before absl::InitializeLog|Unable to register cu\w+ factory"
                       r"|oneDNN custom operations are on")


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


# Ray's chatter in a run with --engine ray, hidden unless -v: its notes on a local instance's
# token (the "disabled" security warning stays), on Ray Data's progress bars (the run shows its
# own) and on a dataset's end; a C++ note on how Ray Data passes an actor its arguments; and the
# actors' copy of the synthetic-weights warning the driver has given once. Everything else passes:
# Ray's other warnings, a task's or an actor's traceback, the run's own log and progress line.
_RAY_NOISE = re.compile(
    r"Token authentication is enabled for this Ray cluster"
    r"|Progress bars disabled\. To enable"
    r"|Dataset \S+ execution finished in "
    r"|core_worker\.cc:\d+: .* has constructor arguments in the object store"
    r"|\bpid=\d+[^)]*\)\S* .*: SYNTHETIC WEIGHTS: these are not VGGish embeddings"
)
# With TensorFlow's start-up chatter hidden too (no -v, no TF_CPP_MIN_LOG_LEVEL of the user's): the
# actors' (_TF_NOISE, which TF_CPP_MIN_LOG_LEVEL=3 does not hide) and oneDNN's note.
_RAY_AND_TF_NOISE = re.compile(_RAY_NOISE.pattern + "|" + _TF_NOISE.pattern)


def _run_stderr_filter(engine: str, *, verbose: int, tensorflow_noise_hidden: bool):
    """What an embed run's stderr passes through: with --engine ray and no -v, a filter of Ray's
    chatter and of its actors' TensorFlow start-up lines (this process's own are hidden at import,
    by _QuietTensorFlowImport)."""
    if engine == "ray" and not verbose:
        return _StderrFilter(_RAY_AND_TF_NOISE if tensorflow_noise_hidden else _RAY_NOISE)
    return contextlib.nullcontext()


class _StderrFilter:
    """File descriptor 2 (Python's, Ray's C++ core's, and the lines Ray forwards from its workers)
    through a pipe to a thread that writes every line to the real stderr but those ``noise``
    matches. Text without a newline yet (the progress line) passes at once; a line written whole
    (a write of at most PIPE_BUF bytes, as log lines are) arrives whole."""

    def __init__(self, noise: re.Pattern):
        self.noise = noise

    def __enter__(self):
        sys.stderr.flush()
        self.saved = os.dup(2)
        out = os.dup(2)  # the pump's, closed by it at the end of the pipe
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        self.pump = threading.Thread(target=self._pump, args=(read, out), name="vggish-tf2-stderr", daemon=True)
        self.pump.start()
        return self

    def __exit__(self, *exc_info):
        sys.stderr.flush()
        os.dup2(self.saved, 2)  # closes the pipe's last write end: the pump writes what is left, then ends
        os.close(self.saved)
        self.pump.join(timeout=5)  # (a process that still holds the pipe keeps the daemon pump going)

    def _pump(self, read: int, out: int) -> None:
        pending = b""
        try:
            while chunk := os.read(read, 65536):
                *lines, pending = (pending + chunk).split(b"\n")
                kept = b"".join(self._without_noise(line + b"\n") for line in lines)
                if b"\r" in pending:  # the progress line, which has no newline until its end: show it now
                    kept, pending = kept + pending, b""
                _write_all(out, kept)
            _write_all(out, self._without_noise(pending))
        finally:
            os.close(read)
            os.close(out)

    def _without_noise(self, line: bytes) -> bytes:
        """``line``, or only what precedes its last carriage return (a progress line's text) when
        what follows it is noise."""
        head, cr, tail = line.rpartition(b"\r")
        return head + cr if self.noise.search(tail.decode(errors="replace")) else line


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


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
    args.tensorflow_noise_hidden = args.verbose == 0 and "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    if args.tensorflow_noise_hidden:
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
