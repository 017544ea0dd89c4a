"""What the training and evaluation scripts share: the dataset flags, the three
data loaders of a run, and (for DCDH) the choice of network and recipe."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from data import DATASETS, DatasetError, build_datasets
from utils.checkpoint import CheckpointError
from utils.cli import UsageError
from utils.distributed import DistInfo
from utils.engine import seed_worker

__all__ = ["DATASETS", "Recipe", "recipe_for", "default_arch", "build_run_data",
           "build_hashing_data", "handled_errors"]

# Epochs for the built-in data: enough for high mAP in a few CPU minutes.
SYNTHETIC_EPOCHS = 15


def _synthetic_kwargs(args) -> dict:
    names = {"synthetic_ids": "num_identities", "synthetic_train": "train_per_identity",
             "synthetic_test": "test_per_identity"}
    out = {}
    for flag, key in names.items():
        value = getattr(args, flag, None)
        if value is not None:
            if value <= 0:
                raise UsageError(f"--{flag.replace('_', '-')} must be positive, got {value}")
            out[key] = value
    return out


def inherit_synthetic_size(args, checkpoint: dict) -> None:
    """Evaluating a checkpoint trained on the built-in data: unless given, use
    the data size recorded in it, so the database and queries are the ones it
    was trained and evaluated with."""
    saved = checkpoint.get("args") if isinstance(checkpoint.get("args"), dict) else {}
    if args.dataset != "synthetic" or saved.get("dataset") != "synthetic":
        return
    for flag in ("synthetic_ids", "synthetic_train", "synthetic_test"):
        if getattr(args, flag, None) is None and saved.get(flag) is not None:
            setattr(args, flag, saved[flag])


def handled_errors():
    """Exceptions a user can cause; the scripts report them in one line, exit 2."""
    from utils.trainer import TrainingError
    return (UsageError, DatasetError, CheckpointError, TrainingError)


@dataclass(frozen=True)
class Recipe:
    optimizer: str
    epochs: int
    lr_step: int
    lr_gamma: float
    weight_decay: float

    def describe(self) -> str:
        return (f"{self.optimizer} (weight decay {self.weight_decay}), "
                f"lr x{self.lr_gamma} every {self.lr_step} epochs")


# The official recipes: FaceScrub/YouTube train DFHNet with Adam (amsgrad) for
# 600 epochs, halving the lr every 100; VGGFace2 trains the residual net with
# SGD for 150 epochs, lr x0.1 every 50.
ADAM_RECIPE = Recipe("adam", 600, 100, 0.5, 1e-4)
SGD_RECIPE = Recipe("sgd", 150, 50, 0.1, 5e-4)


def recipe_for(dataset: str, arch: str) -> Recipe:
    """The dataset fixes the recipe where the official code does; otherwise the network."""
    if dataset in ("facescrub", "youtube"):
        return ADAM_RECIPE
    if dataset == "vggface2":
        return SGD_RECIPE
    recipe = ADAM_RECIPE if arch == "dfhnet" else SGD_RECIPE
    if dataset == "synthetic":
        recipe = Recipe(recipe.optimizer, SYNTHETIC_EPOCHS, recipe.lr_step, recipe.lr_gamma,
                        recipe.weight_decay)
    return recipe


def default_arch(dataset: str, img_size: int) -> str:
    if dataset in ("facescrub", "youtube") or img_size == 32:
        return "dfhnet"
    if img_size == 112:
        return "sphere20"
    return "resnet18"


def check_arch_size(arch: str, img_size: int) -> None:
    if arch == "dfhnet" and img_size != 32:
        raise UsageError(f"--arch dfhnet takes 32x32 images, not {img_size}x{img_size}; "
                         f"use --arch resnet18/34/50 for other sizes")
    if arch.startswith("sphere") and img_size != 112:
        raise UsageError(f"--arch {arch} takes 112x112 images, not {img_size}x{img_size}; "
                         f"use --arch resnet18/34/50 for other sizes")


@dataclass
class RunData:
    train_loader: DataLoader  # shuffled, training transforms (None for evaluation)
    db_loader: DataLoader  # training split in order, test transforms: the database
    query_loader: DataLoader  # test split: the queries
    num_classes: int
    img_size: int
    dataset: str
    arch: str = ""

    def describe(self) -> str:
        return (f"{len(self.db_loader.dataset)} training images, {self.num_classes} classes, "
                f"{len(self.query_loader.dataset)} test images, {self.img_size}x{self.img_size}")


def build_run_data(args, device, train: bool = True, cross_dataset: bool = False,
                   dist_info: DistInfo = DistInfo()) -> RunData:
    """Datasets and loaders for ``args.dataset``: database = training split, queries = test split.

    Under torchrun each process draws its share of every epoch through a
    DistributedSampler (``--bs`` is then the batch of one process)."""
    kwargs = dict(data_root=args.data_root, img_size=args.img_size,
                  skip_bad_images=args.skip_bad_images, synthetic_kwargs=_synthetic_kwargs(args),
                  cross_dataset=cross_dataset)
    db_set, query_set, info = build_datasets(args.dataset, augment=False, **kwargs)
    if len(db_set) == 0 or len(query_set) == 0:
        raise DatasetError(f"{args.dataset}: the train or test split is empty")
    common = dict(batch_size=args.bs, num_workers=args.workers, pin_memory=device.type == "cuda",
                  worker_init_fn=seed_worker, persistent_workers=args.workers > 0)
    db_loader = DataLoader(db_set, shuffle=False, **common)
    query_loader = DataLoader(query_set, shuffle=False, **common)
    train_loader = None
    if train:
        train_set = db_set
        if info["format"] == "folder" and not cross_dataset:
            # only image folders have random training transforms
            train_set, _, _ = build_datasets(args.dataset, augment=True, **kwargs)
        if dist_info.enabled:
            sampler = DistributedSampler(train_set, dist_info.world_size, dist_info.rank,
                                         shuffle=True, seed=args.seed)
            per_process = len(sampler)
            order = dict(sampler=sampler)
        else:
            per_process = len(train_set)
            order = dict(shuffle=True, generator=torch.Generator().manual_seed(args.seed))
        # a last batch of one sample would break BatchNorm in training mode
        drop_last = per_process % args.bs == 1
        train_loader = DataLoader(train_set, drop_last=drop_last, **order, **common)
    return RunData(train_loader, db_loader, query_loader, info["num_classes"], info["img_size"],
                   args.dataset)


def build_hashing_data(args, device, train: bool = True, dist_info: DistInfo = DistInfo()) -> RunData:
    """The run's data, with the DCDH network picked by dataset when --arch is absent."""
    data = build_run_data(args, device, train, dist_info=dist_info)
    data.arch = args.arch or default_arch(args.dataset, data.img_size)
    check_arch_size(data.arch, data.img_size)
    return data
