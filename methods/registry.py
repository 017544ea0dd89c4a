"""Method names -> method classes (``@register_method``), and building a
method by name or from a checkpoint file alone.

Nothing keeps a list of methods by hand: the scripts' ``--method`` choices,
``reproduce.py``'s table rows, ``index.py`` and the benchmarks all read this
registry."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

from utils.engine.checkpoint import CheckpointError, load_checkpoint

_REGISTRY: Dict[str, type] = {}


def register_method(name: str):
    def decorate(cls):
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} is registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return decorate


def method_names(data_kind: Optional[str] = None) -> tuple:
    """Registered names (of methods reading ``data_kind`` datasets, when given)."""
    return tuple(n for n, cls in _REGISTRY.items()
                 if data_kind is None or cls.data_kind == data_kind)


def method_class(name: str) -> type:
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def create_method(name: str, config, facts):
    """``method_class(name)(config, facts)``; ``config`` may be a dict of given values."""
    cls = method_class(name)
    if not isinstance(config, cls.Config):
        config = cls.Config(**config)
    return cls(config, facts)


def checkpoint_allow() -> list:
    """Every class a registered method's files need under weights_only loading."""
    allow = []
    for cls in _REGISTRY.values():
        allow += [a for a in cls.checkpoint_allow if a not in allow]
    return allow


@dataclass
class LoadedCheckpoint:
    """A checkpoint file read and recognised: its method class, the config it
    records (or that its published layout implies), its data facts where
    recorded, and the loaded object itself."""
    path: Path
    cls: type
    config: dict
    facts: dict
    data: dict
    obj: object

    def build(self, facts, expect: Optional[dict] = None):
        """The method with this file's weights, on data of ``facts``.  ``expect``
        maps config fields to (value, flag) a user asked for (None: not asked):
        another code length is refused in one line naming the flag; other
        fields replace the file's, and the method's loader says what does not fit."""
        expect = {k: v for k, v in (expect or {}).items() if v[0] is not None}
        held = self.config.get("bits")
        if "bits" in expect and held is not None and held != expect["bits"][0]:
            raise CheckpointError(f"{self.path} holds {held}-bit codes; pass "
                                  f"{self.cls.config_flags(self.config, expect['bits'][1])}")
        given = {**self.config, **{k: value for k, (value, _) in expect.items()}}
        if "pretrained" in {f.name for f in dataclasses.fields(self.cls.Config)}:
            given["pretrained"] = "none"  # the file holds the weights: no initial ones to read
        config = self.cls.make_config(self.data.get("dataset", ""), facts, given)
        method = self.cls(config, facts)
        method.load_file(self.obj, self.path, heads=False)
        return method


def read_checkpoint(path) -> object:
    """A checkpoint file loaded safely (weights_only, with the registered
    methods' allow-lists)."""
    return load_checkpoint(path, allow=checkpoint_allow(), expect_dict=False)


def from_checkpoint(path, method: Optional[str] = None) -> LoadedCheckpoint:
    """Which method and config a checkpoint file holds (ours or a published
    one), or CheckpointError in one line.  ``method``: only that method's."""
    path = Path(path)
    obj = read_checkpoint(path)
    names = [method] if method else list(_REGISTRY)
    if isinstance(obj, dict) and isinstance(obj.get("method"), str) and \
            isinstance(obj.get("config"), dict):
        name = obj["method"]
        if name not in _REGISTRY:
            raise CheckpointError(f"{path} holds a {name} model, which this version does not know")
        if method and name != method:
            raise CheckpointError(f"{path} holds a {name} model, not {method}")
        cls = _REGISTRY[name]
        config = cls.Config.from_dict(obj["config"], str(path)).as_dict()
        facts = obj.get("facts") if isinstance(obj.get("facts"), dict) else {}
        data = obj.get("data") if isinstance(obj.get("data"), dict) else {}
        return LoadedCheckpoint(path, cls, config, facts, data, obj)
    for name in names:
        cls = _REGISTRY[name]
        found = cls.recognise(obj, path)
        if found is not None:
            return LoadedCheckpoint(path, cls, found.config, found.facts, found.data, obj)
    if method:  # another method's file: say whose
        other = next((n for n in _REGISTRY if n != method and
                      _REGISTRY[n].recognise(obj, path) is not None), None)
        if other:
            raise CheckpointError(f"{path} holds a {other} model (its published layout), "
                                  f"not {method}")
    what = f"a {method} checkpoint" if method else \
        f"a checkpoint of any known method ({', '.join(_REGISTRY)})"
    if isinstance(obj, dict):
        keys = ", ".join(map(str, list(obj)[:6])) or "none"
        raise CheckpointError(f"{path} is not {what} (top-level keys: {keys})")
    raise CheckpointError(f"{path} holds a {type(obj).__name__}, not {what}")
