"""Evaluate a checkpoint of any method on a dataset (--load FILE, the method
and its config read from the file; the official DCDH form is
--load NAME.tar --dataset youtube --len 12), or stored codes (--codes FILE.npz).
Database = the training split (the method's retrieval set), queries = the test split."""

import os
import sys

# torch's and numba's worker threads otherwise spin while waiting and take the
# CPU from each other (seen up to 10x slower metrics on 2 cores); set before
# torch is imported
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import utils.cli.interrupts  # noqa: E402,F401  (first: Ctrl-C while torch loads)
from pipeline.cli import (add_data_args, add_device_arg, add_metric_args,  # noqa: E402
                          add_multiview_args, add_report_args, data_options, engine_options,
                          metric_values, multiview_options, report_options, synthetic_options)
from utils.cli import ArgumentParser, UsageError, code_length, positive_int, run_script  # noqa: E402


def get_args_parser():
    p = ArgumentParser(description=__doc__)
    src = p.add_argument_group("what to evaluate (one of)")
    src.add_argument("--codes", metavar="FILE.npz",
                     help="stored codes: arrays db_codes, query_codes, db_labels, query_labels")
    src.add_argument("--load", metavar="FILE",
                     help="a checkpoint of any method (ours or a published one), under "
                          "--checkpoint-dir or any path")
    model = p.add_argument_group("checkpoint evaluation")
    model.add_argument("--len", type=code_length,
                       help="code length in bits, checked against the file (default: the file's)")
    model.add_argument("--arch", help="network, checked against the file (default: the file's)")
    model.add_argument("--bs", type=positive_int, default=256, help="batch size for encoding")
    model.add_argument("--checkpoint-dir", default="checkpoint",
                       help="folder where a bare --load name is looked for first")
    model.add_argument("--save-codes", metavar="OUT.npz", help="also store the codes")
    add_data_args(p, None, "facescrub")
    add_multiview_args(p, flag=None, defaults=False)
    add_metric_args(p)
    add_device_arg(p)
    p.add_argument("--json", metavar="OUT", help="write the metrics as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_report_args(p)
    return p


def main(args):
    if bool(args.codes) == bool(args.load):
        raise UsageError("give either --codes FILE.npz or --load CHECKPOINT.tar")
    if args.codes:
        return evaluate_codes(args)
    from data import canonical_dataset
    from pipeline.evaluate import evaluate
    from pipeline.options import EvalOptions
    from pipeline.outputs import json_value, text_of

    args.dataset = canonical_dataset(args.dataset)  # any spelling the published scripts take

    # the reader options of every kind of data that were given (each reader takes its own)
    given = {**synthetic_options(args), **multiview_options(args, args.dataset == "synthetic")}
    options = EvalOptions(
        (args.load,), data_options(args, options=given), args.checkpoint_dir,
        expect=({"bits": (args.len, "--len"), "arch": (args.arch, "--arch")},),
        engine=engine_options(args), metrics=metric_values(args), batch=args.bs, json=args.json,
        save_codes=(args.save_codes,) if args.save_codes else (), report=report_options(args))
    evaluations = evaluate(options)
    for evaluation in evaluations:
        print(text_of(evaluation))
    return json_value(evaluations)


def evaluate_codes(args):
    """Stored codes: the numba kernel on the CPU, and torch is never imported."""
    from pipeline.outputs import text_of
    from pipeline.stored import evaluate_stored
    from utils.retrieval.options import MetricOptions

    device = None
    if args.device != "auto" or args.backend == "torch" or cuda_may_exist():
        from utils.cli.device import resolve_device

        device = resolve_device(args.device)
    evaluation, = evaluate_stored([args.codes], "codes", MetricOptions.of(metric_values(args)),
                                  args.json, report_options(args), device)
    print(text_of(evaluation))
    return evaluation.metrics


def cuda_may_exist() -> bool:
    """Whether an NVIDIA GPU may be present, without importing torch."""
    return any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia"))


if __name__ == "__main__":
    sys.exit(run_script(main, get_args_parser().parse_args()))
