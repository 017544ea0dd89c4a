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

from dataclasses import dataclass, replace

from methods.base import Recipe

TOPK = (1, 5, 10, 50)


@dataclass(frozen=True)
class OPQNRecipe(Recipe):
    pass


SMALL_IMAGES = OPQNRecipe(epochs=200, batch=256, lr=0.1, lr_step=35, lr_gamma=0.5,
                          weight_decay=5e-4, eval_every=5)  # 32x32 faces
LARGE_IMAGES = OPQNRecipe(epochs=160, batch=256, lr=0.1, lr_step=20, lr_gamma=0.5,
                          weight_decay=5e-4, eval_every=5)  # 112x112 faces, and -c
SYNTHETIC_EPOCHS = 7


def recipe_for(dataset: str, large: bool) -> OPQNRecipe:
    recipe = LARGE_IMAGES if large else SMALL_IMAGES
    if dataset == "synthetic":
        recipe = replace(recipe, epochs=SYNTHETIC_EPOCHS)
    return recipe
