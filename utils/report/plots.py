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
from typing import Dict, List, Optional, Sequence, Tuple

from utils.errors import UsageError

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


# one colour per method in every figure (bits and seeds never change it)
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
           "#17becf", "#7f7f7f", "#bcbd22")
MARKERS = (".", "s", "^", "v", "D", "x", "+", "*")


def method_of(label: str) -> str:
    """The method a legend label names (its first word: "dcdh 16 bits")."""
    return label.split(" ")[0]


def colours_of(labels) -> dict:
    methods = list(dict.fromkeys(method_of(label) for label in labels))
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(methods)}


def _band(curves: List[List[Tuple[float, float]]]):
    """(mean points, low, high) of curves sampled at the same positions (one
    per seed): x and y averaged per position, the band from the lowest to the
    highest y."""
    n = min(len(c) for c in curves)
    mean, low, high = [], [], []
    for i in range(n):
        xs, ys = [c[i][0] for c in curves], [c[i][1] for c in curves]
        mean.append((sum(xs) / len(xs), sum(ys) / len(ys)))
        low.append(min(ys))
        high.append(max(ys))
    return mean, low, high


def _draw(plt, out_dir: Path, name: str, series: Dict[str, List[List[Tuple[float, float]]]],
          title: str, xlabel: str, ylabel: str, dashed=(), log_x: bool = False,
          unit_x: bool = False, colours: Optional[dict] = None) -> dict:
    """One figure of ``series`` (label -> one curve per seed; labels in
    ``dashed`` drawn dashed), written as ``name``.png and .svg: the mean curve,
    and where there are several seeds the band from their lowest to highest
    value.  Returns its files and the series drawn (mean curves)."""
    fig, ax = plt.subplots(figsize=SIZE_INCHES)
    colours = colours or colours_of(series)
    drawn, markers = {}, {}
    for label, curves in series.items():
        curves = [c for c in curves if c]
        if not curves:
            drawn[label] = []
            continue
        points, low, high = _band(curves) if len(curves) > 1 else (curves[0], None, None)
        colour = colours[method_of(label)]
        marker = markers.setdefault(label.replace(" recall", "").replace(" precision", ""),
                                    MARKERS[sum(1 for k in markers if method_of(k) == method_of(
                                        label)) % len(MARKERS)])
        xs, ys = zip(*points)
        shown = label if len(curves) == 1 else f"{label} (mean of {len(curves)} seeds, band: min-max)"
        ax.plot(xs, ys, marker=marker, color=colour,
                linestyle="--" if label in dashed else "-", label=shown)
        if low is not None:
            ax.fill_between(xs, low, high, color=colour, alpha=0.15, linewidth=0)
        drawn[label] = list(points)
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
    return {"files": files, "series": drawn}


def _grouped(runs, curve) -> Dict[str, list]:
    """label -> [curve of each run with that label] (the runs of one cell's seeds)."""
    out: Dict[str, list] = {}
    for label, metrics in runs:
        out.setdefault(label, []).append(curve(metrics))
    return out


def plot_curves(runs: Sequence[Tuple[str, dict]], out_dir) -> Dict[str, dict]:
    """Draw the three figures for ``runs`` [(label, metrics)] (several runs
    with one label: one cell's seeds, drawn as a band); returns, per figure,
    its files and the series drawn per label."""
    plt = _pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    colours = colours_of(label for label, _ in runs)
    hamming_pr = {label for label, m in runs if m.get("pr_curve_radius")}
    mixed = 0 < len(hamming_pr) < len({label for label, _ in runs})
    kind = (lambda label: f"{label} ({'Hamming radii' if label in hamming_pr else 'rank thresholds'})") \
        if mixed else (lambda label: label)
    title = "precision-recall over Hamming radii 0..L" if hamming_pr and not mixed else \
        "precision-recall over ranking positions (score thresholds)" if not hamming_pr else \
        "precision-recall (Hamming codes: over radii; PQ: over rank thresholds)"
    drawn = {
        "pr_curve": _draw(
            plt, out_dir, "pr_curve",
            {kind(label): curves for label, curves in _grouped(runs, pr_series).items()},
            title, "recall", "precision", unit_x=True, colours=colours),
        "precision_at_positions": _draw(
            plt, out_dir, "precision_at_positions",
            _grouped(runs, lambda m: _finite(zip(m["curve"]["positions"], m["curve"]["precision"]))),
            "precision at ranking positions", "ranking position", "precision", log_x=True,
            colours=colours),
    }
    if mixed:  # keep the plain labels as keys too, for callers that look curves up by run
        drawn["pr_curve"]["series"].update({label: drawn["pr_curve"]["series"][kind(label)]
                                            for label, _ in runs})
    hamming = [(label, m["pr_curve_radius"]) for label, m in runs if m.get("pr_curve_radius")]
    if hamming:
        series: Dict[str, list] = {}
        for label, radius in hamming:
            for name in ("precision", "recall"):
                series.setdefault(f"{label} {name}", []).append(
                    _finite(zip(radius["radius"], radius[name])))
        drawn["radius"] = _draw(
            plt, out_dir, "radius", series, "precision and recall within Hamming radius",
            "Hamming radius r (inclusive)", "within radius r",
            dashed={f"{label} recall" for label, _ in hamming}, colours=colours)
    return drawn
