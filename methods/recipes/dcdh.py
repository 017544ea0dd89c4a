"""DCDH recipes (DCDH-PyTorch, ``dcdh_train.py``).

Published lines the values come from (HEAD df19abb):

* optimizer (FaceScrub, YouTube Faces)::

      optim.Adam([{'params': net.parameters(), 'weight_decay': 1e-4, 'lr': args.lr,
                   'amsgrad': True},
                  {'params':  criterion.parameters(), 'weight_decay': 1e-4, 'lr': args.lr}])

  amsgrad on the network group only: the centers group is plain Adam.  An
  older published version had ``--lr1`` / ``--lr2`` for the two groups: both
  are accepted (``--lr1`` is ``--lr``, ``--lr2`` the centers' lr).
* optimizer (VGGFace2)::

      optim.SGD([{'params': net.module.parameters(), 'weight_decay': 5e-4},
                 {'params': criterion.parameters(), 'weight_decay': 5e-4}], lr=..., momentum=0.9)

* schedule: ``adjust_learning_rate``: ``lr * 0.5 ** (epoch // 100)``;
* ``adjust_lr``: every group's lr set to ``args.lr * decay ** (epoch // step)``
  at each epoch's start (the StepLR here);
* ``--lr`` default 0.005, ``--bs`` 256, mAP every 10 epochs
  (``if (epoch+1) % 10 == 0``), best-loss checkpoint, early stop when
  ``(epoch - best_epoch) > EPOCHS // 4``.

Epochs: 600 for FaceScrub / YouTube Faces and 150 for VGGFace2
(SphereNet-20 at 112 px, SGD, lr x0.1 every 50), as the published HEAD; an
older version had ``EPOCHS = 700`` and fine-tuned a VGGFace2-pretrained
InceptionResNet-v1 at 160 px (docs/differences.md).  ``synthetic``: 15 epochs, enough for a
high mAP in a few CPU minutes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from methods.base import Recipe, option
from utils.cli.parser import positive_float


@dataclass(frozen=True)
class DCDHRecipe(Recipe):
    optimizer: str = option("adam", "adam (amsgrad on the network group) or sgd",
                            choices=("adam", "sgd"))
    centers_lr: Optional[float] = option(None, "learning rate of the class centers "
                                         "(default: --lr)", type=positive_float, flag="--lr2")
    patience_fraction: int = 4  # early stop after epochs // 4 epochs without a lower loss

    def patience(self) -> Optional[int]:
        return self.epochs // self.patience_fraction

    def describe(self) -> str:
        opt = "Adam (amsgrad on the network)" if self.optimizer == "adam" else \
            f"SGD (momentum {self.momentum})"
        return (f"{opt}, weight decay {self.weight_decay}, lr x{self.lr_gamma} every "
                f"{self.lr_step} epochs")


ADAM_32PX = DCDHRecipe(epochs=600, batch=256, lr=0.005, lr_step=100, lr_gamma=0.5,
                       weight_decay=1e-4, eval_every=10, optimizer="adam")
SGD_112PX = DCDHRecipe(epochs=150, batch=256, lr=0.005, lr_step=50, lr_gamma=0.1,
                       weight_decay=5e-4, eval_every=10, optimizer="sgd")
SYNTHETIC_EPOCHS = 15

# the network of each dataset's published recipe
ARCHS = {"facescrub": "dfhnet", "youtube": "dfhnet", "vggface2": "sphere20"}
RECIPES = {"facescrub": ADAM_32PX, "youtube": ADAM_32PX, "vggface2": SGD_112PX}


def default_arch(dataset: str, img_size: Optional[int]) -> str:
    if dataset in ARCHS:
        return ARCHS[dataset]
    if img_size == 32:
        return "dfhnet"
    if img_size in (None, 112):
        return "sphere20"
    return "resnet18"


def recipe_for(dataset: str, arch: str) -> DCDHRecipe:
    """The dataset fixes the recipe where the published code does; otherwise
    the network's (DFHNet: the Adam recipe, the others: SGD)."""
    if dataset in RECIPES:
        return RECIPES[dataset]
    recipe = ADAM_32PX if arch == "dfhnet" else SGD_112PX
    if dataset == "synthetic":
        recipe = replace(recipe, epochs=SYNTHETIC_EPOCHS)
    return recipe
