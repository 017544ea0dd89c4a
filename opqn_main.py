"""Train or evaluate OPQN (orthonormal product quantization network).

Official forms:
  python opqn_main.py --dataset facescrub --save m.tar --len 36 --num 6 --words 64
  python opqn_main.py -e --dataset facescrub --load a.tar b.tar c.tar --len 16 24 36 --num 2 4 6 --words 256 64 64
  (add -c for cross-dataset evaluation)
Stored features:  python opqn_main.py -e --features codes.npz [--json OUT]
Built-in data:    python opqn_main.py --dataset synthetic --save pq.tar --len 24 --num 4 --words 64
Several GPUs:     torchrun --nproc_per_node 4 opqn_main.py --dataset vggface2 --save v.tar --len 48 --num-books 8 --words 64
"""

import sys

import utils.cli.interrupts  # noqa: F401  (first: Ctrl-C while torch loads)
from methods.recipes.opqn import TOPK
from pipeline.cli import (add_data_args, add_engine_args, add_metric_args, add_report_args,
                          data_options, engine_options, metric_values, report_options,
                          train_options)
from utils.cli import (ArgumentParser, UsageError, code_length, non_negative_float, positive_float,
                       positive_int, run_script)


def get_args_parser():
    p = ArgumentParser(description=__doc__)
    # the published flags and defaults
    p.add_argument("--lr", type=positive_float, default=0.1, help="learning rate")
    p.add_argument("-e", "--evaluate", action="store_true", help="evaluate instead of training")
    p.add_argument("-c", "--cross-dataset", action="store_true",
                   help="cross-dataset protocol: 112x112 network, cross_train/ and cross_test/ "
                        "for evaluation")
    p.add_argument("--bs", type=positive_int, default=256, help="batch size")
    p.add_argument("--save", nargs="+", help="checkpoint name(s) to write, one per model")
    p.add_argument("--load", nargs="+", help="checkpoint(s) to evaluate, one per model")
    p.add_argument("--len", type=code_length, nargs="+",
                   help="code length(s) in bits, one per model (required)")
    # --num-books: the same flag under torchrun, whose own parser takes --num as an
    # abbreviation of its --numa-binding
    p.add_argument("--num", "--num-books", dest="num", type=positive_int, nargs="+",
                   help="number of codebooks, one per model (required)")
    p.add_argument("--words", type=positive_int, nargs="+", default=[256],
                   help="codewords per codebook, one per model (or one for all)")
    p.add_argument("--margin", type=non_negative_float, default=0.5, help="additive angular margin")
    p.add_argument("--miu", type=non_negative_float, default=0.1,
                   help="weight of the assignment entropy")
    # added here
    add_data_args(p, "faces", "facescrub")
    p.add_argument("--scale", type=positive_float,
                   help="logit scale (default 20 for 32x32 data, 40 for 112x112 and -c)")
    p.add_argument("--features", nargs="+", metavar="FILE.npz",
                   help="with -e: evaluate stored features instead of a checkpoint")
    p.add_argument("--save-codes", nargs="+", metavar="OUT.npz",
                   help="with -e: store features, database index, mlp and labels, one file per model")
    add_metric_args(p, TOPK, radius=False)
    add_engine_args(p, "epochs (default: 200 for 32x32 data, 160 for 112x112, 7 on the built-in "
                       "data)")
    add_report_args(p)  # with -e; the grid shows the first model's retrieval
    return p


def _per_model(values, name, count):
    if values is None:
        raise UsageError(f"--{name} is required (one value per model)")
    if len(values) == 1:
        return list(values) * count
    if len(values) != count:
        raise UsageError(f"--{name} has {len(values)} values for {count} models; "
                         f"give one per model (or one for all)")
    return list(values)


def model_configs(args) -> list:
    """The given config of each model of the call."""
    if not args.len:
        raise UsageError("--len is required: the code length of each model, "
                         "e.g. --len 24 --num 4 --words 64")
    count = len(args.len)
    nums, words = _per_model(args.num, "num", count), _per_model(args.words, "words", count)
    return [{"bits": b, "num_books": m, "num_words": k, "margin": args.margin, "miu": args.miu,
             "scale": args.scale, "cross_dataset": args.cross_dataset}
            for b, m, k in zip(args.len, nums, words)]


def main(args):
    from pipeline.outputs import json_value, text_of

    if args.report or args.plot or args.show_results:
        if not args.evaluate:
            raise UsageError("--plot, --show-results and --report go with -e (evaluation)")
    if args.features:
        if not args.evaluate:
            raise UsageError("--features evaluates stored features: add -e")
        from pipeline.stored import evaluate_stored
        from utils.retrieval.options import MetricOptions

        evaluations = evaluate_stored(args.features, "features", MetricOptions.of(
            {"topk": TOPK}, metric_values(args)), args.json, report_options(args))
    elif args.evaluate:
        evaluations = evaluate_models(args)
    else:
        configs = model_configs(args)
        if not args.save:
            raise UsageError("--save NAME.tar is required, one per model (or -e to evaluate)")
        if len(args.save) != len(configs):
            raise UsageError(f"--save names {len(args.save)} file(s) for {len(configs)} "
                             f"model(s) (--len); give one name per model")
        overrides = {"lr": args.lr, "batch": args.bs, "epochs": args.epochs,
                     "eval_every": args.eval_every}
        from pipeline.train import train

        return train(train_options(args, "opqn", configs, args.save, overrides)).json()
    for evaluation in evaluations:
        print(text_of(evaluation))
    return json_value(evaluations)


def evaluate_models(args) -> list:
    from pipeline.evaluate import evaluate
    from pipeline.options import EvalOptions

    if not args.load:
        raise UsageError("-e needs --load CHECKPOINT.tar (one per model) or --features FILE.npz")
    configs = model_configs(args)
    if len(args.load) != len(configs):
        raise UsageError(f"--load names {len(args.load)} checkpoint(s) for {len(configs)} "
                         f"model(s) (--len); give one per model")
    if args.save_codes and len(args.save_codes) != len(args.load):
        raise UsageError("--save-codes needs one file per model")
    expect = [{"bits": (c["bits"], "--len"), "num_books": (c["num_books"], "--num"),
               "num_words": (c["num_words"], "--words"), "scale": (args.scale, "--scale")}
              for c in configs]
    return evaluate(EvalOptions(
        tuple(args.load), data_options(args, cross_dataset=args.cross_dataset),
        args.checkpoint_dir, "opqn", tuple(expect), engine_options(args), metric_values(args),
        args.bs, args.json, tuple(args.save_codes or ()), report_options(args)))


if __name__ == "__main__":
    sys.exit(run_script(main, get_args_parser().parse_args()))
