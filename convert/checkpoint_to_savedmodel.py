"""Convert Google's TF1 VGGish checkpoint + PCA parameters into a checked TF2 SavedModel.

    python -m convert.checkpoint_to_savedmodel --checkpoint vggish_model.ckpt --pca-params vggish_pca_params.npz
    python -m convert.checkpoint_to_savedmodel --download            # fetch Google's files first
    python -m convert.checkpoint_to_savedmodel --synthetic-weights 0 # offline demo: NOT VGGish

Read the checkpoint, build, verify against a float64 NumPy forward pass, save to a staging
directory, reload from disk, verify again, and only then move it into place. Any failure leaves
nothing behind, and an existing export is kept unless --overwrite.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from vggish_tf2.errors import VGGishError

logger = logging.getLogger("convert.checkpoint_to_savedmodel")

DEFAULT_OUTPUT = Path("models") / "vggish"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m convert.checkpoint_to_savedmodel",
        description="Convert Google's TF1 VGGish checkpoint into a verified TF2 SavedModel.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="vggish_model.ckpt (TF1, V1 or V2 format)")
    source.add_argument("--download", action="store_true", help="download Google's released files into a cache first")
    source.add_argument(
        "--synthetic-weights", type=int, metavar="SEED",
        help="write and convert seeded random weights in the released format (offline demo; NOT VGGish)",
    )
    parser.add_argument("--pca-params", type=Path, help="vggish_pca_params.npz (needed with --checkpoint)")
    parser.add_argument("--no-pca", action="store_true", help="export without post-processing (no uint8 output)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"export directory (default {DEFAULT_OUTPUT})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export")
    parser.add_argument(
        "--frontend-precision", choices=("float64", "float32"), default="float64",
        help="precision of the front end inside the export's signatures (float32 for Apple Metal)",
    )
    parser.add_argument("--cache-dir", type=Path, help="download cache (default: VGGISH_CACHE_DIR or the user cache)")
    parser.add_argument("--base-url", help=argparse.SUPPRESS)  # tests point this at 127.0.0.1
    args = parser.parse_args(argv)
    if args.checkpoint is not None and args.pca_params is None and not args.no_pca:
        parser.error("--checkpoint needs --pca-params (or --no-pca for an export without post-processing)")
    return args


def _source_record(path: Path, role: str) -> dict:
    from vggish_tf2.model import sha256_file

    return {"role": role, "file": path.name, "sha256": sha256_file(path), "size_bytes": path.stat().st_size}


def convert(
    *,
    checkpoint: Path,
    pca_params: Path | None,
    output: Path,
    overwrite: bool = False,
    frontend_precision: str = "float64",
    synthetic_weights: bool = False,
) -> dict:
    """Convert and verify; returns the export's metadata. Nothing is left behind on failure."""
    from convert import verify
    from convert.checkpoint import checkpoint_files, read_checkpoint, read_pca_params
    from vggish_tf2 import model

    output = Path(output)
    if output.exists() and not overwrite:
        raise model.ModelError(f"{output}: already exists; pass --overwrite to replace it")
    weights = read_checkpoint(checkpoint)
    pca = read_pca_params(pca_params) if pca_params is not None else None
    sources = {"checkpoint": [_source_record(p, "checkpoint") for p in checkpoint_files(checkpoint)]}
    if pca_params is not None:
        sources["pca_params"] = _source_record(Path(pca_params), "pca_params")

    output.parent.mkdir(parents=True, exist_ok=True)
    # Stage beside the output so the final move is a rename on the same filesystem.
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.converting-", dir=output.parent))
    try:
        metadata_path = staging / model.METADATA_ASSET
        metadata = model.make_metadata(
            frontend_precision=frontend_precision, sources=sources,
            has_pca=pca is not None, synthetic_weights=synthetic_weights,
        )
        metadata_path.write_text(json.dumps(metadata))
        module = model.VGGishExport(weights, pca, frontend_precision=frontend_precision, metadata_path=str(metadata_path))
        before = verify.verify_export(module, weights=weights, pca=pca, frontend_precision=frontend_precision, stage="before saving")
        metadata["verification"] = {
            "reference": "float64 NumPy forward pass from the checkpoint tensors (convert.reference_numpy)",
            "tolerance": verify.TOLERANCES[frontend_precision],
            "probes": [f.as_dict() for f in before],
        }
        metadata_path.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")  # Asset is read at save time
        export_dir = staging / "export"
        started = time.perf_counter()
        model.save_export(module, export_dir)
        logger.info("saved in %.1f s", time.perf_counter() - started)
        reloaded = model.load_export(export_dir)
        verify.verify_export(reloaded.module, weights=weights, pca=pca, frontend_precision=frontend_precision, stage="after reloading")
        _move_into_place(export_dir, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return metadata


def _move_into_place(export_dir: Path, output: Path) -> None:
    """Rename the verified export to `output`; an old export is only removed once the new one is there."""
    if not output.exists():
        os.replace(export_dir, output)
        return
    backup = output.parent / f".{output.name}.replaced-{os.getpid()}"
    os.replace(output, backup)
    try:
        os.replace(export_dir, output)
    except OSError:
        os.replace(backup, output)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # TF's savers log every renamed graph input at INFO through absl: noise for a user.
    logging.getLogger("absl").setLevel(logging.WARNING)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # incl. the V1-format deprecation banner
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    synthetic_dir = None
    try:
        synthetic = args.synthetic_weights is not None
        checkpoint, pca_params = args.checkpoint, None if args.no_pca else args.pca_params
        if args.download:
            from convert.download import download_released_files

            cache_dir = args.cache_dir or os.environ.get("VGGISH_CACHE_DIR")
            files = download_released_files(cache_dir, base_url=args.base_url, allow_insecure_localhost=args.base_url is not None)
            checkpoint = files["vggish_model.ckpt"]
            pca_params = None if args.no_pca else files["vggish_pca_params.npz"]
        elif synthetic:
            from convert.synthetic import SYNTHETIC_NOTICE, write_synthetic_checkpoint

            print(f"WARNING: {SYNTHETIC_NOTICE}", file=sys.stderr)
            synthetic_dir = Path(tempfile.mkdtemp(prefix="vggish-synthetic-"))
            checkpoint, synthetic_pca = write_synthetic_checkpoint(synthetic_dir, seed=args.synthetic_weights)
            pca_params = None if args.no_pca else synthetic_pca
        started = time.perf_counter()
        metadata = convert(
            checkpoint=checkpoint, pca_params=pca_params, output=args.output, overwrite=args.overwrite,
            frontend_precision=args.frontend_precision, synthetic_weights=synthetic,
        )
    except VGGishError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if synthetic_dir is not None:
            shutil.rmtree(synthetic_dir, ignore_errors=True)
    worst = max(metadata["verification"]["probes"], key=lambda f: f["embedding_max_rel"])
    print(f"wrote {args.output} in {time.perf_counter() - started:.1f} s "
          f"(front end {args.frontend_precision}; worst probe {worst['name']}: "
          f"max rel embedding error {worst['embedding_max_rel']:.2e}, min cosine {worst['min_cosine']:.8f})")
    if synthetic:
        print("WARNING: SYNTHETIC WEIGHTS: this export does not compute VGGish embeddings", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
