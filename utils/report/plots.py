"""The retrieval curves of one or several evaluations, as PNG and SVG:

* ``pr_curve``: precision against recall, over Hamming radii 0..L (the
  ``pr_curve_radius`` of the metrics); for PQ score ranking, over score
  thresholds, i.e. the ranking positions of ``curve``;
* ``precision_at_positions``: precision at ranking positions (the
  Hamming-ranking precision curve);
* ``radius``: precision and recall within Hamming radius r, against r.

Every function returns the series it drew, so a caller (and the tests) can
check the drawn points against the metrics JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from utils.errors import UsageError

Series = Dict[str, List[Tuple[float, float]]]
SIZE_INCHES, DPI = (6.4, 4.8), 100  # 640 x 480 pixels


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise UsageError("plots need matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    return plt


def _finite(points):
    return [(float(x), float(y)) for x, y in points if x is not None and y is not None]


def pr_series(metrics: dict) -> List[Tuple[float, float]]:
    """(recall, precision) points: over Hamming radii, else over ranking positions."""
    curve = metrics.get("pr_curve_radius") or metrics["curve"]
    return _finite(zip(curve["recall"], curve["precision"]))


def _save(fig, out_dir: Path, name: str) -> List[Path]:
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.svg"]
    fig.tight_layout()
    for path in paths:
        fig.savefig(path, dpi=DPI)
    return paths


def plot_curves(runs: Sequence[Tuple[str, dict]], out_dir) -> Dict[str, dict]:
    """Draw the three figures for ``runs`` [(label, metrics)]; returns, per
    figure, its files and the series drawn per label."""
    plt = _pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    drawn = {}

    fig, ax = plt.subplots(figsize=SIZE_INCHES)
    series: Series = {}
    for label, m in runs:
        series[label] = pr_series(m)
        xs, ys = zip(*series[label]) if series[label] else ((), ())
        ax.plot(xs, ys, marker=".", label=label)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("precision-recall (Hamming radii; PQ: score thresholds)")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    drawn["pr_curve"] = {"files": _save(fig, out_dir, "pr_curve"), "series": series}
    plt.close(fig)

    fig, ax = plt.subplots(figsize=SIZE_INCHES)
    series = {}
    for label, m in runs:
        series[label] = _finite(zip(m["curve"]["positions"], m["curve"]["precision"]))
        xs, ys = zip(*series[label]) if series[label] else ((), ())
        ax.plot(xs, ys, marker=".", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("ranking position")
    ax.set_ylabel("precision")
    ax.set_title("precision at ranking positions")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    drawn["precision_at_positions"] = {"files": _save(fig, out_dir, "precision_at_positions"),
                                       "series": series}
    plt.close(fig)

    hamming = [(label, m) for label, m in runs if m.get("pr_curve_radius")]
    if hamming:
        fig, ax = plt.subplots(figsize=SIZE_INCHES)
        series = {}
        for label, m in hamming:
            radius = m["pr_curve_radius"]
            series[f"{label} precision"] = _finite(zip(radius["radius"], radius["precision"]))
            series[f"{label} recall"] = _finite(zip(radius["radius"], radius["recall"]))
            for name in ("precision", "recall"):
                xs, ys = zip(*series[f"{label} {name}"]) if series[f"{label} {name}"] else ((), ())
                ax.plot(xs, ys, marker=".", linestyle="-" if name == "precision" else "--",
                        label=f"{label} {name}")
        ax.set_xlabel("Hamming radius r (inclusive)")
        ax.set_ylabel("within radius r")
        ax.set_title("precision and recall within Hamming radius")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        drawn["radius"] = {"files": _save(fig, out_dir, "radius"), "series": series}
        plt.close(fig)
    return drawn
