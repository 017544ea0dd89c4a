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
built-in faces in a few CPU minutes at 64 px.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from methods.base import Recipe, option
from utils.cli.parser import positive_int


@dataclass(frozen=True)
class TripletRecipe(Recipe):
    lr_step: int = option(1800, "lr x0.1 every this many epochs", type=positive_int,
                          flag="--step_lr")
    optimizer: str = option("SGD", "SGD (published) or adam_inverse_sqrt",
                            choices=("SGD", "adam_inverse_sqrt"), flag="--optimizer_name")
    sampler: str = option("balanced", "balanced: classes-per-batch classes x images-per-class "
                          "images (what the published code intends); published: uniformly "
                          "random batches (what the published run did)",
                          choices=("balanced", "published"))
    classes_per_batch: int = option(10, "classes in a balanced batch", type=positive_int)
    images_per_class: Optional[int] = option(None, "images per class in a balanced batch "
                                             "(default: batch / classes-per-batch)",
                                             type=positive_int)

    def evaluation_epochs(self) -> frozenset:
        """0-based epochs after which the published main.py evaluates and snapshots."""
        step = self.eval_every
        if not step:
            return frozenset()
        return frozenset(e for e in range(self.epochs)
                         if e > 1 and (e % step == 0 or e == self.epochs - 1))

    def describe(self) -> str:
        opt = (f"SGD (momentum {self.momentum}, weight decay {self.weight_decay})"
               if self.optimizer == "SGD" else "Adam with inverse-sqrt warm-up")
        return (f"{opt}, lr x{self.lr_gamma} every {self.lr_step} epochs, {self.sampler} "
                f"batches, evaluation and snapshot every {self.eval_every} epochs")


PUBLISHED = TripletRecipe(epochs=4001, batch=80, lr=0.001, lr_step=1800, lr_gamma=0.1,
                          momentum=0.9, weight_decay=5e-4, eval_every=50, monitor="mAP")
SYNTHETIC = TripletRecipe(epochs=30, batch=80, lr=0.001, lr_step=1800, lr_gamma=0.1,
                          momentum=0.9, weight_decay=5e-4, eval_every=10, monitor="mAP")
# the published README's margin per code length (others: a bit over a quarter of the bits)
MARGINS = {16: 8.0, 64: 20.0}
SYNTHETIC_IMG_SIZE = 64  # ResNets take >= 32 px; 224 px built-in faces are slow on a CPU


def recipe_for(dataset: str) -> TripletRecipe:
    return SYNTHETIC if dataset == "synthetic" else PUBLISHED


def published_margin(bits: int) -> float:
    return MARGINS.get(bits, float(bits // 4 + 1))
