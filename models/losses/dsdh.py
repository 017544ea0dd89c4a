"""DSDH's batch step (liqi-casia/DSDH-HashingCode, MATLAB: ``train.m`` lines
9-50, ``RRC.m``, ``calcNeighbor.m``, ``logExpTrick.m``).

For each batch of network outputs ``U0`` [bs, c] the published code

1. writes the batch rows of the table ``U`` [N, c] (and ``B = sign(U0)``,
   a table it never reads);
2. fits the classifier ``W`` [c, C] to the batch alone: ``W = RRC(sign(U0),
   Y, 0.1) = (B'B + 0.1 I)^-1 B' Y`` (``Y`` one-hot, as many columns as the
   batch's largest label);
3. solves the codes by discrete cyclic coordinate descent: ``Q = eta U0 +
   Y W'``, ``B`` from zeros, up to 10 sweeps over the columns in place
   (Gauss-Seidel) ``B(:,k) = sign(Q(:,k) - B_k W_k w_k')`` (``B_k``, ``W_k``
   without column / row k), stopping once a sweep changes B by less than
   1e-6 of its norm;
4. returns the output derivative ``dJdU = (S - A) U - 2 eta (U0 - B)`` with
   ``T = U0 U' / 2``, ``A = 1 ./ (1 + exp(-T))``, ``S`` = same label: the
   negative gradient of ``J = 2 sum(log(1 + e^T) - S T) + eta ||B - U0||^2``
   with ``U`` held constant, which the network is trained on.

Everything runs in ``U0``'s dtype (MATLAB computes in single with the single
``U0`` of the GPU; the table ``U`` is converted).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .dpsh import similarity

SWEEPS = 10  # for time = 1:10 (train.m:35)
TOLERANCE = 1e-6  # norm(batchB - Z0, 'fro') < 1e-6 * norm(Z0, 'fro') (train.m:43)
NU = 0.1  # lambda = 0.1 (train.m:30): nu / mu with mu = 1


def label_matrix(labels: torch.Tensor, num_classes: Optional[int] = None) -> torch.Tensor:
    """Y [n, C]: one-hot rows of class ids (``full(sparse(1:n, label, 1))``:
    C = the largest id + 1 unless given), a label matrix as it is."""
    if labels.ndim == 2:
        return labels.float()
    columns = int(labels.max()) + 1 if num_classes is None else num_classes
    return F.one_hot(labels.long(), columns).float()


def rrc(codes: torch.Tensor, labels: torch.Tensor,
        lam: float = NU) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(W [c, C], predicted ids [n] (0-based), E) of ``RRC.m``: the ridge
    regression ``W = (X'X + lam I) \\ X' Y`` from codes X [n, c] to the
    labels, ``argmax(X W)`` and ``E = ||Y - X W||^2 + lam ||W||^2``."""
    Y = label_matrix(labels).to(codes.dtype)
    eye = torch.eye(codes.shape[1], dtype=codes.dtype, device=codes.device)
    W = torch.linalg.solve(codes.t() @ codes + lam * eye, codes.t()) @ Y
    fit = codes @ W
    E = ((Y - fit) ** 2).sum() + lam * (W ** 2).sum()
    return W, fit.argmax(1), E


def dcc(Q: torch.Tensor, W: torch.Tensor, sweeps: int = SWEEPS,
        tolerance: float = TOLERANCE) -> Tuple[torch.Tensor, int]:
    """(B [bs, c], sweeps run): the published discrete cyclic coordinate
    descent from B = 0 (``sign(0) = 0`` may stay)."""
    B = torch.zeros_like(Q)
    c = Q.shape[1]
    done = 0
    for done in range(1, sweeps + 1):
        before = B.clone()
        for k in range(c):
            rest = [j for j in range(c) if j != k]
            B[:, k] = torch.sign(Q[:, k] - (B[:, rest] @ W[rest]) @ W[k])
        if torch.linalg.norm(B - before) < tolerance * torch.linalg.norm(before):
            break
    return B, done


def log_exp_trick(x: torch.Tensor) -> torch.Tensor:
    """``logExpTrick.m``: log(1 + exp(x)) below 100, x from there (published, unused)."""
    return torch.where(x < 100, torch.log(1 + torch.exp(torch.clamp(x, max=100))), x)


@torch.no_grad()
def dsdh_batch_step(U: torch.Tensor, U0: torch.Tensor, labels: torch.Tensor,
                    batch_ind: torch.Tensor, eta: float, nu: float = NU,
                    B_table: Optional[torch.Tensor] = None) -> dict:
    """One batch of ``train.m`` (lines 9-50) after the forward pass.

    ``U`` [N, c] the table (its batch rows are written here), ``U0`` [bs, c]
    the batch's outputs, ``labels`` the N training labels (class ids or a
    label matrix), ``batch_ind`` [bs] the batch's 0-based rows, ``B_table``
    the published (unread) sign table, written too when given.  Returns
    ``W`` [c, C], ``B`` [bs, c] (the DCC codes), ``dJdU`` [bs, c], ``S``
    [bs, N], ``Q`` [bs, c], ``sweeps`` and ``objective`` (J above)."""
    U0 = U0.detach()
    U[batch_ind] = U0.to(U.dtype)
    if B_table is not None:
        B_table[batch_ind] = torch.sign(U0).to(B_table.dtype)
    Y = label_matrix(labels[batch_ind]).to(U0.dtype)
    W, _, _ = rrc(torch.sign(U0), Y, nu)
    Q = eta * U0 + Y @ W.t()
    B, sweeps = dcc(Q, W)
    S = similarity(labels[batch_ind], labels).to(U0.dtype)
    table = U.to(U0.dtype)
    T = U0 @ table.t() / 2
    A = 1 / (1 + torch.exp(-T))
    dJdU = (S - A) @ table - 2 * eta * (U0 - B)
    objective = 2 * (F.softplus(T) - S * T).sum() + eta * ((B - U0) ** 2).sum()
    return {"W": W, "B": B, "dJdU": dJdU, "S": S, "Q": Q, "sweeps": sweeps,
            "objective": objective}
