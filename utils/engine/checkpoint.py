"""Checkpoint files: safe loading, atomic saving, finding the file a flag
names, and the one sentence that says why a state_dict does not fit a network.

What goes *into* a checkpoint (the official layout of each method) is the
method's business (methods/); this module only moves dicts to and from disk.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Iterable, Optional

import torch

from utils.atomic import atomic_open
from utils.errors import UserError


class CheckpointError(UserError):
    """A checkpoint that is missing, unreadable, unsafe or of another shape."""


def resolve_checkpoint(name, checkpoint_dir="checkpoint") -> Path:
    """The official scripts take a bare NAME under ./checkpoint; we also take any path."""
    candidates = [Path(checkpoint_dir) / name, Path(name)] if checkpoint_dir else [Path(name)]
    for path in candidates:
        if path.is_file():
            return path
    where = " or ".join(str(p) for p in dict.fromkeys(candidates))
    raise CheckpointError(f"checkpoint not found: looked for {where}")


def load_checkpoint(path, allow: Iterable = (), expect_dict: bool = True):
    """``torch.load(..., weights_only=True)`` on the CPU, with one-line errors.

    weights_only refuses any pickled object other than tensors and plain
    containers, so a crafted file cannot run code while loading.  ``allow``
    names the few extra classes a published format needs (e.g.
    ``argparse.Namespace`` in DCHN files), and nothing else."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(list(allow)):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # a refused class names a GLOBAL; anything else is a damaged or foreign file
        if "GLOBAL" in str(exc) or "global" in str(exc).split("Check the documentation")[0]:
            raise CheckpointError(
                f"refusing to load {path}: it holds pickled objects other than tensors and "
                f"plain containers (loaded with weights_only=True; only load files you trust "
                f"with other tools)") from None
        raise CheckpointError(f"{path} is not a readable checkpoint: {_reason(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - garbage bytes fail in many ways inside unpickling
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated, corrupt or not written by "
            f"torch.save): {_reason(exc)}") from None
    if expect_dict and not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict")
    return obj


def _reason(exc) -> str:
    """The cause of a load failure in one line, without torch's advice to load
    the file with weights_only=False (never a fix for a file one cannot trust)."""
    text = str(exc).strip()
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation")[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or "weights_only" in lines[0]:
        return type(exc).__name__
    return lines[0][:200]


def save_checkpoint(obj, path) -> None:
    """torch.save through a temporary file renamed over ``path``: an interrupted
    save never leaves a broken file in place of a good one."""
    with atomic_open(path) as f:
        torch.save(obj, f)


def strip_prefix(state_dict: dict, prefix: str = "module.") -> dict:
    """Drop a leading ``prefix`` (nn.DataParallel's 'module.') from every key that has it."""
    return {k[len(prefix):] if isinstance(k, str) and k.startswith(prefix) else k: v
            for k, v in state_dict.items()}


def add_prefix(state_dict: dict, prefix: str = "module.") -> dict:
    return {prefix + k: v for k, v in state_dict.items()}


def load_network(net, state: dict, path, path_arch, arch: str, path_bits, bits: int) -> None:
    """``state`` into ``net`` (an ``arch`` network of ``bits`` bits), after
    checking what the file holds (``path_arch``, ``path_bits``: None where
    unknown) and every key and shape: one line naming the flag otherwise."""
    if path_arch is not None and path_arch != arch:
        raise CheckpointError(f"{path} holds a {path_arch} network, not {arch}; "
                              f"pass --arch {path_arch}")
    if path_bits is not None and path_bits != bits:
        raise CheckpointError(f"{path} holds {path_bits}-bit codes; pass --len {path_bits}")
    problem = state_dict_mismatch(net.state_dict(), state)
    if problem:
        raise CheckpointError(f"{path} does not fit {arch} with --len {bits}: {problem}")
    net.load_state_dict(state)


def load_with_classifier(net, state: dict, path, what: str, weight: str, prefix: str,
                         heads: bool, num_classes: int) -> None:
    """``state`` into ``net``, whose classifier (keys under ``prefix``, its
    matrix ``weight``) may be of another data set's classes: without
    ``heads`` (evaluation: codes need no classifier) it is left as it is,
    else one line naming the class counts."""
    expected = net.state_dict()
    classes = state.get(weight)
    other_classes = getattr(classes, "shape", None) != expected[weight].shape
    if other_classes and not heads:
        state = {k: v for k, v in state.items() if not k.startswith(prefix)}
        expected = {k: v for k, v in expected.items() if not k.startswith(prefix)}
    elif other_classes and getattr(classes, "ndim", 0) == 2:
        raise CheckpointError(f"{path} holds a classifier of {classes.shape[0]} classes, the "
                              f"data has {num_classes}; check --dataset")
    problem = state_dict_mismatch(expected, state)
    if problem:
        raise CheckpointError(f"{path} does not fit {what}: {problem}")
    net.load_state_dict(state, strict=not other_classes)


def state_dict_mismatch(expected: dict, found: dict) -> Optional[str]:
    """None when ``found`` has exactly the keys and shapes of ``expected``;
    otherwise a short description of what differs (counts and one example)."""
    import torch

    loose = [k for k, v in found.items() if not isinstance(v, torch.Tensor)]
    if loose:  # a crafted file: numbers or strings where weights belong
        return f"{len(loose)} entries are not tensors (e.g. {loose[0]!r})"
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    wrong = [k for k in expected if k in found
             and tuple(found[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or wrong):
        return None
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} keys (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
    if wrong:
        k = wrong[0]
        parts.append(f"{len(wrong)} keys of another shape (e.g. {k}: "
                     f"{tuple(found[k].shape)} vs {tuple(expected[k].shape)})")
    return "; ".join(parts)
