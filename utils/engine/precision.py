"""Mixed precision and the module preparation a run asks for (channels-last,
compilation, DistributedDataParallel)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional

import torch

from utils.engine.distributed import DistInfo


@dataclass(frozen=True)
class Speed:
    """--amp, --compile, --channels-last."""
    amp: Optional[str] = None  # None, "auto", "bf16" or "fp16"
    compile: bool = False
    channels_last: bool = False


def amp_dtype(device: torch.device, amp) -> Optional[torch.dtype]:
    """The autocast dtype ``--amp`` asks for: ``auto`` (or True): bf16 where the
    device supports it (CPUs, recent GPUs), fp16 otherwise; ``bf16``; ``fp16``
    (which the loop pairs with a gradient scaler); falsy: none."""
    if not amp:
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _channels_last_inputs(module, args):
    """Forward pre-hook: 4-D inputs in the channels-last layout the weights use."""
    return tuple(a.contiguous(memory_format=torch.channels_last)
                 if isinstance(a, torch.Tensor) and a.ndim == 4 else a for a in args)


def prepare(method: torch.nn.Module, device: torch.device, dist_info: DistInfo,
            speed: Speed = Speed()) -> torch.nn.Module:
    """The module ``fit`` trains: ``method`` after the channels-last conversion
    and in-place compilation of its network (state_dict keys stay those of
    the official layout), wrapped in DistributedDataParallel under torchrun."""
    net = method.network
    if speed.channels_last and not getattr(net, "_channels_last_hook", None):
        net.to(memory_format=torch.channels_last)
        net._channels_last_hook = net.register_forward_pre_hook(_channels_last_inputs)
    if speed.compile:
        net.compile()
    if not dist_info.enabled:
        return method
    return torch.nn.parallel.DistributedDataParallel(
        method, device_ids=[device.index] if device.type == "cuda" else None)
