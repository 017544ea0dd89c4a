"""Train DCDH (deep center-based dual-constrained hashing).

Official form:  python dcdh_train.py --dataset facescrub --save m.tar --len 48
Built-in data:  python dcdh_train.py --dataset synthetic --save demo.tar --len 48
Several GPUs:   torchrun --nproc_per_node 4 dcdh_train.py --dataset vggface2 --save v.tar --len 48
"""

import sys

import utils.cli.interrupts  # noqa: F401  (first: Ctrl-C while torch loads)
from methods.dcdh import DCDHConfig
from pipeline.cli import add_data_args, add_engine_args, train_options
from pipeline.train import train
from utils.cli import (ArgumentParser, UsageError, add_dataclass_args, code_length,
                       dataclass_values, positive_float, positive_int, run_script)


def get_args_parser():
    p = ArgumentParser(description=__doc__)
    # the published flags and defaults
    p.add_argument("--lr", "--lr1", dest="lr", type=positive_float, default=0.005,
                   help="learning rate of the network and, unless --lr2 is given, of the class "
                        "centers (--lr1: an older published version's name)")
    p.add_argument("--lr2", type=positive_float,
                   help="learning rate of the class centers (an older published version's flag; "
                        "default: --lr)")
    p.add_argument("--save", help="checkpoint file name, written under --checkpoint-dir (required)")
    p.add_argument("--bs", type=positive_int, default=256,
                   help="batch size (per process under torchrun)")
    p.add_argument("--len", type=code_length, default=48, help="code length in bits")
    add_dataclass_args(p, DCDHConfig, exclude=("bits",), defaults=True)
    add_data_args(p, "faces", "facescrub")
    add_engine_args(p)
    return p


def main(args):
    if not args.save:
        raise UsageError("--save NAME.tar is required: the checkpoint is written to "
                         "--checkpoint-dir/NAME.tar")
    config = {"bits": args.len, **dataclass_values(args, DCDHConfig)}
    overrides = {"lr": args.lr, "centers_lr": args.lr2, "batch": args.bs, "epochs": args.epochs,
                 "eval_every": args.eval_every}
    return train(train_options(args, "dcdh", [config], [args.save], overrides)).json()


if __name__ == "__main__":
    sys.exit(run_script(main, get_args_parser().parse_args()))
