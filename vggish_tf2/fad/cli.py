"""``vggish-tf2 fad BASELINE EVAL`` and ``vggish-tf2 stats CORPUS --out FILE``.

:func:`add_subcommands` registers both on the main CLI's subparsers (``vggish_tf2.cli``), with
its conventions: ``set_defaults(handler=..., parser=...)``, a handler ``(args, log_handler) ->
exit status``; errors derived from VGGishError become one ``error:`` line (usage errors, such as
a bad statistics file, exit 2; others 1). Exit status 1 also when any input file failed (the
report is still written and lists them).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from vggish_tf2.options import RESAMPLERS, SHORT_CLIPS, positive_float

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
PRESETS = ("default", "google")
EMBEDDINGS = ("raw", "pca")
STATS_FORMATS = ("vggish-tf2", "fadtk", "google")
DEFAULT_REPORT = "fad_report.json"


def _level(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be in (0, 1), e.g. 0.95")
    return value


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} must be >= {minimum}")
        return value
    return parse


def _add_embedding_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("embedding audio (ignored for embed outputs and statistics files)")
    group.add_argument("--preset", choices=PRESETS, default="default",
                       help="default: this library's settings; google: Google's FAD tool's choices "
                            "(1-s slices every 0.5 s, peak scaling, 16 kHz only, raw embeddings)")
    group.add_argument("--embedding", choices=EMBEDDINGS,
                       help="raw float embeddings (default, as Google's FAD) or pca (AudioSet's PCA + uint8 codes)")
    group.add_argument("--hop-seconds", type=positive_float, metavar="S", help="seconds between examples (default 0.96; google 0.5)")
    group.add_argument("--short-clips", choices=SHORT_CLIPS, help="clips under one example (default drop)")
    group.add_argument("--resampler", choices=RESAMPLERS, help="default kaiser_best, the reference's (google: none, 16 kHz input)")
    group.add_argument("--model", metavar="DIR", help="converted model directory (default: VGGISH_MODEL_DIR or models/vggish)")
    group.add_argument("--device", choices=("auto", "cpu", "gpu", "metal"), help="where to run the model")
    group.add_argument("--batch-size", type=_int_at_least(1), metavar="N", help="examples per device step")
    group.add_argument("--fadtk-model", metavar="NAME", help="model name inside a fadtk statistics npz (default: its only one)")


def add_subcommands(subparsers) -> None:
    """Register ``fad`` and ``stats`` on the main CLI's ``add_subparsers()`` object."""
    fad = subparsers.add_parser(
        "fad", help="Fréchet Audio Distance between two corpora (with interval, FAD-inf, KAD)",
        description="Fréchet Audio Distance between BASELINE and EVAL. Each is a folder of audio, an audio "
                    "list file, an output folder of 'vggish-tf2 embed' (npz or parquet, per file or sharded; "
                    "tfrecord with --embedding pca; not --pool mean), or a statistics file (ours, "
                    "fadtk's npz, Google's TFRecord). Prints the distance and writes a JSON report.",
    )
    fad.add_argument("baseline", metavar="BASELINE")
    fad.add_argument("eval", metavar="EVAL")
    fad.add_argument("--report", metavar="FILE", default=DEFAULT_REPORT, help=f"JSON report (default {DEFAULT_REPORT}; replaced)")
    fad.add_argument("--ci", type=_level, metavar="LEVEL", help="bootstrap confidence interval over files, e.g. 0.95")
    fad.add_argument("--bootstrap", type=_int_at_least(10), default=1000, metavar="N", help="bootstrap replicates (default 1000)")
    fad.add_argument("--inf", action="store_true", help="FAD-inf: FAD extrapolated to infinite eval size (fit against 1/n)")
    fad.add_argument("--per-file", action="store_true", help="each eval file's leave-one-out contribution and own FAD")
    fad.add_argument("--kad", action="store_true", help="kernel audio distance (unbiased MMD^2, Gaussian kernel)")
    fad.add_argument("--plot", metavar="FILE.png", help="plot FAD vs sample size and per-file contributions (implies --inf, --per-file; needs matplotlib)")
    fad.add_argument("--seed", type=_int_at_least(0), default=0, help="seed of every random draw (default 0)")
    _add_embedding_options(fad)
    fad.set_defaults(handler=cmd_fad, parser=fad)

    stats = subparsers.add_parser(
        "stats", help="streaming mean/covariance statistics of a corpus (ours, fadtk's or Google's format)",
        description="Statistics (float64 mean, covariance, count) of a corpus: audio, an output folder of "
                    "'vggish-tf2 embed', or a statistics file to convert. Memory is flat in the corpus size.",
    )
    stats.add_argument("corpus", metavar="CORPUS")
    stats.add_argument("--out", "-o", required=True, metavar="FILE", help="statistics file to write")
    stats.add_argument("--format", choices=STATS_FORMATS, default="vggish-tf2",
                       help="vggish-tf2 (float64, with settings; default), fadtk (npz <model>.mu/.cov), google (float32 TFRecord)")
    stats.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    _add_embedding_options(stats)
    stats.set_defaults(handler=cmd_stats, parser=stats)


# --- handlers -----------------------------------------------------------------------------------
def _settings(args):
    from vggish_tf2.fad.corpus import FadSettings

    return FadSettings.for_preset(args.preset, embedding=args.embedding, hop_seconds=args.hop_seconds,
                                  short_clips=args.short_clips, resampler=args.resampler)


class _EmbedderCache:
    """Makes the Embedder once, on first need, and shares it between the sides."""

    def __init__(self, args):
        self.args = args
        self.embedder = None

    def __call__(self, settings):
        if self.embedder is None:
            from vggish_tf2.embedder import Embedder
            from vggish_tf2.fad.corpus import make_embedder

            self.embedder = make_embedder(Embedder, settings, model=self.args.model, device=self.args.device,
                                          batch_size=self.args.batch_size)
        return self.embedder


def _on_file(side: str):
    def report(name: str) -> None:
        logger.info("%s: %s", side, name)
    return report


def cmd_fad(args: argparse.Namespace, log_handler=None) -> int:
    from vggish_tf2.fad.corpus import describe_embedder, load_side
    from vggish_tf2.fad.report import ReportOptions, build_report, format_report

    settings = _settings(args)
    per_file, inf = args.per_file, args.inf
    if args.plot:
        from vggish_tf2.fad.plot import require_matplotlib

        require_matplotlib()  # before any embedding work
        inf = True
    options = ReportOptions(ci=args.ci, replicates=args.bootstrap, inf=inf, per_file=per_file or bool(args.plot),
                            kad=args.kad, seed=args.seed)
    embedders = _EmbedderCache(args)
    sides = {}
    for role, spec in (("baseline", args.baseline), ("eval", args.eval)):
        is_eval = role == "eval"
        sides[role] = load_side(
            spec, settings, embedder_factory=embedders, fadtk_model=args.fadtk_model,
            keep_files=options.ci is not None or (is_eval and options.per_file),
            keep_embeddings=options.kad or (is_eval and options.inf), on_file=_on_file(role),
        )
    if args.plot and sides["eval"].files is None:
        options = ReportOptions(**{**options.__dict__, "per_file": False})  # a statistics file has no files
    run_settings = settings.as_dict()
    if embedders.embedder is not None:
        run_settings = describe_embedder(embedders.embedder, settings)
    report = build_report(sides["baseline"], sides["eval"], options, settings=run_settings)
    _write_json(Path(args.report), report)
    print(format_report(report), flush=True)
    print(f"report             {args.report}", flush=True)
    if args.plot:
        from vggish_tf2.fad.plot import plot_report

        plot_report(report, args.plot)
        print(f"plot               {args.plot}", flush=True)
    if any("SYNTHETIC" in w for w in report["warnings"]):
        print("WARNING: SYNTHETIC WEIGHTS: these are not VGGish embeddings", file=sys.stderr)
    failed = [f"{role}: {f['error']}" for role in ("baseline", "eval") for f in sides[role].failures]
    for line in failed:
        print(f"failed: {line}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def cmd_stats(args: argparse.Namespace, log_handler=None) -> int:
    from vggish_tf2.errors import InvalidArgumentError
    from vggish_tf2.fad.corpus import describe_embedder, load_side
    from vggish_tf2.fad.formats import save_stats

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise InvalidArgumentError(f"{out} exists; pass --overwrite to replace it")
    settings = _settings(args)
    embedders = _EmbedderCache(args)
    side = load_side(args.corpus, settings, embedder_factory=embedders, fadtk_model=args.fadtk_model, on_file=_on_file("corpus"))
    side_settings = describe_embedder(embedders.embedder, settings) if embedders.embedder is not None else side.settings
    metadata = {
        "source": side.source, "kind": side.kind, "settings": side_settings, "synthetic_weights": side.synthetic_weights,
        "files_ok": side.files_ok, "files_skipped": side.files_skipped, "failures": side.failures,
    }
    save_stats(out, side.stats, file_format=args.format, metadata=metadata, fadtk_model=args.fadtk_model or "vggish")
    files = "" if side.kind == "stats" else f" from {side.files_ok} files ({side.files_skipped} skipped, {len(side.failures)} failed)"
    print(f"{side.stats.count} examples{files} -> {out} ({args.format})", flush=True)
    if side.synthetic_weights:
        print("WARNING: SYNTHETIC WEIGHTS: these are not VGGish embeddings", file=sys.stderr)
    for failure in side.failures:
        print(f"failed: {failure['error']}", file=sys.stderr)
    return EXIT_FAILED if side.failures else EXIT_OK


def _write_json(path: Path, report: dict) -> None:
    from vggish_tf2.outputs import atomic_output

    text = json.dumps(report, indent=2, allow_nan=False, default=_json_default) + "\n"
    with atomic_output(path) as temp:
        temp.write_text(text)


def _json_default(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")
