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
from typing import Optional

import torch

from methods.base import DataFacts, Encoded, Method, MethodConfig, Recognised, option
from methods.recipes.opqn import TOPK, OPQNRecipe, recipe_for
from methods.registry import register_method
from models import OrthoPQ, create_network
from models.losses.opqn import opqn_loss
from utils.cli.parser import non_negative_float, positive_float, positive_int
from utils.engine.checkpoint import CheckpointError, add_prefix, state_dict_mismatch, strip_prefix
from utils.errors import UsageError
from utils.retrieval.pq import evaluate_pq, pq_search, quantization_index

PREFIX = "module."
SIZES = {32: 4, 112: 7}  # image side -> side of the last feature map


def describe_mlp(shape) -> str:
    m, d, k = shape
    bits = m * math.log2(k)
    bits = int(bits) if float(bits).is_integer() else round(bits, 2)
    return f"{m} books x {k} words on {m * d}-d features (--len {bits} --num {m} --words {k})"


def check_shape(bits: int, num_books: int, num_words: int) -> None:
    """The published rule len = num * log2(words), words a power of two."""
    if num_books <= 0 or num_words < 2 or num_words & (num_words - 1):
        raise UsageError(f"--num must be positive and --words a power of two, got "
                         f"{num_books} and {num_words}")
    per_book = int(math.log2(num_words))
    if num_books * per_book != bits:
        raise UsageError(f"--len {bits} does not match --num {num_books} --words {num_words}: "
                         f"{num_books} x log2({num_words}) = {num_books * per_book} bits")


def default_feature_dim(bits: int, num_books: int, num_words: int, large: bool) -> int:
    """512 for 32x32 data (516 for 36 bits), num * words for 112x112 and -c."""
    return num_books * num_words if large else (516 if bits == 36 else 512)


def default_books(bits: int, large: bool):
    """A valid (books, words) for a code length: the published 2x256 / 4x64 /
    6x64 / 8x64 shapes where they fit, else the nearest that does."""
    for words in (256, 64, 16, 4):
        per_book = words.bit_length() - 1
        if bits % per_book:
            continue
        books = bits // per_book
        dim = default_feature_dim(bits, books, words, large)
        if dim % books == 0 and words <= dim // books:
            return books, words
    raise UsageError(f"opqn: no books x words gives {bits} bits; pass --num and --words")


@dataclass(frozen=True)
class OPQNConfig(MethodConfig):
    num_books: Optional[int] = option(None, "number of codebooks (default: from the code length)",
                                      type=positive_int, flag="--num")
    num_words: Optional[int] = option(None, "codewords per codebook (a power of two)",
                                      type=positive_int, flag="--words")
    margin: float = option(0.5, "additive angular margin", type=non_negative_float)
    miu: float = option(0.1, "weight of the assignment entropy", type=non_negative_float)
    scale: Optional[float] = option(None, "logit scale (default 20 for 32x32 data, 40 for "
                                          "112x112 and -c)", type=positive_float)
    cross_dataset: bool = option(False, "the cross-dataset model (-c): 112x112 network, "
                                        "num x words features")
    feature_dim: Optional[int] = None  # derived: the published rule
    size: Optional[int] = None  # derived: side of the last feature map (4 or 7)

    def validate(self) -> None:
        super().validate()
        check_shape(self.bits, self.num_books, self.num_words)
        if self.feature_dim % self.num_books:
            raise UsageError(f"{self.feature_dim}-d features do not split into {self.num_books} "
                             f"books; choose another --num")
        if self.num_words > self.feature_dim // self.num_books:
            raise UsageError(f"--words {self.num_words} exceeds the codeword length "
                             f"{self.feature_dim // self.num_books} ({self.feature_dim}-d "
                             f"features / {self.num_books} books): use fewer words or more books")

    def describe(self) -> str:
        return (f"{self.bits} bits = {self.num_books} books x {self.num_words} words, "
                f"{self.feature_dim}-d features")


@register_method("opqn")
class OPQN(Method):
    """Backbone + OrthoPQ head; ``forward(images, labels)`` is the OPQN loss.
    The head and loss run in float32 (also under --amp): cosines and soft
    assignments lose too much in half precision."""

    summary = "orthonormal product quantization network (face retrieval)"
    Config = OPQNConfig
    Recipe = OPQNRecipe
    preset = "opqn"
    # the published code applies its crop and flip to each batch tensor: one draw per batch
    batch_augment = True
    metric_defaults = {"topk": TOPK}  # the published report's k (5 and 10) among them

    def __init__(self, config: OPQNConfig, facts: DataFacts):
        super().__init__(config, facts)
        if facts.img_size is not None and SIZES.get(facts.img_size) != config.size:
            pixels = {4: "32x32", 7: "112x112"}.get(config.size, f"size-{config.size}")
            raise UsageError(f"the model takes {pixels} images, the data is "
                             f"{facts.img_size}x{facts.img_size} (check --dataset, --img-size "
                             f"and -c)")
        self.net = create_network("resnet20_pq", 20, config.feature_dim, 512, config.size)
        self.head = OrthoPQ(config.feature_dim, config.num_books, config.num_words,
                            facts.num_classes, scale=config.scale, margin=config.margin)

    @classmethod
    def config_flags(cls, config, bits_flag="--len") -> str:
        return (f"{bits_flag} {config.get('bits')} --num {config.get('num_books')} "
                f"--words {config.get('num_words')}")

    @classmethod
    def check_given(cls, given) -> None:
        if given.get("num_books") and given.get("num_words"):
            check_shape(cls.given_value(given, "bits"), given["num_books"], given["num_words"])

    @classmethod
    def default_values(cls, dataset, facts, given) -> dict:
        img_size = facts.img_size if facts else None
        if img_size is not None and img_size not in SIZES:
            raise UsageError(f"resnet20_pq takes 32x32 or 112x112 images, not "
                             f"{img_size}x{img_size}")
        large = img_size == 112 or bool(given.get("cross_dataset"))
        bits = cls.given_value(given, "bits")
        books, words = given.get("num_books"), given.get("num_words")
        if books is None or words is None:
            books, words = default_books(bits, large) if books is None and words is None else \
                (books or bits // int(math.log2(words)), words or 2 ** (bits // books))
        return {"num_books": books, "num_words": words, "size": SIZES.get(img_size, 4),
                "feature_dim": default_feature_dim(bits, books, words, large),
                "scale": 40.0 if large else 20.0}

    @classmethod
    def recipe_for(cls, dataset, facts, config) -> OPQNRecipe:
        return recipe_for(dataset, config.size == 7 or config.cross_dataset)

    def forward(self, images, labels):
        features = self.net(images)
        with torch.autocast(features.device.type, enabled=False):
            logits_x, logits_s, probs = self.head(features.float(), labels)
            return opqn_loss(logits_x, logits_s, probs, labels, self.config.miu)

    # -- evaluation: features, indexed and ranked by the asymmetric PQ score -------
    def codes(self, outputs):
        return outputs

    @property
    def mlp(self) -> torch.Tensor:
        return self.head.mlp.detach()

    def rank(self, queries: Encoded, database: Encoded, options, device) -> dict:
        return evaluate_pq(queries.values, database.values, queries.labels, database.labels,
                           self.mlp, device=device, **options.ranking_kwargs())

    def top_k(self, queries: Encoded, database: Encoded, k: int, rows):
        """(indices [n, k], PQ scores [n, k]): score descending, ties by index."""
        mlp = self.mlp.cpu()
        index = quantization_index(database.values.cpu(), mlp)
        scores, order = pq_search(queries.values[rows].cpu(), index, mlp, k)
        return order.numpy(), scores.numpy().round(4)

    def save_encoded(self, path, queries: Encoded, database: Encoded) -> None:
        """The stored-features format (as the fixtures' pqret files): db_index is [M, N]."""
        from utils.retrieval.codes_io import save_npz

        db, mlp = database.values.cpu(), self.mlp.cpu()
        save_npz(path, db_features=db.numpy(), query_features=queries.values.cpu().numpy(),
                 db_labels=database.labels.cpu().numpy(),
                 query_labels=queries.labels.cpu().numpy(), mlp=mlp.numpy(),
                 db_index=quantization_index(db, mlp).T.numpy())

    # -- checkpoints ----------------------------------------------------------------
    def official_state(self, progress=None) -> dict:
        return {"backbone": add_prefix(self.net.state_dict(), PREFIX),
                "mlp": torch.nn.Parameter(self.mlp.clone())}

    def load_official_state(self, checkpoint, path="checkpoint", heads: bool = True) -> None:
        """Backbone (with or without the 'module.' prefix) and ``mlp``, or one
        line saying why the file does not fit."""
        if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("backbone"), dict) \
                or "mlp" not in checkpoint:
            keys = ", ".join(map(str, list(checkpoint)[:6])) if isinstance(checkpoint, dict) \
                else type(checkpoint).__name__
            raise CheckpointError(f"{path} is not an OPQN checkpoint: it needs 'backbone' and "
                                  f"'mlp' (top-level keys: {keys or 'none'})")
        mlp = torch.as_tensor(checkpoint["mlp"]).detach().float()
        c = self.config
        want = (c.num_books, c.feature_dim // c.num_books, c.num_words)
        if mlp.ndim != 3 or tuple(mlp.shape) != want:
            held = describe_mlp(tuple(mlp.shape)) if mlp.ndim == 3 else \
                f"an mlp of shape {tuple(mlp.shape)}"
            raise CheckpointError(f"{path} holds {held}; it does not fit {describe_mlp(want)}")
        state = strip_prefix(checkpoint["backbone"], PREFIX)
        expected = self.net.state_dict()
        if getattr(state.get("bn.weight"), "shape", expected["bn.weight"].shape) != \
                expected["bn.weight"].shape:
            pixels = {4: "32x32", 7: "112x112"}.get(_feature_map_side(state), "other")
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

    def load_resume_state(self, checkpoint) -> None:
        self.head.load_state_dict(checkpoint["head"])

    @classmethod
    def recognise(cls, checkpoint, path):
        if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("backbone"), dict) \
                or "mlp" not in checkpoint:
            return None
        mlp = checkpoint["mlp"]
        if not isinstance(mlp, torch.Tensor) or mlp.ndim != 3:
            return None
        m, d, k = mlp.shape
        if k < 2 or k & (k - 1):
            return None
        size = _feature_map_side(strip_prefix(checkpoint["backbone"], PREFIX)) or 4
        config = {"bits": m * int(math.log2(k)), "num_books": m, "num_words": k,
                  "feature_dim": m * d, "size": size, "scale": 40.0 if size == 7 else 20.0}
        facts = {}
        head = checkpoint.get("head")
        if isinstance(head, dict) and isinstance(head.get("weight"), torch.Tensor):
            facts["num_classes"] = int(head["weight"].shape[1])
        return Recognised(config, facts)

    @classmethod
    def speed_settings(cls) -> list:
        return [("opqn_s4", {"bits": 36, "num_books": 6, "num_words": 64}, DataFacts(530, 32), 256),
                ("opqn_s7", {"bits": 64, "num_books": 8, "num_words": 256}, DataFacts(530, 112),
                 256)]

    def describe(self) -> str:
        c = self.config
        return f"OPQN, {c.describe()}, scale {c.scale}, margin {c.margin}, miu {c.miu}"


def _feature_map_side(state: dict) -> Optional[int]:
    """The side of resnet20_pq's last feature map, from its flattened BatchNorm."""
    weight = state.get("bn.weight")
    if getattr(weight, "ndim", 0) != 1 or weight.shape[0] % 512:
        return None
    side = int(round(math.sqrt(weight.shape[0] / 512)))
    return side if side * side * 512 == weight.shape[0] else None
