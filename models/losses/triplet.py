"""The triplet ranking loss of triplet-ranking deep hashing (Lai et al., CVPR 2015).

For the triplets a miner selects (models/miners.py)::

    h = ||e_a - e_p||^2 - ||e_a - e_n||^2 + margin      (squared distances over the bits)
    loss = mean over the selected triplets of relu(h)

Inactive triplets (h <= 0) count in the denominator, as published.  The
distances come from one [B, B] matrix and the hinge from a [B, B, B]
broadcast, so the loss costs a few tensor operations on the device whatever
the number of triplets (20,160 for 10 classes x 8 images).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.miners import mine, squared_distances


def triplet_loss_from_mask(distances: torch.Tensor, mask: torch.Tensor,
                           margin: float) -> torch.Tensor:
    """mean over ``mask`` of relu(d[a, p] - d[a, n] + margin)."""
    hinge = F.relu(distances.unsqueeze(2) - distances.unsqueeze(1) + margin)
    count = mask.sum()
    total = (hinge * mask).sum()
    # no triplet in the batch (all one class, or all classes distinct): the
    # published function raises IndexError; here the loss is 0 (with a graph)
    return total / count.clamp(min=1)


def triplet_hashing_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float,
                         mining: str = "all") -> torch.Tensor:
    """The published ``triplet_hashing_loss_regu(embeddings, labels, margin)``
    (every in-batch triplet with anchor index < positive index); ``mining``
    picks another miner."""
    distances = squared_distances(embeddings)
    mask = mine(mining, labels.view(-1), distances, margin)
    return triplet_loss_from_mask(distances, mask, margin)
