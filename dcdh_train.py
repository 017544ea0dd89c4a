"""Train DCDH (deep center-based dual-constrained hashing).

Official form:  python dcdh_train.py --dataset facescrub --save m.tar --len 48
Built-in data:  python dcdh_train.py --dataset synthetic --save demo.tar --len 48
Several GPUs:   torchrun --nproc_per_node 4 dcdh_train.py --dataset vggface2 --save v.tar --len 48
"""

import sys

from torch.optim.lr_scheduler import StepLR

from data import DataRequest, build_splits, dataset_names, make_loaders
from methods.dcdh import DCDH, check_arch_size
from methods.recipes.dcdh import default_arch, recipe_for
from models import network_names
from utils.cli import (ArgumentParser, UsageError, add_data_args, add_engine_args,
                       check_writable_file, data_kwargs, ensure_dir, non_negative_float,
                       positive_float, positive_int, run_script, write_json)
from utils.cli.device import resolve_device
from utils.engine.distributed import cleanup, init_distributed
from utils.engine.logs import log_path, logging_to
from utils.engine.loop import FitConfig
from utils.engine.rng import seed_everything
from utils.engine.run import check_run_files, load_resume, train_and_report


def get_args_parser():
    p = ArgumentParser(description=__doc__)
    # the official flags and defaults
    p.add_argument("--lr", "--lr1", dest="lr", type=positive_float, default=0.005,
                   help="learning rate of the network (--lr1 in the published script), and of "
                        "the centers unless --lr2 is given")
    p.add_argument("--lr2", type=positive_float,
                   help="learning rate of the class centers (default: --lr)")
    p.add_argument("--save", help="checkpoint file name, written under --checkpoint-dir")
    p.add_argument("--bs", type=positive_int, default=256,
                   help="batch size (per process under torchrun)")
    p.add_argument("--len", type=positive_int, default=48, help="code length in bits")
    p.add_argument("--sigma", type=positive_float, default=0.25,
                   help="Gaussian width of the center likelihood")
    p.add_argument("--inner_param", type=non_negative_float, default=0.1,
                   help="weight of the center separation term")
    p.add_argument("--eta", type=non_negative_float, default=0.01,
                   help="weight of the quantization (regression) term")
    p.add_argument("--lamda", type=non_negative_float, default=1.0,
                   help="ridge term of the regression matrix W (the published spelling); "
                        "0: pseudo-inverse, the per-class mean")
    # added here
    p.add_argument("--arch", choices=network_names("hashing"),
                   help="network (default by dataset and image size)")
    p.add_argument("--pretrained", help="local ImageNet state_dict for the resnet archs")
    add_data_args(p, dataset_names("faces"), "facescrub")
    add_engine_args(p)
    return p


def main(args):
    if not args.save:
        raise UsageError("--save NAME.tar is required: the checkpoint is written to "
                         "--checkpoint-dir/NAME.tar")
    dist_info, device = init_distributed(resolve_device(args.device))
    try:
        return train(args, dist_info, device)
    finally:
        cleanup()


def train(args, dist_info, device):
    # every file the run will write is checked before any data is read
    files = check_run_files(args, args.save)
    log_dir = ensure_dir(args.log_dir, "--log-dir")
    if args.json:
        check_writable_file(args.json, "--json")
    resume = load_resume(args, files)
    seed_everything(args.seed, args.deterministic)

    splits = build_splits(args.dataset, DataRequest(**data_kwargs(args), preset="dcdh"))
    arch = args.arch or default_arch(args.dataset, splits.img_size)
    check_arch_size(arch, splits.img_size)
    recipe = recipe_for(args.dataset, splits.img_size, arch)
    loaders = make_loaders(splits, args.bs, device, args.seed, args.workers,
                           rank=dist_info.rank, world_size=dist_info.world_size)
    method = DCDH(arch, args.len, splits.num_classes, args.sigma, args.inner_param, args.eta,
                  args.lamda, pretrained=args.pretrained).to(device)
    optimizer = method.optimizer(recipe, args.lr, args.lr2)
    scheduler = StepLR(optimizer, recipe.lr_step, recipe.lr_gamma)
    epochs = args.epochs or recipe.epochs
    eval_every = recipe.eval_every if args.eval_every is None else args.eval_every
    config = FitConfig(epochs, device, files.best, files.last, patience=epochs // recipe.patience_fraction,
                       eval_every=eval_every, amp=args.amp, compile=args.compile,
                       channels_last=args.channels_last, dist=dist_info,
                       progress=not args.no_progress and dist_info.is_main,
                       extra_state={"args": vars(args)})
    log_file = log_path(log_dir, args.len, args.dataset)
    with logging_to(log_file, enabled=dist_info.is_main) as log:
        log.info(f"[Configuration] dataset {args.dataset} ({splits.describe()}), arch {arch}, "
                 f"{args.len} bits, batch {args.bs}, lr {args.lr}, {epochs} epochs, "
                 f"{recipe.describe()}, device {device}, {dist_info.world_size} process(es), "
                 f"seed {args.seed}")
        log.info(f"HyperParams: sigma {args.sigma}  inner_param {args.inner_param}  eta {args.eta}  "
                 f"lamda {args.lamda}")
        log.info(f"Arguments: {vars(args)}")
        outcome = train_and_report(method, optimizer, scheduler, loaders, config, resume,
                                   title=f"best checkpoint {files.best}")
        if outcome is None:
            return None
        log.info(f"log written to {log_file}")
    if args.json:
        write_json(args.json, outcome.metrics)
    return outcome.metrics


if __name__ == "__main__":
    sys.exit(run_script(main, get_args_parser().parse_args()))
