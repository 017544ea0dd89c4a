"""DSDH as a method (Li, Sun, He, Tan, "Deep Supervised Discrete Hashing",
NIPS 2017; liqi-casia/DSDH-HashingCode, MATLAB + MatConvNet): a hashing
network, the table ``U`` of outputs over the training set and, per batch,
the closed-form classifier, the discrete codes and the output derivative of
``models/losses/dsdh.py``; codes are ``U > 0`` of the network output, ranked
by Hamming distance.

We follow the MATLAB code (not the DeepHash-pytorch port, which differs in
ten ways: docs/differences.md).  The network is trained on the published
gradient: each batch's ``dJdU`` is back-propagated as the derivative of the
outputs and the update is ``w <- w + lr (dzdw / (batch N) - 5e-4 w)``
(``update.m``), i.e. SGD with weight decay 5e-4 on the surrogate loss
``-sum(outputs * dJdU) / (batch N)``.  The loss a run logs is the value of the
objective that gradient descends, ``J / (batch N)`` with ``J = 2 sum(log(1 +
e^T) - S T) + eta ||B - U0||^2`` (the classifier terms of the paper's
objective are constant in the outputs and left out).

The network: the dataset's face network at 32 and 112 pixels; at 224 pixels
torchvision's AlexNet (``alexnet_hash``) in place of the published
MatConvNet VGG-F, which torchvision does not have.

Checkpoint (ours; the published code saves MatConvNet structures):
``{'dsdh': {'net': state_dict}}``, our training files add ``U`` and the
published (never read) ``B``.
"""

from __future__ import annotations

from dataclasses import dataclass

from methods.base import DataFacts, option
from methods.dpsh import CodeTableMethod, TableConfig
from methods.recipes.dsdh import DSDHRecipe, recipe_for
from methods.registry import register_method
from models.losses.dsdh import NU, dsdh_batch_step
from utils.cli.parser import non_negative_float

PUBLISHED_BATCH = 128  # update.m:4, the divisor of every batch's gradient


@dataclass(frozen=True)
class DSDHConfig(TableConfig):
    eta: float = option(55.0, "eta, the weight of ||B - U||^2 (main.m: 55)",
                        type=non_negative_float)
    nu: float = option(NU, "nu / mu, the ridge term of the per-batch classifier W "
                           "(train.m: lambda = 0.1)", type=non_negative_float)


@register_method("dsdh")
class DSDH(CodeTableMethod):
    """``forward(images, targets)`` runs the batch step (W, B, dJdU) after
    writing the batch's rows of ``U``, and returns the logged objective with
    the published output gradient (in float32, also under --amp)."""

    summary = "deep supervised discrete hashing (DSDH MATLAB code; face retrieval baseline)"
    Config = DSDHConfig
    Recipe = DSDHRecipe
    layout_key = "dsdh"
    # calcMAP averages over the queries with a relevant item (the published mAP)
    metric_defaults = {"skip_no_relevant": True}

    def __init__(self, config: DSDHConfig, facts: DataFacts):
        super().__init__(config, facts)
        self.update_batch = PUBLISHED_BATCH  # configure_optimizers sets the recipe's

    @classmethod
    def recipe_for(cls, dataset, facts, config) -> DSDHRecipe:
        return recipe_for(dataset)

    def batch_loss(self, outputs, labels, index):
        step = dsdh_batch_step(self.U, outputs, self.train_labels, index, self.config.eta,
                               self.config.nu, B_table=self.B)
        scale = self.update_batch * self.num_train
        surrogate = -(outputs * step["dJdU"]).sum() / scale
        # the value: the objective; the gradient: the published dJdU's
        return step["objective"] / scale + (surrogate - surrogate.detach())

    def configure_optimizers(self, recipe: DSDHRecipe):
        """``update.m``: SGD without momentum, weight decay 5e-4, one lr per
        epoch on the logspace schedule; the gradient divisor is the recipe's batch."""
        self.update_batch = recipe.batch
        return super().configure_optimizers(recipe)

    def describe(self) -> str:
        c = self.config
        return f"DSDH, {c.arch}, {c.bits} bits, eta {c.eta}, nu {c.nu}"
