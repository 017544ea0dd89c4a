"""Triplet-ranking hashing recipes (zhongzhh8/Image-Retrieval ``main.py``).

Published lines the values come from:

* ``torch.optim.SGD(net.parameters(), lr=opt.lr, momentum=0.9, weight_decay=0.0005)``,
  ``--lr 0.001``;
* ``StepLR(optimizer, step_size=opt.step_lr, gamma=0.1)``, ``--step_lr 1800``;
* ``--num_epochs 4001``, ``--batchSize 80`` (``categoryRandomSampler(numBatchCategory=10)``:
  10 classes x 8 images), ``--checkpoint_step 50``;
* evaluation and snapshot when ``epoch > 1 and (epoch % checkpoint_step == 0 or
  epoch == num_epochs - 1)`` (0-based epochs);
* the README's margins: 8 for 16 bits, 20 for 64 bits ("a bit bigger than a
  quarter of the code length").

``synthetic``: 30 epochs with an evaluation every 10, enough to learn the
built-in faces in a few CPU minutes at 64 px (``SYNTHETIC_IMG_SIZE`` in triplet_main.py).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TripletRecipe:
    lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_step: int = 1800
    lr_gamma: float = 0.1
    epochs: int = 4001
    batch: int = 80
    classes_per_batch: int = 10
    checkpoint_step: int = 50

    def describe(self) -> str:
        return (f"SGD (momentum {self.momentum}, weight decay {self.weight_decay}), lr x{self.lr_gamma} "
                f"every {self.lr_step} epochs")


PUBLISHED = TripletRecipe()
SYNTHETIC = TripletRecipe(epochs=30, checkpoint_step=10)
# the published README's margin per code length (others: a bit over a quarter of the bits)
MARGINS = {16: 8.0, 64: 20.0}


def recipe_for(dataset: str) -> TripletRecipe:
    return SYNTHETIC if dataset == "synthetic" else PUBLISHED


def published_margin(bits: int) -> float:
    return MARGINS.get(bits, float(bits // 4 + 1))


def evaluation_epochs(num_epochs: int, checkpoint_step: int) -> frozenset:
    """0-based epochs after which the published main.py evaluates and snapshots."""
    return frozenset(e for e in range(num_epochs)
                     if e > 1 and (e % checkpoint_step == 0 or e == num_epochs - 1))
