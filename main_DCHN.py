"""DCHN: decoupled cross-view hashing (Hu et al., IEEE TCYB 2021), the
published main_DCHN.py: one hashing network per view, trained independently
to produce the SHAM codes (trainSHAM.py; computed here when its file is
missing), then cross-view evaluation.

Published forms:
  python main_DCHN.py --mode train --epochs 100 --view 0 --datasets mirflickr25k --output_shape 64 --alpha 0.02 --gama 1 --available_num 100 --gpu_id 0
  python main_DCHN.py --mode train --epochs 100 --view 1 --datasets mirflickr25k --output_shape 64 --alpha 0.02 --gama 1 --available_num 100 --gpu_id 1
  python main_DCHN.py --mode eval --view -1 --datasets mirflickr25k --output_shape 64 --alpha 0.02 --gama 1 --available_num 100 --num_workers 0
Built-in data:
  python trainSHAM.py --datasets synthetic --output_shape 32 && python main_DCHN.py --mode train --datasets synthetic --output_shape 32 && python main_DCHN.py --mode eval --datasets synthetic --output_shape 32
"""

import sys
import time

import utils.cli.interrupts  # noqa: F401  (first: Ctrl-C while torch loads)
from methods.dchn import DCHNConfig
from methods.recipes.dchn import DCHNRecipe
from pipeline.cli import (add_multiview_args, add_report_args, add_speed_args, engine_options,
                          multiview_data, output_options, report_options, train_options)
from utils.cli import (ArgumentParser, UsageError, add_dataclass_args, dataclass_values,
                       int_at_least, non_negative_int, positive_int, run_script, seed_int,
                       worker_count)


def get_args_parser():
    p = ArgumentParser(description=__doc__)
    # the published config.py flags, with their defaults
    p.add_argument("--mode", default="train", choices=["train", "eval"],
                   help="train the view network(s), or evaluate across views")
    add_dataclass_args(p, DCHNConfig, defaults=True)
    add_dataclass_args(p, DCHNRecipe, exclude=("epochs", "batch", "lr", "eval_every", "lr_gamma",
                                               "momentum", "weight_decay"), defaults=True)
    add_multiview_args(p)
    p.add_argument("--epochs", type=positive_int, help="epochs (default: published 100; 30 on "
                                                       "the built-in data)")
    p.add_argument("--seed", type=seed_int, default=0,
                   help="seeds the training and SHAM's draw of labelled rows")
    p.add_argument("--prefix", default="checkpoint", help="folder of the view checkpoints")
    p.add_argument("--multiprocessing", action="store_true",
                   help="with --view -1: train the views in parallel processes")
    p.add_argument("--num_workers", type=worker_count, default=2,
                   help="loader processes for raw images (features are served from memory)")
    p.add_argument("--gpu_id", type=int_at_least(-1), default=0,
                   help="CUDA device (-1: view v on device (v + 1) %% count, as published)")
    e = p.add_argument_group("added")
    e.add_argument("--eval-views", type=non_negative_int, nargs="+",
                   help="evaluate these views only (default: --view, or all)")
    e.add_argument("--features-dir", default="features", help="where eval writes the codes .mat")
    e.add_argument("--count-no-relevant", action="store_true",
                   help="count queries without a relevant item as AP 0 in the table (the "
                        "published evaluation leaves them out; the JSON has both)")
    e.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (overrides --gpu_id)")
    e.add_argument("--resume", choices=["auto"], help="continue each view from its checkpoint")
    e.add_argument("--overwrite", action="store_true",
                   help="train afresh although the view's checkpoint exists")
    e.add_argument("--deterministic", action="store_true", help="deterministic algorithms only")
    add_speed_args(e, layout=False)
    e.add_argument("--log-dir", default="log", help="folder of the training log files")
    e.add_argument("--json", metavar="OUT", help="write the results as JSON")
    e.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_report_args(p)  # with --mode eval: one curve per query view -> retrieval view
    return p


def devices(args, views) -> list:
    """--gpu_id as published: one device for every view, or (-1) view v on (v + 1) % count."""
    import torch

    from utils.cli.device import device_for_index

    if args.gpu_id >= 0 or args.device != "auto" or not torch.cuda.is_available():
        return [device_for_index(args.device, max(args.gpu_id, 0), "--gpu_id")]
    return [f"cuda:{(v + 1) % torch.cuda.device_count()}" for v in views]


def main(args):
    from data.multiview import view_count

    if args.mode == "train" and (args.plot or args.show_results or args.report):
        raise UsageError("--plot, --show-results and --report go with --mode eval")
    data = multiview_data(args)
    given = dataclass_values(args, DCHNConfig)
    count = view_count(data.dataset, data.root, data.options)
    view = given.get("view", -1)
    views = list(range(count)) if view < 0 else [view]
    if args.mode == "eval":
        return evaluate(args, data, given, args.eval_views or views, count)
    from pipeline.train import train

    overrides = {"epochs": args.epochs, **dataclass_values(args, DCHNRecipe)}
    output = output_options(args, checkpoint_dir=args.prefix)
    start = time.perf_counter()
    outcome = train(train_options(
        args, "dchn", [given], [None], overrides, data=data, output=output,
        engine=engine_options(args, devices=devices(args, views)), evaluate_after=False,
        parallel=args.multiprocessing))
    print("The training time: " + str(time.perf_counter() - start))
    return outcome.json()


def evaluate(args, data, given, views, count):
    from pipeline.evaluate import evaluate as evaluate_files
    from pipeline.options import EvalOptions
    from pipeline.outputs import text_of
    from methods.dchn import DCHNView
    from utils.engine.checkpoint import CheckpointError
    from utils.engine.files import RunNames, ensure_dir

    if len(set(views)) < len(views):
        raise UsageError(f"--eval-views lists a view twice: {' '.join(map(str, views))}")
    bad = [v for v in views if v >= count]
    if bad:
        raise UsageError(f"--eval-views {bad[0]}: {args.datasets} has views 0..{count - 1}")
    if len(views) < 2:
        raise UsageError("cross-view evaluation needs at least two views (--eval-views 0 1)")
    if args.show_results:
        raise UsageError("--show-results needs images; DCHN's views are feature vectors")
    names = RunNames(None, args.prefix, args.log_dir)
    paths = [DCHNView.run_files(dict(given, view=v), args.datasets, names).last for v in views]
    missing = [(v, p) for v, p in zip(views, paths) if not p.is_file()]
    if missing:
        from data.multiview import load_multiview

        view_names = [x.name for x in load_multiview(data.dataset, data.root, -1, data.options).views]
        listed = ", ".join(f"{v} ({view_names[v]})" for v, _ in missing)
        raise CheckpointError(f"no checkpoint for view(s) {listed}: expected {missing[0][1]}; "
                              f"train it with --mode train --view {missing[0][0]}")
    bits = DCHNView.given_value(given, "bits")
    features = ensure_dir(args.features_dir, "--features-dir") / (
        f"{args.datasets}_test_{DCHNView.given_value(given, 'available_num')}_{bits}bit_"
        f"features.mat")
    expect = {"bits": (bits, "--output_shape")}
    evaluation, = evaluate_files(EvalOptions(
        tuple(map(str, paths)), data, None, "dchn", (expect,) * len(paths),
        engine_options(args, devices(args, views)[0]),
        {"skip_no_relevant": not args.count_no_relevant}, 256, args.json, (str(features),),
        report_options(args)))
    print(text_of(evaluation))
    return evaluation.metrics


if __name__ == "__main__":
    sys.exit(run_script(main, get_args_parser().parse_args()))
