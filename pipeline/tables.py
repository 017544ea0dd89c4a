"""Paper-style tables: rows are registered methods (DCHN: query view ->
retrieval view), columns code lengths, each cell a trained checkpoint
evaluated through ``pipeline.evaluate``, with the published value beside it
where the project knows one (``methods/recipes/published_results.json``).

A cell's files are the ones its method names (``Method.run_files``) under
the table's folder; ``train_missing`` trains the cells whose run has not
finished, resuming each from its own resume file.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence, Tuple

from pipeline.options import DataOptions, EngineOptions, OutputOptions, TrainOptions
from utils.errors import UsageError

COLUMNS = {"mAP": "mAP", "tie": "mAP_tie_aware", "P@H2": "precision_within_radius",
           "R@H2": "recall_within_radius"}
COLUMN_NAMES = {"mAP": "mAP", "tie": "tie-aware mAP", "P@H2": "precision within Hamming 2",
                "R@H2": "recall within Hamming 2"}
PUBLISHED = Path(__file__).resolve().parent.parent / "methods" / "recipes" / "published_results.json"


@dataclass(frozen=True)
class TableOptions:
    methods: Tuple[str, ...]
    data: DataOptions
    bits: Tuple[int, ...]
    folder: str = "reproduce"  # where the cells' checkpoints are looked for and trained
    train_missing: bool = False
    overrides: Mapping = field(default_factory=dict)  # recipe values for --train-missing
    columns: Tuple[str, ...] = ("mAP",)
    engine: EngineOptions = EngineOptions()
    metrics: Mapping = field(default_factory=dict)


@dataclass
class Row:
    method: str
    bits: int
    task: Optional[str] = None  # DCHN: "Image→Text", ...
    metrics: dict = field(default_factory=dict)
    checkpoint: Optional[str] = None
    trained_here: bool = False
    published: Optional[dict] = None

    def values(self, columns) -> dict:
        return {c: column_value(self.metrics, c) for c in columns}

    def as_dict(self, dataset: str, columns) -> dict:
        out = {"method": self.method, "bits": self.bits, "dataset": dataset,
               **self.values(columns), "mAP": self.metrics.get("mAP"),
               "checkpoint": self.checkpoint, "trained_here": self.trained_here}
        if self.task:
            out["task"] = self.task
        out["published_mAP"] = self.published["mAP"] if self.published else None
        out["published_source"] = self.published["source"] if self.published else None
        return out


def check_column(column: str) -> None:
    if column not in COLUMNS and not (column.startswith("P@") and column[2:].isdigit()):
        raise UsageError(f"unknown column {column!r}: use mAP, tie, P@H2, R@H2 or P@k")


def column_value(metrics: dict, column: str):
    if column in COLUMNS:
        return metrics.get(COLUMNS[column])
    return metrics.get("precision_at_k", {}).get(column[2:])


def column_title(column: str) -> str:
    return COLUMN_NAMES.get(column, f"precision@{column[2:]}")


# -- published values -------------------------------------------------------------------

def published_values() -> list:
    return json.loads(PUBLISHED.read_text())["results"]


def published(method: str, dataset: str, bits: int, task=None, config: Mapping = {}):
    """The published value of a cell: the entry of that method, dataset, code
    length and task whose settings (e.g. DCHN's available_num) the config has."""
    for entry in published_values():
        if (entry["method"], entry["dataset"], entry["bits"], entry.get("task")) != \
                (method, dataset, bits, task):
            continue
        if all(config.get(k, v) == v for k, v in entry.items() if k in config):
            return entry
    return None


# -- cells ----------------------------------------------------------------------------------

def check_methods(classes: Sequence, dataset: str) -> None:
    """The methods of one table must read one dataset."""
    from data import dataset_spec
    from data.errors import DatasetError

    kinds = {cls.data_kind for cls in classes}
    try:
        dataset_spec(dataset, kinds)
    except DatasetError:
        if len(kinds) > 1:
            names = ", ".join(f"{cls.name} ({cls.data_kind})" for cls in classes)
            raise UsageError(f"{names} do not read one kind of data; compare them in separate "
                             f"tables") from None
        raise


def cell_plan(cls, bits: int, options: TableOptions, root: Path):
    """(training options, members with their files) of one (method, code length) cell."""
    from pipeline.train import plan

    output = OutputOptions(checkpoint_dir=str(root), log_dir=str(root / "log"))
    train_options = TrainOptions(cls.name, options.data, ({"bits": bits},), (None,),
                                 options.overrides, options.engine, output, options.metrics,
                                 evaluate_after=False)
    return train_options, plan(cls, train_options)[0]


def cell_files(options: TableOptions) -> list:
    """(path, flag) of every file the table's cells train into or read."""
    from methods import method_class

    return [(path, "a cell's checkpoint") for m in options.methods for bits in options.bits
            for member in cell_plan(method_class(m), bits, options, Path(options.folder))[1]
            for path in member.files.outputs()]


def cell_rows(cls, bits: int, options: TableOptions, root: Path) -> list:
    """The rows of one (method, code length) cell: trained if asked and
    unfinished, then evaluated (DCHN: one row per pair of views)."""
    from methods.base import EvalContext
    from methods.registry import from_checkpoint, read_checkpoint
    from pipeline.evaluate import evaluate_loaded, resolve_device
    from pipeline.options import metric_options
    from pipeline.train import train
    from utils.engine.loop import run_status

    train_options, members = cell_plan(cls, bits, options, root)
    output = train_options.output
    trained = False
    if options.train_missing:
        status = [run_status(m.files.last, read_checkpoint) for m in members]
        if not all(s["finished"] for s in status):
            resume = "auto" if any(s["exists"] for s in status) else None
            train(dataclasses.replace(train_options, output=dataclasses.replace(
                output, resume=resume)))
            trained = True
    files = [m.files.evaluated for m in members]
    usable = [p for m, p in zip(members, files)
              if p.is_file() and (p != m.files.last or
                                  run_status(p, read_checkpoint)["finished"])]
    if len(usable) < len(files):
        return [Row(cls.name, bits, checkpoint=str(files[0]))]
    device = resolve_device(options.engine.device)
    ctx = EvalContext(device, metric_options(cls, options.metrics),
                      progress=options.engine.progress, workers=options.data.workers)
    loaded = [from_checkpoint(p, cls.name) for p in usable]
    evaluation = evaluate_loaded(loaded, options.data, ctx)[0]
    config = {**dataclasses.asdict(cls.Config()), **loaded[0].config}
    return [Row(cls.name, bits, task, metrics, str(files[0]), trained,
                published(cls.name, options.data.dataset, bits, task, config))
            for task, metrics in evaluation.rows]


def check_table(options: TableOptions) -> None:
    """What a table asks for is checked before any training."""
    from methods import method_class

    for column in options.columns:
        check_column(column)
    check_methods([method_class(m) for m in options.methods], options.data.dataset)


def build_table(options: TableOptions, progress=None) -> list:
    """Every row of the table (``progress(number, total, method, bits)`` per cell)."""
    from methods import method_class

    classes = [method_class(m) for m in options.methods]
    root = Path(options.folder)
    rows, total = [], len(classes) * len(options.bits)
    for i, cls in enumerate(classes):
        for j, bits in enumerate(options.bits):
            if progress:
                progress(i * len(options.bits) + j + 1, total, cls.name, bits)
            rows += cell_rows(cls, bits, options, root)
    return rows


# -- output ---------------------------------------------------------------------------------

def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.4f}"


def markdown(rows: Sequence[dict], bits: Sequence[int], columns: Sequence[str]) -> str:
    """The table as Markdown: a row per method (and task), a column per code
    length; a cell holds the ``columns`` (named in the first line) and the
    published mAP beside."""
    lines = [f"cells: {' / '.join(column_title(c) for c in columns)}",
             "| method | " + " | ".join(f"{b} bits" for b in bits) + " |",
             "|---|" + "---|" * len(bits)]
    keys = list(dict.fromkeys((r["method"], r.get("task")) for r in rows))
    for method, task in keys:
        label = method if not task else f"{method} {task}"
        cells = []
        for b in bits:
            row = next((r for r in rows if r["method"] == method and r.get("task") == task
                        and r["bits"] == b), None)
            if row is None or row.get("mAP") is None:
                cells.append("(no checkpoint)" if row is not None else "")
                continue
            text = " / ".join(_fmt(row.get(c)) for c in columns)
            if row.get("published_mAP") is not None:
                text += f" (published {row['published_mAP']:.4f})"
            cells.append(text)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def csv_text(rows: Sequence[dict]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def report_table(rows: Sequence[dict], columns: Sequence[str]) -> tuple:
    """(title, header, rows) of the report's table: every asked column labelled."""
    header = ["method", "bits", *[column_title(c) for c in columns], "published mAP"]
    body = [[f"{r['method']}{' ' + r['task'] if r.get('task') else ''}", r["bits"],
             *[r.get(c) for c in columns], r.get("published_mAP")] for r in rows]
    return "table", header, body
