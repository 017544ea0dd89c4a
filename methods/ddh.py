"""DDH as a method: the DDH network (``models/ddh.py``), its Keras loss
(``models/losses/ddh.py``), Keras' Adam, and the published protocol: the last
10 % of the training split held out of training (Keras ``validation_split``),
early stopping and the best file on the training loss.  Codes are the sign
of the code layer A6, ranked by Hamming distance.

Checkpoint: the published files are Keras HDF5 weights (``weights.{epoch:02d}-
{loss:.3f}.hdf5``), which need h5py and Keras to read.  Our layout is the
DDH state_dict in the layout of ``models.DDH`` (the fixtures' layout,
documented there), as a bare state_dict: that is ``official_state()``, and a
bare state_dict with ``lc4.weight`` and ``dae.weight`` is recognised as DDH
(bits = rows of ``dae.weight``, classes = rows of ``classifier.weight``).  The
files training writes hold it under ``model`` beside our keys:
``{'model': state_dict, 'method': 'ddh', 'config': ..., ...}``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, List, Optional

import torch

from methods.base import DataFacts, Method, MethodConfig, Recognised, option
from methods.recipes.ddh import PUBLISHED_TOPK, DDHRecipe, recipe_for
from methods.registry import register_method
from models import create_network
from models.ddh import is_ddh_state
from models.losses.ddh import L2_WEIGHT, LOSS_01_WEIGHT, ddh_loss
from utils.cli.parser import non_negative_float, positive_int
from utils.engine.checkpoint import CheckpointError, load_with_classifier, strip_prefix
from utils.errors import UsageError

IMG_SIZE = 32
MAX_SPLIT = 64


class KerasAdam(torch.optim.Optimizer):
    """Adam as Keras 1.2.2 steps it::

        lr_t = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)
        m = beta_1 m + (1 - beta_1) g;   v = beta_2 v + (1 - beta_2) g^2
        p = p - lr_t * m / (sqrt(v) + eps)

    torch's Adam adds eps to sqrt(v) / sqrt(1 - beta_2^t) instead, i.e. a
    smaller eps in the first steps; the two agree where sqrt(v) >> eps."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                lr_t = group["lr"] * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
                p.addcdiv_(m, v.sqrt().add_(group["eps"]), value=-lr_t)
        return loss


def fitted_items(n: int, validation_split: float) -> int:
    """How many items Keras trains on: ``int(n * (1 - validation_split))``,
    the first ones (Keras 1.2.2 ``split_at``)."""
    return int(n * (1.0 - validation_split))


class HeldOutBatchSampler(torch.utils.data.Sampler[List[int]]):
    """Shuffled batches of the first ``num_fitted`` items only (Keras' fit with
    ``validation_split``: a new permutation every epoch, batches of
    ``batch_size``, the last one shorter; a last batch of one item is left
    out, which BatchNorm cannot take in training).  Under torchrun every
    process draws the same permutation and keeps every ``world_size``-th batch."""

    def __init__(self, num_fitted: int, batch_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        self.num_fitted, self.batch_size = num_fitted, batch_size
        self.rank, self.world_size = rank, world_size
        self.generator = torch.Generator().manual_seed(seed)  # saved in resume files

    def _batches(self) -> int:
        full, rest = divmod(self.num_fitted, self.batch_size)
        return full + (rest > 1)

    def __len__(self) -> int:
        return self._batches() // self.world_size

    def __iter__(self) -> Iterator[List[int]]:
        order = torch.randperm(self.num_fitted, generator=self.generator)
        for b in range(self.rank, len(self) * self.world_size, self.world_size):
            yield order[b * self.batch_size:(b + 1) * self.batch_size].tolist()


def _model_state(checkpoint):
    """The state_dict of a bare file, or of one of ours (``model``)."""
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("model"), dict):
        return strip_prefix(checkpoint["model"])
    return strip_prefix(checkpoint) if isinstance(checkpoint, dict) else checkpoint


@dataclass(frozen=True)
class DDHConfig(MethodConfig):
    split_num: int = option(4, "face-feature values per code bit (divide and encode, "
                               f"SPLIT_NUM; at most {MAX_SPLIT})", type=positive_int)
    loss_01: float = option(LOSS_01_WEIGHT, "weight of the 0-1 quantisation term "
                                            "(LOSS_01_LAYER_PARAMS)", type=non_negative_float,
                            flag="--loss-01")
    l2: float = option(L2_WEIGHT, "l2 weight on the kernels (REGULARIZER_PARAMS)",
                       type=non_negative_float)

    def validate(self) -> None:
        super().validate()
        if self.split_num > MAX_SPLIT:  # the face feature layer is bits x split_num wide
            raise UsageError(f"--split-num must be at most {MAX_SPLIT}, got {self.split_num}")


@register_method("ddh")
class DDHMethod(Method):
    """``forward(images, labels)`` is the published Keras loss of the batch,
    computed in float32 (also under --amp)."""

    summary = "discriminative deep hashing, divide and encode (face retrieval, Keras)"
    Config = DDHConfig
    Recipe = DDHRecipe
    suffix = ".pth"
    metric_defaults = {"topk": (1, 5, 10, PUBLISHED_TOPK)}  # the published P@50 among them

    def __init__(self, config: DDHConfig, facts: DataFacts):
        super().__init__(config, facts)
        if facts.img_size not in (None, IMG_SIZE):
            raise UsageError(f"DDH takes {IMG_SIZE}x{IMG_SIZE} images, the data is "
                             f"{facts.img_size}x{facts.img_size} (pass --img-size {IMG_SIZE})")
        self.net = create_network("ddh", config.bits, facts.num_classes, config.split_num)

    @classmethod
    def recipe_for(cls, dataset, facts, config) -> DDHRecipe:
        return recipe_for(dataset)

    @classmethod
    def default_img_size(cls, dataset: str) -> Optional[int]:
        return IMG_SIZE

    def forward(self, images, labels):
        codes, logits = self.net(images)
        with torch.autocast(codes.device.type, enabled=False):
            return ddh_loss(codes.float(), logits.float(), labels, self.net.regularised_kernels(),
                            self.config.loss_01, self.config.l2)["loss"]

    def configure_optimizers(self, recipe: DDHRecipe):
        optimizer = KerasAdam(self.net.parameters(), lr=recipe.lr, eps=recipe.adam_eps)
        # no schedule: the lr stays as given
        return optimizer, torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0,
                                                              total_iters=0)

    def train_sampler(self, dataset, recipe: DDHRecipe, seed, rank, world_size):
        from data.samplers import dataset_labels

        fitted = fitted_items(len(dataset_labels(dataset)), recipe.validation_split)
        sampler = HeldOutBatchSampler(fitted, recipe.batch, seed, rank, world_size)
        if len(sampler) == 0:
            raise UsageError(f"the training split keeps {fitted} images for training after "
                             f"--validation-split {recipe.validation_split}: fewer than one "
                             f"batch of {recipe.batch} per process; lower --bs")
        return sampler

    def embed(self, inputs):
        return self.net(inputs)[0]

    # -- checkpoints ----------------------------------------------------------------
    def official_state(self, progress=None) -> dict:
        return self.net.state_dict()

    def best_file(self, progress, ours) -> dict:
        return {"model": self.official_state(progress), **ours}

    def resume_file(self, progress, ours) -> dict:
        return {"model": self.official_state(progress), **ours}

    def load_official_state(self, checkpoint, path="checkpoint", heads: bool = True) -> None:
        """Our state_dict (bare or under ``model``), or one line saying why the
        file does not fit.  ``heads`` False (evaluation): a classifier for
        another number of classes is left out (the codes do not use it)."""
        state = _model_state(checkpoint)
        if not is_ddh_state(state):
            keys = ", ".join(map(str, list(state)[:4])) if isinstance(state, dict) else \
                type(state).__name__
            raise CheckpointError(f"{path} is not a DDH checkpoint: no lc4.weight / dae.weight "
                                  f"state_dict (keys: {keys or 'none'})")
        bits, split = tuple(state["dae.weight"].shape)
        if bits != self.config.bits:
            raise CheckpointError(f"{path} holds {bits}-bit codes; pass --len {bits}")
        if split != self.config.split_num:
            raise CheckpointError(f"{path} holds {split} values per bit; pass --split-num {split}")
        load_with_classifier(self.net, state, path, f"DDH with --len {bits}", "classifier.weight",
                             "classifier.", heads, self.facts.num_classes)

    @classmethod
    def recognise(cls, checkpoint, path):
        state = _model_state(checkpoint)
        if not is_ddh_state(state):
            return None
        bits, split = state["dae.weight"].shape
        facts = {"img_size": IMG_SIZE}
        if getattr(state.get("classifier.weight"), "ndim", 0) == 2:
            facts["num_classes"] = int(state["classifier.weight"].shape[0])
        return Recognised({"bits": int(bits), "split_num": int(split)}, facts)

    @classmethod
    def speed_settings(cls) -> list:
        return [("ddh_48", {"bits": 48}, DataFacts(530, IMG_SIZE), 256)]

    def describe(self) -> str:
        c = self.config
        return (f"DDH, {c.bits} bits ({c.split_num} values per bit), {self.facts.num_classes} "
                f"classes, loss_01 {c.loss_01}, l2 {c.l2}")
