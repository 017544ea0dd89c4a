"""The dataset flags several scripts share, and what they ask of a dataset
builder (as plain keyword arguments, so this module knows no dataset)."""

from __future__ import annotations

from typing import Optional

from utils.cli.parser import add_workers_arg, positive_int

SYNTHETIC_FLAGS = {"synthetic_ids": "num_identities", "synthetic_train": "train_per_identity",
                   "synthetic_test": "test_per_identity"}


def add_data_args(parser, datasets, default: str, root_help: Optional[str] = None):
    """--dataset (one of ``datasets``), --data-root, --img-size, --workers,
    --skip-bad-images and the size of the built-in data."""
    g = parser.add_argument_group("data")
    if datasets is None:  # checked later against the registry (evaluation.py --codes stays light)
        g.add_argument("--dataset", default=default,
                       help="facescrub, youtube, cfw, vggface2, folder or synthetic")
    else:
        g.add_argument("--dataset", default=default, choices=list(datasets))
    g.add_argument("--data-root", help=root_help or "dataset folder holding train/ and test/ "
                   "(default data/<dataset>, or the official ./FaceScrub, ./YouTube)")
    g.add_argument("--img-size", type=positive_int,
                   help="input size (DDH data: 32; image folders: default 112)")
    add_workers_arg(g)
    g.add_argument("--skip-bad-images", action="store_true",
                   help="leave out unreadable images of an image folder tree instead of stopping")
    g.add_argument("--synthetic-ids", type=positive_int,
                   help="built-in data: number of identities (default 20)")
    g.add_argument("--synthetic-train", type=positive_int,
                   help="built-in data: training images per identity (default 60)")
    g.add_argument("--synthetic-test", type=positive_int,
                   help="built-in data: test images per identity (default 15)")
    return g


def synthetic_options(args, checkpoint: Optional[dict] = None) -> dict:
    """The size of the built-in data: the flags given, else (evaluating a
    checkpoint trained on it) the size recorded in the checkpoint, so the
    database and queries are the ones it was trained and evaluated with."""
    saved = {}
    if checkpoint is not None and isinstance(checkpoint.get("args"), dict):
        if checkpoint["args"].get("dataset") == "synthetic":
            saved = checkpoint["args"]
    options = {}
    for flag, key in SYNTHETIC_FLAGS.items():
        value = getattr(args, flag, None)
        if value is None:
            value = saved.get(flag)
        if value is not None:
            options[key] = value
    return options


def data_kwargs(args, checkpoint: Optional[dict] = None) -> dict:
    """Keyword arguments of ``data.DataRequest`` from the data flags."""
    return dict(root=args.data_root, img_size=args.img_size,
                skip_bad_images=getattr(args, "skip_bad_images", False),
                options=synthetic_options(args, checkpoint) if args.dataset == "synthetic" else {})
