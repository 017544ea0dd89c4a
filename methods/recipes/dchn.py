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

from dataclasses import dataclass, replace

from methods.base import Recipe, option
from utils.cli.parser import fraction, positive_int


@dataclass(frozen=True)
class DCHNRecipe(Recipe):
    lr_step: int = option(50, "lr x0.1 after every this many epochs", type=positive_int,
                          flag="--lr_update")
    batch_sizes: tuple = option((64, 64, 64, 32, 64), "batch size of each view (one value: "
                                "every view)", flag="--batch_sizes")
    lrs: tuple = option((1e-4,) * 5, "learning rate of each view (one value: every view)",
                        flag="--lr")
    beta1: float = option(0.5, "Adam beta1", type=fraction)
    beta2: float = option(0.999, "Adam beta2", type=fraction)

    def for_view(self, view: int) -> "DCHNRecipe":
        """The recipe of one view: its entries of the per-view lists."""
        return replace(self, batch=per_view(self.batch_sizes, view), lr=per_view(self.lrs, view))

    def describe(self) -> str:
        return (f"Adam (betas {self.beta1}, {self.beta2}), lr x{self.lr_gamma} every "
                f"{self.lr_step} epochs")


PUBLISHED = DCHNRecipe(epochs=100, batch=64, lr=1e-4, lr_step=50, lr_gamma=0.1)
SYNTHETIC = replace(PUBLISHED, epochs=30, lr_step=20, lrs=(1e-3,) * 5)
# the published config.py defaults of the method's own settings
ALPHA, GAMA, OUTPUT_SHAPE, AVAILABLE_NUM = 0.02, 1.0, 16, 100


def recipe_for(dataset: str) -> DCHNRecipe:
    return SYNTHETIC if dataset == "synthetic" else PUBLISHED


def per_view(values, view: int):
    """The published list indexed by view (the last value for views beyond it)."""
    values = list(values)
    return values[view] if view < len(values) else values[-1]
