"""OPQN as a method: ``resnet20_pq`` features, the orthonormal PQ head and its
loss (``models/losses/opqn.py``); the database is stored as one codeword index
per book and ranked by the asymmetric PQ score (``utils/retrieval/pq.py``).

Checkpoint (the published layout, as nn.DataParallel runs save it):
``{'backbone': state_dict with every key prefixed 'module.', 'mlp':
Parameter[M, D/M, K]}``; files with or without the prefix load.  The class
proxies of the head are not in the published file: we store them under
``head`` so that training can resume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from methods.base import Encoded, Method
from methods.registry import register_method
from models import OrthoPQ, resnet20_pq
from models.losses.opqn import opqn_loss
from utils.engine.checkpoint import CheckpointError, add_prefix, state_dict_mismatch, strip_prefix
from utils.errors import UsageError
from utils.retrieval.pq import evaluate_pq

PREFIX = "module."


@dataclass(frozen=True)
class PQConfig:
    """One model: code length, books, words and the derived shapes."""
    bits: int
    num_books: int
    num_words: int
    feature_dim: int
    size: int  # side of the last feature map: 4 for 32x32 input, 7 for 112x112
    scale: float

    def describe(self) -> str:
        return (f"{self.bits} bits = {self.num_books} books x {self.num_words} words, "
                f"{self.feature_dim}-d features")

    def as_dict(self) -> dict:
        return {"len": self.bits, "num": self.num_books, "words": self.num_words,
                "feature_dim": self.feature_dim, "size": self.size, "scale": self.scale}

    @classmethod
    def make(cls, bits: int, num_books: int, num_words: int, img_size: int,
             cross_dataset: bool = False, scale: float = None) -> "PQConfig":
        """The published rules, checked: len = num * log2(words); feature_dim
        512 for 32x32 data (516 for 36 bits), num * words for 112x112 data and
        cross-dataset runs."""
        if img_size not in (32, 112):
            raise UsageError(f"resnet20_pq takes 32x32 or 112x112 images, not {img_size}x{img_size}")
        if num_books <= 0 or num_words < 2 or num_words & (num_words - 1):
            raise UsageError(f"--num must be positive and --words a power of two, got "
                             f"{num_books} and {num_words}")
        per_book = int(math.log2(num_words))
        if num_books * per_book != bits:
            raise UsageError(f"--len {bits} does not match --num {num_books} --words {num_words}: "
                             f"{num_books} x log2({num_words}) = {num_books * per_book} bits")
        large = img_size == 112 or cross_dataset
        feature_dim = num_books * num_words if large else (516 if bits == 36 else 512)
        if feature_dim % num_books:
            raise UsageError(f"{feature_dim}-d features do not split into {num_books} books; "
                             f"choose another --num")
        if num_words > feature_dim // num_books:
            raise UsageError(f"--words {num_words} exceeds the codeword length "
                             f"{feature_dim // num_books} ({feature_dim}-d features / {num_books} "
                             f"books): use fewer words or more books")
        return cls(bits, num_books, num_words, feature_dim, 7 if img_size == 112 else 4,
                   scale or (40.0 if large else 20.0))


def describe_mlp(shape) -> str:
    m, d, k = shape
    bits = m * math.log2(k)
    bits = int(bits) if float(bits).is_integer() else round(bits, 2)
    return f"{m} books x {k} words on {m * d}-d features (--len {bits} --num {m} --words {k})"


@register_method("opqn")
class OPQN(Method):
    """Backbone + OrthoPQ head; ``forward(images, labels)`` is the OPQN loss.
    The head and loss run in float32 (also under --amp): cosines and soft
    assignments lose too much in half precision."""

    def __init__(self, config: PQConfig, num_classes: int, margin: float = 0.5, miu: float = 0.1):
        super().__init__()
        self.config, self.miu = config, miu
        self.net = resnet20_pq(20, config.feature_dim, 512, config.size)
        self.head = OrthoPQ(config.feature_dim, config.num_books, config.num_words, num_classes,
                            scale=config.scale, margin=margin)

    def forward(self, images, labels):
        features = self.net(images)
        with torch.autocast(features.device.type, enabled=False):
            logits_x, logits_s, probs = self.head(features.float(), labels)
            return opqn_loss(logits_x, logits_s, probs, labels, self.miu)

    def optimizer(self, recipe, lr: float) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=lr, momentum=recipe.momentum,
                               weight_decay=recipe.weight_decay)

    # -- evaluation: features, indexed and ranked by the asymmetric PQ score -------
    def codes(self, outputs):
        return outputs

    def rank(self, queries: Encoded, database: Encoded, options, device) -> dict:
        return evaluate_pq(queries.values, database.values, queries.labels, database.labels,
                           self.head.mlp.detach(), device=device, **options.ranking_kwargs())

    def top_k(self, queries: Encoded, database: Encoded, k: int, rows):
        """(indices [n, k], PQ scores [n, k]): score descending, ties by index."""
        from utils.retrieval.pq import pq_scores, quantization_index

        mlp = self.head.mlp.detach().cpu()
        index = quantization_index(database.values.cpu(), mlp)
        scores = pq_scores(queries.values[rows].cpu(), index, mlp)
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
        return order.numpy(), scores.gather(1, order).numpy().round(4)

    # -- checkpoints ----------------------------------------------------------------
    def official_state(self) -> dict:
        return {"backbone": add_prefix(self.net.state_dict(), PREFIX),
                "mlp": torch.nn.Parameter(self.head.mlp.detach().clone())}

    def load_official_state(self, checkpoint: dict, path="checkpoint") -> None:
        """Backbone (with or without the 'module.' prefix) and ``mlp``, or one
        line saying why the file does not fit."""
        if not isinstance(checkpoint.get("backbone"), dict) or "mlp" not in checkpoint:
            keys = ", ".join(map(str, list(checkpoint)[:6])) or "none"
            raise CheckpointError(f"{path} is not an OPQN checkpoint: it needs 'backbone' and "
                                  f"'mlp' (top-level keys: {keys})")
        mlp = torch.as_tensor(checkpoint["mlp"]).detach().float()
        c = self.config
        want = (c.num_books, c.feature_dim // c.num_books, c.num_words)
        if mlp.ndim != 3 or tuple(mlp.shape) != want:
            held = describe_mlp(tuple(mlp.shape)) if mlp.ndim == 3 else \
                f"an mlp of shape {tuple(mlp.shape)}"
            raise CheckpointError(f"{path} holds {held}; it does not fit {describe_mlp(want)}")
        state = strip_prefix(checkpoint["backbone"], PREFIX)
        expected = self.net.state_dict()
        if "bn.weight" in state and state["bn.weight"].shape != expected["bn.weight"].shape:
            flat = state["bn.weight"].shape[0]
            size = int(round(math.sqrt(flat / 512))) if flat % 512 == 0 else None
            pixels = {4: "32x32", 7: "112x112"}.get(size, f"size-{size}")
            raise CheckpointError(
                f"{path} holds a network for {pixels} images; it does not fit "
                f"{'112x112' if c.size == 7 else '32x32'} input (check --dataset, --img-size and -c)")
        problem = state_dict_mismatch(expected, state)
        if problem:
            raise CheckpointError(f"{path} does not fit resnet20_pq with {c.feature_dim}-d "
                                  f"features: {problem}")
        self.net.load_state_dict(state)
        with torch.no_grad():
            self.head.mlp.copy_(mlp)

    def resume_state(self) -> dict:
        return {"head": self.head.state_dict()}

    def load_resume_state(self, checkpoint: dict) -> None:
        self.head.load_state_dict(checkpoint["head"])

    def info(self) -> dict:
        return {"config": self.config.as_dict()}

    def describe(self) -> str:
        return f"OPQN, {self.config.describe()}, scale {self.config.scale}"
