"""What every script shares at its edges: one-line errors with exit status 2,
device choice, and writing results (tables and JSON) safely."""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import torch

from utils.names import DATASETS

EXIT_USAGE = 2


EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A problem the user can fix (bad file, wrong flag); reported in one line."""


class Interrupted(Exception):
    """Ctrl-C, with a message saying how to continue; exit status 130."""


def run_script(main, args, handled=(UsageError,)) -> int:
    """Run ``main(args)``; a handled exception becomes ``error: <message>`` on
    stderr and exit status 2 instead of a traceback."""
    try:
        main(args)
    except handled as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except Interrupted as exc:
        print(f"{exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def add_data_args(parser, default_dataset="facescrub"):
    """The dataset flags every script shares."""
    g = parser.add_argument_group("data")
    g.add_argument("--dataset", default=default_dataset, choices=DATASETS)
    g.add_argument("--data-root", help="dataset folder holding train/ and test/ "
                                       "(default data/<dataset>, or the official ./FaceScrub, ./YouTube)")
    g.add_argument("--img-size", type=int,
                   help="input size (DDH data: 32; image folders: default 112)")
    g.add_argument("--workers", type=int, default=0, help="data loader worker processes")
    g.add_argument("--skip-bad-images", action="store_true",
                   help="leave out unreadable images of an ImageFolder tree instead of stopping")
    g.add_argument("--synthetic-ids", type=int, help="built-in data: number of identities (default 20)")
    g.add_argument("--synthetic-train", type=int, help="built-in data: training images per identity")
    g.add_argument("--synthetic-test", type=int, help="built-in data: test images per identity")
    return g


def add_engine_args(parser, eval_every: int):
    """The training-engine flags both training scripts share."""
    g = parser.add_argument_group("engine")
    g.add_argument("--epochs", type=int, help="epochs (default by recipe)")
    g.add_argument("--eval-every", type=int, default=eval_every,
                   help=f"evaluate every N epochs (default {eval_every}; 0: never)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    g.add_argument("--seed", type=int, default=0,
                   help="seeds Python, NumPy, torch (all devices) and the data order")
    g.add_argument("--deterministic", action="store_true",
                   help="also ask torch for deterministic algorithms")
    g.add_argument("--resume", metavar="PATH|auto",
                   help="continue a run from a checkpoint it wrote (auto: its _last file)")
    g.add_argument("--amp", action="store_true",
                   help="mixed precision: bf16 autocast where supported, else fp16 with a grad scaler")
    g.add_argument("--compile", action="store_true", help="run the network through torch.compile")
    g.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    g.add_argument("--checkpoint-dir", default="checkpoint")
    g.add_argument("--log-dir", default="log")
    g.add_argument("--json", metavar="OUT", help="write the final metrics as JSON")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    return g


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present; an unavailable CUDA request is a UsageError."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"unknown --device {name!r}; use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name} requested but CUDA is not available; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(f"--device {name} requested but only {torch.cuda.device_count()} "
                         f"CUDA device(s) exist")
    return device


def check_writable_file(path, flag: str) -> Path:
    """Fail early (before any long work) when ``path`` cannot be written."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"cannot write {flag} {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"cannot write {flag} {path}: permission denied")
    if path.is_dir():
        raise UsageError(f"cannot write {flag} {path}: it is a folder")
    return path


@contextlib.contextmanager
def atomic_open(path):
    """A binary file that replaces ``path`` only once fully written: written to a
    temporary file beside it, synced, then renamed over it, so a crash mid-write
    never leaves a truncated file in place of a good one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path, data: bytes) -> None:
    with atomic_open(path) as f:
        f.write(data)


def _json_ready(value):
    # NaN is not JSON; an undefined mean is written as null.
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def write_json(path, result: dict) -> None:
    atomic_write_bytes(path, (json.dumps(_json_ready(result), indent=2) + "\n").encode())


def _fmt(x) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def format_metrics(result: dict, title: str = "") -> str:
    """A readable table of the dict that utils.metrics.summarize returns."""
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
