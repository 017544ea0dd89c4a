"""The flag groups the scripts share, and the typed options they become.

Every script is its parser (the published flags, these groups, its own few)
and a ``main`` that turns the parsed flags into ``pipeline.options`` and
calls the pipeline.  This module is imported before torch (``evaluation.py
--codes`` never imports it): what needs the data or method registries is
imported where it is used."""

from __future__ import annotations

import argparse

from utils.cli.parser import (add_dataclass_args, dataclass_values, image_side, int_between,
                              non_negative_int, positive_int, seed_int, worker_count)
from utils.errors import UsageError

SYNTHETIC_FLAGS = {"synthetic_ids": "num_identities", "synthetic_train": "train_per_identity",
                   "synthetic_test": "test_per_identity"}


# -- flag groups ------------------------------------------------------------------------

def add_data_args(parser, kind, default, root_help=None, synthetic: bool = True):
    """--dataset (one of the registry's ``kind`` datasets; any when ``kind``
    is None, checked later), --data-root, --img-size, --workers,
    --skip-bad-images and the size of the built-in data."""
    g = parser.add_argument_group("data")
    if kind is None:
        g.add_argument("--dataset", default=default, help="dataset name (checked against the "
                       "method the checkpoint holds)")
    else:
        g.add_argument("--dataset", default=default, type=dataset_type(kind),
                       help=f"dataset: {dataset_list(kind)}")
    g.add_argument("--data-root", help=root_help or "dataset folder holding train/ and test/ "
                   "(default: where the method's published code looks, e.g. ./FaceScrub)")
    g.add_argument("--img-size", type=image_side,
                   help="input size (default: the dataset's; DDH pickles are 32)")
    add_workers_arg(g)
    add_cache_args(g)
    g.add_argument("--skip-bad-images", action="store_true",
                   help="leave out unreadable images of an image folder tree instead of stopping")
    g.add_argument("--layout", choices=["ddh", "folders"],
                   help="FaceScrub / YouTube Faces: the DDH pickles or the 32x32 image folders "
                        "(default: where the method's published code looks first; DCDH "
                        "./FaceScrub, OPQN ./data/facescrub)")
    add_protocol_args(g)
    if synthetic:
        add_synthetic_args(g)
    return g


def protocol_type(text):
    """--protocol's type: a named protocol (any spelling), else one line."""
    from data import DatasetError
    from data.protocols import protocol

    try:
        return protocol(text).name
    except DatasetError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_protocol_args(group):
    group.add_argument("--protocol", type=protocol_type,
                       help="the named protocol the data follows (docs/protocols.md); with "
                            "--dataset imagelist one of nuswide21, nuswide81, coco, imagenet100, "
                            "mirflickr25k, voc2012 (DeepHash-pytorch's spellings too); default: "
                            "the dataset's own")
    group.add_argument("--list-dir", help="--dataset imagelist: the folder of train.txt, "
                       "test.txt and database.txt when not --data-root (DeepHash-pytorch keeps "
                       "them in data/<name>/, the images under --data-root)")
    group.add_argument("--download", action="store_true",
                       help="CIFAR-10: download torchvision's copy into --data-root when it is "
                            "missing (needs a network connection)")


def dataset_list(kind) -> str:
    from data import dataset_names

    return ", ".join(dataset_names(kind)) + " (any capitalisation)"


def dataset_type(kind):
    """--dataset's type: the registry name of any spelling the published
    scripts take (capitalisation, aliases such as vgg), else one line."""
    def parse(text):
        from data import DatasetError, canonical_dataset

        try:
            return canonical_dataset(text, kind)
        except DatasetError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = "dataset"
    return parse


def add_synthetic_args(group):
    group.add_argument("--synthetic-ids", type=int_between(1, 100_000, "identities"),
                       help="built-in data: number of identities (default 20)")
    group.add_argument("--synthetic-train", type=int_between(1, 100_000, "per_identity"),
                       help="built-in data: training images per identity (default 60)")
    group.add_argument("--synthetic-test", type=int_between(1, 100_000, "per_identity"),
                       help="built-in data: test images per identity (default 15)")


def add_workers_arg(group):
    group.add_argument("--workers", type=worker_count,
                       help="data loader processes for image files (default: one per CPU core; "
                            "in-memory data needs none)")


def add_cache_args(group):
    group.add_argument("--cache", choices=["auto", "memory", "disk", "off"], default="auto",
                       help="image files: decode and resize each image once per run and keep it "
                            "(memory, or a file in --cache-dir), crop, flip and normalise per "
                            "batch on the training device; auto: in memory when it takes at most "
                            "half of the free memory, else on disk with --cache-dir, else off")
    group.add_argument("--cache-dir", help="where --cache disk (or auto, for large sets) keeps "
                                           "the decoded images while the run lasts")


def add_device_arg(group):
    group.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def add_speed_args(group, layout: bool = True):
    """--amp, and (for convolutional networks) --compile and --channels-last."""
    group.add_argument("--amp", nargs="?", const="auto", choices=["auto", "bf16", "fp16"],
                       help="mixed precision: bf16 autocast where supported, else fp16 with a "
                            "grad scaler (--amp fp16 / --amp bf16 to choose)")
    if layout:
        group.add_argument("--compile", action="store_true",
                           help="run the network through torch.compile")
        group.add_argument("--channels-last", action="store_true",
                           help="channels-last memory format")


def add_run_args(group, seed_help="seeds Python, NumPy, torch (all devices) and the data order"):
    """The flags of a training run that every training script has."""
    add_device_arg(group)
    group.add_argument("--seed", type=seed_int, default=0, help=seed_help)
    group.add_argument("--deterministic", action="store_true",
                       help="deterministic algorithms only (an op without one is an error); "
                            "sets CUBLAS_WORKSPACE_CONFIG and turns cudnn.benchmark off")
    group.add_argument("--resume", metavar="PATH|auto",
                       help="continue a run from a checkpoint it wrote (auto: its _last file)")
    group.add_argument("--overwrite", action="store_true",
                       help="start afresh even if the run's checkpoint exists (it is replaced)")


def add_engine_args(parser, epochs_help="epochs (default: the method's recipe)"):
    """The training-engine flags of the face scripts and train.py."""
    g = parser.add_argument_group("engine")
    g.add_argument("--epochs", type=positive_int, help=epochs_help)
    g.add_argument("--eval-every", type=non_negative_int,
                   help="evaluate every N epochs (default: the recipe's; 0: never)")
    add_run_args(g)
    add_speed_args(g)
    g.add_argument("--checkpoint-dir", default="checkpoint",
                   help="folder of the checkpoint files (--save names a file in it)")
    g.add_argument("--log-dir", default="log", help="folder of the training log files")
    g.add_argument("--json", metavar="OUT", help="write the final metrics as JSON")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    return g


def add_metric_args(parser, topk=None, radius: bool = True):
    """The metric flags of every evaluating script (defaults: the method's)."""
    g = parser.add_argument_group("metrics")
    if radius:
        g.add_argument("--radius", type=non_negative_int,
                       help="Hamming radius of precision/recall, inclusive (default 2)")
    g.add_argument("--topk", type=positive_int, nargs="+", default=list(topk) if topk else None,
                   help="precision at these ranks (default 1 5 10; OPQN 1 5 10 50)")
    g.add_argument("--curve", type=positive_int, nargs="+",
                   help="ranking positions of the precision curve "
                        "(default 1 5 10 20 50 100 200 500 1000 and N)")
    g.add_argument("--map-at", type=positive_int, nargs="+",
                   help="also report mAP@k (DeepHash's definition)")
    g.add_argument("--skip-no-relevant", action="store_true", default=None,
                   help="leave queries without a relevant item out of the means (DCHN: always, "
                        "as published)")
    g.add_argument("--backend", default="auto", choices=("auto", "numba", "torch"),
                   help="metric back end (auto: numba on CPU, torch on GPU)")
    return g


def add_report_args(parser):
    """--plot, --show-results, --report (and --seed for the grid's queries
    where the script has no seed yet)."""
    g = parser.add_argument_group("pictures and report")
    g.add_argument("--plot", metavar="DIR",
                   help="write the precision-recall and precision-at-positions plots (and, for "
                        "Hamming codes, the radius plot), PNG and SVG, into DIR (needs matplotlib)")
    g.add_argument("--show-results", metavar="DIR",
                   help="write DIR/retrieval.png: queries and their top-10 (green: relevant)")
    g.add_argument("--show-queries", type=positive_int, default=8,
                   help="queries in the --show-results grid (drawn with --seed)")
    g.add_argument("--report", metavar="OUT.html",
                   help="one self-contained HTML page: settings, metrics, plots, grid")
    if "--seed" not in parser._option_string_actions:
        g.add_argument("--seed", type=seed_int, default=0,
                       help="chooses the queries of the --show-results grid")
    return g


def add_multiview_args(parser, flag="--datasets", default="mirflickr25k_raw",
                       defaults: bool = True):
    """DCHN's data: --datasets and where its files are (the published
    ../datasets/<FOLDER>), the generic features layout, the built-in set.
    ``flag`` None: the data flags only (evaluation.py); ``defaults`` False:
    none set unless given (a checkpoint's recorded data fills them)."""
    if flag:
        parser.add_argument(flag, dest="datasets", default=default,
                            type=dataset_type("multiview"),
                            help=f"the multi-view data set: {dataset_list('multiview')}")
    g = parser.add_argument_group("multi-view data (DCHN)")
    if flag:
        g.add_argument("--data-root", help="dataset folder (default ../datasets/<FOLDER>, as "
                                           "published), or the file of the features layout")
    g.add_argument("--views", nargs="+", help="features layout: the arrays of the file, one per view")
    g.add_argument("--labels-key", default="labels" if defaults else None,
                   help="features layout: the label matrix")
    g.add_argument("--query-size", type=positive_int, default=2000 if defaults else None,
                   help="features layout: the first rows are the queries")
    g.add_argument("--train-size", type=positive_int, default=10000 if defaults else None,
                   help="features layout: the next rows are the training rows")
    g.add_argument("--synthetic-rows", type=int_between(1, 10_000_000, "rows"), default=1200 if defaults else None,
                   help="built-in data: rows (1/6 queries, 1/2 training)")
    g.add_argument("--synthetic-classes", type=int_between(1, 100_000, "classes"), default=12 if defaults else None,
                   help="built-in data: labels")
    g.add_argument("--synthetic-views", type=int_between(2, 3, "views"), default=2 if defaults else None,
                   choices=[2, 3], help="built-in data: views")
    return g


def multiview_options(args, synthetic: bool) -> dict:
    """The reader options of DCHN's data flags that are set."""
    if synthetic:
        rows, views = args.synthetic_rows, args.synthetic_views
        options = {"rows": rows, "classes": args.synthetic_classes, "seed": args.seed,
                   "widths": (64, 48, 32)[:views] if views else None,
                   "query": rows // 6 if rows else None, "train": rows // 2 if rows else None}
    else:
        options = {"views": args.views, "labels_key": args.labels_key,
                   "query": args.query_size, "train": args.train_size}
    return {k: v for k, v in options.items() if v is not None}


def multiview_data(args):
    """DataOptions of DCHN's data flags."""
    import dataclasses

    if args.datasets is None:
        raise UsageError("--dataset is required (e.g. --dataset synthetic, the built-in data)")
    options = multiview_options(args, args.datasets == "synthetic")
    return dataclasses.replace(data_options(args, args.datasets, args.data_root, options),
                               workers=getattr(args, "num_workers", None))


def add_method_args(parser, cls, exclude=("bits",)):
    """A method's own flags, from its config and recipe fields (train.py)."""
    g = parser.add_argument_group(f"{cls.name} ({cls.summary})")
    add_dataclass_args(g, cls.Config, exclude)
    add_dataclass_args(g, cls.Recipe, ("epochs", "batch", "lr", "eval_every"))
    return g


# -- flags -> options ---------------------------------------------------------------------

def synthetic_options(args) -> dict:
    """The reader options the face-data flags set: the built-in data's size, --layout."""
    options = {key: getattr(args, flag) for flag, key in SYNTHETIC_FLAGS.items()
               if getattr(args, flag, None) is not None}
    if getattr(args, "layout", None):
        options["layout"] = args.layout
    if getattr(args, "protocol", None):
        options["protocol"] = args.protocol
    if getattr(args, "download", False):
        options["download"] = True
    if getattr(args, "list_dir", None):
        options["list_dir"] = args.list_dir
    return options


def data_options(args, dataset=None, root=None, options=None, cross_dataset=False):
    from pipeline.options import DataOptions

    return DataOptions(dataset or args.dataset, root or getattr(args, "data_root", None),
                       getattr(args, "img_size", None), getattr(args, "workers", None),
                       bool(getattr(args, "skip_bad_images", False)), cross_dataset,
                       synthetic_options(args) if options is None else options,
                       getattr(args, "cache", "auto") or "auto", getattr(args, "cache_dir", None))


def speed_options(args):
    from utils.engine.precision import Speed

    return Speed(getattr(args, "amp", None), bool(getattr(args, "compile", False)),
                 bool(getattr(args, "channels_last", False)))


def engine_options(args, device=None, devices=()):
    from pipeline.options import EngineOptions

    return EngineOptions(device or getattr(args, "device", "auto"), getattr(args, "seed", 0),
                         bool(getattr(args, "deterministic", False)), speed_options(args),
                         not getattr(args, "no_progress", False), tuple(devices))


def report_options(args):
    from utils.report.outputs import ReportOptions

    return ReportOptions(getattr(args, "plot", None), getattr(args, "show_results", None),
                         getattr(args, "show_queries", 8), getattr(args, "report", None),
                         getattr(args, "seed", 0) or 0)


def output_options(args, checkpoint_dir=None, tag="", save_codes=None):
    from pipeline.options import OutputOptions

    codes = save_codes if save_codes is not None else getattr(args, "save_codes", None)
    codes = (codes,) if isinstance(codes, str) else tuple(codes or ())
    return OutputOptions(checkpoint_dir or getattr(args, "checkpoint_dir", "checkpoint"),
                         getattr(args, "log_dir", "log"), tag, getattr(args, "json", None), codes,
                         getattr(args, "resume", None), bool(getattr(args, "overwrite", False)),
                         report_options(args))


def metric_values(args) -> dict:
    """The metric flags a user set (the method's defaults fill the rest)."""
    names = ("radius", "topk", "curve", "map_at", "skip_no_relevant", "backend")
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def method_values(args, cls) -> tuple:
    """(config values, recipe values) given through ``add_method_args``."""
    return dataclass_values(args, cls.Config), dataclass_values(args, cls.Recipe)


def train_options(args, method: str, configs, saves, overrides, **extra):
    """The TrainOptions of a training script's flags (the face scripts and train.py)."""
    from pipeline.options import TrainOptions

    return TrainOptions(method, extra.pop("data", None) or data_options(args), tuple(configs),
                        tuple(saves), overrides, extra.pop("engine", None) or engine_options(args),
                        extra.pop("output", None) or output_options(args), metric_values(args),
                        **extra)
