"""Triplet-ranking deep hashing as a method: ``HashModel`` (ResNet + Linear +
Tanh), a miner and the triplet ranking loss; codes are the sign of the
embedding, ranked by Hamming distance.

Checkpoint (the published layout): a bare ``HashModel`` state_dict
(``feature_extractor.*``, ``hashcoder.0.*``), exactly what
``HashModel.save`` writes, so a file goes both ways: a published snapshot
loads here and a snapshot written here loads with ``HashModel.load``.
"""

from __future__ import annotations

import torch

from methods.base import Method
from methods.registry import register_method
from models import HashModel
from models.hash_model import hash_model_arch
from models.losses.triplet import triplet_hashing_loss
from utils.engine.checkpoint import CheckpointError, state_dict_mismatch, strip_prefix
from utils.errors import UsageError


def snapshot_facts(state_dict: dict):
    """(arch, bits, head) of a HashModel state_dict; None where unknown."""
    arch = hash_model_arch(state_dict)
    if "hashcoder.0.weight" in state_dict and state_dict["hashcoder.0.weight"].ndim == 2:
        weight = state_dict["hashcoder.0.weight"]
        head = "fc" if weight.shape[1] in (512, 2048) else "dae"
        return arch, int(weight.shape[0]), head
    return arch, None, None


@register_method("triplet")
class TripletHashing(Method):
    """``forward(images, labels)`` is the triplet ranking loss of the batch
    (in float32, also under --amp)."""

    bare_state_dict = True

    def __init__(self, bits: int, margin: float = 20.0, arch: str = "resnet18", head: str = "fc",
                 mining: str = "all", pretrained=None):
        super().__init__()
        self.bits, self.margin, self.arch, self.head, self.mining = bits, margin, arch, head, mining
        try:
            self.net = HashModel(bits, arch=arch, head=head)
        except ValueError as exc:  # the divide-and-encode head needs bits dividing the width
            raise UsageError(f"--head {head}: {exc}") from None
        if pretrained is not None:
            try:
                self.net.load_backbone(pretrained)
            except Exception as exc:  # noqa: BLE001 - a missing, corrupt or foreign file
                raise UsageError(f"--pretrained: {str(exc).splitlines()[0]}") from None

    def forward(self, images, labels):
        embeddings = self.net(images)
        with torch.autocast(embeddings.device.type, enabled=False):
            return triplet_hashing_loss(embeddings.float(), labels, self.margin, self.mining)

    def optimizer(self, recipe, lr: float, name: str = "SGD") -> torch.optim.Optimizer:
        if name == "SGD":
            return torch.optim.SGD(self.net.parameters(), lr=lr, momentum=recipe.momentum,
                                   weight_decay=recipe.weight_decay)
        from utils.engine.optim import AdamInverseSqrt

        return AdamInverseSqrt(self.net.parameters())

    # -- checkpoints ----------------------------------------------------------------
    def official_state(self) -> dict:
        return self.net.state_dict()

    def load_official_state(self, checkpoint: dict, path="checkpoint") -> None:
        state = strip_prefix(checkpoint)
        arch, bits, head = snapshot_facts(state)
        if arch is None:
            keys = ", ".join(map(str, list(state)[:4])) or "none"
            raise CheckpointError(f"{path} is not a HashModel state_dict (the triplet snapshot "
                                  f"format): no feature_extractor.* keys (keys: {keys})")
        if arch != self.arch:
            raise CheckpointError(f"{path} holds a {arch} HashModel, not {self.arch}; "
                                  f"pass --arch {arch}")
        if bits is not None and bits != self.bits:
            raise CheckpointError(f"{path} holds {bits}-bit codes; pass --binary_bits {bits}")
        if head is not None and head != self.head:
            raise CheckpointError(f"{path} holds the {head} head; pass --head {head}")
        problem = state_dict_mismatch(self.net.state_dict(), state)
        if problem:
            raise CheckpointError(f"{path} does not fit HashModel({self.bits}) on {self.arch}: "
                                  f"{problem}")
        self.net.load_state_dict(state)

    def info(self) -> dict:
        return {"arch": self.arch, "head": self.head, "bits": self.bits, "margin": self.margin,
                "mining": self.mining}

    def describe(self) -> str:
        return (f"triplet hashing, HashModel({self.bits}) on {self.arch}, {self.head} head, "
                f"margin {self.margin}, {self.mining} triplets")
