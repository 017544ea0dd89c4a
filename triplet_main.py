"""Triplet-ranking deep hashing on a ResNet (Lai et al., CVPR 2015; the
published ResNet-18 re-implementation's main.py).

Published form:  python triplet_main.py --dataset_name CUB --binary_bits 64 --margin 20 --lr 0.001 --ngpu 1
Built-in data:   python triplet_main.py --dataset_name synthetic --binary_bits 16 --margin 8
Evaluate:        python triplet_main.py -e --dataset_name CUB --binary_bits 64 --load_path SNAPSHOT.pth
"""

import argparse
import sys

import utils.cli.interrupts  # noqa: F401  (first: Ctrl-C while torch loads)
from methods.recipes.triplet import PUBLISHED
from methods.triplet import TripletConfig, TripletRecipe
from pipeline.cli import (add_cache_args, add_metric_args, add_report_args, add_run_args,
                          add_speed_args, add_synthetic_args, add_workers_arg, data_options,
                          dataset_list, dataset_type, engine_options, metric_values,
                          output_options, report_options, train_options)
from utils.cli import (ArgumentParser, UsageError, add_dataclass_args, code_length,
                       dataclass_values, image_side, non_negative_int, positive_float,
                       positive_int, run_script)

def str2bool(text: str) -> bool:
    lowered = str(text).lower()
    if lowered in ("1", "true", "yes", "y", "on"):
        return True
    if lowered in ("0", "false", "no", "n", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def get_args_parser():
    p = ArgumentParser(description=__doc__)
    # the published flags and defaults
    p.add_argument("--dataset_name", "--dataset", dest="dataset_name", default="CUB",
                   type=dataset_type("images"),
                   help=f"CUB or Stanford_Dogs (published), or any of {dataset_list('images')}")
    p.add_argument("--binary_bits", type=code_length, default=64, help="code length")
    p.add_argument("--margin", type=positive_float, default=20.0,
                   help="triplet margin (published advice: a bit over bits/4: 8 for 16, 20 for 64)")
    p.add_argument("--lr", type=positive_float, default=PUBLISHED.lr, help="learning rate")
    p.add_argument("--ngpu", type=non_negative_int, default=2,
                   help="the CUDA device index (published default; --device overrides)")
    p.add_argument("--load_model", type=str2bool, default=False,
                   help="start training from --load_path (true/false)")
    p.add_argument("--load_path", help="a HashModel snapshot (.pth state_dict)")
    p.add_argument("--batchSize", type=positive_int, default=PUBLISHED.batch, help="batch size")
    p.add_argument("--log_postfix", default="", help="suffix of the run folder and log name")
    p.add_argument("--outf", default="./checkpoints/", help="where the run folder is made")
    p.add_argument("--num_epochs", type=positive_int, help="epochs (default: published 4001; "
                                                           "30 on the built-in data)")
    p.add_argument("--checkpoint_step", type=positive_int,
                   help="evaluate and snapshot every this many epochs (default: published 50; "
                        "10 on the built-in data)")
    p.add_argument("--datapath_CUB", help="CUB_200_2011 folder (default data/CUB_200_2011)")
    p.add_argument("--datapath_dog", help="Stanford Dogs folder (default data/Stanford_Dogs)")
    add_dataclass_args(p, TripletRecipe, exclude=("epochs", "batch", "lr", "eval_every"),
                       defaults=True)
    # added here
    p.add_argument("-e", "--evaluate", action="store_true",
                   help="evaluate --load_path (or --resume's file) instead of training")
    add_dataclass_args(p, TripletConfig, exclude=("bits", "margin"), defaults=True)
    g = p.add_argument_group("data")
    g.add_argument("--data-root", help="dataset folder (overrides --datapath_CUB/--datapath_dog)")
    g.add_argument("--img-size", type=image_side,
                   help="input side (default 224; 64 on the built-in data)")
    add_workers_arg(g)
    add_cache_args(g)
    add_synthetic_args(g)
    e = p.add_argument_group("engine")
    add_run_args(e, seed_help="seeds Python, NumPy, torch and the batch sampler")
    add_speed_args(e)
    e.add_argument("--log-dir", default="log", help="the published log/<run name>.log goes here")
    e.add_argument("--json", metavar="OUT", help="write the final metrics as JSON")
    e.add_argument("--save-codes", metavar="OUT.npz", help="store the codes (stored-codes format)")
    e.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_metric_args(p)
    add_report_args(p)
    return p


def data_of(args):
    root = args.data_root or {"cub": args.datapath_CUB, "dogs": args.datapath_dog}.get(
        args.dataset_name)
    return data_options(args, args.dataset_name, root)


def main(args):
    from utils.cli.device import device_for_index

    device = device_for_index(args.device, args.ngpu, "--ngpu")
    config = {"bits": args.binary_bits, "margin": args.margin,
              **dataclass_values(args, TripletConfig)}
    if args.evaluate:
        return evaluate(args, config, device)
    if args.plot or args.show_results or args.report:
        raise UsageError("--plot, --show-results and --report go with -e (evaluation)")
    if args.load_model and not args.load_path:
        raise UsageError("--load_model true needs --load_path SNAPSHOT.pth")
    from pipeline.train import train

    overrides = {"lr": args.lr, "batch": args.batchSize, "epochs": args.num_epochs,
                 "eval_every": args.checkpoint_step, **dataclass_values(args, TripletRecipe)}
    options = train_options(
        args, "triplet", [config], [None], overrides, data=data_of(args),
        output=output_options(args, checkpoint_dir=args.outf, tag=args.log_postfix),
        engine=engine_options(args, device), init_from=args.load_path if args.load_model else None)
    return train(options).json()


def evaluate(args, config, device):
    from pipeline.evaluate import evaluate as evaluate_files
    from pipeline.options import EvalOptions
    from pipeline.outputs import text_of

    path = args.load_path or args.resume
    if not path:
        raise UsageError("-e needs --load_path SNAPSHOT.pth (a HashModel state_dict)")
    expect = {"bits": (config["bits"], "--binary_bits"), "arch": (config.get("arch"), "--arch"),
              "head": (config.get("head"), "--head")}
    evaluation, = evaluate_files(EvalOptions(
        (path,), data_of(args), None, "triplet", (expect,), engine_options(args, device),
        metric_values(args), args.batchSize, args.json,
        (args.save_codes,) if args.save_codes else (), report_options(args)))
    print(text_of(evaluation))
    return evaluation.metrics


if __name__ == "__main__":
    sys.exit(run_script(main, get_args_parser().parse_args()))
