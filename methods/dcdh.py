"""DCDH as a method: a hashing network, learnable class centers
(``models/losses/dcdh.py``) and the regression step; codes are the sign of the
network output, ranked by Hamming distance.

Checkpoint (the published layout): ``{'backbone': net.state_dict(),
'centers': {'centers': tensor[C, L]}}``, keys without prefix; files written
through nn.DataParallel (``module.`` prefix) load too.
"""

from __future__ import annotations

import torch

from models import DualClasswiseLoss, create_network, network_names, network_spec, recognise_network
from models.losses.dcdh import dcdh_loss
from methods.base import Method
from methods.registry import register_method
from utils.engine.checkpoint import CheckpointError, state_dict_mismatch, strip_prefix
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


@register_method("dcdh")
class DCDH(Method):
    """Network + class centers; ``forward(images, labels)`` is the DCDH loss,
    computed in float32 (also under --amp)."""

    def __init__(self, arch: str, bits: int, num_classes: int, sigma: float = 0.25,
                 inner_param: float = 0.1, eta: float = 0.01, lamda: float = 1.0, pretrained=None):
        super().__init__()
        self.arch, self.bits, self.num_classes = arch, bits, num_classes
        self.eta, self.lamda = eta, lamda
        try:
            self.net = create_network(arch, bits, pretrained=pretrained)
        except (OSError, ValueError, RuntimeError) as exc:  # a missing or foreign --pretrained file
            raise UsageError(f"--pretrained: {str(exc).splitlines()[0]}") from None
        self.criterion = DualClasswiseLoss(num_classes, bits, inner_param, sigma)

    def forward(self, images, labels):
        codes = self.net(images)
        with torch.autocast(codes.device.type, enabled=False):
            return dcdh_loss(codes.float(), labels, self.criterion, self.eta, self.lamda)

    def optimizer(self, recipe, lr: float, centers_lr=None) -> torch.optim.Optimizer:
        """The published optimizer: two groups (network, centers; the published
        --lr1 and --lr2); with Adam, amsgrad on the network group only."""
        net = {"params": list(self.net.parameters()), "lr": lr}
        centers = {"params": list(self.criterion.parameters()),
                   "lr": lr if centers_lr is None else centers_lr}
        if recipe.optimizer == "adam":
            return torch.optim.Adam([{**net, "amsgrad": True}, {**centers, "amsgrad": False}],
                                    lr=lr, weight_decay=recipe.weight_decay)
        return torch.optim.SGD([net, centers], lr=lr, momentum=recipe.momentum,
                               weight_decay=recipe.weight_decay)

    # -- checkpoints ----------------------------------------------------------------
    def official_state(self) -> dict:
        return {"backbone": self.net.state_dict(), "centers": self.criterion.state_dict()}

    def load_official_state(self, checkpoint: dict, path="checkpoint") -> None:
        self.load_backbone(checkpoint, path)
        centers = checkpoint.get("centers")
        if isinstance(centers, dict) and "centers" in centers:
            if tuple(centers["centers"].shape) != tuple(self.criterion.centers.shape):
                raise CheckpointError(
                    f"{path} holds {centers['centers'].shape[0]} class centers, this run "
                    f"has {self.num_classes} classes; check --dataset")
            self.criterion.load_state_dict(centers)

    def load_backbone(self, checkpoint: dict, path="checkpoint") -> None:
        """Load ``checkpoint['backbone']``, or say in one line why it does not
        fit (another code length, another network, missing keys)."""
        if not isinstance(checkpoint.get("backbone"), dict):
            keys = ", ".join(map(str, list(checkpoint)[:6])) or "none"
            raise CheckpointError(f"{path} is not a DCDH checkpoint: no 'backbone' state_dict "
                                  f"(top-level keys: {keys})")
        state = strip_prefix(checkpoint["backbone"])  # also accept DataParallel-saved files
        found_arch, found_bits = recognise_backbone(checkpoint)
        if found_arch is not None and found_arch != self.arch:
            raise CheckpointError(
                f"{path} holds a {found_arch} network, not {self.arch}; pass --arch {found_arch}")
        if found_bits is not None and found_bits != self.bits:
            raise CheckpointError(f"{path} holds {found_bits}-bit codes; pass --len {found_bits}")
        problem = state_dict_mismatch(self.net.state_dict(), state)
        if problem:
            raise CheckpointError(f"{path} does not fit {self.arch} with --len {self.bits}: {problem}")
        self.net.load_state_dict(state)

    def info(self) -> dict:
        return {"arch": self.arch, "num_classes": self.num_classes}

    def describe(self) -> str:
        return f"DCDH, {self.arch}, {self.bits} bits, {self.num_classes} classes"
