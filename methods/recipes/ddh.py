"""DDH recipes (xjcvip007/DDH ``DDH.py`` @ 5b3a54f, Keras 1.2.2).

Published lines the values come from:

* ``NB_EPOCHS = 200`` (DDH.py:47); ``HASH_NUM = 48``, ``SPLIT_NUM = 4``,
  ``TOP_K = 50`` (DDH.py:48-50); ``LOSS_01_LAYER_PARAMS = 0.01``,
  ``REGULARIZER_PARAMS = 0.0001`` (DDH.py:53-54; the README's "our settings");
* ``adam = Adam()`` (DDH.py:168): Keras' defaults lr 0.001, beta_1 0.9,
  beta_2 0.999, epsilon 1e-8 on sqrt(v) after the bias correction, no decay
  and no schedule;
* ``EarlyStopping(monitor='loss', patience=50, mode='min')`` (DDH.py:169) and
  ``ModelCheckpoint(..., save_best_only=True, monitor='loss')`` (DDH.py:170):
  the best file and the early stop follow the training loss;
* ``model.fit(..., batch_size=256, shuffle=True, nb_epoch=NB_EPOCHS,
  validation_split=0.1, ...)`` (DDH.py:178-179): Keras takes the last 10 % of
  the training array (``int(n * 0.9)`` onwards, in sorted file order) out of
  training; they stay in the retrieval gallery (``model_predict`` encodes the
  whole training split);
* ``DATASET_NAME = 'youtubeface'`` with ``NB_CLASSES = 1595``, or
  ``'facescrub'`` with 530 (DDH.py:32-42): one recipe for both; the loss
  weights are the published ones for both (the README invites tuning them).

``synthetic``: 30 epochs, enough for a high mAP on the built-in faces in a
few CPU seconds.  No evaluation during training (the published code has
none).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from methods.base import Recipe, option
from utils.cli.parser import fraction, non_negative_int, positive_float

PUBLISHED_TOPK = 50


@dataclass(frozen=True)
class DDHRecipe(Recipe):
    validation_split: float = option(0.1, "fraction at the end of the training split held out "
                                          "of training (Keras validation_split; the held-out "
                                          "items stay in the retrieval database)",
                                     type=fraction)
    stop_patience: int = option(50, "stop after this many epochs without a lower training "
                                    "loss (Keras EarlyStopping patience; 0: never stop early)",
                                type=non_negative_int)
    adam_eps: float = option(1e-8, "Adam epsilon, added to sqrt(v) after the bias correction "
                                   "as Keras does", type=positive_float)
    # not used: a constant lr, Adam without weight decay (no flags for them)
    lr_step: int = 1
    lr_gamma: float = 1.0
    momentum: float = 0.0
    weight_decay: float = 0.0

    def patience(self) -> Optional[int]:
        return self.stop_patience or None

    def describe(self) -> str:
        stop = f"early stop after {self.stop_patience} epochs without a lower training loss" \
            if self.stop_patience else "no early stop"
        return (f"Keras Adam (eps {self.adam_eps} on sqrt(v)), constant lr, {stop}, the last "
                f"{self.validation_split:.0%} of the training split held out of training")


PUBLISHED = DDHRecipe(epochs=200, batch=256, lr=1e-3, eval_every=0)
SYNTHETIC_EPOCHS = 30


def recipe_for(dataset: str) -> DDHRecipe:
    """The published recipe (FaceScrub and YouTube Faces alike)."""
    if dataset == "synthetic":
        return replace(PUBLISHED, epochs=SYNTHETIC_EPOCHS)
    return PUBLISHED
