"""OPQN recipes (opqn ``main.py``).

Published lines the values come from:

* ``optimizer = optim.SGD(..., lr=args.lr, momentum=0.9, weight_decay=5e-4)``, ``--lr 0.1``;
* ``adjust_learning_rate``: lr x0.5 every 35 epochs for 200 epochs (32x32
  data), every 20 for 160 epochs (112x112 data);
* ``--bs 256``, evaluation every 5 epochs, the lowest-loss checkpoint kept;
* the code length rule ``len = num * log2(words)``; feature dimension 512 for
  32x32 data (516 for 36 bits, which 6 books must divide), ``num * words`` for
  112x112 data and cross-dataset runs; logit scale 20 (32x32) / 40 (112x112, -c);
* top-k reported: 5 for the 32x32 datasets, 10 for VGGFace2 (we report 1, 5,
  10 and 50).

``synthetic``: 7 epochs, enough for a high mAP in a few CPU minutes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OPQNRecipe:
    epochs: int
    lr_step: int
    lr_gamma: float = 0.5
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch: int = 256
    eval_every: int = 5
    scale: float = 20.0
    topk: tuple = (1, 5, 10, 50)

    def describe(self) -> str:
        return (f"SGD (momentum {self.momentum}, weight decay {self.weight_decay}), "
                f"lr x{self.lr_gamma} every {self.lr_step} epochs")


SMALL_IMAGES = OPQNRecipe(epochs=200, lr_step=35, scale=20.0)  # 32x32 faces
LARGE_IMAGES = OPQNRecipe(epochs=160, lr_step=20, scale=40.0)  # 112x112 faces, and -c
SYNTHETIC_EPOCHS = 7


def recipe_for(dataset: str, img_size: int, cross_dataset: bool = False) -> OPQNRecipe:
    from dataclasses import replace

    recipe = LARGE_IMAGES if img_size == 112 or cross_dataset else SMALL_IMAGES
    if dataset == "synthetic":
        recipe = replace(recipe, epochs=SYNTHETIC_EPOCHS)
    return recipe


def input_size(dataset: str, img_size, cross_dataset: bool) -> int:
    """The image size a run uses, known before any data is read."""
    if img_size:
        return img_size
    return 112 if cross_dataset or dataset in ("vggface2", "folder") else 32
