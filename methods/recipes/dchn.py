"""DCHN recipes (penghu-cs/DCHN ``config.py`` and ``MHN.train_view``).

Published lines the values come from:

* ``optim.Adam(model_params, self.lr, [self.beta1, self.beta2])``, betas
  ``--beta1 0.5 --beta2 0.999``, one parameter group per parameter (the VGG
  ones of the raw-image net at lr x0.1);
* ``adjust_learning_rate``: lr x0.1 after every ``--lr_update`` epochs (50);
* ``--batch_sizes [64, 64, 64, 32, 64]`` and ``--lr [1e-4] * 5``, indexed by
  the view; ``--epochs 100``; ``--alpha 0.02``; ``--gama 1``;
  ``--available_num 100``; ``--output_shape 16``;
* the published ``train_mir.sh``: each view trained in its own process, then
  ``--mode eval --view -1``.

``synthetic``: 30 epochs at lr 1e-3 and lr x0.1 after 20, enough for a high
cross-view mAP on the built-in data in a couple of CPU minutes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DCHNRecipe:
    epochs: int = 100
    lr_update: int = 50
    batch_sizes: tuple = (64, 64, 64, 32, 64)
    lrs: tuple = (1e-4, 1e-4, 1e-4, 1e-4, 1e-4)
    beta1: float = 0.5
    beta2: float = 0.999
    alpha: float = 0.02
    gama: float = 1.0
    output_shape: int = 16
    available_num: int = 100
    lr_gamma: float = 0.1


PUBLISHED = DCHNRecipe()
SYNTHETIC = DCHNRecipe(epochs=30, lr_update=20, lrs=(1e-3,) * 5)


def recipe_for(dataset: str) -> DCHNRecipe:
    return SYNTHETIC if dataset == "synthetic" else PUBLISHED


def per_view(values, view: int):
    """The published list indexed by view (the last value for views beyond it)."""
    values = list(values)
    return values[view] if view < len(values) else values[-1]
