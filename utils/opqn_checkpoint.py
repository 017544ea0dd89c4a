"""OPQN checkpoint layout: ``{'backbone': 'module.'-prefixed state_dict,
'mlp': Parameter [M, d, K]}`` (the official files wrap the network in
nn.DataParallel before saving), plus our own top-level keys."""

from __future__ import annotations

import math

import torch

from utils.checkpoint import CheckpointError, strip_prefix

PREFIX = "module."


def describe_mlp(shape) -> str:
    m, d, k = shape
    bits = m * math.log2(k)
    bits = int(bits) if float(bits).is_integer() else round(bits, 2)
    return f"{m} books x {k} words on {m * d}-d features (--len {bits} --num {m} --words {k})"


def opqn_state(net: torch.nn.Module, mlp: torch.Tensor) -> dict:
    """The official part of the checkpoint, exactly as DataParallel runs save it."""
    backbone = {PREFIX + k: v for k, v in net.state_dict().items()}
    return {"backbone": backbone, "mlp": torch.nn.Parameter(mlp.detach().clone())}


def load_opqn(net: torch.nn.Module, checkpoint: dict, num_books: int, num_words: int,
              path="checkpoint") -> torch.Tensor:
    """Load the backbone into ``net`` (with or without the 'module.' prefix) and
    return ``mlp``, or explain in one line why the file does not fit."""
    if not isinstance(checkpoint.get("backbone"), dict) or "mlp" not in checkpoint:
        keys = ", ".join(map(str, list(checkpoint)[:6])) or "none"
        raise CheckpointError(
            f"{path} is not an OPQN checkpoint: it needs 'backbone' and 'mlp' (top-level keys: {keys})")
    mlp = torch.as_tensor(checkpoint["mlp"]).detach().float()
    feature_dim = net.feature_dim
    want = (num_books, feature_dim // num_books, num_words)
    if mlp.ndim != 3 or tuple(mlp.shape) != want:
        held = describe_mlp(tuple(mlp.shape)) if mlp.ndim == 3 else f"an mlp of shape {tuple(mlp.shape)}"
        raise CheckpointError(f"{path} holds {held}; it does not fit {describe_mlp(want)}")
    state = strip_prefix(checkpoint["backbone"], PREFIX)
    expected = net.state_dict()
    if "bn.weight" in state and state["bn.weight"].shape != expected["bn.weight"].shape:
        flat = state["bn.weight"].shape[0]
        size = int(round(math.sqrt(flat / 512))) if flat % 512 == 0 else None
        pixels = {4: "32x32", 7: "112x112"}.get(size, f"size-{size}")
        raise CheckpointError(
            f"{path} holds a network for {pixels} images; it does not fit "
            f"{net.size == 7 and '112x112' or '32x32'} input (check --dataset, --img-size and -c)")
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        first = (missing or unexpected or wrong)[0]
        raise CheckpointError(
            f"{path} does not fit resnet20_pq with {feature_dim}-d features: {len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(wrong)} mis-shaped keys (e.g. {first})")
    net.load_state_dict(state)
    return mlp
