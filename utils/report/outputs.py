"""The ``--plot``, ``--show-results`` and ``--report`` outputs of the
evaluating scripts, written from their metrics (and, for the grid, the
encoded splits and the datasets' images).  ``ReportOptions`` says which."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

from utils.engine.files import check_writable_file, ensure_dir
from utils.errors import UsageError

TOP_K = 10


@dataclass
class GridInputs:
    """What the retrieval grid needs: the method (its ranking), the encoded
    queries and database, and the datasets holding their images."""
    method: object
    queries: object  # methods.base.Encoded
    database: object
    query_images: object  # a dataset: item i -> (image tensor, label)
    database_images: object


@dataclass(frozen=True)
class ReportOptions:
    """--plot DIR, --show-results DIR (and --show-queries), --report OUT.html."""
    plot: Optional[str] = None
    show_results: Optional[str] = None
    show_queries: int = 8
    report: Optional[str] = None
    seed: int = 0  # chooses the grid's queries

    @property
    def wanted(self) -> bool:
        return bool(self.plot or self.show_results or self.report)

    def outputs(self) -> list:
        """(path, flag) of the files written (the folders' own files are new)."""
        return [(self.report, "--report")] if self.report else []


def check_outputs(options: ReportOptions) -> None:
    """Fail before any long work when an output cannot be written or matplotlib is missing."""
    if options.plot:
        ensure_dir(options.plot, "--plot")
    if options.show_results:
        ensure_dir(options.show_results, "--show-results")
    if options.report:
        check_writable_file(options.report, "--report")
    if options.plot or options.report:
        from utils.report.plots import _pyplot

        _pyplot()


def relevant(query_label, db_labels) -> np.ndarray:
    q, d = np.asarray(query_label), np.asarray(db_labels)
    if d.ndim == 1:
        return d == q
    return (d @ q.reshape(-1)) > 0


def write_grid(grid: GridInputs, out_dir, seed: int = 0, num_queries: int = 8, k: int = TOP_K):
    from utils.report.grid import TIE_NOTE, draw_grid, ties_shown, to_uint8_image

    n = len(grid.queries)
    rows = np.sort(np.random.RandomState(seed).choice(n, size=min(num_queries, n), replace=False))
    indices, values = grid.method.top_k(grid.queries, grid.database, k, rows)
    db_labels = grid.database.labels.cpu().numpy()
    q_labels = grid.queries.labels.cpu().numpy()
    rel = np.stack([relevant(q_labels[r], db_labels[idx]) for r, idx in zip(rows, indices)])
    query_images = [to_uint8_image(grid.query_images[int(r)][0]) for r in rows]
    result_images = [[to_uint8_image(grid.database_images[int(i)][0]) for i in idx] for idx in indices]
    path = Path(out_dir) / "retrieval.png"
    ties = ties_shown(values)
    layout = draw_grid(query_images, result_images, rel, values, path,
                       note=TIE_NOTE if ties else "")
    return {"file": path, "queries": rows.tolist(), "indices": np.asarray(indices).tolist(),
            "values": np.asarray(values).tolist(), "relevant": rel.tolist(), "layout": layout,
            "ties": ties}


def write_outputs(options: ReportOptions, title: str, settings: dict,
                  runs: Sequence[Tuple[str, dict]], grid: Optional[GridInputs] = None,
                  extra_tables=()) -> dict:
    """Write what the options ask for; returns what was written (for tests)."""
    written = {}
    if options.show_results and grid is None:
        raise UsageError("--show-results needs images: evaluate a checkpoint on a dataset "
                         "(stored codes and feature sets have none)")
    if options.plot:
        from utils.report.plots import plot_curves

        written["plots"] = plot_curves(runs, options.plot)
    if options.show_results:
        written["grid"] = write_grid(grid, options.show_results, options.seed,
                                     options.show_queries)
    if options.report:
        from utils.report.html import write_report
        from utils.report.plots import plot_curves

        with tempfile.TemporaryDirectory() as tmp:
            plots = written.get("plots") or plot_curves(runs, tmp)
            figures = [f for fig in plots.values() for f in fig["files"] if f.suffix == ".png"]
            drawn = written.get("grid") or (write_grid(grid, tmp, options.seed) if grid else None)
            written["report"] = write_report(options.report, title, settings, runs, figures,
                                             drawn["file"] if drawn else None, extra_tables,
                                             grid_ties=bool(drawn and drawn["ties"]))
    return written
