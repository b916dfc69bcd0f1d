"""``--plot FILE.png``: FAD against sample size with its extrapolation and interval, and the
per-file contributions. Needs matplotlib (the ``plot`` extra), imported only here."""
from __future__ import annotations

import os
from typing import Union

import numpy as np

from vggish_tf2.errors import InvalidArgumentError

PathLike = Union[str, os.PathLike]
TOP_FILES = 20  # bars in the contributions panel


def require_matplotlib():
    """Import matplotlib with a non-interactive backend, or say how to install it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise InvalidArgumentError("--plot needs matplotlib: pip install 'vggish-tf2[plot]'") from e
    return plt


def plot_report(report: dict, path: PathLike) -> None:
    """Write a PNG: left, FAD against 1/n (the FAD-inf fit, extrapolated to 1/n = 0, and the
    interval at the full size); right, the eval files that pull FAD up most (leave-one-out)."""
    plt = require_matplotlib()
    per_file = [row for row in (report.get("per_file") or []) if row.get("relative") is not None]
    figure, axes = plt.subplots(1, 2 if per_file else 1, figsize=(12 if per_file else 6.5, 4.5), squeeze=False)
    left = axes[0][0]
    n_eval = report["eval"]["examples"]
    if "fad_inf" in report:
        inf = report["fad_inf"]
        ns = np.array([p[0] for p in inf["points"]], dtype=np.float64)
        values = np.array([p[1] for p in inf["points"]])
        left.plot(1 / ns, values, "o", label="FAD on eval subsets of n examples")
        xs = np.linspace(0, 1 / ns.min(), 50)
        left.plot(xs, inf["slope"] * xs + inf["value"], "-", label=f"fit (r2 {inf['r2']:.3f}); FAD-inf {inf['value']:.4g}")
        left.plot([0], [inf["value"]], "s", color="C1")
    if n_eval:
        left.plot([1 / n_eval], [report["fad"]], "D", color="C3", label=f"FAD {report['fad']:.4g} (n = {n_eval})")
        if "ci" in report:
            ci = report["ci"]
            left.errorbar([1 / n_eval], [report["fad"]], yerr=[[report["fad"] - ci["low"]], [ci["high"] - report["fad"]]],
                          color="C3", capsize=4, label=f"{ci['level']:.0%} interval [{ci['low']:.4g}, {ci['high']:.4g}]")
    left.set_xlabel("1 / n (eval examples)")
    left.set_ylabel("FAD")
    left.set_xlim(left=0)
    left.legend(fontsize=8)
    title = "FAD against sample size"
    if any("SYNTHETIC" in w for w in report.get("warnings", [])):
        title += " (SYNTHETIC WEIGHTS)"
    left.set_title(title)
    if per_file:
        right = axes[0][1]
        top = sorted(per_file, key=lambda r: -r["relative"])[:TOP_FILES]
        right.barh(range(len(top))[::-1], [r["relative"] for r in top], color="C2")
        right.set_yticks(range(len(top))[::-1])
        right.set_yticklabels([_short(r["file"]) for r in top], fontsize=7)
        right.axvline(0, color="black", linewidth=0.5)
        right.set_xlabel("FAD(all) - FAD(without file), minus the mean over files")
        right.set_title("Eval files that pull FAD up")
    figure.tight_layout()
    figure.savefig(os.fspath(path), dpi=110)
    plt.close(figure)


def _short(name: str, width: int = 40) -> str:
    return name if len(name) <= width else "..." + name[-(width - 3):]
