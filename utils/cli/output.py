"""What scripts write for people: output paths checked before long work,
JSON results (atomically), and the metrics table."""

from __future__ import annotations

import json
import math

from utils.atomic import atomic_write_bytes
from utils.engine.files import check_writable_file, ensure_dir  # noqa: F401  (re-exported)


def _json_ready(value):
    # NaN is not JSON; an undefined mean is written as null.
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def write_json(path, result) -> None:
    atomic_write_bytes(path, (json.dumps(_json_ready(result), indent=2) + "\n").encode())


def _fmt(x) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def format_metrics(result: dict, title: str = "") -> str:
    """A readable table of the dict that utils.retrieval.metrics.summarize returns."""
    lines = [title] if title else []
    head = f"{result['num_queries']} queries, {result['num_database']} database items"
    if result.get("bits") is not None:
        head = f"{result['bits']} bits, " + head
    lines.append(head)
    rows = [("mAP", result["mAP"]), ("mAP (tie-aware)", result["mAP_tie_aware"])]
    rows += [(f"precision@{k}", v) for k, v in result["precision_at_k"].items()]
    rows += [(f"mAP@{k}", v) for k, v in result.get("map_at_k", {}).items()]
    if "radius" in result:
        r = result["radius"]
        rows += [(f"precision (Hamming radius <= {r})", result["precision_within_radius"]),
                 (f"recall (Hamming radius <= {r})", result["recall_within_radius"])]
    width = max(len(name) for name, _ in rows)
    lines += [f"  {name:<{width}}  {_fmt(value)}" for name, value in rows]
    curve = result["curve"]
    lines.append("  precision curve (position: precision / recall)")
    for k, p, rc in zip(curve["positions"], curve["precision"], curve["recall"]):
        lines.append(f"    {k:>8}: {_fmt(p)} / {_fmt(rc)}")
    n_orphan = result.get("queries_without_relevant", 0)
    if n_orphan:
        how = "left out of the means" if result.get("skip_no_relevant") else "counted with AP 0"
        lines.append(f"  {n_orphan} queries have no relevant database item ({how})")
    return "\n".join(lines)
