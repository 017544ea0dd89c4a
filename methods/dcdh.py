"""DCDH as a method: a hashing network, learnable class centers
(``models/losses/dcdh.py``) and the regression step; codes are the sign of the
network output, ranked by Hamming distance.

Checkpoint (the published layout): ``{'backbone': net.state_dict(),
'centers': {'centers': tensor[C, L]}}``, keys without prefix; files written
through nn.DataParallel (``module.`` prefix) load too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from methods.base import DataFacts, Method, MethodConfig, Recognised, option
from methods.recipes.dcdh import DCDHRecipe, default_arch, recipe_for
from methods.registry import register_method
from models import DualClasswiseLoss, create_network, network_names, network_spec, recognise_network
from models.losses.dcdh import dcdh_loss
from utils.cli.parser import non_negative_float, positive_float
from utils.engine.checkpoint import CheckpointError, load_network, strip_prefix
from utils.errors import UsageError


def check_arch_size(arch: str, img_size: int) -> None:
    sizes = network_spec(arch).input_sizes
    if sizes is not None and img_size not in sizes:
        side = " or ".join(f"{s}x{s}" for s in sizes)
        others = "/".join(n for n in network_names("hashing") if network_spec(n).input_sizes is None)
        raise UsageError(f"--arch {arch} takes {side} images, not {img_size}x{img_size}; "
                         f"use --arch {others} for other sizes")


def recognise_backbone(checkpoint: dict):
    """(arch, bits) of a DCDH checkpoint's backbone, None where unknown."""
    backbone = checkpoint.get("backbone")
    if not isinstance(backbone, dict):
        return None, None
    state = strip_prefix(backbone)
    arch = recognise_network(state, family="hashing")
    return arch, network_spec(arch).code_length(state) if arch else None


@dataclass(frozen=True)
class DCDHConfig(MethodConfig):
    arch: Optional[str] = option(None, "network (default by dataset and image size)",
                                 choices=network_names("hashing"))
    sigma: float = option(0.25, "Gaussian width of the center likelihood", type=positive_float)
    inner_param: float = option(0.1, "weight of the center separation term",
                                type=non_negative_float, flag="--inner_param")
    eta: float = option(0.01, "weight of the quantization (regression) term",
                        type=non_negative_float)
    lamda: float = option(0.0, "ridge term of W = (YtY + lamda I)^-1 Yt sign(H): 0 is the "
                               "published dcdh_train.py (torch.pinverse: the per-class mean), 1 "
                               "an older published version (torch.inverse, flag --lamda)",
                          type=non_negative_float)
    pretrained: Optional[str] = option(None, "the resnet archs' start: imagenet (torchvision's "
                                             "weights, from the torch hub cache), a local "
                                             "torchvision state_dict file, or none (default: "
                                             "from scratch; the published networks have no "
                                             "ImageNet start)")


@register_method("dcdh")
class DCDH(Method):
    """Network + class centers; ``forward(images, labels)`` is the DCDH loss,
    computed in float32 (also under --amp)."""

    summary = "deep center-based dual-constrained hashing (face retrieval)"
    Config = DCDHConfig
    Recipe = DCDHRecipe
    preset = "dcdh"

    def __init__(self, config: DCDHConfig, facts: DataFacts):
        super().__init__(config, facts)
        if config.arch is None:
            raise ValueError("DCDH needs config.arch (make_config resolves it)")
        if facts.img_size is not None:
            check_arch_size(config.arch, facts.img_size)
        try:
            self.net = create_network(config.arch, config.bits, pretrained=config.pretrained)
        except ValueError as exc:  # a missing or foreign --pretrained file (PretrainedError)
            raise UsageError(f"--pretrained: {str(exc).splitlines()[0]}") from None
        self.criterion = DualClasswiseLoss(facts.num_classes, config.bits, config.inner_param,
                                           config.sigma)

    @classmethod
    def default_values(cls, dataset, facts, given) -> dict:
        return {"arch": default_arch(dataset, facts.img_size if facts else None)}

    @classmethod
    def recipe_for(cls, dataset, facts, config) -> DCDHRecipe:
        return recipe_for(dataset, config.arch)

    def forward(self, images, labels):
        codes = self.net(images)
        with torch.autocast(codes.device.type, enabled=False):
            return dcdh_loss(codes.float(), labels, self.criterion, self.config.eta,
                             self.config.lamda)

    def configure_optimizers(self, recipe: DCDHRecipe):
        """The published optimizer: two groups (network, centers; the published
        --lr1 and --lr2); with Adam, amsgrad on the network group only."""
        net = {"params": list(self.net.parameters()), "lr": recipe.lr}
        centers = {"params": list(self.criterion.parameters()),
                   "lr": recipe.lr if recipe.centers_lr is None else recipe.centers_lr}
        if recipe.optimizer == "adam":
            optimizer = torch.optim.Adam([{**net, "amsgrad": True}, {**centers, "amsgrad": False}],
                                         lr=recipe.lr, weight_decay=recipe.weight_decay)
        else:
            optimizer = torch.optim.SGD([net, centers], lr=recipe.lr, momentum=recipe.momentum,
                                        weight_decay=recipe.weight_decay)
        return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, recipe.lr_step,
                                                          recipe.lr_gamma)

    # -- checkpoints ----------------------------------------------------------------
    def official_state(self, progress=None) -> dict:
        return {"backbone": self.net.state_dict(), "centers": self.criterion.state_dict()}

    def load_official_state(self, checkpoint, path="checkpoint", heads: bool = True) -> None:
        self.load_backbone(checkpoint, path)
        centers = checkpoint.get("centers")
        if heads and isinstance(centers, dict) and "centers" in centers:
            if tuple(getattr(centers["centers"], "shape", ())) != \
                    tuple(self.criterion.centers.shape):
                raise CheckpointError(
                    f"{path} holds {centers['centers'].shape[0]} class centers, this run "
                    f"has {self.facts.num_classes} classes; check --dataset")
            self.criterion.load_state_dict(centers)

    def load_backbone(self, checkpoint: dict, path="checkpoint") -> None:
        """Load ``checkpoint['backbone']``, or say in one line why it does not
        fit (another code length, another network, missing keys)."""
        if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("backbone"), dict):
            keys = ", ".join(map(str, list(checkpoint)[:6])) if isinstance(checkpoint, dict) \
                else type(checkpoint).__name__
            raise CheckpointError(f"{path} is not a DCDH checkpoint: no 'backbone' state_dict "
                                  f"(top-level keys: {keys or 'none'})")
        state = strip_prefix(checkpoint["backbone"])  # also accept DataParallel-saved files
        found_arch, found_bits = recognise_backbone(checkpoint)
        load_network(self.net, state, path, found_arch, self.config.arch, found_bits,
                     self.config.bits)

    @classmethod
    def recognise(cls, checkpoint, path):
        if not isinstance(checkpoint, dict) or "mlp" in checkpoint:
            return None
        arch, bits = recognise_backbone(checkpoint)
        if arch is None:
            return None
        facts = {}
        centers = checkpoint.get("centers")
        if isinstance(centers, dict) and isinstance(centers.get("centers"), torch.Tensor):
            facts["num_classes"] = int(centers["centers"].shape[0])
        return Recognised({"arch": arch, "bits": bits}, facts)

    @classmethod
    def speed_settings(cls) -> list:
        return [("dcdh_dfhnet", {"bits": 48, "arch": "dfhnet"}, DataFacts(530, 32), 256),
                ("dcdh_sphere20", {"bits": 48, "arch": "sphere20"}, DataFacts(530, 112), 256)]

    def describe(self) -> str:
        return (f"DCDH, {self.config.arch}, {self.config.bits} bits, {self.facts.num_classes} "
                f"classes, sigma {self.config.sigma}, inner_param {self.config.inner_param}, "
                f"eta {self.config.eta}, lamda {self.config.lamda}")
