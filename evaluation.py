"""Evaluate binary codes: stored codes (--codes FILE.npz), or a DCDH checkpoint
on a dataset (--load NAME.tar --dataset youtube --len 12, the official form)."""

import os
import sys

# torch's and numba's worker threads otherwise spin while waiting and take the
# CPU from each other (seen up to 10x slower metrics on 2 cores); set before
# torch is imported
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from utils.cli import (ArgumentParser, UsageError, add_data_args, add_device_arg,  # noqa: E402
                       add_metric_args, add_report_args, check_writable_file, format_metrics,
                       positive_int, run_script, write_json)
from utils.retrieval.options import DEFAULT_TOPK, MetricOptions  # noqa: E402


def get_args_parser():
    p = ArgumentParser(description=__doc__)
    src = p.add_argument_group("what to evaluate (one of)")
    src.add_argument("--codes", metavar="FILE.npz",
                     help="stored codes: arrays db_codes, query_codes, db_labels, query_labels")
    src.add_argument("--load", metavar="NAME.tar",
                     help="DCDH checkpoint, under --checkpoint-dir or any path")
    model = p.add_argument_group("checkpoint evaluation")
    model.add_argument("--len", type=positive_int, default=48, help="code length in bits")
    model.add_argument("--bs", type=positive_int, default=256, help="batch size for encoding")
    # checked in evaluate_checkpoint: the network registry imports torchvision,
    # which the stored-codes path does not need
    model.add_argument("--arch", help="network: dfhnet, sphere20, sphere64, resnet18, ... "
                                      "(default: the checkpoint's, else by dataset)")
    model.add_argument("--checkpoint-dir", default="checkpoint")
    model.add_argument("--save-codes", metavar="OUT.npz", help="also store the codes")
    # the dataset names are checked when a checkpoint is evaluated: the stored-codes
    # path imports neither the readers nor torch
    add_data_args(p, None, "facescrub")
    add_metric_args(p, DEFAULT_TOPK)
    add_device_arg(p)
    p.add_argument("--backend", default="auto", choices=("auto", "numba", "torch"),
                   help="metric back end (auto: numba on CPU, torch on GPU)")
    p.add_argument("--json", metavar="OUT", help="write the metrics as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_report_args(p)
    return p


def evaluate_stored_codes(args):
    from utils.retrieval.codes_io import load_npz
    from utils.retrieval.metrics import evaluate_codes

    z = load_npz(args.codes)
    if args.device == "auto" and args.backend in ("auto", "numba") and not cuda_may_exist():
        device = None  # the numba kernel on the CPU; torch is never imported
    else:
        from utils.cli.device import resolve_device

        device = resolve_device(args.device)
    options = MetricOptions.from_args(args)
    try:
        return evaluate_codes(z["query_codes"], z["db_codes"], z["query_labels"], z["db_labels"],
                              radius=options.radius, device=device, backend=options.backend,
                              **options.ranking_kwargs())
    except ValueError as exc:
        raise UsageError(f"{args.codes}: {exc}") from exc


def evaluate_checkpoint(args):
    """The official evaluation: database = training split, queries = test split."""
    from data import DataRequest, build_splits, dataset_names, make_loaders
    from methods.dcdh import DCDH, check_arch_size, recognise_backbone
    from methods.recipes.dcdh import default_arch
    from models import network_names
    from utils.cli import data_kwargs
    from utils.cli.device import resolve_device
    from utils.engine.checkpoint import load_checkpoint, resolve_checkpoint
    from utils.retrieval.codes_io import save_codes

    if args.dataset not in dataset_names("faces"):
        raise UsageError(f"unknown --dataset {args.dataset}; choose one of "
                         f"{', '.join(dataset_names('faces'))}")
    if args.arch is not None and args.arch not in network_names("hashing"):
        raise UsageError(f"unknown --arch {args.arch}; choose one of "
                         f"{', '.join(network_names('hashing'))}")
    device = resolve_device(args.device)
    path = resolve_checkpoint(args.load, args.checkpoint_dir)
    ckpt = load_checkpoint(path)
    found_arch, _ = recognise_backbone(ckpt)
    splits = build_splits(args.dataset, DataRequest(**data_kwargs(args, ckpt), preset="dcdh",
                                                    augment=False))
    arch = args.arch or found_arch or default_arch(args.dataset, splits.img_size)
    check_arch_size(arch, splits.img_size)
    method = DCDH(arch, args.len, splits.num_classes).to(device)
    method.load_backbone(ckpt, path)  # the official evaluation needs no centers
    loaders = make_loaders(splits, args.bs, device, workers=args.workers, train=False)
    result, queries, database = method.evaluate(loaders.database, loaders.queries, device,
                                                MetricOptions.from_args(args),
                                                progress=not args.no_progress)
    if args.save_codes:
        save_codes(args.save_codes, database.values.cpu(), queries.values.cpu(),
                   database.labels.cpu(), queries.labels.cpu())
    result["checkpoint"] = str(path)
    from utils.report.outputs import GridInputs

    return result, GridInputs(method, queries, database, splits.queries, splits.database)


def main(args):
    if bool(args.codes) == bool(args.load):
        raise UsageError("give either --codes FILE.npz or --load CHECKPOINT.tar")
    for flag in ("json", "save_codes"):
        if getattr(args, flag, None):
            check_writable_file(getattr(args, flag), "--" + flag.replace("_", "-"))
    if args.show_results and args.codes:
        raise UsageError("--show-results needs images: use --load CHECKPOINT with a dataset "
                         "(stored codes hold none)")
    report = args.plot or args.show_results or args.report
    if report:
        from utils.report.outputs import check_outputs

        check_outputs(args)
    grid = None
    if args.codes:
        result = evaluate_stored_codes(args)
        title = f"codes {args.codes}"
    else:
        result, grid = evaluate_checkpoint(args)
        title = f"checkpoint {args.load} on {args.dataset}"
    print(format_metrics(result, title))
    if args.json:
        write_json(args.json, result)
    if report:
        from utils.report.outputs import write_outputs

        write_outputs(args, f"evaluation.py: {title}", settings_of(args), [(title, result)], grid)
    return result


def cuda_may_exist() -> bool:
    """Whether an NVIDIA GPU may be present, without importing torch."""
    return any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia"))


def settings_of(args) -> dict:
    """The settings a report shows: every flag that was given a value."""
    return {k: v for k, v in vars(args).items() if v not in (None, False, [])}


if __name__ == "__main__":
    sys.exit(run_script(main, get_args_parser().parse_args()))
