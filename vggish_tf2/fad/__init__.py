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
the ``google`` preset), ``report`` (the JSON report), ``plot`` (matplotlib), ``cli``
(``vggish-tf2 fad`` and ``vggish-tf2 stats``). No TensorFlow is imported until audio is embedded
or a Google statistics file is read.
"""
from vggish_tf2.fad.corpus import FadSettings, Side, embed_waveforms_google, google_windows, load_side
from vggish_tf2.fad.distance import KernelDistance, frechet_distance, kernel_distance, trace_sqrt_product
from vggish_tf2.fad.formats import FORMATS, StatsFileError, load_stats, save_stats
from vggish_tf2.fad.report import ReportOptions, build_report, compare_embeddings, format_report
from vggish_tf2.fad.resampling import FileSet, bootstrap_interval, fad_inf, per_file_contributions
from vggish_tf2.fad.stats import GaussianStats, StatsAccumulator, compute_stats

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
