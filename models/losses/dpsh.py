"""DPSH's loss (jiangqy/DPSH-pytorch ``DPSH_CIFAR_10.py``, lines 186-203 of
``DPSH_algo``).

Each iteration the published loop writes the batch's outputs into two
tables over the training set, ``U`` (outputs) and ``B`` (their signs), then
takes the pairwise likelihood of the batch against every row of ``U``::

    theta = outputs @ U.T / 2                       # U holds the batch rows already
    logloss = sum(S * theta - Logtrick(theta)) / (num_train * bs)
    regterm = sum((sign(outputs) - outputs) ** 2) / (num_train * bs)
    loss = -logloss + lam * regterm

with ``S`` = 1 for pairs with a common label and ``Logtrick(x) = log(1 +
exp(-|x|)) + max(x, 0)`` (log(1 + e^x) without overflow).  ``U`` enters as a
constant (its rows are detached copies), so the gradient flows through the
left factor only; ``sign`` has no gradient.
"""

from __future__ import annotations

from typing import Tuple

import torch


def logtrick(x: torch.Tensor) -> torch.Tensor:
    """log(1 + exp(x)) that never overflows, in the published expression:
    its gradient at x = 0 is 0.5 (``torch.maximum`` splits a tie)."""
    return torch.log(1 + torch.exp(-torch.abs(x))) + torch.maximum(x, torch.zeros_like(x))


def similarity(batch_labels: torch.Tensor, train_labels: torch.Tensor) -> torch.Tensor:
    """S [bs, n], 1.0 where a batch item and a training item share a label:
    class ids [n] are compared, label matrices [n, C] (one-hot or multi-hot)
    must share a positive column (the published ``CalcSim``)."""
    if batch_labels.ndim == 1 and train_labels.ndim == 1:
        return (batch_labels[:, None] == train_labels[None, :]).float()
    if batch_labels.ndim == 2 and train_labels.ndim == 2:
        return (batch_labels.float() @ train_labels.float().t() > 0).float()
    raise ValueError(f"batch and training labels must both be class ids or both label matrices, "
                     f"got shapes {tuple(batch_labels.shape)} and {tuple(train_labels.shape)}")


@torch.no_grad()
def write_rows(U: torch.Tensor, B: torch.Tensor, batch_ind: torch.Tensor,
               outputs: torch.Tensor) -> None:
    """The published table update: ``U[ind] = outputs``, ``B[ind] = sign(outputs)``
    (``torch.sign``: an output of exactly 0 stores 0)."""
    values = outputs.detach().to(U.dtype)
    U[batch_ind] = values
    B[batch_ind] = torch.sign(values).to(B.dtype)


def dpsh_loss(outputs: torch.Tensor, U: torch.Tensor, B: torch.Tensor, batch_ind: torch.Tensor,
              batch_labels: torch.Tensor, train_labels: torch.Tensor,
              lam: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, logloss, regterm) of one batch, after writing its rows of ``U``
    and ``B`` in place.

    ``outputs`` [bs, bits] (the network's, with gradient), ``U``/``B``
    [num_train, bits], ``batch_ind`` [bs] positions of the batch in the
    training set, labels as class ids or label matrices.  The batch size is
    ``len(batch_ind)`` (the published ``len(train_label)`` fails on a batch of
    one, whose squeezed label is 0-d)."""
    write_rows(U, B, batch_ind, outputs)
    num_train, bs = U.shape[0], len(batch_ind)
    S = similarity(batch_labels, train_labels).to(outputs.dtype)
    theta = outputs @ U.to(outputs.dtype).t() / 2
    logloss = (S * theta - logtrick(theta)).sum() / (num_train * bs)
    regterm = (torch.sign(outputs) - outputs).pow(2).sum() / (num_train * bs)
    return -logloss + lam * regterm, logloss, regterm
