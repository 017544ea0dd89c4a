"""Two things the metric and PQ modules share: array-to-tensor conversion and
the working-memory budget of one chunk of queries."""

from __future__ import annotations

import numpy as np

# Query rows per chunk are chosen so that one chunk's Q_c x N working arrays
# stay around this many elements.
CHUNK_ELEMENTS = 1 << 22


def as_tensor(x, name: str = "input"):
    """A tensor as it is, or a numpy array / nested list as a tensor."""
    import torch

    if isinstance(x, torch.Tensor):
        return x
    try:
        return torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a tensor or an array: {exc}") from None


def rows_per_chunk(width: int, budget: int = CHUNK_ELEMENTS) -> int:
    return max(1, budget // max(1, width))
