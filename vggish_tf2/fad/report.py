"""The comparison of two sides, as one JSON-ready report.

Report keys (also described in the README section):

- ``fad``: the Fréchet distance between the two sides' Gaussians (float64 statistics);
- ``baseline`` / ``eval``: source, kind, examples (n, the sample size FAD's bias depends on),
  files ok / skipped (no example) / failed with the errors, the settings each side was made with;
- ``settings``: the settings used to embed audio (preset, raw or PCA, hop, short clips,
  resampler, loudness normalization, slicing, model and whether its weights are synthetic);
- ``ci`` (``--ci``): bootstrap interval over files; ``fad_inf`` (``--inf``); ``per_file``
  (``--per-file``); ``kad`` (``--kad``): see :mod:`vggish_tf2.fad.resampling` and
  :mod:`vggish_tf2.fad.distance`;
- ``warnings``: settings that differ between the sides, synthetic weights, few examples.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from vggish_tf2.errors import InvalidArgumentError
from vggish_tf2.fad.corpus import Side
from vggish_tf2.fad.distance import frechet_distance, kernel_distance
from vggish_tf2.fad.resampling import FileSet, bootstrap_interval, fad_inf, per_file_contributions
from vggish_tf2.fad.stats import GaussianStats, compute_stats

REPORT_VERSION = 1
# Settings that change the numbers: a difference between the sides is reported as a warning.
COMPARED_SETTINGS = ("embedding", "hop_seconds", "short_clips", "resampler", "loudness_normalization", "slicing", "model_hash")


@dataclasses.dataclass(frozen=True)
class ReportOptions:
    """What to compute beyond FAD."""

    ci: float | None = None  # confidence level of the bootstrap interval, e.g. 0.95
    replicates: int = 1000
    inf: bool = False
    per_file: bool = False
    kad: bool = False
    kad_max_examples: int = 10000
    seed: int = 0

    def __post_init__(self):
        if self.ci is not None and not 0 < self.ci < 1:
            raise InvalidArgumentError(f"ci={self.ci!r} must be in (0, 1), e.g. 0.95")
        if isinstance(self.replicates, bool) or not isinstance(self.replicates, int) or self.replicates < 10:
            raise InvalidArgumentError(f"replicates={self.replicates!r} must be an integer >= 10")

    @property
    def needs_files(self) -> bool:
        return self.ci is not None or self.per_file

    @property
    def needs_embeddings(self) -> bool:
        return self.inf or self.kad


def _need(side: Side, what: str, attribute: str, option: str):
    value = getattr(side, attribute)
    if value is None:
        raise InvalidArgumentError(f"{option} needs the {what} of {side.source!r}, which is a statistics file")
    return value


def build_report(baseline: Side, evaluation: Side, options: ReportOptions = ReportOptions(), *,
                 settings: dict | None = None) -> dict:
    """FAD and, as ``options`` asks, the interval, FAD-inf, per-file contributions and KAD."""
    report: dict = {
        "report_version": REPORT_VERSION,
        "fad": frechet_distance(baseline.stats, evaluation.stats),
        "baseline": baseline.summary(),
        "eval": evaluation.summary(),
        "settings": settings or {},
        "warnings": _warnings(baseline, evaluation),
    }
    if options.ci is not None:
        # Files are resampled on each side that has them; a statistics file is held fixed.
        report["ci"] = bootstrap_interval(
            baseline.files if baseline.files is not None else baseline.stats,
            evaluation.files if evaluation.files is not None else evaluation.stats,
            level=options.ci, replicates=options.replicates, seed=options.seed,
        )
    if options.inf:
        report["fad_inf"] = fad_inf(baseline.stats, _need(evaluation, "embeddings", "embeddings", "--inf"), seed=options.seed)
    if options.per_file:
        report["per_file"] = per_file_contributions(baseline.stats, _need(evaluation, "files", "files", "--per-file"))
    if options.kad:
        report["kad"] = kernel_distance(_need(baseline, "embeddings", "embeddings", "--kad"),
                                        _need(evaluation, "embeddings", "embeddings", "--kad"),
                                        max_examples=options.kad_max_examples, seed=options.seed).as_dict()
    return report


def _warnings(baseline: Side, evaluation: Side) -> list[str]:
    out = []
    for key in COMPARED_SETTINGS:
        a, b = baseline.settings.get(key), evaluation.settings.get(key)
        if a is not None and b is not None and a != b:
            out.append(f"the sides differ in {key}: baseline {a!r}, eval {b!r}")
    for name, side in (("baseline", baseline), ("eval", evaluation)):
        if side.synthetic_weights:
            out.append(f"{name}: SYNTHETIC WEIGHTS: these are not VGGish embeddings; only trends are meaningful")
        if side.stats.count is not None and side.stats.count <= side.stats.dim:
            out.append(f"{name}: {side.stats.count} examples <= {side.stats.dim} dimensions: a rank-deficient "
                       "covariance; FAD is strongly biased at this size (see fad_inf)")
        if side.failures:
            out.append(f"{name}: {len(side.failures)} files failed and are not in the statistics")
    return out


# --- arrays a user already has ---------------------------------------------------------------------
def side_from_arrays(value, *, name: str) -> Side:
    """A Side from GaussianStats, an array [n, d] (examples, no files) or a list of arrays (one per
    file; or a dict name -> array)."""
    if isinstance(value, GaussianStats):
        return Side(source=name, kind="stats", stats=value)
    if isinstance(value, np.ndarray):
        array = np.asarray(value)
        return Side(source=name, kind="embeddings", stats=compute_stats(array), embeddings=array, files_ok=1)
    items = list(value.items()) if isinstance(value, dict) else [(f"{name}[{i}]", a) for i, a in enumerate(value)]
    if not items:
        raise InvalidArgumentError(f"{name} holds no files")
    files = FileSet.from_embeddings(items)
    arrays = [np.asarray(a) for _, a in items if len(a)]
    return Side(source=name, kind="embeddings", stats=files.stats(), files=files,
                embeddings=np.concatenate(arrays), files_ok=len(files.names), files_skipped=len(items) - len(files.names))


def compare_embeddings(baseline, evaluation, *, ci: float | None = None, replicates: int = 1000, inf: bool = False,
                       per_file: bool = False, kad: bool = False, seed: int = 0) -> dict:
    """The report for embeddings already in memory: each side is GaussianStats, an array [n, 128],
    or a list (or dict) of per-file arrays (needed for ``ci`` and ``per_file``)."""
    options = ReportOptions(ci=ci, replicates=replicates, inf=inf, per_file=per_file, kad=kad, seed=seed)
    return build_report(side_from_arrays(baseline, name="baseline"), side_from_arrays(evaluation, name="eval"), options)


def format_report(report: dict) -> str:
    """The human summary printed by ``vggish-tf2 fad``."""
    lines = []
    if any("SYNTHETIC" in w for w in report["warnings"]):
        lines.append("WARNING: SYNTHETIC WEIGHTS: these are not VGGish embeddings; only trends are meaningful")
    lines.append(f"FAD                {report['fad']:.6g}")
    if "ci" in report:
        ci = report["ci"]
        lines.append(f"{ci['level']:.0%} interval       [{ci['low']:.6g}, {ci['high']:.6g}] "
                     f"(bootstrap over {' and '.join(ci['resampled'])} files, {ci['replicates']} replicates)")
    if "fad_inf" in report:
        inf = report["fad_inf"]
        lines.append(f"FAD-inf            {inf['value']:.6g} (slope {inf['slope']:.4g}, r2 {inf['r2']:.3f}, {len(inf['points'])} sizes)")
    if "kad" in report:
        lines.append(f"KAD                {report['kad']['value']:.6g} (Gaussian kernel, bandwidth {report['kad']['bandwidth']:.4g})")
    for key in ("baseline", "eval"):
        side = report[key]
        files = "" if side["kind"] == "stats" else (f", {side['files_ok']} files ok, {side['files_skipped']} skipped, "
                                                     f"{side['files_failed']} failed")
        lines.append(f"{key:<18} {side['examples']} examples{files} ({side['kind']}: {side['source']})")
    settings = report.get("settings") or {}
    if settings:
        lines.append("settings           " + ", ".join(
            f"{k} {settings[k]}" for k in ("preset", "embedding", "hop_seconds", "short_clips", "resampler",
                                           "loudness_normalization") if k in settings))
    for row in (report.get("per_file") or [])[:5]:
        if row["delta"] is not None:
            lines.append(f"pulls FAD up       {row['delta']:+.4g} ({row['relative']:+.4g} vs an average file) {row['file']}")
    for warning in report["warnings"]:
        if "SYNTHETIC" not in warning:
            lines.append(f"warning            {warning}")
    return "\n".join(lines)
