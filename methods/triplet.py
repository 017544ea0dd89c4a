"""Triplet-ranking deep hashing as a method: ``HashModel`` (ResNet + Linear +
Tanh), a miner and the triplet ranking loss; codes are the sign of the
embedding, ranked by Hamming distance.

Checkpoint (the published layout): a bare ``HashModel`` state_dict
(``feature_extractor.*``, ``hashcoder.0.*``), exactly what
``HashModel.save`` writes, so a file goes both ways: a published snapshot
loads here and a snapshot written here loads with ``HashModel.load``.  The
published run folder ``<outf>/<dataset>_<optimizer>_<bits>bits_<margin>margin_<postfix>/``
holds ``triplet_resnet_<bits>bits_<epoch>.pth`` snapshots; ours adds
``..._best.pth`` and the resume file ``..._last.pth``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from methods.base import DataFacts, Method, MethodConfig, Recognised, option
from methods.recipes.triplet import (SYNTHETIC_IMG_SIZE, TripletRecipe, published_margin,
                                     recipe_for)
from methods.registry import register_method
from models import create_network, recognise_network
from models.hash_model import BACKBONES
from models.losses.triplet import triplet_hashing_loss
from models.miners import MINERS
from models.pretrained import PretrainedError, from_scratch
from utils.cli.parser import code_length, positive_float
from utils.engine.checkpoint import CheckpointError, state_dict_mismatch, strip_prefix
from utils.engine.files import RunFiles, RunNames
from utils.engine.logs import log
from utils.errors import UsageError

# registry names -> the published --dataset_name spelling (run folder names)
PUBLISHED_NAMES = {"cub": "CUB", "dogs": "Stanford_Dogs"}


def snapshot_facts(state_dict: dict):
    """(arch, bits, head) of a HashModel state_dict; None where unknown."""
    name = recognise_network(state_dict, family="triplet")
    arch = name[len("hash_"):] if name else None
    if getattr(state_dict.get("hashcoder.0.weight"), "ndim", 0) == 2:
        weight = state_dict["hashcoder.0.weight"]
        head = "fc" if weight.shape[1] in (512, 2048) else "dae"
        return arch, int(weight.shape[0]), head
    return arch, None, None


def _model_state(checkpoint):
    """The HashModel state_dict of a snapshot, or of one of our resume files."""
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("model"), dict) and \
            "train_state" in checkpoint:
        return checkpoint["model"]
    return checkpoint


@dataclass(frozen=True)
class TripletConfig(MethodConfig):
    bits: int = option(64, "code length in bits", type=code_length)
    margin: Optional[float] = option(None, "triplet margin (default: the published advice, a "
                                           "bit over bits/4: 8 for 16, 20 for 64)",
                                     type=positive_float)
    arch: str = option("resnet18", "backbone", choices=tuple(BACKBONES))
    head: str = option("fc", "fc: Linear + Tanh (published); dae: the paper's divide-and-encode "
                             "module", choices=("fc", "dae"))
    mining: str = option("all", "which in-batch triplets: all (published), semihard, hard",
                         choices=tuple(MINERS))
    pretrained: Optional[str] = option("imagenet", "the ResNet's start, as published: imagenet "
                                                   "(torchvision's weights, from the torch hub "
                                                   "cache), a local torchvision state_dict file, "
                                                   "or none (from scratch; the default on the "
                                                   "built-in data)")


@register_method("triplet")
class TripletHashing(Method):
    """``forward(images, labels)`` is the triplet ranking loss of the batch
    (in float32, also under --amp)."""

    summary = "triplet-ranking hashing on a ResNet (CUB-200-2011, Stanford Dogs)"
    Config = TripletConfig
    Recipe = TripletRecipe
    data_kind = "images"
    preset = "triplet"
    suffix = ".pth"

    def __init__(self, config: TripletConfig, facts: DataFacts):
        super().__init__(config, facts)
        try:
            self.net = create_network(f"hash_{config.arch}", config.bits, head=config.head)
        except ValueError as exc:  # the divide-and-encode head needs bits dividing the width
            raise UsageError(f"--head {config.head}: {exc}") from None
        try:
            self.net.load_backbone(config.pretrained)
        except PretrainedError as exc:
            raise UsageError(f"--pretrained: {exc}") from None

    @classmethod
    def default_values(cls, dataset, facts, given) -> dict:
        values = {"margin": published_margin(cls.given_value(given, "bits"))}
        if dataset == "synthetic":  # the built-in faces: no download for a quick run
            values["pretrained"] = "none"
        return values

    @classmethod
    def recipe_for(cls, dataset, facts, config) -> TripletRecipe:
        return recipe_for(dataset)

    @classmethod
    def default_img_size(cls, dataset: str) -> Optional[int]:
        return SYNTHETIC_IMG_SIZE if dataset == "synthetic" else None

    def forward(self, images, labels):
        embeddings = self.net(images)
        with torch.autocast(embeddings.device.type, enabled=False):
            return triplet_hashing_loss(embeddings.float(), labels, self.config.margin,
                                        self.config.mining)

    def configure_optimizers(self, recipe: TripletRecipe):
        if recipe.optimizer == "SGD":
            optimizer = torch.optim.SGD(self.net.parameters(), lr=recipe.lr,
                                        momentum=recipe.momentum,
                                        weight_decay=recipe.weight_decay)
        else:
            from utils.engine.optim import AdamInverseSqrt

            optimizer = AdamInverseSqrt(self.net.parameters())
        return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, recipe.lr_step,
                                                          recipe.lr_gamma)

    def train_sampler(self, dataset, recipe: TripletRecipe, seed, rank, world_size):
        from data.samplers import ClassBalancedBatchSampler, RandomBatchSampler, dataset_labels

        labels = dataset_labels(dataset)
        classes = recipe.classes_per_batch
        # at least two images of a class, so that a batch has triplets
        per_class = recipe.images_per_class or max(2, recipe.batch // classes)
        if not recipe.images_per_class:
            classes = min(classes, max(1, recipe.batch // per_class))
        if recipe.sampler == "balanced":
            if recipe.images_per_class and per_class * classes != recipe.batch:
                raise UsageError(f"--batchSize {recipe.batch} is not --classes-per-batch "
                                 f"{classes} x --images-per-class {per_class}")
            if per_class * classes != recipe.batch:
                # as the published sampler: batch // classes images of each class
                log.info(f"--batchSize {recipe.batch} is not --classes-per-batch "
                         f"{recipe.classes_per_batch} x a whole number of images: batches of "
                         f"{classes} classes x {per_class} images = {classes * per_class}")
            sampler = ClassBalancedBatchSampler(labels, classes, per_class, seed, rank,
                                                world_size)
        else:
            sampler = RandomBatchSampler(len(labels), recipe.batch, seed, rank, world_size)
        if len(sampler) == 0:
            raise UsageError(f"the training split has {len(labels)} images: fewer than one batch "
                             f"of {recipe.batch} per process; lower --batchSize")
        return sampler

    # -- files ------------------------------------------------------------------------
    @classmethod
    def run_name(cls, given, dataset: str, optimizer: str, tag: str) -> str:
        """The published run folder and log name (margin printed as a float: '20.0margin')."""
        bits = cls.given_value(given, "bits")
        margin = given.get("margin") or published_margin(bits)
        return (f"{PUBLISHED_NAMES.get(dataset, dataset)}_{optimizer}_{bits}bits_"
                f"{float(margin)}margin_{tag}")

    @classmethod
    def run_files(cls, given, dataset: str, names: RunNames, overrides={}) -> RunFiles:
        if "/" in names.tag or "\\" in names.tag or names.tag in (".", ".."):
            raise UsageError(f"--log_postfix {names.tag!r} would name folders: it is a part of "
                             f"the run folder's and log file's names")
        bits = cls.given_value(given, "bits")
        name = cls.run_name(given, dataset, overrides.get("optimizer") or "SGD", names.tag)
        folder = Path(names.checkpoint_dir) / name
        return RunFiles(last=folder / f"triplet_resnet_{bits}bits_last.pth",
                        best=folder / (names.save or f"triplet_resnet_{bits}bits_best.pth"),
                        snapshot_pattern=str(folder / f"triplet_resnet_{bits}bits_{{epoch:03d}}.pth"),
                        log=Path(names.log_dir) / f"{name}.log", folder=folder, flag="--outf",
                        dir_flag="--outf")

    # -- checkpoints ----------------------------------------------------------------
    def official_state(self, progress=None) -> dict:
        return self.net.state_dict()

    def best_file(self, progress, ours):
        return self.official_state(progress)  # the published file has no room for our keys

    def resume_file(self, progress, ours) -> dict:
        return {"model": self.official_state(progress), **ours}

    def load_official_state(self, checkpoint, path="checkpoint", heads: bool = True) -> None:
        state = strip_prefix(_model_state(checkpoint))
        arch, bits, head = snapshot_facts(state)
        if arch is None:
            keys = ", ".join(map(str, list(state)[:4])) or "none"
            raise CheckpointError(f"{path} is not a HashModel state_dict (the triplet snapshot "
                                  f"format): no feature_extractor.* keys (keys: {keys})")
        c = self.config
        if arch != c.arch:
            raise CheckpointError(f"{path} holds a {arch} HashModel, not {c.arch}; "
                                  f"pass --arch {arch}")
        if bits is not None and bits != c.bits:
            raise CheckpointError(f"{path} holds {bits}-bit codes; pass --binary_bits {bits}")
        if head is not None and head != c.head:
            raise CheckpointError(f"{path} holds the {head} head; pass --head {head}")
        problem = state_dict_mismatch(self.net.state_dict(), state)
        if problem:
            raise CheckpointError(f"{path} does not fit HashModel({c.bits}) on {c.arch}: "
                                  f"{problem}")
        self.net.load_state_dict(state)

    @classmethod
    def recognise(cls, checkpoint, path):
        if not isinstance(checkpoint, dict):
            return None
        state = _model_state(checkpoint)
        if not isinstance(state, dict):
            return None
        arch, bits, head = snapshot_facts(strip_prefix(state))
        if arch is None or bits is None:
            return None
        return Recognised({"arch": arch, "bits": bits, "head": head})

    @classmethod
    def speed_settings(cls) -> list:
        return [("triplet_resnet18", {"bits": 64, "margin": 20.0}, DataFacts(100, 224), 80)]

    def notes(self) -> list:
        if from_scratch(self.config.pretrained):
            return ["the ResNet starts from scratch (--pretrained none, the default on the "
                    "built-in data; the published numbers start from ImageNet weights)"]
        return []

    def describe(self) -> str:
        c = self.config
        return (f"triplet hashing, HashModel({c.bits}) on {c.arch}, {c.head} head, "
                f"margin {c.margin}, {c.mining} triplets")
