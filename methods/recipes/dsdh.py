"""DSDH recipes (liqi-casia/DSDH-HashingCode @ 3735a38, MATLAB).

Published lines the values come from:

* ``for codelens=[12,24,32,48]``, ``for eta=55`` (main.m:4-5): eta, the
  config's ``--eta``;
* ``maxIter = 150``, ``lr = logspace(-2,-6,maxIter)`` (DSDH.m:9-10): one lr
  per epoch, falling geometrically from 1e-2 to 1e-6 (a LambdaLR here;
  ``--lr`` and ``--lr-final`` move its ends);
* ``batchsize = 128`` (train.m:3), ``lambda=0.1`` (train.m:30): nu, the
  config's ``--nu``;
* ``update.m``: ``weight_decay = 5*1e-4``, ``batch_size = 128``, and per layer
  ``w = w + lr*(dzdw/(batch_size*N) - weight_decay*w)``: plain SGD (no
  momentum) with weight decay 5e-4 on the gradient divided by ``128 * N``.
  The published divisor is 128 for every batch, the last shorter one too; we
  divide by the recipe's batch (``--bs``, 128 by default), also for a last
  shorter batch;
* codes ``U > 0`` of the network output (compute_B.m:25-26), evaluated once,
  after the last epoch (DSDH.m:19): we evaluate every 10 epochs and after the
  last, and keep the lowest-loss epoch as the best file.

The same recipe serves every face dataset (the published code has one, for
CIFAR-10).  ``synthetic``: 15 epochs from lr 0.1 to 1e-5 (the published span
of 1e-4, ten times higher): the published 1e-2 moves a face network trained
from scratch too little in a few epochs (the published run starts from
ImageNet-trained VGG-F weights).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from methods.base import Recipe, option
from utils.cli.parser import positive_float

EVAL_EVERY = 10
SYNTHETIC_EPOCHS = 15
SYNTHETIC_LR = (0.1, 1e-5)  # first and last epoch's lr on the built-in faces


@dataclass(frozen=True)
class DSDHRecipe(Recipe):
    lr_final: float = option(1e-6, "lr of the last epoch: the lr falls geometrically from --lr "
                                   "to it (the published logspace(-2, -6, epochs))",
                             type=positive_float)

    def lr_factor(self, epoch: int) -> float:
        """The lr of 0-based ``epoch`` over ``lr``: logspace(log10 lr, log10 lr_final, epochs)."""
        if self.epochs <= 1:
            return 1.0
        return (self.lr_final / self.lr) ** (min(epoch, self.epochs - 1) / (self.epochs - 1))

    def scheduler(self, optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        # a plain function: LambdaLR's state_dict then records nothing of it
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: self.lr_factor(epoch))

    def describe(self) -> str:
        return (f"SGD (momentum {self.momentum}, weight decay {self.weight_decay}), lr "
                f"{self.lr:g} -> {self.lr_final:g} geometrically over the epochs, gradient "
                f"divided by {self.batch} x the training items")


PUBLISHED = DSDHRecipe(epochs=150, batch=128, lr=1e-2, lr_final=1e-6, momentum=0.0,
                       weight_decay=5e-4, eval_every=EVAL_EVERY)


def recipe_for(dataset: str) -> DSDHRecipe:
    if dataset == "synthetic":
        return replace(PUBLISHED, epochs=SYNTHETIC_EPOCHS, lr=SYNTHETIC_LR[0],
                       lr_final=SYNTHETIC_LR[1], eval_every=0)
    return PUBLISHED
