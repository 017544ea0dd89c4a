"""Triplet miners: *which* (anchor, positive, negative) triplets of a batch
take part, apart from *what they cost* (models/losses/triplet.py), so that
another method can reuse either.

A miner returns a bool mask [B, B, B]: ``mask[a, p, n]`` selects the triplet
with anchor a, positive p and negative n (indices into the batch).  Nothing
is looped over in Python and no triplet list is built: for a batch of 80 the
mask has 512,000 entries, computed on the batch's device.

* ``all``: the published rule (``utils.get_triplets``): every a < p of the
  same class and every n of another class.  (The published list orders the
  class groups by Python ``set`` iteration; the loss does not depend on the
  order.)
* ``semihard``: of those, the ones with d(a,p) < d(a,n) < d(a,p) + margin.
* ``hard``: for each (a, p), the negative closest to the anchor.
"""

from __future__ import annotations

from typing import Callable, Dict

import torch


def squared_distances(embeddings: torch.Tensor) -> torch.Tensor:
    """[B, B] squared Euclidean distances, summed over the bits exactly as the
    published loss does ((a - b)^2 summed), not by the dot-product expansion."""
    diff = embeddings.unsqueeze(1) - embeddings.unsqueeze(0)
    return diff.pow(2).sum(-1)


def valid_triplets(labels: torch.Tensor) -> torch.Tensor:
    """bool [B, B, B]: same class for (a, p) with a < p, another class for n."""
    labels = labels.view(-1)
    same = labels.unsqueeze(0) == labels.unsqueeze(1)  # [B, B]
    b = labels.shape[0]
    index = torch.arange(b, device=labels.device)
    before = index.unsqueeze(1) < index.unsqueeze(0)  # a < p
    return (same & before).unsqueeze(2) & (~same).unsqueeze(1)


def all_triplets(labels, distances=None, margin=None) -> torch.Tensor:
    return valid_triplets(labels)


def semihard_triplets(labels, distances, margin) -> torch.Tensor:
    d_ap = distances.unsqueeze(2)
    d_an = distances.unsqueeze(1)
    return valid_triplets(labels) & (d_an > d_ap) & (d_an < d_ap + margin)


def hard_triplets(labels, distances, margin=None) -> torch.Tensor:
    valid = valid_triplets(labels)
    d_an = distances.unsqueeze(1).expand_as(valid)
    masked = torch.where(valid, d_an, torch.full_like(d_an, float("inf")))
    hardest = masked.argmin(dim=2, keepdim=True)  # [B, B, 1]
    chosen = torch.zeros_like(valid).scatter_(2, hardest, True)
    return chosen & valid


MINERS: Dict[str, Callable] = {"all": all_triplets, "semihard": semihard_triplets,
                               "hard": hard_triplets}


def mine(name: str, labels: torch.Tensor, distances: torch.Tensor, margin: float) -> torch.Tensor:
    if name not in MINERS:
        raise ValueError(f"unknown miner {name!r}; choose one of {', '.join(MINERS)}")
    with torch.no_grad():
        return MINERS[name](labels, distances.detach(), margin)


def triplet_list(mask: torch.Tensor) -> torch.Tensor:
    """The selected triplets as rows (anchor, positive, negative), int64 [T, 3]
    in index order (for inspection and tests; the loss never builds it)."""
    return mask.nonzero()
