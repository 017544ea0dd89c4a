"""Evaluate binary codes: stored codes (--codes FILE.npz), or a DCDH checkpoint
on a dataset (--load NAME.tar --dataset youtube --len 12, the official form)."""

import argparse
import os
import sys

# torch's and numba's worker threads otherwise spin while waiting and take the
# CPU from each other (seen up to 10x slower metrics on 2 cores); set before
# torch is imported
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from utils.names import HASHING_ARCHS
from utils.cli import (UsageError, add_data_args, check_writable_file, format_metrics, run_script,
                       write_json)
from utils.metrics import DEFAULT_TOPK, evaluate_codes


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__)
    src = p.add_argument_group("what to evaluate (one of)")
    src.add_argument("--codes", metavar="FILE.npz",
                     help="stored codes: arrays db_codes, query_codes, db_labels, query_labels")
    src.add_argument("--load", metavar="NAME.tar",
                     help="DCDH checkpoint, under --checkpoint-dir or any path")
    model = p.add_argument_group("checkpoint evaluation")
    model.add_argument("--len", type=int, default=48, help="code length in bits")
    model.add_argument("--bs", type=int, default=256, help="batch size for encoding")
    model.add_argument("--arch", choices=HASHING_ARCHS,
                       help="network (default: the checkpoint's, else by dataset)")
    model.add_argument("--checkpoint-dir", default="checkpoint")
    model.add_argument("--save-codes", metavar="OUT.npz", help="also store the codes")
    add_data_args(p)
    met = p.add_argument_group("metrics")
    met.add_argument("--radius", type=int, default=2, help="Hamming radius (inclusive)")
    met.add_argument("--topk", type=int, nargs="+", default=list(DEFAULT_TOPK))
    met.add_argument("--curve", type=int, nargs="+",
                     help="ranking positions of the precision curve "
                          "(default 1 5 10 20 50 100 200 500 1000 and N)")
    met.add_argument("--map-at", type=int, nargs="+", default=[],
                     help="also report mAP@k (DeepHash's definition)")
    met.add_argument("--skip-no-relevant", action="store_true",
                     help="leave queries without a relevant item out of the means")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--backend", default="auto", choices=("auto", "numba", "torch"),
                   help="metric back end (auto: numba on CPU, torch on GPU)")
    p.add_argument("--json", metavar="OUT", help="write the metrics as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def metric_kwargs(args):
    return dict(radius=args.radius, topk=args.topk, curve_positions=args.curve,
                map_at=args.map_at, skip_no_relevant=args.skip_no_relevant)


def check_outputs(args):
    for flag in ("json", "save_codes"):
        if getattr(args, flag, None):
            check_writable_file(getattr(args, flag), "--" + flag.replace("_", "-"))


def evaluate_stored_codes(args):
    from utils.codes_io import load_npz
    from utils.cli import resolve_device

    z = load_npz(args.codes)
    device = resolve_device(args.device)
    try:
        return evaluate_codes(z["query_codes"], z["db_codes"], z["query_labels"], z["db_labels"],
                              device=device, backend=args.backend, **metric_kwargs(args))
    except ValueError as exc:
        raise UsageError(f"{args.codes}: {exc}") from exc


def evaluate_checkpoint(args):
    """The official evaluation: database = training split, queries = test split."""
    from models import build_hashing_net
    from utils.checkpoint import (guess_hashing_arch, load_checkpoint, load_hashing_backbone,
                                  resolve_checkpoint, strip_prefix)
    from utils.cli import resolve_device
    from utils.codes_io import save_codes
    from utils.run_setup import build_hashing_data, inherit_synthetic_size
    from utils.retrieval import evaluate_hashing

    device = resolve_device(args.device)
    path = resolve_checkpoint(args.load, args.checkpoint_dir)
    ckpt = load_checkpoint(path)
    inherit_synthetic_size(args, ckpt)
    if args.arch is None and isinstance(ckpt.get("backbone"), dict):
        args.arch = guess_hashing_arch(strip_prefix(ckpt["backbone"]))
    data = build_hashing_data(args, device, train=False)
    net = build_hashing_net(data.arch, args.len)
    load_hashing_backbone(net, ckpt, data.arch, args.len, path)
    result, codes = evaluate_hashing(net.to(device), data.db_loader, data.query_loader, device,
                                     progress=not args.no_progress, backend=args.backend,
                                     **metric_kwargs(args))
    if args.save_codes:
        save_codes(args.save_codes, codes.db_codes, codes.query_codes, codes.db_labels,
                   codes.query_labels)
    result["checkpoint"] = str(path)
    return result


def main(args):
    if bool(args.codes) == bool(args.load):
        raise UsageError("give either --codes FILE.npz or --load CHECKPOINT.tar")
    check_outputs(args)
    if args.codes:
        result = evaluate_stored_codes(args)
        title = f"codes {args.codes}"
    else:
        result = evaluate_checkpoint(args)
        title = f"checkpoint {args.load} on {args.dataset}"
    print(format_metrics(result, title))
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    from data.errors import DatasetError
    from utils.checkpoint import CheckpointError
    sys.exit(run_script(main, get_args_parser().parse_args(),
                        handled=(UsageError, DatasetError, CheckpointError)))
