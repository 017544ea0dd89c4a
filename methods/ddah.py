"""DDAH as a method: the DDAH network (``models/ddah.py``), ``criteria_softmax``
on both passes and the published two-optimizer step, written for current
PyTorch.  Codes are the sign of ``hash_a`` (the attention pass), ranked by
Hamming distance.

The published step (train.py:68-82): ``loss_c = loss_a + loss_b`` trains
every module, and the attention modules (``optimizer_a``) also get the
gradient of ``loss_s = clamp(m - loss_b + loss_a, 0)``.  As published, the
second backward runs after ``optimizer_b.step()`` has changed, in place,
weights that the retained graph saved: PyTorch >= 1.5 raises there, and the
2019 PyTorch silently used the updated weights in that backward.  Here the
``loss_s`` gradient is the one taken **before** any step (the fixtures'
"pregrad" variant), added to the attention modules' ``loss_c`` gradient, and
one Adam steps both parameter groups.  It is computed without a second
backward pass: ``loss_b`` does not depend on the attention modules and
``d loss_s / d loss_a`` is 1 where ``m - loss_b + loss_a > 0`` (torch's
clamp passes no gradient at the bound) and 0 elsewhere, so the attention
gradient is ``(1 + [m - loss_b + loss_a > 0]) * grad loss_c``, applied by a
gradient hook on each attention parameter while ``backward`` runs (under
torchrun, before the gradients are averaged, so each process's own ``loss_s``
counts, as a second backward would).  ``bn1`` / ``bn2`` / ``bn3`` are in no
optimizer (published): they are frozen.

Checkpoint: the published file is the bare state_dict of the final model
(``checkpoints/facescrub-48``, no extension): that is ``official_state()``,
recognised by its keys (bits from ``hash_layer.1.weight``, classes from
``classifier.1.weight``).  The one file a run writes (the last epoch's, as
published; also the resume file) holds it under ``model`` beside our keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from methods.base import DataFacts, Method, MethodConfig, Recognised, option
from methods.recipes.ddah import DDAHRecipe, recipe_for
from methods.registry import register_method
from models import DDAH, create_network
from models.ddah import is_ddah_state
from models.losses.ddah import BETA, MARGIN, attention_loss, criteria_softmax
from utils.cli.parser import non_negative_float
from utils.engine.checkpoint import CheckpointError, load_with_classifier, strip_prefix
from utils.engine.files import RunFiles, RunNames
from utils.engine.logs import log_path
from utils.errors import UsageError

IMG_SIZE = 32


def _model_state(checkpoint):
    """The state_dict of a bare (published) file, or of one of ours (``model``)."""
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("model"), dict):
        return strip_prefix(checkpoint["model"])
    return strip_prefix(checkpoint) if isinstance(checkpoint, dict) else checkpoint


@dataclass(frozen=True)
class DDAHConfig(MethodConfig):
    beta: float = option(BETA, "weight of the quantisation term (LOSS_01)",
                         type=non_negative_float)
    margin: float = option(MARGIN, "m of the attention modules' loss clamp(m - loss_b + "
                                   "loss_a, 0)", type=non_negative_float)


@register_method("ddah")
class DDAHMethod(Method):
    """``forward(images, labels)`` is ``loss_c`` of the batch (float32, also
    under --amp); ``backward`` adds the attention modules' ``loss_s`` gradient."""

    summary = "discriminative deep attention-aware hashing (face retrieval)"
    Config = DDAHConfig
    Recipe = DDAHRecipe
    suffix = ".pth"

    def __init__(self, config: DDAHConfig, facts: DataFacts):
        super().__init__(config, facts)
        if facts.img_size not in (None, IMG_SIZE):
            raise UsageError(f"DDAH takes {IMG_SIZE}x{IMG_SIZE} images, the data is "
                             f"{facts.img_size}x{facts.img_size} (pass --img-size {IMG_SIZE})")
        self.net = create_network("ddah", config.bits, facts.num_classes)
        for never_trained in (self.net.bn1, self.net.bn2, self.net.bn3):
            never_trained.requires_grad_(False)
        self._losses = None  # (loss_a, loss_b) of the last forward, for backward
        self._attention_factor = None  # 1 + [loss_s active] while backward runs
        for p in self.attention_parameters():
            p.register_hook(self._scale_attention_grad)

    @classmethod
    def recipe_for(cls, dataset, facts, config) -> DDAHRecipe:
        return recipe_for(dataset)

    @classmethod
    def default_img_size(cls, dataset: str) -> Optional[int]:
        return IMG_SIZE

    @classmethod
    def run_files(cls, given, dataset: str, names: RunNames, overrides={}) -> RunFiles:
        """One file, ``--save`` (the last epoch's, as published; also the resume file)."""
        path = Path(names.checkpoint_dir) / (names.save or cls.default_save(given, dataset))
        return RunFiles(last=path, log=log_path(names.log_dir, cls.given_value(given, "bits"),
                                                dataset))

    # -- training ---------------------------------------------------------------------
    def attention_parameters(self) -> list:
        return [p for name in DDAH.ATTENTION for p in getattr(self.net, name).parameters()]

    def trunk_parameters(self) -> list:
        return [p for name in DDAH.TRUNK for p in getattr(self.net, name).parameters()]

    def forward(self, images, labels):
        hash_a, cls_a, hash_b, cls_b = self.net(images)
        with torch.autocast(hash_a.device.type, enabled=False):
            loss_a = criteria_softmax(hash_a.float(), cls_a.float(), labels, self.config.beta)
            loss_b = criteria_softmax(hash_b.float(), cls_b.float(), labels, self.config.beta)
        self._losses = (loss_a.detach(), loss_b.detach())
        return loss_a + loss_b

    def backward(self, loss, scaler=None) -> None:
        """``loss_c`` backward, the attention modules' gradients scaled by
        ``1 + d loss_s / d loss_a`` (= adding the gradient of ``loss_s``)."""
        loss_a, loss_b = self._losses
        active = attention_loss(loss_a, loss_b, self.config.margin) > 0
        self._attention_factor = 1 + active.to(loss.dtype)
        try:
            super().backward(loss, scaler)
        finally:
            self._attention_factor, self._losses = None, None

    def _scale_attention_grad(self, grad):
        factor = self._attention_factor
        return grad if factor is None else grad * factor.to(grad.dtype)

    def configure_optimizers(self, recipe: DDAHRecipe):
        """The published optimizer_a and optimizer_b as two groups of one Adam."""
        optimizer = torch.optim.Adam([{"params": self.attention_parameters()},
                                      {"params": self.trunk_parameters()}],
                                     lr=recipe.lr, weight_decay=recipe.weight_decay)
        return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, recipe.lr_step,
                                                          recipe.lr_gamma)

    def embed(self, inputs):
        return self.net.hash_a(inputs)

    # -- checkpoints ----------------------------------------------------------------
    def official_state(self, progress=None) -> dict:
        return self.net.state_dict()

    def best_file(self, progress, ours) -> dict:
        return {"model": self.official_state(progress), **ours}

    def resume_file(self, progress, ours) -> dict:
        return {"model": self.official_state(progress), **ours}

    def load_official_state(self, checkpoint, path="checkpoint", heads: bool = True) -> None:
        """The published bare state_dict (or ours under ``model``), or one line
        saying why the file does not fit.  ``heads`` False (evaluation): a
        classifier for another number of classes is left out (codes do not use it)."""
        state = _model_state(checkpoint)
        if not is_ddah_state(state):
            keys = ", ".join(map(str, list(state)[:4])) if isinstance(state, dict) else \
                type(state).__name__
            raise CheckpointError(f"{path} is not a DDAH checkpoint: no spatial_features_* / "
                                  f"global_avgpooling_* state_dict (keys: {keys or 'none'})")
        bits = _bits(state)
        if bits is not None and bits != self.config.bits:
            raise CheckpointError(f"{path} holds {bits}-bit codes; pass --len {bits}")
        load_with_classifier(self.net, state, path, f"DDAH with --len {self.config.bits}",
                             "classifier.1.weight", "classifier.", heads, self.facts.num_classes)

    @classmethod
    def recognise(cls, checkpoint, path):
        state = _model_state(checkpoint)
        if not is_ddah_state(state) or _bits(state) is None:
            return None
        facts = {"img_size": IMG_SIZE}
        if getattr(state.get("classifier.1.weight"), "ndim", 0) == 2:
            facts["num_classes"] = int(state["classifier.1.weight"].shape[0])
        return Recognised({"bits": _bits(state)}, facts)

    @classmethod
    def speed_settings(cls) -> list:
        return [("ddah_48", {"bits": 48}, DataFacts(530, IMG_SIZE), 256)]

    def notes(self) -> list:
        return ["the two-optimizer step as current PyTorch runs it: the loss_s gradient of "
                "the attention modules taken before any step (docs/baselines.md)"]

    def describe(self) -> str:
        c = self.config
        return (f"DDAH, {c.bits} bits, {self.facts.num_classes} classes, beta {c.beta}, "
                f"m {c.margin}")


def _bits(state: dict) -> Optional[int]:
    weight = state.get("hash_layer.1.weight")
    return int(weight.shape[0]) if getattr(weight, "ndim", 0) == 1 else None
