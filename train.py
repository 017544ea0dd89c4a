"""Train any registered method with its recipe as defaults.

  python train.py --method dcdh --dataset synthetic --len 48
  python train.py --method opqn --dataset facescrub --len 36 --num 6 --words 64 --save m.tar
  python train.py --method triplet --dataset cub --len 64 --margin 20
  python train.py --method dchn --dataset mirflickr25k --len 64      (every view, then cross-view)

The common flags are spelled as dcdh_train.py spells them; a method's own
flags (its config and recipe) are listed by  python train.py --method NAME --help.
The final evaluation is the one evaluation.py --load gives for the written file.
"""

import sys

import utils.cli.interrupts  # noqa: F401  (first: Ctrl-C while torch loads)
from pipeline.cli import (add_data_args, add_engine_args, add_method_args, add_metric_args,
                          add_multiview_args, data_options, method_values, multiview_data,
                          train_options)
from utils.cli import (ArgumentParser, UsageError, code_length, positive_float, positive_int,
                       run_script)


def method_of(argv) -> str:
    """The --method an argument list names (None when it names none)."""
    pre = ArgumentParser(add_help=False)
    pre.add_argument("--method")
    return pre.parse_known_args(argv)[0].method


def get_args_parser(argv=None):
    from methods import method_class, method_names

    name = method_of(sys.argv[1:] if argv is None else argv)
    p = ArgumentParser(description=__doc__)
    p.add_argument("--method", required=True, choices=list(method_names()),
                   help="the registered method to train")
    p.add_argument("--len", type=code_length, help="code length in bits (default: the method's)")
    p.add_argument("--bs", type=positive_int, help="batch size (default: the recipe's)")
    p.add_argument("--lr", type=positive_float, help="learning rate (default: the recipe's)")
    p.add_argument("--save", help="checkpoint file name under --checkpoint-dir (default: "
                                  "<method>_<dataset>_<len>bits, or the method's published names)")
    cls = method_class(name) if name in method_names() else None
    if cls is not None and cls.data_kind == "multiview":
        add_multiview_args(p, "--dataset", None)
    else:
        add_data_args(p, cls.data_kind if cls else None, None)
        p.set_defaults(dataset=None)
    add_engine_args(p)
    add_metric_args(p)
    if cls is not None:
        add_method_args(p, cls)
    return p


def main(args):
    from methods import method_class
    from pipeline.train import train

    cls = method_class(args.method)
    if cls.data_kind == "multiview":
        data = multiview_data(args)
    elif not args.dataset:
        raise UsageError("--dataset is required (e.g. --dataset synthetic, the built-in data)")
    else:
        data = data_options(args)
    config, recipe = method_values(args, cls)
    overrides = {**recipe, "epochs": args.epochs, "batch": args.bs, "lr": args.lr,
                 "eval_every": args.eval_every}
    options = train_options(args, args.method, [{**config, "bits": args.len}], [args.save],
                            overrides, data=data)
    return train(options).json()


if __name__ == "__main__":
    sys.exit(run_script(main, get_args_parser().parse_args()))
