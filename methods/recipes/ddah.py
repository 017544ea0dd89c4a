"""DDAH recipes (deephashface/DDAH ``train.py``, ``utils.py`` @ 9592772).

Published lines the values come from:

* ``EPOCHS = 1000``, ``HASH_BITS = [48]``, ``LOSS_01 = 0.001``, ``LR = 0.001``,
  ``m = 0`` (train.py:8-14);
* ``adjust_learning_rate``: ``lr = LR * 0.5 ** (epoch // 100)`` for both
  optimizers at each epoch's start (train.py:17-22; its docstring's "decayed
  by 10 every 30 epochs" is not what it does): StepLR(100, 0.5) here;
* ``optimizer_a = optim.Adam([... the attention modules ...], lr=LR,
  weight_decay=0.0001)`` and ``optimizer_b = optim.Adam([... the rest ...],
  lr=LR, weight_decay=0.0001)`` (train.py:41-56): one Adam with two parameter
  groups here (Adam keeps its state per parameter, so the two are one);
* ``DataLoader(train_set, batch_size=256, shuffle=True)`` (utils.py:109);
* the mAP of the whole database after every epoch (train.py:84-86) and the
  final model saved (train.py:95): evaluation every epoch, and the one file
  the run writes is the last epoch's (no best file);
* FaceScrub only (``C = 530``, utils.py:21-28); YouTube Faces (1595 classes)
  takes the same recipe here.

``synthetic``: 20 epochs, no evaluation during training (the final one only).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from methods.base import Recipe


@dataclass(frozen=True)
class DDAHRecipe(Recipe):
    momentum: float = 0.0  # Adam: no SGD momentum (no flag)

    def describe(self) -> str:
        return (f"Adam (two parameter groups: attention modules, the rest), weight decay "
                f"{self.weight_decay}, lr x{self.lr_gamma} every {self.lr_step} epochs")


PUBLISHED = DDAHRecipe(epochs=1000, batch=256, lr=1e-3, lr_step=100, lr_gamma=0.5,
                       weight_decay=1e-4, eval_every=1)
SYNTHETIC_EPOCHS = 20


def recipe_for(dataset: str) -> DDAHRecipe:
    if dataset == "synthetic":
        return replace(PUBLISHED, epochs=SYNTHETIC_EPOCHS, eval_every=0)
    return PUBLISHED
