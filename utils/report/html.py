"""One self-contained HTML page per run: the settings, the metrics table, the
plots and the retrieval grid, images embedded (data: URIs), no script, font
or style fetched from anywhere, so the file can be mailed and opened offline."""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Optional, Sequence, Tuple

from utils.atomic import atomic_write_bytes

STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; background: #fff; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; }
th { background: #eef; } td.name { text-align: left; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.4em 0; }
.settings td { text-align: left; font-family: monospace; }
"""

# the rows of the metrics table: (label, key in the metrics dict)
ROWS = (("mAP", "mAP"), ("mAP (tie-aware)", "mAP_tie_aware"),
        ("precision within radius", "precision_within_radius"),
        ("recall within radius", "recall_within_radius"))


def _number(value) -> str:
    if value is None:
        return "&mdash;"  # not defined for this run (e.g. a radius for PQ), or unknown
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return f"{value:.4f}"


def _image(path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(Path(path).stem)}" src="data:image/png;base64,{data}">'


def metric_rows(metrics: dict):
    """(row label, key, value) of everything the table shows for one run."""
    rows = [(label, key, metrics.get(key)) for label, key in ROWS if key in metrics]
    rows += [(f"precision@{k}", f"precision_at_k.{k}", v)
             for k, v in metrics.get("precision_at_k", {}).items()]
    return rows


def write_report(path, title: str, settings: dict, runs: Sequence[Tuple[str, dict]],
                 figures: Sequence = (), grid: Optional[str] = None, extra_tables=(),
                 grid_ties: bool = False) -> Path:
    """``runs``: [(label, metrics)]; ``figures``: PNG files; ``grid``: PNG file;
    ``extra_tables``: [(caption, header, rows)] (e.g. DCHN's cross-view matrix)."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    parts.append("<h2>Settings</h2><table class='settings'>")
    for key, value in settings.items():
        parts.append(f"<tr><td>{html.escape(str(key))}</td><td>{html.escape(str(value))}</td></tr>")
    parts.append("</table><h2>Metrics</h2><table id='metrics'><tr><th>metric</th>")
    parts += [f"<th>{html.escape(label)}</th>" for label, _ in runs]
    parts.append("</tr>")
    keys = [(row, key) for row, key, _ in metric_rows(runs[0][1])] if runs else []
    for row, key in keys:
        parts.append(f"<tr><td class='name'>{html.escape(row)}</td>")
        for label, metrics in runs:
            value = dict((k, v) for _, k, v in metric_rows(metrics)).get(key)
            parts.append(f"<td class='metric' data-run='{html.escape(label)}' data-key='{key}'>"
                         f"{_number(value)}</td>")
        parts.append("</tr>")
    parts.append("</table>")
    for caption, header, rows in extra_tables:
        parts.append(f"<h2>{html.escape(caption)}</h2><table><tr>"
                     + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
        for row in rows:
            parts.append("<tr>" + "".join(
                f"<td class='name'>{html.escape(str(c))}</td>" if isinstance(c, str)
                else f"<td>{_number(c)}</td>" for c in row) + "</tr>")
        parts.append("</table>")
    parts += protocol_sections(runs)
    if figures:
        parts.append("<h2>Curves</h2>" + "".join(_image(f) for f in figures))
    if grid:
        ties = (" Items at the same distance are shown in database index order (the ranking's "
                "tie rule).") if grid_ties else ""
        parts.append("<h2>Retrieved items</h2><p>Green: relevant, red: not; the number is the "
                     f"Hamming distance or PQ score.{ties}</p>" + _image(grid))
    summary = [{"label": label, **{k: v for k, v in m.items() if not isinstance(v, dict)}}
               for label, m in runs]
    parts.append("<h2>Numbers as JSON</h2><pre id='json'>"
                 + html.escape(json.dumps(summary, indent=1, default=str)) + "</pre>")
    parts.append("</body></html>")
    atomic_write_bytes(path, "\n".join(parts).encode("utf-8"))
    return Path(path)


# the lines of a protocol statement a report shows, in this order
PROTOCOL_LINES = (("name", "protocol"), ("summary", "what"), ("sizes", "split sizes (protocol)"),
                  ("found", "split sizes (found)"), ("map_at", "R of mAP@R"),
                  ("relevance", "relevance"), ("no_relevant", "queries without a relevant item"),
                  ("ties", "ties"), ("train_database", "training set and database"),
                  ("source", "source"), ("files", "files read (sha256)"))


def protocol_sections(runs) -> list:
    """One table per distinct protocol the runs were measured under."""
    seen, parts = [], []
    for _, metrics in runs:
        stated = metrics.get("protocol")
        if isinstance(stated, dict) and stated not in seen:
            seen.append(stated)
    for stated in seen:
        parts.append("<h2>Protocol</h2><table class='settings'>")
        for key, label in PROTOCOL_LINES:
            value = stated.get(key)
            if key == "files":
                value = ", ".join(f"{f['name']} {f['sha256'][:16]}" for f in value or []) or None
            elif key == "name" and not value:
                value = "none named: the data's own splits"
            elif isinstance(value, dict):
                value = ", ".join(f"{k} {v}" for k, v in value.items() if v is not None) or None
            if value is not None:
                parts.append(f"<tr><td>{html.escape(label)}</td>"
                             f"<td>{html.escape(str(value))}</td></tr>")
        parts.append("</table>")
    return parts
