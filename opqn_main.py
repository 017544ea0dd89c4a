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
from pathlib import Path

from torch.optim.lr_scheduler import StepLR

from data import DataRequest, build_splits, dataset_names, make_loaders
from methods.opqn import OPQN, PQConfig
from methods.recipes.opqn import SMALL_IMAGES, input_size, recipe_for
from utils.cli import (ArgumentParser, UsageError, add_data_args, add_engine_args,
                       add_metric_args, add_report_args, check_writable_file, data_kwargs, ensure_dir,
                       format_metrics, non_negative_float, positive_float, positive_int,
                       run_script, write_json)
from utils.cli.device import resolve_device
from utils.engine.checkpoint import load_checkpoint, resolve_checkpoint
from utils.engine.distributed import cleanup, init_distributed
from utils.engine.logs import log_path, logging_to
from utils.engine.loop import FitConfig
from utils.engine.rng import seed_everything
from utils.engine.run import check_run_files, load_resume, train_and_report
from utils.retrieval.codes_io import load_npz, save_npz
from utils.retrieval.options import MetricOptions
from utils.retrieval.pq import evaluate_pq, quantization_index


def get_args_parser():
    p = ArgumentParser(description=__doc__)
    # the official flags and defaults
    p.add_argument("--lr", type=positive_float, default=SMALL_IMAGES.lr, help="learning rate")
    p.add_argument("-e", "--evaluate", action="store_true", help="evaluate instead of training")
    p.add_argument("-c", "--cross-dataset", action="store_true",
                   help="cross-dataset protocol: 112x112 network, cross_train/ and cross_test/ "
                        "for evaluation")
    p.add_argument("--bs", type=positive_int, default=SMALL_IMAGES.batch, help="batch size")
    p.add_argument("--save", nargs="+", help="checkpoint name(s) to write, one per model")
    p.add_argument("--load", nargs="+", help="checkpoint(s) to evaluate, one per model")
    p.add_argument("--len", type=positive_int, nargs="+", help="code length(s) in bits, one per model")
    # --num-books: the same flag under torchrun, whose own parser takes --num as an
    # abbreviation of its --numa-binding
    p.add_argument("--num", "--num-books", dest="num", type=positive_int, nargs="+",
                   help="number of codebooks, one per model")
    p.add_argument("--words", type=positive_int, nargs="+", default=[256],
                   help="codewords per codebook")
    p.add_argument("--margin", type=non_negative_float, default=0.5, help="additive angular margin")
    p.add_argument("--miu", type=non_negative_float, default=0.1,
                   help="weight of the assignment entropy")
    # added here
    add_data_args(p, dataset_names("faces"), "facescrub")
    p.add_argument("--scale", type=positive_float,
                   help="logit scale (default 20 for 32x32 data, 40 for 112x112 and -c)")
    p.add_argument("--features", nargs="+", metavar="FILE.npz",
                   help="with -e: evaluate stored features instead of a checkpoint")
    p.add_argument("--save-codes", nargs="+", metavar="OUT.npz",
                   help="with -e: store features, database index, mlp and labels, one file per model")
    add_metric_args(p, SMALL_IMAGES.topk, radius=False)
    add_engine_args(p)  # --epochs: 200 for 32x32 data, 160 for 112x112, 7 synthetic
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


def model_configs(args, img_size: int) -> list:
    """One PQConfig per model of the call (the published rules, checked)."""
    if not args.len:
        raise UsageError("--len is required: the code length of each model, "
                         "e.g. --len 24 --num 4 --words 64")
    count = len(args.len)
    nums, words = _per_model(args.num, "num", count), _per_model(args.words, "words", count)
    return [PQConfig.make(bits, m, k, img_size, args.cross_dataset, args.scale)
            for bits, m, k in zip(args.len, nums, words)]


def metric_options(args) -> MetricOptions:
    return MetricOptions.from_args(args, radius=None)


def train(args, dist_info, device):
    if not args.save:
        raise UsageError("--save NAME.tar is required, one per model (or -e to evaluate)")
    if len(args.save) != len(args.len or []):
        raise UsageError(f"--save names {len(args.save)} file(s) for {len(args.len or [])} "
                         f"model(s) (--len); give one name per model")
    if args.resume and args.resume != "auto" and len(args.save) > 1:
        raise UsageError("--resume PATH takes one model; with several use --resume auto")
    # bad --len/--num/--words and unwritable files fail before any data is read
    model_configs(args, input_size(args.dataset, args.img_size, args.cross_dataset))
    files = [check_run_files(args, name) for name in args.save]
    log_dir = ensure_dir(args.log_dir, "--log-dir")
    if args.json:
        check_writable_file(args.json, "--json")
    splits = build_splits(args.dataset, DataRequest(**data_kwargs(args), preset="opqn"))
    configs = model_configs(args, splits.img_size)
    recipe = recipe_for(args.dataset, splits.img_size)
    loaders = make_loaders(splits, args.bs, device, args.seed, args.workers,
                           rank=dist_info.rank, world_size=dist_info.world_size)
    epochs = args.epochs or recipe.epochs
    eval_every = recipe.eval_every if args.eval_every is None else args.eval_every
    results = []
    for config, run_files in zip(configs, files):
        resume = load_resume(args, run_files)
        seed_everything(args.seed, args.deterministic)
        method = OPQN(config, splits.num_classes, args.margin, args.miu).to(device)
        optimizer = method.optimizer(recipe, args.lr)
        scheduler = StepLR(optimizer, recipe.lr_step, recipe.lr_gamma)
        fit_config = FitConfig(epochs, device, run_files.best, run_files.last,
                               eval_every=eval_every, metrics=metric_options(args), amp=args.amp,
                               compile=args.compile, channels_last=args.channels_last,
                               dist=dist_info, progress=not args.no_progress and dist_info.is_main,
                               desc=f"{config.bits} bits, ", extra_state={"args": vars(args)})
        log_file = log_path(log_dir, config.bits, args.dataset)
        with logging_to(log_file, enabled=dist_info.is_main) as log:
            log.info(f"[Configuration] dataset {args.dataset} ({splits.describe()}), "
                     f"{config.describe()}, scale {config.scale}, margin {args.margin}, "
                     f"miu {args.miu}, batch {args.bs}, lr {args.lr}, {recipe.describe()}, "
                     f"{epochs} epochs, device {device}, {dist_info.world_size} process(es), "
                     f"seed {args.seed}")
            log.info(f"Arguments: {vars(args)}")
            outcome = train_and_report(method, optimizer, scheduler, loaders, fit_config, resume)
            if outcome is None:
                continue
            final = outcome.metrics
            final.update(num=config.num_books, words=config.num_words)
            log.info(f"log written to {log_file}")
        results.append(final)
    return results


def evaluate_checkpoints(args, device):
    if not args.load:
        raise UsageError("-e needs --load CHECKPOINT.tar (one per model) or --features FILE.npz")
    if len(args.load) != len(args.len or []):
        raise UsageError(f"--load names {len(args.load)} checkpoint(s) for {len(args.len or [])} "
                         f"model(s) (--len); give one per model")
    if args.save_codes and len(args.save_codes) != len(args.load):
        raise UsageError("--save-codes needs one file per model")
    for out in args.save_codes or []:
        check_writable_file(out, "--save-codes")
    model_configs(args, input_size(args.dataset, args.img_size, args.cross_dataset))
    paths = [resolve_checkpoint(name, args.checkpoint_dir) for name in args.load]
    first = load_checkpoint(paths[0]) if args.dataset == "synthetic" else None
    request = DataRequest(**data_kwargs(args, first), preset="opqn", augment=False,
                          cross_dataset=args.cross_dataset)
    splits = build_splits(args.dataset, request)
    loaders = make_loaders(splits, args.bs, device, workers=args.workers, train=False)
    results, grid = [], None
    for i, (path, config) in enumerate(zip(paths, model_configs(args, splits.img_size))):
        method = OPQN(config, splits.num_classes).to(device)
        method.load_official_state(load_checkpoint(path), path)
        result, queries, database = method.evaluate(loaders.database, loaders.queries, device,
                                                    metric_options(args), not args.no_progress)
        result.update(checkpoint=str(path), num=config.num_books, words=config.num_words)
        where = f"{path} on {args.dataset}{' (cross-dataset)' if args.cross_dataset else ''}"
        print(format_metrics(result, where))
        if args.save_codes:
            save_features(args.save_codes[i], database, queries, method.head.mlp.detach())
        if grid is None:
            from utils.report.outputs import GridInputs

            grid = GridInputs(method, queries, database, splits.queries, splits.database)
        results.append(result)
    _report(args, [(f"{r['bits']} bits ({r['num']}x{r['words']}): {Path(r['checkpoint']).name}", r)
                   for r in results], grid)
    return results


def _report(args, runs, grid=None):
    if args.plot or args.show_results or args.report:
        from utils.report.outputs import write_outputs

        settings = {k: v for k, v in vars(args).items() if v not in (None, False, [])}
        write_outputs(args, f"opqn_main.py -e on {args.dataset}", settings, runs, grid)


def save_features(path, database, queries, mlp):
    """The stored-features format (as the fixtures' pqret files): db_index is [M, N]."""
    db = database.values.cpu()
    mlp = mlp.cpu()
    save_npz(path, db_features=db.numpy(), query_features=queries.values.cpu().numpy(),
             db_labels=database.labels.cpu().numpy(), query_labels=queries.labels.cpu().numpy(),
             mlp=mlp.numpy(), db_index=quantization_index(db, mlp).T.numpy())


def evaluate_features(args):
    results = []
    options = metric_options(args)
    for path in args.features:
        z = load_npz(path, required=("query_features", "query_labels", "db_labels", "mlp"))
        if "db_features" in z:
            db = z["db_features"]
        elif "db_index" in z:
            db = z["db_index"].T  # stored as [M, N], as the official indexing returns it
        else:
            raise UsageError(f"{path} lacks array db_features (or db_index)")
        try:
            result = evaluate_pq(z["query_features"], db, z["query_labels"], z["db_labels"],
                                 z["mlp"], **options.ranking_kwargs())
        except ValueError as exc:
            raise UsageError(f"{path}: {exc}") from exc
        print(format_metrics(result, f"features {path}"))
        results.append(result)
    _report(args, [(str(p), r) for p, r in zip(args.features, results)])
    return results


def main(args):
    if args.json:
        check_writable_file(args.json, "--json")
    if args.plot or args.show_results or args.report:
        if not args.evaluate:
            raise UsageError("--plot, --show-results and --report go with -e (evaluation)")
        if args.show_results and args.features:
            raise UsageError("--show-results needs images: evaluate checkpoints on a dataset "
                             "(stored features hold none)")
        from utils.report.outputs import check_outputs

        check_outputs(args)
    if args.features:
        if not args.evaluate:
            raise UsageError("--features evaluates stored features: add -e")
        results = evaluate_features(args)
    elif args.evaluate:
        results = evaluate_checkpoints(args, resolve_device(args.device))
    else:
        dist_info, device = init_distributed(resolve_device(args.device))
        try:
            results = train(args, dist_info, device)
        finally:
            cleanup()
        if not dist_info.is_main:
            return results
    if args.json:
        write_json(args.json, results[0] if len(results) == 1 else results)
    return results


if __name__ == "__main__":
    sys.exit(run_script(main, get_args_parser().parse_args()))
