"""``--device``: auto, cpu, cuda, cuda:N, checked against what the machine has."""

from __future__ import annotations

import torch

from utils.errors import UsageError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present; an unavailable CUDA request is a UsageError."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"unknown --device {name!r}; use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name} requested but CUDA is not available; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(f"--device {name} requested but only {torch.cuda.device_count()} "
                         f"CUDA device(s) exist")
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {name}: only cpu and cuda devices are supported")
    return device


def device_for_index(name: str, index: int, flag: str) -> str:
    """The published scripts' GPU index flags (triplet --ngpu, DCHN --gpu_id):
    ``--device`` when given, else CUDA device ``index`` where CUDA exists, else the CPU."""
    if name not in (None, "auto") or not torch.cuda.is_available():
        return name or "auto"
    count = torch.cuda.device_count()
    if index >= count:
        raise UsageError(f"{flag} {index}: this machine has {count} CUDA device(s); pass "
                         f"{flag} 0 (or --device)")
    return f"cuda:{index}"
