"""Fréchet Audio Distance (FAD) and friends on VGGish embeddings.

    import numpy as np
    from vggish_tf2 import fad

    a = fad.compute_stats(baseline_embeddings)      # float [n, 128] -> float64 mean, cov, count
    b = fad.compute_stats(eval_embeddings)
    fad.frechet_distance(a, b)                      # real, >= 0, exactly 0 for identical statistics
    report = fad.compare_embeddings(baseline_files, eval_files, ci=0.95, inf=True, per_file=True, kad=True)

Modules, one role each: ``stats`` (streaming float64 statistics), ``distance`` (Fréchet distance,
KAD), ``formats`` (ours, fadtk's npz, Google's TFRecord), ``resampling`` (bootstrap interval,
FAD-inf, per-file contributions), ``corpus`` (a side: audio, embed outputs or a statistics file;
the ``google`` preset), ``embed_output`` (an embed output folder read back: every layout embed
writes), ``report`` (the JSON report), ``plot`` (matplotlib), ``cli`` (``vggish-tf2 fad`` and
``vggish-tf2 stats``). No TensorFlow is imported until audio is embedded, a Google statistics file
or a TFRecord embed output is read.
"""
# Resolved on first use (PEP 562), so that registering the CLI subcommands (vggish_tf2.fad.cli)
# costs nothing to `vggish-tf2 --help`.
_LAZY = {
    "FadSettings": "corpus", "Side": "corpus", "embed_waveforms_google": "corpus", "google_windows": "corpus",
    "load_side": "corpus",
    "KernelDistance": "distance", "frechet_distance": "distance", "kernel_distance": "distance",
    "trace_sqrt_product": "distance",
    "FORMATS": "formats", "StatsFileError": "formats", "load_stats": "formats", "save_stats": "formats",
    "ReportOptions": "report", "build_report": "report", "compare_embeddings": "report", "format_report": "report",
    "FileSet": "resampling", "bootstrap_interval": "resampling", "fad_inf": "resampling",
    "per_file_contributions": "resampling",
    "GaussianStats": "stats", "StatsAccumulator": "stats", "compute_stats": "stats",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"vggish_tf2.fad.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vggish_tf2.fad' has no attribute {name!r}")


__all__ = [
    "FORMATS",
    "FadSettings",
    "FileSet",
    "GaussianStats",
    "KernelDistance",
    "ReportOptions",
    "Side",
    "StatsAccumulator",
    "StatsFileError",
    "bootstrap_interval",
    "build_report",
    "compare_embeddings",
    "compute_stats",
    "embed_waveforms_google",
    "fad_inf",
    "format_report",
    "frechet_distance",
    "google_windows",
    "kernel_distance",
    "load_side",
    "load_stats",
    "per_file_contributions",
    "save_stats",
    "trace_sqrt_product",
]
