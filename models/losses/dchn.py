"""The loss of one DCHN view network (the published ``MHN.criterion``).

With x [b, L] the L2-normalised outputs, o [b, L] the target codes sgn(y W),
labels y [b, C] and W [C, L]::

    dist  = x oᵀ / 2                                      [b, b]
    sim   = (y yᵀ > 0)                                    (share at least one label)
    loss1 = mean_i Σ_j log(1 + exp(dist_ij)) - sim_ij dist_ij   (pairwise likelihood)
    loss2 = mean_i Σ_c ((x Wᵀ)_ic - y_ic)²                (label regression)
    loss  = alpha loss1 + (1 - alpha) loss2

log(1 + exp(.)) is evaluated in float64 and loss1 cast back to float32, as
published; loss2 follows the dtype of the labels.
"""

from __future__ import annotations

import torch


def dchn_loss(x: torch.Tensor, codes: torch.Tensor, labels: torch.Tensor, W: torch.Tensor,
              alpha: float = 0.02) -> torch.Tensor:
    dist = x.mm(codes.t()) / 2.0
    labels_f = labels.float()
    sim = (labels_f.mm(labels_f.t()) > 0).float()
    loss1 = ((1.0 + dist.double().exp()).log() - (sim * dist).float()).sum(1).mean().float()
    loss2 = ((x.mm(W.t()) - labels) ** 2).sum(1).mean()
    return alpha * loss1 + (1 - alpha) * loss2


def codes_of(labels: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """Target codes sgn(y W) as ±1 float32 (the published torch ``to_hashing``)."""
    if labels.ndim == 1 or labels.shape[1] == 1:
        return (W[labels.view(-1).long()] > 0).float() * 2 - 1
    return ((labels.float().mm(W) > 0.0).float() * 2.0 - 1).detach()
