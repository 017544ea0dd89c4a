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


def _draw(plt, out_dir: Path, name: str, series: Series, title: str, xlabel: str,
          ylabel: str, dashed=(), log_x: bool = False, unit_x: bool = False) -> dict:
    """One figure of ``series`` (label -> points; labels in ``dashed`` drawn
    dashed), written as ``name``.png and .svg; returns its files and series."""
    fig, ax = plt.subplots(figsize=SIZE_INCHES)
    for label, points in series.items():
        xs, ys = zip(*points) if points else ((), ())
        ax.plot(xs, ys, marker=".", linestyle="--" if label in dashed else "-", label=label)
    if log_x:
        ax.set_xscale("log")
    if unit_x:
        ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    files = [out_dir / f"{name}.png", out_dir / f"{name}.svg"]
    for path in files:
        fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return {"files": files, "series": series}


def plot_curves(runs: Sequence[Tuple[str, dict]], out_dir) -> Dict[str, dict]:
    """Draw the three figures for ``runs`` [(label, metrics)]; returns, per
    figure, its files and the series drawn per label."""
    plt = _pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    drawn = {
        "pr_curve": _draw(
            plt, out_dir, "pr_curve", {label: pr_series(m) for label, m in runs},
            "precision-recall (Hamming radii; PQ: score thresholds)", "recall", "precision",
            unit_x=True),
        "precision_at_positions": _draw(
            plt, out_dir, "precision_at_positions",
            {label: _finite(zip(m["curve"]["positions"], m["curve"]["precision"]))
             for label, m in runs},
            "precision at ranking positions", "ranking position", "precision", log_x=True),
    }
    hamming = [(label, m["pr_curve_radius"]) for label, m in runs if m.get("pr_curve_radius")]
    if hamming:
        series: Series = {}
        for label, radius in hamming:
            for name in ("precision", "recall"):
                series[f"{label} {name}"] = _finite(zip(radius["radius"], radius[name]))
        drawn["radius"] = _draw(
            plt, out_dir, "radius", series, "precision and recall within Hamming radius",
            "Hamming radius r (inclusive)", "within radius r",
            dashed={f"{label} recall" for label, _ in hamming})
    return drawn
