"""DCHN as a method: one view's network (``Dense_Net`` on features, or
``ImgNet`` on raw images) trained to produce the SHAM target codes
sgn(y W) of its items' labels (models/sham.py, models/losses/dchn.py).
Views are trained independently; evaluation ranks one view's queries
against another view's retrieval set by Hamming distance with multi-label
relevance (methods.dchn.cross_view_map).

Checkpoint (the published layout, per view):
``<prefix>/<datasets>_last_checkpoint_V<view>_O<bits>_A<available>.pth.tar``
= ``{'epoch': last finished epoch (0-based), 'model': state_dict, 'opt':
argparse.Namespace, 'loss': numpy array of the per-epoch losses}``.  Reading
it with ``weights_only=True`` needs the classes of ``CHECKPOINT_ALLOW``.
"""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

import numpy as np
import torch

from methods.base import Method
from methods.registry import register_method
from models.dense_net import Dense_Net, ImgNet
from models.losses.dchn import codes_of, dchn_loss
from utils.engine.checkpoint import CheckpointError, state_dict_mismatch
from utils.errors import UsageError
from utils.retrieval.metrics import evaluate_codes

# The smallest allow-list the published files need with weights_only=True
# (tests/fixtures/dchn/README.md): the Namespace of the options and the NumPy
# loss array (float32, or float64 when the labels were float64; files written
# under NumPy 1.x name numpy.core.multiarray).
CHECKPOINT_ALLOW = [argparse.Namespace, np._core.multiarray._reconstruct, np.ndarray, np.dtype,
                    np.dtypes.Float32DType, np.dtypes.Float64DType,
                    (np._core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct")]


def checkpoint_name(datasets: str, view: int, bits: int, available: int) -> str:
    return f"{datasets}_last_checkpoint_V{view}_O{bits}_A{available}.pth.tar"


@register_method("dchn")
class DCHNView(Method):
    """``forward(x, labels)`` is the DCHN loss of the batch (float32)."""

    def __init__(self, view: int, input_dim: int, bits: int, W: np.ndarray, alpha: float = 0.02,
                 images: bool = False, pretrained=None, opt: Optional[argparse.Namespace] = None):
        super().__init__()
        self.view, self.bits, self.alpha, self.images = view, bits, alpha, images
        self.input_dim = input_dim
        if images:
            try:
                self.net = ImgNet(out_dim=bits, pretrained=pretrained)
            except Exception as exc:  # noqa: BLE001 - a missing, corrupt or foreign file
                raise UsageError(f"--pretrained: {str(exc).splitlines()[0]}") from None
        else:
            self.net = Dense_Net(input_dim=input_dim, out_dim=bits)
        if W.shape[1] != bits:
            raise UsageError(f"the SHAM matrix has {W.shape[1]} bits, not --output_shape {bits}")
        # float32, as the published train_view casts it; not a parameter, not saved
        self.register_buffer("W", torch.tensor(W, dtype=torch.float32), persistent=False)
        self.opt = opt or argparse.Namespace()
        self.losses: list = []
        self.last_epoch = -1

    def unpack(self, batch, device):
        x, labels = batch
        labels = torch.as_tensor(labels)
        if labels.ndim != 2:
            raise ValueError(f"DCHN needs a label matrix per batch [b, classes], got shape "
                             f"{tuple(labels.shape)}")
        return x.to(device, non_blocking=True).float(), labels.to(device, non_blocking=True)

    def forward(self, x, labels):
        out = self.net(x)[-1]
        with torch.autocast(out.device.type, enabled=False):
            return dchn_loss(out.float(), codes_of(labels, self.W), labels, self.W, self.alpha)

    def embed(self, x):
        return self.net(x)[-1]

    def rank(self, queries, database, options, device) -> dict:
        # multi-label relevance; the DCHN table leaves queries without any
        # relevant item out of the mean (options.skip_no_relevant, on by default)
        return evaluate_codes(queries.values, database.values, queries.labels, database.labels,
                              radius=options.radius, device=device, backend=options.backend,
                              **options.ranking_kwargs())

    def optimizer(self, lr: float, betas) -> torch.optim.Optimizer:
        """Adam, one group per parameter as published (the VGG part of the
        raw-image net at lr x0.1)."""
        groups = [{"params": [p], "lr": lr * 0.1} if "vgg" in name else {"params": [p]}
                  for name, p in self.net.named_parameters() if p.requires_grad]
        return torch.optim.Adam(groups, lr=lr, betas=tuple(betas))

    # -- checkpoints ----------------------------------------------------------------
    def epoch_finished(self, epoch: int, loss: float) -> None:
        self.losses.append(loss)
        self.last_epoch = epoch

    def official_state(self) -> dict:
        return {"epoch": self.last_epoch, "model": self.net.state_dict(), "opt": self.opt,
                "loss": np.array(self.losses, dtype=np.float32)}

    def load_official_state(self, checkpoint: dict, path="checkpoint") -> None:
        state = checkpoint.get("model")
        if not isinstance(state, dict):
            keys = ", ".join(map(str, list(checkpoint)[:6])) or "none"
            raise CheckpointError(f"{path} is not a DCHN checkpoint: no 'model' state_dict "
                                  f"(top-level keys: {keys})")
        last = state.get("hash_layer.4.weight")
        if last is not None and last.shape[0] != self.bits:
            raise CheckpointError(f"{path} holds {last.shape[0]}-bit codes; pass --output_shape "
                                  f"{last.shape[0]}")
        first = state.get("hash_layer.0.weight")
        if not self.images and first is not None and first.shape[1] != self.input_dim:
            raise CheckpointError(f"{path} takes {first.shape[1]}-d input, view {self.view} has "
                                  f"{self.input_dim}-d features; check --datasets and --view")
        problem = state_dict_mismatch(self.net.state_dict(), state)
        if problem:
            raise CheckpointError(f"{path} does not fit the view-{self.view} network: {problem}")
        self.net.load_state_dict(state)
        loss = checkpoint.get("loss")
        self.losses = [float(v) for v in np.asarray(loss).reshape(-1)] if loss is not None else []
        self.last_epoch = int(checkpoint.get("epoch", len(self.losses) - 1))

    def info(self) -> dict:
        return {"view": self.view, "bits": self.bits}

    def describe(self) -> str:
        net = "ImgNet (VGG-19-BN)" if self.images else f"Dense_Net({self.input_dim} -> 4096 -> 4096 -> {self.bits})"
        return f"DCHN view {self.view}: {net}, alpha {self.alpha}"


def cross_view_map(queries: Sequence, retrievals: Sequence, skip_no_relevant: bool = True,
                   device=None) -> dict:
    """results[j][i] = mAP of view j's queries against view i's retrieval set
    (i != j; the diagonal 0, as published), plus each pair's full metrics.
    ``queries`` / ``retrievals``: per view, (codes, label matrix)."""
    n = len(queries)
    results = np.zeros((n, n))
    counted = np.zeros((n, n))
    pairs = []
    for j in range(n):
        for i in range(n):
            if i == j:
                continue
            q_codes, q_labels = queries[j]
            r_codes, r_labels = retrievals[i]
            metrics = evaluate_codes(q_codes, r_codes, q_labels, r_labels, device=device,
                                     skip_no_relevant=skip_no_relevant)
            with_all = evaluate_codes(q_codes, r_codes, q_labels, r_labels, device=device,
                                      skip_no_relevant=not skip_no_relevant)
            results[j, i] = metrics["mAP"]
            counted[j, i] = with_all["mAP"] if skip_no_relevant else metrics["mAP"]
            pairs.append({"query_view": j, "retrieval_view": i, "metrics": metrics})
    return {"results": results, "mean": float(results.sum() / (n * (n - 1))),
            "results_counting_no_relevant": counted, "pairs": pairs}


def published_line(results: np.ndarray) -> str:
    """What the published ``Solver.eval`` prints."""
    n = results.shape[0]
    text = "results: " + " - mean: %.3f" % (results.sum() / (n * (n - 1))) + " - detail: "
    for j in range(n):
        for i in range(n):
            if i != j:
                text += "%.3f" % results[j, i] + " , "
    return text
