"""Method names -> method classes (``@register_method``), for the scripts
that take several methods at once (e.g. reproduce.py)."""

from __future__ import annotations

from typing import Dict

_REGISTRY: Dict[str, type] = {}


def register_method(name: str):
    def decorate(cls):
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} is registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return decorate


def method_names() -> tuple:
    return tuple(_REGISTRY)


def method_class(name: str) -> type:
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]
