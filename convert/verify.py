"""Check an export (in memory or reloaded) against an independent float64 NumPy forward pass.

The reference (convert.reference_numpy) is computed straight from the checkpoint tensors; the
export runs the same probe waveforms through its own signatures. The comparison fails with the
figures when any of them passes its stated tolerance.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from convert import reference_numpy
from vggish_tf2.errors import ConversionError

# Stated tolerances, per front-end precision. The network is float32 in both the reference
# implementation Google ships and the export, so its rounding sets the floor: measured on the
# synthetic weights, float64 front end gives max relative embedding error ~1e-6, float32 ~1e-4
# (the float32 FFT's noise floor in quiet bands; see README's gap table).
TOLERANCES: dict[str, dict[str, float]] = {
    "float64": {"log_mel_max_abs": 1e-5, "embedding_max_rel": 1e-4, "min_cosine": 0.99999, "uint8_max_diff": 1},
    "float32": {"log_mel_max_abs": 1e-3, "embedding_max_rel": 5e-3, "min_cosine": 0.9999, "uint8_max_diff": 1},
}


@dataclasses.dataclass(frozen=True)
class ProbeFigures:
    name: str
    examples: int
    log_mel_max_abs: float
    embedding_max_rel: float
    min_cosine: float
    uint8_mismatches: int
    uint8_max_diff: int

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    # Two all-zero rows agree perfectly; guard the division.
    return np.where(norms > 0, np.sum(a * b, axis=1) / np.where(norms > 0, norms, 1.0), 1.0)


def compare_probe(
    name: str,
    waveform: np.ndarray,
    export: Any,
    *,
    weights: Mapping[str, np.ndarray],
    pca: Mapping[str, np.ndarray] | None,
) -> ProbeFigures:
    """Figures for one probe waveform: the export's signatures vs the float64 reference."""
    waveform32 = np.asarray(waveform, dtype=np.float32)
    # The reference sees exactly the samples the export sees (float32 values, widened exactly).
    ref_log_mel = reference_numpy.waveform_to_examples(waveform32.astype(np.float64))  # [N,96,64]
    ref_embedding = reference_numpy.forward(weights, ref_log_mel)  # [N,128] float64
    log_mel = np.asarray(export.waveform_to_log_mel(waveform32), dtype=np.float64)
    embedding = np.asarray(export(waveform32), dtype=np.float64)
    if log_mel.shape != ref_log_mel.shape or embedding.shape != ref_embedding.shape:
        raise ConversionError(
            f"probe {name!r}: export gives log-mel {log_mel.shape} and embeddings {embedding.shape}, "
            f"reference gives {ref_log_mel.shape} and {ref_embedding.shape}"
        )
    scale = max(float(np.max(np.abs(ref_embedding), initial=0.0)), 1e-12)
    mismatches = max_diff = 0
    if pca is not None:
        ours = np.asarray(export.postprocess(embedding.astype(np.float32)), dtype=np.int16)
        theirs = reference_numpy.postprocess(ref_embedding, pca["pca_eigen_vectors"], pca["pca_means"]).astype(np.int16)
        mismatches = int(np.count_nonzero(ours != theirs))
        max_diff = int(np.max(np.abs(ours - theirs), initial=0))
    return ProbeFigures(
        name=name,
        examples=int(embedding.shape[0]),
        log_mel_max_abs=float(np.max(np.abs(log_mel - ref_log_mel), initial=0.0)),
        embedding_max_rel=float(np.max(np.abs(embedding - ref_embedding), initial=0.0) / scale),
        min_cosine=float(np.min(_cosines(embedding, ref_embedding), initial=1.0)),
        uint8_mismatches=mismatches,
        uint8_max_diff=max_diff,
    )


def verify_export(
    export: Any,
    *,
    weights: Mapping[str, np.ndarray],
    pca: Mapping[str, np.ndarray] | None,
    frontend_precision: str,
    stage: str,
) -> list[ProbeFigures]:
    """Compare on every probe signal; raise ConversionError (with all figures) past a tolerance."""
    tolerance = TOLERANCES[frontend_precision]
    figures = [
        compare_probe(name, waveform, export, weights=weights, pca=pca)
        for name, waveform in reference_numpy.probe_signals().items()
    ]
    failures = []
    for f in figures:
        if f.log_mel_max_abs > tolerance["log_mel_max_abs"]:
            failures.append(f"{f.name}: log-mel max abs error {f.log_mel_max_abs:.3g} > {tolerance['log_mel_max_abs']:g}")
        if f.embedding_max_rel > tolerance["embedding_max_rel"]:
            failures.append(f"{f.name}: embedding max rel error {f.embedding_max_rel:.3g} > {tolerance['embedding_max_rel']:g}")
        if f.min_cosine < tolerance["min_cosine"]:
            failures.append(f"{f.name}: min cosine {f.min_cosine:.7f} < {tolerance['min_cosine']}")
        if f.uint8_max_diff > tolerance["uint8_max_diff"]:
            failures.append(f"{f.name}: uint8 values differ by up to {f.uint8_max_diff} ({f.uint8_mismatches} entries)")
    if failures:
        table = "\n".join(f"  {f.as_dict()}" for f in figures)
        raise ConversionError(
            f"{stage}: the export disagrees with the checkpoint's float64 reference:\n  "
            + "\n  ".join(failures)
            + f"\nall figures:\n{table}"
        )
    return figures
