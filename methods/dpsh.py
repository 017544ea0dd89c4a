"""DPSH as a method (Li, Wang, Kang, "Feature Learning based Deep Supervised
Hashing with Pairwise Labels", IJCAI 2016; jiangqy/DPSH-pytorch): a hashing
network, the tables ``U`` (outputs) and ``B`` (signs) over the training set
and the pairwise loss of ``models/losses/dpsh.py``; codes are the sign of
the network output, ranked by Hamming distance.

``CodeTableMethod`` holds what DPSH and DSDH (methods/dsdh.py) share: the
network by image size (the published AlexNet takes 224-pixel images only,
the faces use the dataset's face network), training batches that carry
their items' indices, the per-item tables (allocated by ``prepare``, kept in
our files so that ``--resume`` continues exactly) and the checkpoint layout.

Checkpoint: the published code saves no network (DPSH_algo returns codes and
logs only), so the layout is ours: ``{'dpsh': {'net': state_dict}}`` (DSDH:
``{'dsdh': {'net': ...}}``), keys without prefix; our training files add
``U`` and ``B`` [num_train, bits] (float32).  No other method reads a file
with a top-level ``dpsh`` / ``dsdh`` entry.

Labels: class ids, or 0/1 label vectors (multi-label lists such as
NUS-WIDE or MS-COCO, ``--dataset imagelist``): a pair is similar when it
shares a label, as in the DPSH and DSDH papers' NUS-WIDE protocol.

Under torchrun each process writes the rows of every process's batch (the
batch outputs and indices are all-gathered each step), so every process
holds the whole ``U`` of a single-process run with a batch of
``processes x --bs``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F

import models.alexnet_hash  # noqa: F401 - registers alexnet_hash
from methods.base import DataFacts, Method, MethodConfig, Recognised, label_targets, option
from methods.recipes.dpsh import DPSHRecipe, default_arch, default_pretrained, recipe_for
from methods.registry import register_method
from models.losses.dpsh import dpsh_loss, write_rows
from models.registry import create_network, network_names, network_spec, recognise_network
from utils.cli.parser import non_negative_float
from utils.engine.checkpoint import CheckpointError, load_network, strip_prefix
from utils.errors import UsageError

FAMILIES = ("hashing", "alexnet")  # the face networks of DCDH and the published AlexNet
ARCH_CHOICES = tuple(n for family in FAMILIES for n in network_names(family))


def check_arch_size(arch: str, img_size: Optional[int]) -> None:
    sizes = network_spec(arch).input_sizes
    if img_size is not None and sizes is not None and img_size not in sizes:
        side = " or ".join(f"{s}x{s}" for s in sizes)
        raise UsageError(f"--arch {arch} takes {side} images, not {img_size}x{img_size}; "
                         f"use --arch {default_arch('', img_size)} for this size")


def recognise_net(state: dict) -> Tuple[Optional[str], Optional[int]]:
    """(arch, bits) of a network state_dict, None where unknown."""
    for family in FAMILIES:
        arch = recognise_network(state, family=family)
        if arch is not None:
            return arch, network_spec(arch).code_length(state)
    return None, None


def training_labels(dataset) -> torch.Tensor:
    """The class id (or the label vector) of every training item, in index order."""
    labels = getattr(dataset, "labels", None)
    for name in ("targets", "label_matrix"):  # class ids; multi-label lists' 0/1 rows
        if labels is None:
            labels = getattr(dataset, name, None)
    if labels is None:
        raise UsageError(f"the training split ({type(dataset).__name__}) does not list its "
                         f"labels; the per-item code tables need them")
    return label_targets(labels)


def gathered(values: torch.Tensor, index: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Every process's batch rows (values, index), in rank order (under
    torchrun); this process's alone otherwise."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values, index
    world = dist.get_world_size()
    size = torch.tensor([len(index)], device=values.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    pad = int(max(sizes)) - len(index)  # all_gather needs equal shapes
    values, index = F.pad(values, (0, 0, 0, pad)), F.pad(index, (0, pad))
    all_values = [torch.empty_like(values) for _ in range(world)]
    all_index = [torch.empty_like(index) for _ in range(world)]
    dist.all_gather(all_values, values)
    dist.all_gather(all_index, index)
    counts = [int(s) for s in sizes]
    return (torch.cat([v[:n] for v, n in zip(all_values, counts)]),
            torch.cat([i[:n] for i, n in zip(all_index, counts)]))


@dataclass(frozen=True)
class TableConfig(MethodConfig):
    arch: Optional[str] = option(None, "network (default by image size: dfhnet at 32 px, "
                                       "sphere20 at 112 px, the published alexnet_hash at 224 px)",
                                 choices=ARCH_CHOICES)
    pretrained: Optional[str] = option(None, "the start of alexnet_hash and the resnets: "
                                             "imagenet (torchvision's weights, from the torch "
                                             "hub cache; the published start of alexnet_hash), "
                                             "a local torchvision state_dict file, or none "
                                             "(default: imagenet for alexnet_hash, except on "
                                             "the built-in data; none otherwise)")


class CodeTableMethod(Method):
    """A hashing network trained against per-item tables over the training
    set: ``U`` [num_train, bits] (the latest output of each item) and ``B``
    (their signs).  Subclasses give ``batch_loss``."""

    indexed = True
    multi_label = True  # the losses' similarity: sharing a label
    preset = "dcdh"
    #: the key of the checkpoint layout (the registry name)
    layout_key: ClassVar[str] = ""

    def __init__(self, config: TableConfig, facts: DataFacts):
        super().__init__(config, facts)
        if config.arch is None:
            raise ValueError(f"{self.name} needs config.arch (make_config resolves it)")
        check_arch_size(config.arch, facts.img_size)
        try:
            self.net = create_network(config.arch, config.bits, pretrained=config.pretrained)
        except ValueError as exc:  # a missing or foreign --pretrained file, or a face network's
            raise UsageError(f"--pretrained: {str(exc).splitlines()[0]}") from None
        # the tables: plain tensors, not buffers (DistributedDataParallel would
        # overwrite every process's with the first one's at each step)
        self.U: Optional[torch.Tensor] = None
        self.B: Optional[torch.Tensor] = None
        self.train_labels: Optional[torch.Tensor] = None

    @classmethod
    def default_values(cls, dataset, facts, given) -> dict:
        arch = given.get("arch") or default_arch(dataset, facts.img_size if facts else None)
        return {"arch": arch, "pretrained": default_pretrained(dataset, arch)}

    # -- training ---------------------------------------------------------------------
    def prepare(self, splits, files, seed: int) -> None:
        """Zero tables over the training split (as published, once per run;
        a resumed run then loads them from its file)."""
        labels = training_labels(splits.train)
        device = next(self.net.parameters()).device
        self.train_labels = labels.to(device)
        self.U = torch.zeros(len(labels), self.config.bits, device=device)
        self.B = torch.zeros_like(self.U)

    @property
    def num_train(self) -> int:
        return 0 if self.U is None else int(self.U.shape[0])

    def unpack(self, batch, device):
        """Training batches (images, labels, indices) -> targets [bs, 1 + w]:
        the index, then the class id (w = 1) or the label vector (w = C);
        evaluation batches (images, labels) -> labels."""
        if len(batch) != 3:
            return super().unpack(batch, device)
        images, labels, index = batch
        labels = label_targets(labels)
        columns = labels[:, None] if labels.ndim == 1 else labels
        targets = torch.cat([torch.as_tensor(index)[:, None].to(device),
                             columns.to(device).long()], 1)
        return images.to(device, non_blocking=True), targets

    def forward(self, images, targets):
        if targets.ndim != 2 or targets.shape[1] < 2:
            raise ValueError(f"{self.name} trains on batches that carry their items' indices "
                             f"(targets [bs, 1 + label columns] of unpack), got targets of "
                             f"shape {tuple(targets.shape)}")
        if self.U is None:
            raise RuntimeError(f"{self.name}: call prepare(splits, ...) before training (it "
                               f"allocates the per-item tables)")
        index = targets[:, 0]
        labels = targets[:, 1] if self.train_labels.ndim == 1 else targets[:, 1:]
        outputs = self.net(images)
        with torch.autocast(outputs.device.type, enabled=False):
            outputs = outputs.float()
            self.write_other_rows(outputs, index)
            return self.batch_loss(outputs, labels, index)

    def write_other_rows(self, outputs: torch.Tensor, index: torch.Tensor) -> None:
        """Under torchrun: the rows of the other processes' batches."""
        values, rows = gathered(outputs.detach(), index)
        if len(rows) != len(index):
            write_rows(self.U, self.B, rows, values)

    def batch_loss(self, outputs: torch.Tensor, labels: torch.Tensor,
                   index: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def configure_optimizers(self, recipe):
        """The published SGD over the network (momentum and weight decay from
        the recipe) and the recipe's schedule."""
        optimizer = torch.optim.SGD(self.net.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                    weight_decay=recipe.weight_decay)
        return optimizer, recipe.scheduler(optimizer)

    @classmethod
    def speed_settings(cls) -> list:
        return [(f"{cls.name}_dfhnet", {"bits": 48, "arch": "dfhnet"}, DataFacts(530, 32), 128)]

    def resume_state(self) -> dict:
        return {"U": self.U, "B": self.B}

    def load_resume_state(self, checkpoint) -> None:
        """The tables of a resume file; before ``prepare`` (--load_path) there
        is nothing to load them into: the run starts from zero tables."""
        if self.U is None:
            return
        for name, table in (("U", self.U), ("B", self.B)):
            held = checkpoint.get(name)
            if not isinstance(held, torch.Tensor) or tuple(held.shape) != tuple(table.shape):
                shape = tuple(held.shape) if isinstance(held, torch.Tensor) else type(held).__name__
                raise CheckpointError(f"the file's {name} table is {shape}, this run needs "
                                      f"{tuple(table.shape)} (training items x bits); resume "
                                      f"with the data and --len that wrote it")
            table.copy_(held)

    # -- checkpoints ------------------------------------------------------------------
    def official_state(self, progress=None) -> dict:
        return {self.layout_key: {"net": self.net.state_dict()}}

    @classmethod
    def _net_state(cls, checkpoint) -> Optional[dict]:
        entry = checkpoint.get(cls.layout_key) if isinstance(checkpoint, dict) else None
        net = entry.get("net") if isinstance(entry, dict) else None
        return strip_prefix(net) if isinstance(net, dict) else None

    def load_official_state(self, checkpoint, path="checkpoint", heads: bool = True) -> None:
        """The network of ``{'<name>': {'net': state_dict}}``, or one line
        saying why the file does not fit."""
        state = self._net_state(checkpoint)
        if state is None:
            keys = ", ".join(map(str, list(checkpoint)[:6])) if isinstance(checkpoint, dict) \
                else type(checkpoint).__name__
            raise CheckpointError(f"{path} is not a {self.name.upper()} checkpoint: no "
                                  f"'{self.layout_key}' entry with the network's state_dict "
                                  f"(top-level keys: {keys or 'none'})")
        found_arch, found_bits = recognise_net(state)
        load_network(self.net, state, path, found_arch, self.config.arch, found_bits,
                     self.config.bits)

    @classmethod
    def recognise(cls, checkpoint, path):
        state = cls._net_state(checkpoint)
        if state is None:
            return None
        arch, bits = recognise_net(state)
        if arch is None or bits is None:
            return None
        return Recognised({"arch": arch, "bits": bits})

    def notes(self) -> list:
        if self.config.arch == "alexnet_hash" and self.config.pretrained in (None, "none"):
            return ["alexnet_hash starts from scratch (--pretrained none, the default on the "
                    "built-in data; the published network starts from ImageNet weights)"]
        return []


@dataclass(frozen=True)
class DPSHConfig(TableConfig):
    lam: float = option(10.0, "lambda, the weight of the quantization term (the published "
                              "demo's 10; DPSH_CIFAR_10.py's __main__ has 50)",
                        type=non_negative_float, flag="--lambda")


@register_method("dpsh")
class DPSH(CodeTableMethod):
    """``forward(images, targets)`` is the DPSH loss of the batch (in float32,
    also under --amp), after its rows of ``U`` and ``B`` are written."""

    summary = "deep pairwise-supervised hashing (DPSH-pytorch; face retrieval baseline)"
    Config = DPSHConfig
    Recipe = DPSHRecipe
    layout_key = "dpsh"

    @classmethod
    def recipe_for(cls, dataset, facts, config) -> DPSHRecipe:
        return recipe_for(dataset)

    def batch_loss(self, outputs, labels, index):
        loss, _, _ = dpsh_loss(outputs, self.U, self.B, index, labels, self.train_labels,
                               self.config.lam)
        return loss

    def describe(self) -> str:
        return f"DPSH, {self.config.arch}, {self.config.bits} bits, lambda {self.config.lam}"
