"""The DDH training loss as the published Keras model compiles it
(xjcvip007/DDH ``DDH.py:47-57, 167-179``):

    total = categorical_crossentropy(softmax, one-hot labels)
            + LOSS_01_LAYER_PARAMS (0.01) * mean_batch( mean_j | |A6_j| - 1 | )
            + REGULARIZER_PARAMS (1e-4) * sum of W^2 over the 54 regularised kernels

* Keras' categorical cross-entropy (Theano backend) renormalises the softmax
  output to sum 1, clips it to [1e-7, 1 - 1e-7] (no gradient outside) and
  averages -log p[label] over the batch;
* the 0-1 term is the ``loss_01_layer`` Lambda output, whose "loss"
  ``face_hash_01_loss(y_true, y_pred) = y_pred`` ignores its zero targets;
* the l2 regularisers of C1-C3, C4, the face feature layer, the 48 Dense(1)
  and the softmax layer add ``1e-4 * sum(W^2)`` each (biases and BatchNorm
  are not regularised).
"""

from __future__ import annotations

from typing import Iterable

import torch

KERAS_EPSILON = 1e-7  # keras.backend.common._EPSILON
LOSS_01_WEIGHT = 0.01  # LOSS_01_LAYER_PARAMS
L2_WEIGHT = 1e-4  # REGULARIZER_PARAMS


def keras_categorical_crossentropy(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Batch mean of -log p[label] on the renormalised, clipped probabilities."""
    probs = probs / probs.sum(dim=-1, keepdim=True)
    probs = probs.clamp(KERAS_EPSILON, 1.0 - KERAS_EPSILON)
    return -torch.log(probs.gather(1, labels.view(-1, 1))).mean()


def loss_01(codes: torch.Tensor) -> torch.Tensor:
    """The ``loss_01_layer`` output [B]: mean over bits of | |a| - 1 |."""
    return (codes.abs() - 1).abs().mean(dim=-1)


def l2_penalty(kernels: Iterable[torch.Tensor], weight: float = L2_WEIGHT) -> torch.Tensor:
    """``weight * sum(W^2)`` summed over the regularised kernels."""
    return weight * sum(k.pow(2).sum() for k in kernels)


def ddh_loss(codes: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
             kernels: Iterable[torch.Tensor], loss_01_weight: float = LOSS_01_WEIGHT,
             l2_weight: float = L2_WEIGHT) -> dict:
    """{"loss": total, "ce", "loss_01", "l2"} of one batch: ``codes`` = A6
    [B, bits], ``logits`` [B, C] (the softmax layer before its activation),
    ``labels`` class ids [B], ``kernels`` = ``DDH.regularised_kernels()``."""
    ce = keras_categorical_crossentropy(torch.softmax(logits, dim=-1), labels)
    quantisation = loss_01(codes).mean()
    l2 = l2_penalty(kernels, l2_weight)
    return {"loss": ce + loss_01_weight * quantisation + l2, "ce": ce,
            "loss_01": quantisation, "l2": l2}
