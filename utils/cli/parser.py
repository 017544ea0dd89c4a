"""Command-line parsing shared by every script: a parser whose errors are one
line with exit status 2, the checked number types every numeric flag uses, and
the flag groups several scripts share.

Every numeric flag of every script takes one of the types below, so a negative
or absurd value (``--lr -1``, ``--radius -1``, ``--bs 0``, ``nan``) is refused
while parsing, in one line, before any work starts (tests/test_cli.py walks
every script's parser to keep it so)."""

from __future__ import annotations

import argparse
import math
import sys

EXIT_USAGE = 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse with ``error: <message>`` on one line (no usage dump), exit 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        print(f"error: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def _checked(kind, name: str, ok, requirement: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {requirement}, got {text!r}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected {requirement}, got {text}")
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {requirement}, got {text}")
        return value

    parse.__name__ = name
    parse.checked_number = True  # marks the flag as checked for tests/test_cli.py
    return parse


positive_int = _checked(int, "positive_int", lambda v: v > 0, "a positive integer")
non_negative_int = _checked(int, "non_negative_int", lambda v: v >= 0, "an integer >= 0")
positive_float = _checked(float, "positive_float", lambda v: v > 0, "a positive number")
non_negative_float = _checked(float, "non_negative_float", lambda v: v >= 0, "a number >= 0")
fraction = _checked(float, "fraction", lambda v: 0 <= v <= 1, "a number between 0 and 1")


def int_at_least(low: int):
    return _checked(int, f"int_at_least_{low}", lambda v: v >= low, f"an integer >= {low}")


def add_engine_args(parser):
    """The training-engine flags every training script shares."""
    g = parser.add_argument_group("engine")
    g.add_argument("--epochs", type=positive_int, help="epochs (default by recipe)")
    g.add_argument("--eval-every", type=non_negative_int,
                   help="evaluate every N epochs (default by recipe; 0: never)")
    add_device_arg(g)
    g.add_argument("--seed", type=non_negative_int, default=0,
                   help="seeds Python, NumPy, torch (all devices) and the data order")
    g.add_argument("--deterministic", action="store_true",
                   help="deterministic algorithms only (an op without one is an error); "
                        "sets CUBLAS_WORKSPACE_CONFIG and turns cudnn.benchmark off")
    g.add_argument("--resume", metavar="PATH|auto",
                   help="continue a run from a checkpoint it wrote (auto: its _last file)")
    g.add_argument("--overwrite", action="store_true",
                   help="start afresh even if the --save file exists (it is replaced)")
    add_speed_args(g)
    g.add_argument("--checkpoint-dir", default="checkpoint")
    g.add_argument("--log-dir", default="log")
    g.add_argument("--json", metavar="OUT", help="write the final metrics as JSON")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    return g


def add_speed_args(group, layout: bool = True):
    """--amp, and (for convolutional networks) --compile and --channels-last."""
    group.add_argument("--amp", nargs="?", const="auto", choices=["auto", "bf16", "fp16"],
                       help="mixed precision: bf16 autocast where supported, else fp16 with a "
                            "grad scaler (--amp fp16 / --amp bf16 to choose)")
    if layout:
        group.add_argument("--compile", action="store_true",
                           help="run the network through torch.compile")
        group.add_argument("--channels-last", action="store_true",
                           help="channels-last memory format")


def add_device_arg(group):
    group.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def add_workers_arg(group):
    group.add_argument("--workers", type=non_negative_int,
                       help="data loader processes for image files (default: from the CPU "
                            "count; in-memory data needs none)")


def add_metric_args(parser, topk, radius: bool = True):
    """The metric flags of every evaluating script."""
    g = parser.add_argument_group("metrics")
    if radius:
        g.add_argument("--radius", type=non_negative_int, default=2,
                       help="Hamming radius of precision/recall (inclusive)")
    g.add_argument("--topk", type=positive_int, nargs="+", default=list(topk),
                   help="precision at these ranks")
    g.add_argument("--curve", type=positive_int, nargs="+",
                   help="ranking positions of the precision curve "
                        "(default 1 5 10 20 50 100 200 500 1000 and N)")
    g.add_argument("--map-at", type=positive_int, nargs="+", default=[],
                   help="also report mAP@k (DeepHash's definition)")
    g.add_argument("--skip-no-relevant", action="store_true",
                   help="leave queries without a relevant item out of the means")
    return g


def add_report_args(parser):
    """--plot, --show-results, --report (and --seed for the grid's queries
    where the script has no seed yet)."""
    g = parser.add_argument_group("pictures and report")
    g.add_argument("--plot", metavar="DIR",
                   help="write the precision-recall, precision-at-positions and radius plots "
                        "(PNG and SVG) into DIR (needs matplotlib)")
    g.add_argument("--show-results", metavar="DIR",
                   help="write DIR/retrieval.png: queries and their top-10 (green: relevant)")
    g.add_argument("--show-queries", type=positive_int, default=8,
                   help="queries in the --show-results grid (drawn with --seed)")
    g.add_argument("--report", metavar="OUT.html",
                   help="one self-contained HTML page: settings, metrics, plots, grid")
    if "--seed" not in parser._option_string_actions:
        g.add_argument("--seed", type=non_negative_int, default=0,
                       help="chooses the queries of the --show-results grid")
    return g
