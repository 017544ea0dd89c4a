"""SHAM, the semantic hashing autoencoder module of DCHN (Hu et al., IEEE TCYB
2021): a matrix W [classes, bits] between the label space and the Hamming
space, learned from the class count alone or with a few labelled rows.
Labels y are then recast as target codes o = sgn(y W).

The published algorithm (``utils.SHAM``), step by step, reproduced exactly:

1. a fixed-seed (5555) Gaussian W, replaced by its orthogonal polar factor
   (U I V of its SVD);
2. Y = the identity rows of the classes in a fixed-seed shuffled order, plus
   the available labelled rows;
3. 50 alternating steps: B = sgn((1 + g) Y W (WᵀW + g I)⁻ᵀ) (float32, 0 -> -1),
   then W from the Sylvester equation (BᵀB) X + X (g YᵀY) = (1 + g) BᵀY,
   W = Xᵀ (``scipy.linalg.solve_sylvester``, with BᵀB in float32 as the
   published code has it: that keeps W bit-identical to the published one);
4. the W of the lowest loss |Y - B Wᵀ|₁ + g |B - Y W|₁ (row means) among the
   50 steps (for equal losses the later step).

Its own generator is used for the fixed seed, so calling it leaves NumPy's
global random state alone (the published code reseeds the global generator).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

SHAM_SEED = 5555
ITERATIONS = 50


def sham_file_name(num_classes: int, bits: int, gama: float, available: int) -> str:
    """The published file name, ``SHAM_W_C<classes>_O<bits>_G<gama>_A<available>.mat``."""
    return "SHAM_W_C%d_O%d_G%g_A%d.mat" % (num_classes, bits, gama, available)


def _sign_float32(x: np.ndarray) -> np.ndarray:
    return (x > 0.0).astype("float32") * 2 - 1


def _loss(y, b, w, gama) -> float:
    return float(np.abs(y - b @ w.T).sum(1).mean() + gama * np.abs(b - y @ w).sum(1).mean())


@dataclass
class ShamResult:
    W: np.ndarray  # float64 [C, L], the returned matrix
    W_init: np.ndarray
    shuffle: np.ndarray  # the shuffled class order
    labels: np.ndarray  # Y as built (identity rows + available rows)
    losses: np.ndarray  # [51]: the initial loss, then each step's
    best_iter: int


def train_sham(num_classes: int, bits: int, gama: float = 1.0,
               available_labels: Optional[np.ndarray] = None) -> ShamResult:
    rng = np.random.RandomState(SHAM_SEED)  # the published np.random.seed(5555) stream
    w = rng.randn(num_classes, bits)
    from scipy.linalg import solve_sylvester, svd

    u, _, v = svd(w)
    w = u @ (np.eye(num_classes, bits) @ v)  # this grouping, as published: same rounding
    w_init = w.copy()
    order = np.arange(num_classes)
    rng.shuffle(order)
    y = np.identity(num_classes)[:, order]
    if available_labels is not None and len(available_labels):
        y = np.concatenate([y, np.asarray(available_labels, dtype=np.float64)])
    eye = np.identity(bits)

    def encode(w_):
        return _sign_float32((1 + gama) * (y @ (w_ @ np.linalg.inv(w_.T @ w_ + gama * eye).T)))

    losses = [_loss(y, encode(w), w, gama)]
    best = {}
    for _ in range(ITERATIONS):
        b = encode(w)
        # BᵀB stays float32 (B is float32), as published: scipy then solves in
        # single precision, which is what the published W carries
        w = solve_sylvester(b.T @ b, gama * (y.T @ y), (1 + gama) * (b.T @ y)).T
        losses.append(_loss(y, b, w, gama))
        best[losses[-1]] = (w, len(losses) - 1)  # equal losses: the later step wins
    w_best, best_iter = best[min(best)]
    return ShamResult(w_best, w_init, order, y, np.array(losses), best_iter)


def target_codes(labels, W) -> np.ndarray:
    """o = sgn(y W) as ±1 (int64); rows of class ids index W instead (the
    published ``to_hashing``)."""
    labels = np.asarray(labels)
    if labels.ndim == 1 or labels.shape[1] == 1:
        return (W[labels.reshape(-1).astype(np.int64)] > 0).astype(np.int64) * 2 - 1
    return (labels @ W > 0).astype(np.int64) * 2 - 1


def save_sham(path, W: np.ndarray) -> None:
    """The published .mat file (key ``W``), written atomically."""
    from scipy.io import savemat

    from utils.atomic import atomic_open

    with atomic_open(path) as f:
        savemat(f, {"W": np.asarray(W, dtype=np.float64)})


def load_sham(path) -> np.ndarray:
    from scipy.io import loadmat

    path = Path(path)
    z = loadmat(path)
    if "W" not in z:
        raise ValueError(f"{path} has no 'W' entry (a SHAM file holds W [classes, bits])")
    return np.asarray(z["W"], dtype=np.float64)
