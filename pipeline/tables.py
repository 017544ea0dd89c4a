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

from pipeline.options import (DataOptions, EngineOptions, OutputOptions, TrainOptions,
                              data_protocol)
from utils.engine.logs import log
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
    seeds: int = 1  # each cell trained and evaluated with seeds 0 .. seeds-1 (after --seed)
    accept_mismatch: bool = False  # use cells trained otherwise than asked (marked)

    def seed_values(self) -> list:
        return [self.engine.seed + i for i in range(self.seeds)]


@dataclass
class Row:
    method: str
    bits: int
    task: Optional[str] = None  # DCHN: "Image→Text", ...
    metrics: dict = field(default_factory=dict)
    checkpoint: Optional[str] = None
    trained_here: bool = False
    published: Optional[dict] = None
    seed: Optional[int] = None
    provenance: dict = field(default_factory=dict)
    mismatch: list = field(default_factory=list)  # accepted differences from what was asked

    def values(self, columns) -> dict:
        return {c: column_value(self.metrics, c) for c in columns}

    def as_dict(self, dataset: str, columns) -> dict:
        out = {"method": self.method, "bits": self.bits, "dataset": dataset,
               **self.values(columns), "mAP": self.metrics.get("mAP"),
               "checkpoint": self.checkpoint, "trained_here": self.trained_here,
               "seed": self.seed}
        if self.task:
            out["task"] = self.task
        out["published_mAP"] = self.published["mAP"] if self.published else None
        out["published_source"] = self.published["source"] if self.published else None
        out["provenance"] = self.provenance
        out["provenance_mismatch"] = list(self.mismatch)
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


def seed_folder(root: Path, seed: int) -> Path:
    """Seed 0's cells are the single-seed table's; seed s > 0 has a folder of its own."""
    return Path(root) if seed == 0 else Path(root) / f"seed{seed}"


def cell_plan(cls, bits: int, options: TableOptions, root: Path, seed: Optional[int] = None):
    """(training options, members with their files) of one (method, code length, seed) cell."""
    from pipeline.train import plan

    seed = options.engine.seed if seed is None else seed
    root = seed_folder(root, seed)
    output = OutputOptions(checkpoint_dir=str(root), log_dir=str(root / "log"))
    engine = dataclasses.replace(options.engine, seed=seed)
    train_options = TrainOptions(cls.name, options.data, ({"bits": bits},), (None,),
                                 options.overrides, engine, output, options.metrics,
                                 evaluate_after=False)
    return train_options, plan(cls, train_options)[0]


def cell_files(options: TableOptions) -> list:
    """(path, flag) of every file the table's cells train into or read."""
    from methods import method_class

    return [(path, "a cell's checkpoint") for m in options.methods for bits in options.bits
            for seed in options.seed_values()
            for member in cell_plan(method_class(m), bits, options, Path(options.folder),
                                    seed)[1]
            for path in member.files.outputs()]


@dataclass
class Cell:
    """One (method, code length, seed) cell and what its files say."""
    cls: type
    bits: int
    seed: int
    train_options: TrainOptions
    members: list
    state: str = "missing"  # missing | unfinished | ready
    mismatch: list = field(default_factory=list)  # how its files differ from what is asked
    provenance: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.cls.name}, {self.bits} bits, seed {self.seed}"


def asked_provenance(cls, bits: int, options: TableOptions, seed: int, recorded: Mapping) -> dict:
    """What the command asks a cell to be: the method's config and recipe for
    the dataset (with --epochs / --batch), the seed and the data settings."""
    from data import DataFacts

    asked = {"seed": seed, "data": {k: v for k, v in options.data.record().items()
                                    if k in ("dataset", "img_size", "options")}}
    facts = recorded.get("facts")
    try:
        facts = DataFacts.from_dict(facts) if isinstance(facts, Mapping) else None
        config = cls.make_config(options.data.dataset, facts, {"bits": bits})
        recipe = cls.make_recipe(options.data.dataset, facts, config, options.overrides)
    except (UsageError, TypeError, ValueError):
        return asked  # the file's data facts do not build a config: compared on the rest
    asked["config"] = config.as_dict()
    asked["recipe"] = dataclasses.asdict(recipe)
    return asked


def inspect_cell(cls, bits: int, seed: int, options: TableOptions) -> Cell:
    """A cell's state and, where its files exist, how they differ from what is asked."""
    from methods.registry import read_checkpoint
    from utils.engine.loop import run_status
    from utils.engine.provenance import mismatches, of_checkpoint

    train_options, members = cell_plan(cls, bits, options, Path(options.folder), seed)
    cell = Cell(cls, bits, seed, train_options, members)
    status = [run_status(m.files.last, read_checkpoint) for m in members]
    files = [m.files.evaluated for m in members]
    finished = all(p.is_file() and (p != m.files.last or s["finished"])
                   for m, p, s in zip(members, files, status))
    if finished:
        cell.state = "ready"
        read = [read_checkpoint(p) for p in files]
    elif any(s["exists"] for s in status):
        cell.state = "unfinished"
        read = [s["file"] if s["exists"] else None for s in status]
    else:
        return cell
    for obj, s in zip(read, status):
        if obj is None:
            continue
        recorded = of_checkpoint(obj)
        if s["exists"]:
            recorded["epochs_run"], recorded["finished"] = s["epochs_done"], s["finished"]
        facts = obj.get("facts") if isinstance(obj, Mapping) else None
        found = mismatches(recorded, asked_provenance(cls, bits, options, seed, {"facts": facts}))
        cell.mismatch += [d for d in found if d not in cell.mismatch]
        cell.provenance = cell.provenance or recorded
    return cell


def _retrain(cell: Cell, options: TableOptions) -> None:
    """Train the cell as asked: a continuation of its unfinished run, or
    afresh (replacing the files of a run made with other settings)."""
    from pipeline.train import train

    output = cell.train_options.output
    if cell.state == "unfinished" and not cell.mismatch:
        output = dataclasses.replace(output, resume="auto")
    elif cell.state != "missing":
        log.info(f"{cell.name}: trained with {'; '.join(cell.mismatch)}; training it again as "
                 f"asked (--train-missing)")
        output = dataclasses.replace(output, overwrite=True)
    train(dataclasses.replace(cell.train_options, output=output))


def check_cells(cells: Sequence[Cell], options: TableOptions) -> None:
    """A cell made otherwise than asked is never used silently."""
    stale = [c for c in cells if c.mismatch and c.state == "ready" and not options.accept_mismatch
             and not options.train_missing]
    if stale:
        first = stale[0]
        more = f" (and {len(stale) - 1} more cell(s))" if len(stale) > 1 else ""
        raise UsageError(
            f"{first.name}: {first.members[0].files.evaluated} was trained with "
            f"{'; '.join(first.mismatch)}{more}; pass --train-missing to train it as asked, or "
            f"--accept-mismatch to use it as it is (marked in the table)")


def cell_rows(cell: Cell, options: TableOptions) -> list:
    """The rows of one cell: trained if asked and needed, then evaluated
    (DCHN: one row per pair of views)."""
    from methods.base import EvalContext
    from methods.registry import from_checkpoint
    from pipeline.evaluate import evaluate_loaded, resolve_device
    from pipeline.options import metric_options

    cls, bits = cell.cls, cell.bits
    trained = False
    needs = cell.state != "ready" or (cell.mismatch and not options.accept_mismatch)
    if options.train_missing and needs:
        _retrain(cell, options)
        trained = True
        cell = inspect_cell(cls, bits, cell.seed, options)
    files = [m.files.evaluated for m in cell.members]
    if cell.state != "ready":
        return [Row(cls.name, bits, checkpoint=str(files[0]), seed=cell.seed)]
    device = resolve_device(options.engine.device)
    ctx = EvalContext(device, metric_options(cls, options.metrics, options.data),
                      progress=options.engine.progress, workers=options.data.workers)
    loaded = [from_checkpoint(p, cls.name) for p in files]
    evaluation = evaluate_loaded(loaded, options.data, ctx)[0]
    config = {**dataclasses.asdict(cls.Config()), **loaded[0].config}
    return [Row(cls.name, bits, task, metrics, str(files[0]), trained,
                published(cls.name, options.data.dataset, bits, task, config), cell.seed,
                cell.provenance, list(cell.mismatch))
            for task, metrics in evaluation.rows]


def check_table(options: TableOptions) -> None:
    """What a table asks for is checked before any training."""
    from methods import method_class

    for column in options.columns:
        check_column(column)
    classes = [method_class(m) for m in options.methods]
    check_methods(classes, options.data.dataset)
    data_protocol(options.data, classes[0].data_kind)


def plan_table(options: TableOptions) -> list:
    """Every cell of the table with its state, checked: a cell trained
    otherwise than asked stops the table here, before any work."""
    from methods import method_class

    cells = [inspect_cell(method_class(m), bits, seed, options) for m in options.methods
             for bits in options.bits for seed in options.seed_values()]
    check_cells(cells, options)
    return cells


def build_table(options: TableOptions, progress=None) -> list:
    """Every row of the table, one per cell and seed (``progress(number,
    total, method, bits)`` per cell)."""
    cells = plan_table(options)
    rows = []
    for n, cell in enumerate(cells, 1):
        if progress:
            progress(n, len(cells), cell.cls.name, cell.bits)
        rows += cell_rows(cell, options)
    return rows


# -- over seeds -------------------------------------------------------------------------------

def seed_statistics(values: Sequence[float]) -> dict:
    """Mean, sample standard deviation (n - 1), minimum and maximum."""
    import numpy as np

    x = np.asarray(values, dtype=np.float64)
    return {"mean": float(x.mean()), "std": float(x.std(ddof=1)) if len(x) > 1 else 0.0,
            "min": float(x.min()), "max": float(x.max())}


def over_seeds(rows: Sequence[dict], columns: Sequence[str]) -> list:
    """One row per (method, code length, task) from the per-seed rows: each
    column's mean (the cell value), and for mAP its spread over the seeds and
    its distance to the published value."""
    out = []
    keys = list(dict.fromkeys((r["method"], r["bits"], r.get("task")) for r in rows))
    for method, bits, task in keys:
        group = [r for r in rows if (r["method"], r["bits"], r.get("task")) == (method, bits, task)]
        done = [r for r in group if r.get("mAP") is not None]
        first = group[0]
        row = {k: first[k] for k in ("method", "bits", "dataset", "published_mAP",
                                     "published_source") if k in first}
        if task:
            row["task"] = task
        row["seeds"] = [r["seed"] for r in done]
        row["seeds_missing"] = [r["seed"] for r in group if r.get("mAP") is None]
        row["mAP_per_seed"] = [r["mAP"] for r in done]
        row["trained_here"] = any(r["trained_here"] for r in group)
        row["checkpoints"] = [r["checkpoint"] for r in group]
        row["provenance"] = [r.get("provenance") for r in group]
        row["provenance_mismatch"] = sorted({d for r in group for d in r.get("provenance_mismatch", [])})
        for column in columns:
            values = [r[column] for r in done if r.get(column) is not None]
            row[column] = seed_statistics(values)["mean"] if values and len(values) == len(group) \
                else None
        values = row["mAP_per_seed"]
        complete = bool(values) and not row["seeds_missing"]
        stats = seed_statistics(values) if complete else {}
        row["mAP"] = stats.get("mean")
        for name in ("mean", "std", "min", "max"):
            row[f"mAP_{name}"] = stats.get(name)
        pub = row.get("published_mAP")
        row["published_difference"] = stats["mean"] - pub if complete and pub is not None else None
        row["published_inside_range"] = (stats["min"] <= pub <= stats["max"]) \
            if complete and pub is not None else None
        out.append(row)
    return out


def paired_tests(rows: Sequence[dict], alpha: float = 0.05) -> list:
    """For each code length (and task), every pair of methods evaluated on the
    same seeds: the paired t-test of their per-seed mAP (scipy), and whether
    the difference is within the noise (p >= alpha, or too few seeds)."""
    from itertools import combinations

    from scipy import stats

    tests = []
    columns = list(dict.fromkeys((r["bits"], r.get("task")) for r in rows))
    for bits, task in columns:
        group = [r for r in rows if (r["bits"], r.get("task")) == (bits, task) and r["mAP"] is not None]
        for a, b in combinations(group, 2):
            seeds = sorted(set(a["seeds"]) & set(b["seeds"]))
            if len(seeds) < 2:
                continue
            xa = [a["mAP_per_seed"][a["seeds"].index(s)] for s in seeds]
            xb = [b["mAP_per_seed"][b["seeds"].index(s)] for s in seeds]
            diffs = [x - y for x, y in zip(xa, xb)]
            if all(d == diffs[0] for d in diffs):  # no variance: the t statistic is undefined
                p_value = 1.0 if diffs[0] == 0 else 0.0
            else:
                p_value = float(stats.ttest_rel(xa, xb).pvalue)
            tests.append({"bits": bits, "task": task, "a": a["method"], "b": b["method"],
                          "seeds": seeds, "mean_difference": float(sum(diffs) / len(diffs)),
                          "p_value": p_value, "within_noise": p_value >= alpha,
                          "test": "paired t-test (scipy.stats.ttest_rel), two-sided"})
    return tests


def mark_within_noise(rows: Sequence[dict], tests: Sequence[dict]) -> None:
    """Marks the rows whose mAP is not significantly below the best method's of
    its column (``within_noise_of_best``; the best row itself is True)."""
    for row in rows:
        column = [r for r in rows if (r["bits"], r.get("task")) == (row["bits"], row.get("task"))
                  and r.get("mAP") is not None]
        if row.get("mAP") is None or len(column) < 2:
            row["within_noise_of_best"] = None
            continue
        best = max(column, key=lambda r: r["mAP"])
        if best is row:
            row["within_noise_of_best"] = True
            continue
        test = next((t for t in tests if {t["a"], t["b"]} == {row["method"], best["method"]}
                     and (t["bits"], t["task"]) == (row["bits"], row.get("task"))), None)
        row["within_noise_of_best"] = test["within_noise"] if test else None


# -- output ---------------------------------------------------------------------------------

def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.4f}"


def cell_text(row: dict, columns: Sequence[str]) -> str:
    """What one cell shows: its columns (mAP as mean ± std over seeds), the
    published value, and the markers (‡ trained otherwise than asked and
    accepted; ≈ within the noise of the column's best)."""
    parts = []
    for c in columns:
        if c == "mAP" and row.get("mAP_std") is not None and len(row.get("seeds", ())) > 1:
            parts.append(f"{_fmt(row['mAP_mean'])} ± {_fmt(row['mAP_std'])}")
        else:
            parts.append(_fmt(row.get(c)))
    text = " / ".join(parts)
    if row.get("published_mAP") is not None:
        text += f" (published {row['published_mAP']:.4f})"
    if row.get("within_noise_of_best") and row.get("seeds") and len(row["seeds"]) > 1:
        text += " ≈"
    if row.get("provenance_mismatch"):
        text += " ‡"
    return text


def markdown(rows: Sequence[dict], bits: Sequence[int], columns: Sequence[str]) -> str:
    """The table as Markdown: a row per method (and task), a column per code
    length; a cell holds the ``columns`` (named in the first line) and the
    published mAP beside; the markers used are explained below the table."""
    seeds = max((len(r.get("seeds") or ()) for r in rows), default=0)
    what = " / ".join(column_title(c) + (" (mean ± std over seeds)" if c == "mAP" and seeds > 1
                                         else "") for c in columns)
    lines = [f"cells: {what}",
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
            cells.append(cell_text(row, columns))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    notes = []
    if seeds > 1:
        notes.append(f"over {seeds} seeds; ≈: not significantly below the best of its column "
                     f"(paired t-test on the same seeds, p >= 0.05)")
    if any(r.get("provenance_mismatch") for r in rows):
        notes.append("‡: trained otherwise than this command asks (--accept-mismatch); "
                     "see each row's provenance_mismatch")
    return "\n".join(lines + notes)


def csv_text(rows: Sequence[dict]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def report_table(rows: Sequence[dict], columns: Sequence[str]) -> tuple:
    """(title, header, rows) of the report's table: every asked column labelled."""
    seeds = max((len(r.get("seeds") or ()) for r in rows), default=0)
    header = ["method", "bits", *[column_title(c) + (" (mean)" if seeds > 1 else "")
                                  for c in columns]]
    if seeds > 1:
        header += ["mAP std over seeds", "mAP min", "mAP max", "seeds"]
    header += ["published mAP", "marks"]
    body = []
    for r in rows:
        line = [f"{r['method']}{' ' + r['task'] if r.get('task') else ''}", r["bits"],
                *[r.get(c) for c in columns]]
        if seeds > 1:
            line += [r.get("mAP_std"), r.get("mAP_min"), r.get("mAP_max"),
                     " ".join(map(str, r.get("seeds", ())))]
        marks = ("≈ within noise of best " if r.get("within_noise_of_best") and seeds > 1 else "") \
            + ("‡ " + "; ".join(r["provenance_mismatch"]) if r.get("provenance_mismatch") else "")
        body.append(line + [r.get("published_mAP"), marks.strip()])
    return "table", header, body


def provenance_table(rows: Sequence[dict]) -> tuple:
    """(title, header, rows): how each cell (and seed) was made."""
    from utils.engine.provenance import summary

    body = []
    for r in rows:
        records = r["provenance"] if isinstance(r.get("provenance"), list) else [r.get("provenance")]
        seeds = r.get("seeds") or [r.get("seed")]
        for i, record in enumerate(records):
            label = f"{r['method']}{' ' + r['task'] if r.get('task') else ''}"
            body.append([label, r["bits"], seeds[i] if i < len(seeds) else "",
                         summary(record or {}) if record else "not trained"])
    return "provenance of each cell", ["method", "bits", "seed", "how it was made"], body
