"""Checkpoint files: safe loading, atomic saving, and the checks that turn a
mismatch between a file and the requested network into one clear sentence.

Layouts (DESIGN.md): DCDH ``{'backbone': state_dict, 'centers': {'centers':
[C, L]}}`` with no key prefix; OPQN ``{'backbone': 'module.'-prefixed
state_dict, 'mlp': [M, d, K]}``.  We add our own top-level keys (args, epoch,
optimizer, metrics, ...) and never rename the official ones.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from utils.cli import atomic_open


class CheckpointError(Exception):
    """A checkpoint that is missing, unreadable, unsafe or of another shape."""


def resolve_checkpoint(name, checkpoint_dir="checkpoint") -> Path:
    """The official scripts take a bare NAME under ./checkpoint; we also take any path."""
    candidates = [Path(checkpoint_dir) / name, Path(name)] if checkpoint_dir else [Path(name)]
    for path in candidates:
        if path.is_file():
            return path
    where = " or ".join(str(p) for p in dict.fromkeys(candidates))
    raise CheckpointError(f"checkpoint not found: looked for {where}")


def load_checkpoint(path) -> dict:
    """``torch.load(..., weights_only=True)`` on the CPU, with one-line errors.

    weights_only refuses any pickled object other than tensors and plain
    containers, so a crafted file cannot run code while loading."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights_only" in str(exc) or "Weights only" in str(exc):
            raise CheckpointError(
                f"refusing to load {path}: it holds pickled objects other than tensors and "
                f"plain containers (loaded with weights_only=True; only load files you trust "
                f"with other tools)") from None
        raise CheckpointError(f"{path} is not a readable checkpoint: {_first_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - garbage bytes fail in many ways inside unpickling
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated, corrupt or not written by "
            f"torch.save): {_first_line(exc)}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict")
    return obj


def _first_line(exc) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def save_checkpoint(obj: dict, path) -> None:
    """torch.save through a temporary file renamed over ``path``: an interrupted
    save never leaves a broken file in place of a good one."""
    with atomic_open(path) as f:
        torch.save(obj, f)


def strip_prefix(state_dict: dict, prefix: str = "module.") -> dict:
    """Drop a leading ``prefix`` (nn.DataParallel's 'module.') from every key that has it."""
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state_dict.items()}


# -- DCDH hashing networks --------------------------------------------------------

# The entry whose first dimension is the code length, per architecture.
_CODE_LENGTH_KEY = {"dfhnet": "hash_layer.1.weight", "sphere": "bn_last.weight",
                    "resnet": "fc.1.weight"}


def guess_hashing_arch(state_dict: dict) -> str | None:
    """Which of our hashing networks a backbone state_dict comes from."""
    if "face_features_layer.0.weight" in state_dict:
        return "dfhnet"
    if "bn_last.weight" in state_dict and "layer1.0.weight" in state_dict:
        units = 1 + max(int(k.split(".")[1]) for k in state_dict if k.startswith("layer3."))
        return "sphere64" if units - 3 == 16 else "sphere20"
    if "conv1.weight" in state_dict and "fc.1.weight" in state_dict:
        if "layer1.0.conv3.weight" in state_dict:
            return "resnet50"
        blocks = {int(k.split(".")[1]) for k in state_dict if k.startswith("layer3.")}
        return "resnet34" if len(blocks) == 6 else "resnet18"
    return None


def code_length_of(state_dict: dict) -> int | None:
    arch = guess_hashing_arch(state_dict)
    if arch is None:
        return None
    key = _CODE_LENGTH_KEY[arch.rstrip("0123456789")]
    return int(state_dict[key].shape[0])


def load_hashing_backbone(net: torch.nn.Module, checkpoint: dict, arch: str, hash_bits: int,
                          path="checkpoint") -> None:
    """Load ``checkpoint['backbone']`` into ``net``, or explain in one line why
    it does not fit (another code length, another architecture, missing keys)."""
    if "backbone" not in checkpoint or not isinstance(checkpoint["backbone"], dict):
        keys = ", ".join(map(str, list(checkpoint)[:6])) or "none"
        raise CheckpointError(
            f"{path} is not a DCDH checkpoint: no 'backbone' state_dict (top-level keys: {keys})")
    state = strip_prefix(checkpoint["backbone"])  # also accept DataParallel-saved files
    found_arch = guess_hashing_arch(state)
    if found_arch is not None and found_arch != arch:
        raise CheckpointError(
            f"{path} holds a {found_arch} network, not {arch}; pass --arch {found_arch}")
    found_bits = code_length_of(state)
    if found_bits is not None and found_bits != hash_bits:
        raise CheckpointError(
            f"{path} holds {found_bits}-bit codes; pass --len {found_bits}")
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        detail = "; ".join(part for part in (
            f"missing {len(missing)} keys (e.g. {missing[0]})" if missing else "",
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})" if unexpected else "",
            f"{len(wrong)} keys of another shape (e.g. {wrong[0]}: "
            f"{tuple(state[wrong[0]].shape)} vs {tuple(expected[wrong[0]].shape)})" if wrong else "",
        ) if part)
        raise CheckpointError(f"{path} does not fit {arch} with --len {hash_bits}: {detail}")
    net.load_state_dict(state)
