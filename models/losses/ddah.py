"""The DDAH loss (deephashface/DDAH ``train.py:25-29``), with the published name
and signature::

    criteria_softmax(hash_bits, out, target, beta)
        = nll_loss(out, target.view(-1)) + beta * mean_i sum_j | |h_ij| - 1 |

``out`` is the classifier's LogSoftmax output (nll_loss only averages
``-out[i, target_i]``, whatever ``out`` holds), ``target`` class ids of shape
[B] or [B, 1] (the published loader's), ``hash_bits`` the pre-tanh BatchNorm
output of the hash layer.  torch's ``abs'(0) = 0`` gives a zero gradient at
h = 0 and h = +-1.  The published ``beta`` is ``LOSS_01 = 0.001`` (train.py:10).

The training step adds ``loss_c = loss_a + loss_b`` (the attention pass and
the plain pass) and ``loss_s = clamp(m - loss_b + loss_a, 0)`` with m = 0 for
the attention modules (``methods/ddah.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

BETA = 0.001  # LOSS_01
MARGIN = 0.0  # m (train.py:14; the per-batch m = loss_a / 16 is commented out)


def criteria_softmax(hash_bits: torch.Tensor, out: torch.Tensor, target: torch.Tensor,
                     beta: float) -> torch.Tensor:
    """The classification (nll) plus beta times the quantisation term."""
    softmax_loss = F.nll_loss(out, target.reshape(-1))
    quantisation = torch.sum((hash_bits.abs() - 1).abs(), dim=1).mean()
    return softmax_loss + beta * quantisation


def attention_loss(loss_a: torch.Tensor, loss_b: torch.Tensor, m: float = MARGIN) -> torch.Tensor:
    """``loss_s = clamp(m - loss_b + loss_a, 0)``: what the attention modules
    are trained on besides ``loss_c`` (the attention pass must not lose to the plain one)."""
    return torch.clamp(m - loss_b + loss_a, 0)
