"""One paper-style table for one or several methods, a dataset and code lengths.

  python reproduce.py --methods dcdh opqn triplet --dataset synthetic --bits 16 32 --train-missing --epochs 3
  python reproduce.py --methods triplet --dataset cub --bits 16 64 --checkpoints runs/
  python reproduce.py --methods dchn --dataset mirflickr25k --bits 16 32 64 128 --checkpoints dchn_runs/

Rows are methods (DCHN: query view -> retrieval view), columns code lengths;
cells hold mAP (and, with --columns, tie-aware mAP, P@H<=2, R@H<=2, P@k),
with the published value beside it where the project knows one
(methods/recipes/published_results.json; unknown cells stay empty).
Checkpoints are found in --checkpoints (method, bits and dataset read from
the files); --train-missing trains the missing cells with each method's
recipe, resumably (a rerun continues each cell from its _last file).
"""

import contextlib
import csv
import io
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from utils.cli import (ArgumentParser, UsageError, UserError, add_device_arg, add_report_args,
                       check_writable_file, ensure_dir, positive_int, run_script, write_json)

METHODS = ("dcdh", "opqn", "triplet", "dchn")
COLUMNS = {"mAP": "mAP", "tie": "mAP_tie_aware", "P@H2": "precision_within_radius",
           "R@H2": "recall_within_radius"}
PUBLISHED = Path(__file__).resolve().parent / "methods" / "recipes" / "published_results.json"


def get_args_parser():
    p = ArgumentParser(description=__doc__)
    p.add_argument("--methods", nargs="+", required=True, choices=METHODS)
    p.add_argument("--dataset", required=True,
                   help="a dataset every chosen method reads (e.g. synthetic, folder, cub, "
                        "mirflickr25k for dchn)")
    p.add_argument("--bits", type=positive_int, nargs="+", required=True)
    p.add_argument("--checkpoints", default="reproduce", metavar="DIR",
                   help="where the checkpoints are looked for (and trained into)")
    p.add_argument("--train-missing", action="store_true",
                   help="train the cells that have no checkpoint (resumable)")
    p.add_argument("--epochs", type=positive_int, help="epochs for --train-missing (default: recipe)")
    p.add_argument("--batch", type=positive_int,
                   help="batch size for --train-missing (default: recipe; triplet: 4 images "
                        "per class, so a multiple of 4)")
    p.add_argument("--columns", nargs="+", default=["mAP"],
                   help="per cell: mAP, tie (tie-aware mAP), P@H2, R@H2, P@k (e.g. P@10)")
    p.add_argument("--data-root", help="dataset folder, passed to every method")
    p.add_argument("--img-size", type=positive_int, help="input size for the image methods")
    for flag in ("ids", "train", "test"):
        p.add_argument(f"--synthetic-{flag}", type=positive_int, help="built-in face data size")
    add_device_arg(p)
    p.add_argument("--json", metavar="OUT", help='write {"rows": [{"method", "bits", "mAP", ...}]}')
    p.add_argument("--csv", metavar="OUT", help="write the rows as CSV")
    p.add_argument("--no-progress", action="store_true")
    add_report_args(p)
    return p


# -- published values -------------------------------------------------------------------

def published_values() -> list:
    return json.loads(PUBLISHED.read_text())["results"]


def published(method, dataset, bits, task=None) -> Optional[dict]:
    names = {"CUB": "cub", "Stanford_Dogs": "dogs"}
    for entry in published_values():
        if entry["method"] == method and names.get(dataset, dataset) == entry["dataset"] \
                and entry["bits"] == bits and entry.get("task") == task and \
                entry.get("variant", "DCHN100") == "DCHN100":
            return entry
    return None


# -- cells --------------------------------------------------------------------------------

@dataclass
class Cell:
    method: str
    bits: int
    task: Optional[str] = None  # DCHN: "Image→Text" ...
    metrics: dict = field(default_factory=dict)
    checkpoint: Optional[str] = None
    trained: bool = False


def opqn_books(bits: int, img_size: int):
    """A valid (books, words) for a code length: the published 2x256 / 4x64 /
    6x64 / 8x64 shapes where they fit, else the nearest that does."""
    from methods.opqn import PQConfig

    for words in (256, 64, 16, 4):
        per_book = words.bit_length() - 1
        if bits % per_book:
            continue
        try:
            PQConfig.make(bits, bits // per_book, words, img_size)
        except UsageError:
            continue
        return bits // per_book, words
    raise UsageError(f"opqn: no books x words gives {bits} bits on {img_size}x{img_size} input")


def common_flags(args) -> list:
    flags = []
    for name in ("data_root", "img_size", "synthetic_ids", "synthetic_train", "synthetic_test"):
        value = getattr(args, name)
        if value is not None:
            flags += [f"--{name.replace('_', '-')}", str(value)]
    return flags + ["--device", args.device] + (["--no-progress"] if args.no_progress else [])


def run_quietly(module, argv):
    """A script's main in-process, its table kept off the screen; user errors stay errors."""
    parsed = module.get_args_parser().parse_args([str(a) for a in argv])
    with contextlib.redirect_stdout(io.StringIO()):
        return module.main(parsed)


def finished(last: Path, allow=()) -> bool:
    """Whether the resume file says its run completed (fit marks it so)."""
    if not last.is_file():
        return False
    from utils.engine.checkpoint import load_checkpoint

    state = load_checkpoint(last, allow=allow).get("train_state") or {}
    return bool(state.get("finished"))


def _resume_flag(last: Path) -> list:
    return ["--resume", "auto"] if last.is_file() else []


def _epochs(args, flag="--epochs") -> list:
    return [flag, args.epochs] if args.epochs else []


def _batch(args, method: str) -> list:
    if not args.batch:
        return []
    if method != "triplet":
        return ["--bs", args.batch]
    if args.batch % 4:
        raise UsageError(f"--batch {args.batch}: triplet batches hold 4 images per class here; "
                         f"give a multiple of 4")
    return ["--batchSize", args.batch, "--classes-per-batch", args.batch // 4]


def dcdh_cell(args, root: Path, bits: int) -> Cell:
    import dcdh_train
    import evaluation

    name = f"dcdh_{args.dataset}_{bits}bits.tar"
    path, last = root / name, root / name.replace(".tar", "_last.tar")
    cell = Cell("dcdh", bits, checkpoint=str(path))
    flags = ["--dataset", args.dataset, *common_flags(args)]
    if args.train_missing and not finished(last):
        run_quietly(dcdh_train, [*flags, "--save", name, "--len", bits, "--checkpoint-dir", root,
                                 "--log-dir", root / "log", "--eval-every", 0, *_epochs(args),
                                 *_batch(args, "dcdh"), *_resume_flag(last)])
        cell.trained = True
    if path.is_file():
        cell.metrics = run_quietly(evaluation, [*flags, "--load", path, "--len", bits,
                                                "--checkpoint-dir", root])
    return cell


def opqn_cell(args, root: Path, bits: int) -> Cell:
    import opqn_main
    from methods.recipes.opqn import input_size

    books, words = opqn_books(bits, input_size(args.dataset, args.img_size, False))
    name = f"opqn_{args.dataset}_{bits}bits.tar"
    path, last = root / name, root / name.replace(".tar", "_last.tar")
    cell = Cell("opqn", bits, checkpoint=str(path))
    shape = ["--len", bits, "--num", books, "--words", words]
    flags = ["--dataset", args.dataset, *common_flags(args)]
    if args.train_missing and not finished(last):
        run_quietly(opqn_main, [*flags, *shape, "--save", name, "--checkpoint-dir", root,
                                "--log-dir", root / "log", "--eval-every", 0, *_epochs(args),
                                *_batch(args, "opqn"), *_resume_flag(last)])
        cell.trained = True
    if path.is_file():
        cell.metrics = run_quietly(opqn_main, [*flags, *shape, "-e", "--load", path,
                                               "--checkpoint-dir", root])[0]
    return cell


def triplet_cell(args, root: Path, bits: int) -> Cell:
    import triplet_main
    from methods.recipes.triplet import published_margin

    flags = ["--dataset_name", args.dataset, "--binary_bits", bits, "--margin",
             published_margin(bits), *common_flags(args)]
    parsed = triplet_main.get_args_parser().parse_args([str(a) for a in [*flags, "--outf", root]])
    folder = root / triplet_main.run_name(parsed)
    best = folder / triplet_main.snapshot_name(bits, "best")
    last = folder / triplet_main.snapshot_name(bits, "last")
    cell = Cell("triplet", bits, checkpoint=str(best))
    if args.train_missing and not finished(last):
        step = ["--checkpoint_step", max(1, args.epochs - 1)] if args.epochs else []
        run_quietly(triplet_main, [*flags, "--outf", root, "--log-dir", root / "log",
                                   *_epochs(args, "--num_epochs"), *step,
                                   *_batch(args, "triplet"), *_resume_flag(last)])
        cell.trained = True
    # a run too short for the published evaluation rule (epoch > 1) has no best snapshot
    chosen = best if best.is_file() else last if finished(last) else None
    if chosen is not None:
        cell.checkpoint = str(chosen)
        cell.metrics = run_quietly(triplet_main, [*flags, "-e", "--load_path", chosen])
    return cell


def dchn_cells(args, root: Path, bits: int) -> list:
    import main_DCHN
    import trainSHAM
    from methods.dchn import CHECKPOINT_ALLOW, checkpoint_name

    folder = root / f"dchn_{args.dataset}_{bits}bits"
    flags = ["--datasets", args.dataset, "--output_shape", bits, "--sham-dir", folder / "SHAM",
             "--prefix", folder / "checkpoint", "--log-dir", folder / "log", "--device", args.device]
    if args.data_root:
        flags += ["--data-root", args.data_root]
    if args.no_progress:
        flags.append("--no-progress")
    parsed = main_DCHN.get_args_parser().parse_args([str(a) for a in flags])
    views = main_DCHN.load_views(parsed, -1).view_ids
    trained = False
    if args.train_missing:
        run_quietly(trainSHAM, flags)  # reuses an existing W
        for view in views:
            last = folder / "checkpoint" / checkpoint_name(args.dataset, view, bits,
                                                           parsed.available_num)
            if not finished(last, CHECKPOINT_ALLOW):
                run_quietly(main_DCHN, [*flags, "--mode", "train", "--view", view, *_epochs(args),
                                        *_resume_flag(last)])
                trained = True
    try:
        report = run_quietly(main_DCHN, [*flags, "--mode", "eval", "--features-dir", folder])
    except UserError as exc:
        if "trainSHAM" in str(exc) or "no checkpoint" in str(exc):
            return [Cell("dchn", bits, task=None, checkpoint=str(folder))]
        raise
    cells = []
    names = report["view_names"]
    for pair in report["pairs"]:
        task = (f"{names[report['views'].index(pair['query_view'])]}→"
                f"{names[report['views'].index(pair['retrieval_view'])]}")
        metrics = {k: v for k, v in pair.items() if k not in ("query_view", "retrieval_view")}
        cells.append(Cell("dchn", bits, task=task, metrics=metrics,
                          checkpoint=str(folder / "checkpoint"), trained=trained))
    return cells


CELL_BUILDERS = {"dcdh": dcdh_cell, "opqn": opqn_cell, "triplet": triplet_cell}


# -- table --------------------------------------------------------------------------------

def cell_values(cell: Cell, columns) -> dict:
    values = {}
    for column in columns:
        if column in COLUMNS:
            values[column] = cell.metrics.get(COLUMNS[column])
        elif column.startswith("P@"):
            values[column] = cell.metrics.get("precision_at_k", {}).get(column[2:])
        else:
            raise UsageError(f"unknown column {column!r}: use mAP, tie, P@H2, R@H2 or P@k")
    return values


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.4f}"


def markdown(rows, bits, columns) -> str:
    header = "| method | " + " | ".join(f"{b} bits" for b in bits) + " |"
    lines = [header, "|---|" + "---|" * len(bits)]
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


def main(args):
    for column in args.columns:
        cell_values(Cell("x", 0), [column])  # bad columns fail before any work
    if "dchn" in args.methods and len(args.methods) > 1:
        raise UsageError("dchn reads multi-view feature sets; compare it on its own "
                         "(--methods dchn) or leave it out")
    root = ensure_dir(args.checkpoints, "--checkpoints")
    for flag in ("json", "csv"):
        if getattr(args, flag):
            check_writable_file(getattr(args, flag), f"--{flag}")
    if args.show_results:
        raise UsageError("reproduce.py writes tables, plots and reports; use an evaluating "
                         "script's --show-results for pictures of one checkpoint")
    if args.plot or args.report:
        from utils.report.outputs import check_outputs

        check_outputs(args)
    total = len(args.methods) * len(args.bits)
    cells, number = [], 0
    for method in args.methods:
        for bits in args.bits:
            number += 1
            print(f"[cell {number}/{total}] {method}, {bits} bits on {args.dataset} ...",
                  file=sys.stderr, flush=True)
            if method == "dchn":
                cells += dchn_cells(args, root, bits)
            else:
                cells.append(CELL_BUILDERS[method](args, root, bits))
    rows = []
    for cell in cells:
        row = {"method": cell.method, "bits": cell.bits, "dataset": args.dataset,
               **cell_values(cell, args.columns)}
        row.update({"mAP": cell.metrics.get("mAP"), "checkpoint": cell.checkpoint,
                    "trained_here": cell.trained})
        if cell.task:
            row["task"] = cell.task
        ref = published(cell.method, args.dataset, cell.bits, cell.task)
        row["published_mAP"] = ref["mAP"] if ref else None
        row["published_source"] = ref["source"] if ref else None
        rows.append(row)
    print(markdown(rows, args.bits, args.columns))
    if args.json:
        write_json(args.json, {"dataset": args.dataset, "columns": args.columns, "rows": rows})
    if args.csv:
        _write_csv(args.csv, rows)
    if args.plot or args.report:
        from utils.report.outputs import write_outputs

        runs = [(f"{c.method}{' ' + c.task if c.task else ''} {c.bits} bits", c.metrics)
                for c in cells if c.metrics]
        table_rows = [[f"{r['method']}{' ' + r['task'] if r.get('task') else ''}", r["bits"],
                       r.get("mAP"), r.get("published_mAP")] for r in rows]
        write_outputs(args, f"reproduce.py on {args.dataset}",
                      {"methods": " ".join(args.methods), "bits": " ".join(map(str, args.bits)),
                       "dataset": args.dataset, "checkpoints": str(root)}, runs,
                      extra_tables=[("table", ["method", "bits", "mAP", "published mAP"],
                                     table_rows)])
    return {"rows": rows}


def _write_csv(path, rows) -> None:
    from utils.atomic import atomic_write_bytes

    keys = list(dict.fromkeys(k for r in rows for k in r))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buffer.getvalue().encode())


if __name__ == "__main__":
    sys.exit(run_script(main, get_args_parser().parse_args()))
