"""One paper-style table for one or several methods, a dataset and code lengths.

  python reproduce.py --methods dcdh opqn triplet --dataset synthetic --bits 16 32 --train-missing --epochs 3
  python reproduce.py --methods triplet --dataset cub --bits 16 64 --checkpoints runs/
  python reproduce.py --methods dchn --dataset mirflickr25k --bits 16 32 64 128 --checkpoints dchn_runs/
  python reproduce.py --methods dcdh opqn --dataset synthetic --bits 16 --seeds 3 --train-missing

Rows are methods (DCHN: query view -> retrieval view), columns code lengths;
cells hold mAP (and, with --columns, tie-aware mAP, P@H<=2, R@H<=2, P@k),
with the published value beside it where the project knows one
(methods/recipes/published_results.json; unknown cells stay empty).
Each cell's checkpoint is the one its method's training writes under
--checkpoints (seed s > 0: under --checkpoints/seed<s>); --train-missing
trains the cells whose run has not finished with each method's recipe,
resumably (a rerun continues each cell from its _last file).  A cell is used
only when its file records the settings this command asks for (config,
recipe with --epochs / --batch, seed, data); otherwise the table stops with
one line, unless --train-missing (train it again as asked) or
--accept-mismatch (use it, marked ‡).  --seeds N gives each cell's mean,
standard deviation, minimum and maximum over N seeds, and a paired t-test
between methods on the same seeds (≈: within the noise of the best).
"""

import sys

import utils.cli.interrupts  # noqa: F401  (first: Ctrl-C while torch loads)
from pipeline.cli import (add_cache_args, add_device_arg, add_protocol_args, add_report_args,
                          add_synthetic_args, data_options, engine_options, metric_values,
                          report_options)
from utils.cli import (ArgumentParser, UsageError, code_length, image_side, int_between,
                       positive_int, run_script, seed_int)


def get_args_parser():
    from methods import method_names

    p = ArgumentParser(description=__doc__)
    p.add_argument("--methods", nargs="+", required=True, choices=list(method_names()),
                   help="the table's rows (any registered method)")
    p.add_argument("--dataset", required=True,
                   help="a dataset every chosen method reads (e.g. synthetic, folder, cub, "
                        "mirflickr25k for dchn)")
    p.add_argument("--bits", type=code_length, nargs="+", required=True,
                   help="the table's columns: code lengths")
    p.add_argument("--checkpoints", default="reproduce", metavar="DIR",
                   help="where the cells' checkpoints are looked for (and trained into)")
    p.add_argument("--train-missing", action="store_true",
                   help="train the cells that have no finished run (resumable)")
    p.add_argument("--epochs", type=positive_int,
                   help="epochs for --train-missing (default: each method's recipe)")
    p.add_argument("--batch", type=positive_int,
                   help="batch size for --train-missing (default: each method's recipe)")
    p.add_argument("--seeds", type=int_between(1, 1000, "seeds"), default=1,
                   help="train and evaluate every cell with N seeds (--seed, --seed + 1, ...) "
                        "and report mean, std, min and max")
    p.add_argument("--seed", type=seed_int, default=0, help="the first seed")
    p.add_argument("--accept-mismatch", action="store_true",
                   help="use cells whose files were trained with other settings than this "
                        "command asks for (marked ‡ in the table)")
    p.add_argument("--columns", nargs="+", default=["mAP"],
                   help="per cell: mAP, tie (tie-aware mAP), P@H2, R@H2, P@k (e.g. P@10)")
    p.add_argument("--data-root", help="dataset folder, passed to every method")
    p.add_argument("--layout", choices=["ddh", "folders"],
                   help="FaceScrub / YouTube Faces: the DDH pickles or the image folders for every "
                        "method (default: each method's own, as its published code reads them)")
    p.add_argument("--img-size", type=image_side, help="input size for the image methods")
    add_protocol_args(p)
    add_cache_args(p)
    add_synthetic_args(p)
    add_device_arg(p)
    p.add_argument("--json", metavar="OUT", help='write {"rows": [{"method", "bits", "mAP", ...}]}')
    p.add_argument("--csv", metavar="OUT", help="write the rows as CSV")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_report_args(p)
    return p


def main(args):
    from pipeline.outputs import claim_call_outputs
    from pipeline.tables import (TableOptions, build_table, cell_files, check_table, csv_text,
                                 mark_within_noise, markdown, over_seeds, paired_tests,
                                 provenance_table, report_table)
    from utils.atomic import atomic_write_bytes
    from utils.cli.output import write_json

    if args.show_results:
        raise UsageError("reproduce.py writes tables, plots and reports; use an evaluating "
                         "script's --show-results for pictures of one checkpoint")
    from data import canonical_dataset
    from utils.engine.files import Output

    args.dataset = canonical_dataset(args.dataset)
    options = TableOptions(tuple(args.methods), data_options(args), tuple(args.bits),
                           args.checkpoints, args.train_missing,
                           {"epochs": args.epochs, "batch": args.batch}, tuple(args.columns),
                           engine_options(args), metric_values(args), args.seeds,
                           args.accept_mismatch)
    check_table(options)
    report = report_options(args)
    claim = claim_call_outputs(args.json, (), report, inputs=cell_files(options),
                               outputs=[Output(args.csv, "--csv")] if args.csv else ())
    try:
        cells = build_table(options, lambda n, total, method, bits: print(
            f"[cell {n}/{total}] {method}, {bits} bits on {args.dataset} ...", file=sys.stderr,
            flush=True))
        rows = [r.as_dict(args.dataset, args.columns) for r in cells]
        tests = []
        if args.seeds > 1:
            rows = over_seeds(rows, args.columns)
            tests = paired_tests(rows)
            mark_within_noise(rows, tests)
        print(markdown(rows, args.bits, args.columns))
        if args.json:
            write_json(args.json, {"dataset": args.dataset, "columns": args.columns,
                                   "seeds": options.seed_values(), "rows": rows,
                                   "paired_tests": tests})
        if args.csv:
            atomic_write_bytes(args.csv, csv_text(rows).encode())
        if report.wanted:
            from utils.report.outputs import write_outputs

            runs = [(f"{r.method}{' ' + r.task if r.task else ''} {r.bits} bits", r.metrics)
                    for r in cells if r.metrics]
            write_outputs(report, f"reproduce.py on {args.dataset}", {"command": " ".join(
                sys.argv) or "reproduce.py", **vars(args)}, runs,
                extra_tables=[report_table(rows, args.columns), provenance_table(rows)])
        return {"rows": rows}
    finally:
        claim.release()


if __name__ == "__main__":
    sys.exit(run_script(main, get_args_parser().parse_args()))
