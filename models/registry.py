"""Network names -> builders.  A network file registers its builders with
``@register_network(name, family, ...)``; scripts take their ``--arch``
choices from here, and checkpoints are recognised by the signature each
entry declares, so adding a network means adding its file only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch.nn as nn


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    family: str  # "hashing" (DCDH backbones), "pq", "triplet", "dchn", ...
    builder: Callable[..., nn.Module]
    input_sizes: Optional[tuple] = None  # image sides the network takes (None: any >= 32)
    recognise: Optional[Callable[[dict], bool]] = None  # does a state_dict come from it?
    code_length_key: Optional[str] = None  # state_dict entry whose first dim is the code length

    def code_length(self, state_dict: dict) -> Optional[int]:
        value = state_dict.get(self.code_length_key) if self.code_length_key else None
        return int(value.shape[0]) if getattr(value, "ndim", 0) >= 1 else None


_REGISTRY: Dict[str, NetworkSpec] = {}


def register_network(name: str, family: str, input_sizes=None, recognise=None,
                     code_length_key=None):
    def decorate(builder):
        if name in _REGISTRY:
            raise ValueError(f"network {name!r} is registered twice")
        _REGISTRY[name] = NetworkSpec(name, family, builder, input_sizes, recognise,
                                      code_length_key)
        return builder
    return decorate


def network_names(family: Optional[str] = None) -> tuple:
    return tuple(n for n, s in _REGISTRY.items() if family is None or s.family == family)


def network_spec(name: str) -> NetworkSpec:
    if name not in _REGISTRY:
        raise ValueError(f"unknown network {name!r}; choose one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def create_network(name: str, *args, **kwargs) -> nn.Module:
    return network_spec(name).builder(*args, **kwargs)


def recognise_network(state_dict: dict, family: Optional[str] = None) -> Optional[str]:
    """The registered network a state_dict comes from, or None."""
    for spec in _REGISTRY.values():
        if (family is None or spec.family == family) and spec.recognise is not None:
            if spec.recognise(state_dict):
                return spec.name
    return None
