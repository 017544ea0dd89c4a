"""Triplet-ranking deep hashing on a ResNet (Lai et al., CVPR 2015; the
published ResNet-18 re-implementation's main.py).

Published form:  python triplet_main.py --dataset_name CUB --binary_bits 64 --margin 20 --lr 0.001 --ngpu 1
Built-in data:   python triplet_main.py --dataset_name synthetic --binary_bits 16 --margin 8
Evaluate:        python triplet_main.py -e --dataset_name CUB --binary_bits 64 --load_path SNAPSHOT.pth
"""

import sys
from pathlib import Path

import torch
from torch.optim.lr_scheduler import StepLR

from data import DataRequest, build_splits, dataset_names, make_loaders
from data.samplers import ClassBalancedBatchSampler, RandomBatchSampler, dataset_labels
from methods.recipes.triplet import PUBLISHED, evaluation_epochs, recipe_for
from methods.triplet import TripletHashing
from models.hash_model import BACKBONES
from models.miners import MINERS
from utils.cli import (ArgumentParser, UsageError, add_device_arg, add_metric_args, add_report_args,
                       add_speed_args, add_workers_arg, check_writable_file, data_kwargs,
                       ensure_dir, format_metrics,
                       non_negative_int, positive_float, positive_int, run_script, write_json)
from utils.engine.checkpoint import CheckpointError, load_checkpoint, resume_from
from utils.engine.distributed import cleanup, init_distributed
from utils.engine.logs import logging_to
from utils.engine.loop import FitConfig
from utils.engine.rng import seed_everything
from utils.engine.run import train_and_report
from utils.retrieval.codes_io import save_codes
from utils.retrieval.options import DEFAULT_TOPK, MetricOptions

# the published --dataset_name values -> the registry's names
PUBLISHED_NAMES = {"CUB": "cub", "Stanford_Dogs": "dogs"}
SYNTHETIC_IMG_SIZE = 64  # ResNets take >= 32 px; 224 px built-in faces are slow on a CPU


def str2bool(text: str) -> bool:
    lowered = str(text).lower()
    if lowered in ("1", "true", "yes", "y", "on"):
        return True
    if lowered in ("0", "false", "no", "n", "off", ""):
        return False
    import argparse
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def get_args_parser():
    p = ArgumentParser(description=__doc__)
    # the published flags and defaults
    p.add_argument("--dataset_name", "--dataset", dest="dataset_name", default="CUB",
                   choices=[*PUBLISHED_NAMES, *dataset_names("images")],
                   help="CUB or Stanford_Dogs (published), or cub, dogs, folder, synthetic, ...")
    p.add_argument("--binary_bits", type=positive_int, default=64, help="code length")
    p.add_argument("--margin", type=positive_float, default=20.0,
                   help="triplet margin (published advice: a bit over bits/4: 8 for 16, 20 for 64)")
    p.add_argument("--lr", type=positive_float, default=PUBLISHED.lr, help="learning rate")
    p.add_argument("--ngpu", type=non_negative_int, default=2,
                   help="the CUDA device index (published default 2; --device overrides)")
    p.add_argument("--load_model", type=str2bool, default=False,
                   help="start training from --load_path (true/false)")
    p.add_argument("--load_path", help="a HashModel snapshot (.pth state_dict)")
    p.add_argument("--optimizer_name", default="SGD", choices=["SGD", "adam_inverse_sqrt"])
    p.add_argument("--batchSize", type=positive_int, default=PUBLISHED.batch, help="batch size")
    p.add_argument("--log_postfix", default="", help="suffix of the run folder and log name")
    p.add_argument("--outf", default="./checkpoints/", help="where the run folder is made")
    p.add_argument("--num_epochs", type=positive_int, help="epochs (published 4001)")
    p.add_argument("--step_lr", type=positive_int, default=PUBLISHED.lr_step,
                   help="lr x0.1 every this many epochs")
    p.add_argument("--checkpoint_step", type=positive_int,
                   help="evaluate and snapshot every this many epochs (published 50)")
    p.add_argument("--datapath_CUB", help="CUB_200_2011 folder (default data/CUB_200_2011)")
    p.add_argument("--datapath_dog", help="Stanford Dogs folder (default data/Stanford_Dogs)")
    # added here
    p.add_argument("-e", "--evaluate", action="store_true",
                   help="evaluate --load_path (or --resume's file) instead of training")
    p.add_argument("--arch", default="resnet18", choices=list(BACKBONES), help="backbone")
    p.add_argument("--head", default="fc", choices=["fc", "dae"],
                   help="fc: Linear + Tanh (published); dae: the paper's divide-and-encode module")
    p.add_argument("--pretrained", help="local torchvision ResNet state_dict (ImageNet weights); "
                                        "without it the network starts from scratch")
    p.add_argument("--mining", default="all", choices=list(MINERS),
                   help="which in-batch triplets: all (published), semihard, hard")
    p.add_argument("--sampler", default="balanced", choices=["balanced", "published"],
                   help="balanced: --classes-per-batch classes x --images-per-class images "
                        "(what the published code intends); published: uniformly random "
                        "batches (what the published run did)")
    p.add_argument("--classes-per-batch", type=positive_int, default=PUBLISHED.classes_per_batch)
    p.add_argument("--images-per-class", type=positive_int,
                   help="default: --batchSize / --classes-per-batch")
    g = p.add_argument_group("data")
    g.add_argument("--data-root", help="dataset folder (overrides --datapath_CUB/--datapath_dog)")
    g.add_argument("--img-size", type=positive_int,
                   help="input side (default 224; 64 on the built-in data)")
    add_workers_arg(g)
    for flag, what in (("ids", "identities (default 20)"), ("train", "training images per "
                       "identity (default 60)"), ("test", "test images per identity (default 15)")):
        g.add_argument(f"--synthetic-{flag}", type=positive_int, help=f"built-in data: {what}")
    e = p.add_argument_group("engine")
    add_device_arg(e)
    e.add_argument("--seed", type=non_negative_int, default=0,
                   help="seeds Python, NumPy, torch and the batch sampler")
    e.add_argument("--deterministic", action="store_true", help="deterministic algorithms only")
    e.add_argument("--resume", metavar="PATH|auto",
                   help="continue a run (auto: the run folder's _last file)")
    e.add_argument("--overwrite", action="store_true",
                   help="start afresh although the run folder holds snapshots")
    add_speed_args(e)
    e.add_argument("--log-dir", default="log", help="the published log/<run name>.log goes here")
    e.add_argument("--json", metavar="OUT", help="write the final metrics as JSON")
    e.add_argument("--save-codes", metavar="OUT.npz", help="store the codes (stored-codes format)")
    e.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_metric_args(p, DEFAULT_TOPK)
    add_report_args(p)
    return p


def dataset_of(args) -> str:
    return PUBLISHED_NAMES.get(args.dataset_name, args.dataset_name)


def run_name(args) -> str:
    """The published run folder and log name (margin printed as a float: '20.0margin')."""
    return (f"{args.dataset_name}_{args.optimizer_name}_{args.binary_bits}bits_"
            f"{float(args.margin)}margin_{args.log_postfix}")


def snapshot_name(bits: int, what) -> str:
    return f"triplet_resnet_{bits}bits_{what}.pth"


def device_of(args) -> torch.device:
    """--device when given; otherwise CUDA device --ngpu where CUDA exists (as published), else CPU."""
    from utils.cli.device import resolve_device

    if args.device != "auto" or not torch.cuda.is_available():
        return resolve_device(args.device)
    if args.ngpu >= torch.cuda.device_count():
        raise UsageError(f"--ngpu {args.ngpu}: this machine has {torch.cuda.device_count()} CUDA "
                         f"device(s); pass --ngpu 0 (or --device)")
    return torch.device("cuda", args.ngpu)


def data_request(args, augment: bool) -> DataRequest:
    kwargs = data_kwargs(_DataArgs(args))
    if kwargs["img_size"] is None and dataset_of(args) == "synthetic":
        kwargs["img_size"] = SYNTHETIC_IMG_SIZE
    return DataRequest(**kwargs, preset="triplet", augment=augment)


class _DataArgs:
    """The data flags under the names utils.cli.data_kwargs reads."""

    def __init__(self, args):
        self.__dict__.update(vars(args))
        self.dataset = dataset_of(args)
        published_root = {"cub": args.datapath_CUB, "dogs": args.datapath_dog}.get(self.dataset)
        self.data_root = args.data_root or published_root


def build_method(args) -> TripletHashing:
    return TripletHashing(args.binary_bits, args.margin, args.arch, args.head, args.mining,
                          pretrained=args.pretrained)


def load_snapshot(method, path) -> dict:
    state = load_checkpoint(path)
    if "model" in state and "train_state" in state:  # one of our resume files
        state = state["model"]
    method.load_official_state(state, path)
    return state


def train_sampler(args, splits, dist_info):
    labels = dataset_labels(splits.train)
    per_class = args.images_per_class or args.batchSize // args.classes_per_batch
    if args.sampler == "balanced":
        if per_class * args.classes_per_batch != args.batchSize:
            raise UsageError(f"--batchSize {args.batchSize} is not --classes-per-batch "
                             f"{args.classes_per_batch} x --images-per-class {per_class}")
        sampler = ClassBalancedBatchSampler(labels, args.classes_per_batch, per_class, args.seed,
                                            dist_info.rank, dist_info.world_size)
    else:
        sampler = RandomBatchSampler(len(labels), args.batchSize, args.seed, dist_info.rank,
                                     dist_info.world_size)
    if len(sampler) == 0:
        raise UsageError(f"the training split has {len(labels)} images: fewer than one batch of "
                         f"{args.batchSize} per process; lower --batchSize")
    return sampler


def evaluate(args, device):
    path = args.load_path or args.resume
    if not path:
        raise UsageError("-e needs --load_path SNAPSHOT.pth (a HashModel state_dict)")
    if not Path(path).is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    for flag in ("json", "save_codes"):
        if getattr(args, flag):
            check_writable_file(getattr(args, flag), "--" + flag.replace("_", "-"))
    report = args.plot or args.show_results or args.report
    if report:
        from utils.report.outputs import check_outputs

        check_outputs(args)
    method = build_method(args).to(device)
    load_snapshot(method, path)
    splits = build_splits(dataset_of(args), data_request(args, augment=False))
    loaders = make_loaders(splits, args.batchSize, device, workers=args.workers, train=False)
    result, queries, database = method.evaluate(loaders.database, loaders.queries, device,
                                                MetricOptions.from_args(args),
                                                progress=not args.no_progress)
    result["checkpoint"] = str(path)
    print(format_metrics(result, f"{path} on {args.dataset_name}"))
    if args.save_codes:
        save_codes(args.save_codes, database.values.cpu(), queries.values.cpu(),
                   database.labels.cpu(), queries.labels.cpu())
    if report:
        from utils.report.outputs import GridInputs, write_outputs

        settings = {k: v for k, v in vars(args).items() if v not in (None, False, [])}
        write_outputs(args, f"triplet_main.py -e: {path} on {args.dataset_name}", settings,
                      [(Path(path).name, result)],
                      GridInputs(method, queries, database, splits.queries, splits.database))
    return result


def train(args, dist_info, device):
    recipe = recipe_for(dataset_of(args))
    epochs = args.num_epochs or recipe.epochs
    step = args.checkpoint_step or recipe.checkpoint_step
    run_dir = ensure_dir(Path(args.outf) / run_name(args), "--outf")
    best = run_dir / snapshot_name(args.binary_bits, "best")
    last = run_dir / snapshot_name(args.binary_bits, "last")
    for path in (best, last):
        check_writable_file(path, "--outf")
    earlier = sorted(run_dir.glob(snapshot_name(args.binary_bits, "*")))
    if earlier and not args.resume and not args.overwrite:
        raise CheckpointError(f"--outf: {run_dir} already holds snapshots ({earlier[0].name}, ...); "
                              f"pass --resume auto to continue that run or --overwrite to start "
                              f"afresh")
    log_dir = ensure_dir(args.log_dir, "--log-dir")
    for flag in ("json", "save_codes"):
        if getattr(args, flag):
            check_writable_file(getattr(args, flag), "--" + flag.replace("_", "-"))
    if args.load_model and not args.load_path:
        raise UsageError("--load_model true needs --load_path SNAPSHOT.pth")
    resume = resume_from(args.resume, last, run_dir)
    seed_everything(args.seed, args.deterministic)

    splits = build_splits(dataset_of(args), data_request(args, augment=True))
    loaders = make_loaders(splits, args.batchSize, device, args.seed, args.workers,
                           train_sampler=train_sampler(args, splits, dist_info))
    method = build_method(args).to(device)
    if args.load_model and resume is None:
        load_snapshot(method, args.load_path)
    optimizer = method.optimizer(recipe, args.lr, args.optimizer_name)
    scheduler = StepLR(optimizer, args.step_lr, recipe.lr_gamma)
    config = FitConfig(epochs, device, best, last, monitor="mAP",
                       eval_at=evaluation_epochs(epochs, step),
                       snapshot_pattern=str(run_dir / f"triplet_resnet_{args.binary_bits}bits_"
                                                      f"{{epoch:03d}}.pth"),
                       metrics=MetricOptions.from_args(args), amp=args.amp, compile=args.compile,
                       channels_last=args.channels_last, dist=dist_info,
                       progress=not args.no_progress and dist_info.is_main,
                       extra_state={"args": vars(args)})
    with logging_to(log_dir / f"{run_name(args)}.log", enabled=dist_info.is_main) as log:
        log.info(f"[Configuration] {run_name(args)}: dataset {args.dataset_name} "
                 f"({splits.describe()}), {method.describe()}, batch {args.batchSize} "
                 f"({args.sampler} sampler), lr {args.lr}, {args.optimizer_name}, "
                 f"{recipe.describe().split(', lr')[0]}, lr x0.1 every {args.step_lr} epochs, "
                 f"{epochs} epochs, evaluation and snapshot every {step}, device {device}, "
                 f"{dist_info.world_size} process(es), seed {args.seed}")
        if args.pretrained is None and not args.load_model and resume is None:
            log.info("no --pretrained file: the ResNet starts from scratch (the published "
                     "numbers start from ImageNet weights)")
        log.info(f"Arguments: {vars(args)}")
        outcome = train_and_report(method, optimizer, scheduler, loaders, config, resume,
                                   title=f"{run_dir}")
    if outcome is None:
        return None
    if args.json:
        write_json(args.json, outcome.metrics)
    if args.save_codes:
        outcome.save_codes(args.save_codes)
    return outcome.metrics


def main(args):
    if (args.plot or args.show_results or args.report) and not args.evaluate:
        raise UsageError("--plot, --show-results and --report go with -e (evaluation)")
    if args.evaluate:
        result = evaluate(args, device_of(args))
        if args.json:
            write_json(args.json, result)
        return result
    dist_info, device = init_distributed(device_of(args))
    try:
        return train(args, dist_info, device)
    finally:
        cleanup()


if __name__ == "__main__":
    sys.exit(run_script(main, get_args_parser().parse_args()))
