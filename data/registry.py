"""Dataset names -> builders.  A reader module registers each dataset it
provides with ``@register_dataset(name, kinds)``; the scripts list the
names of a kind for their ``--dataset`` choices, so nothing keeps a list of
names in sync by hand.

A builder takes a ``DataRequest`` and returns ``Splits``: the training split
(with the training transform), the same items as the retrieval database
(with the test transform) and the test split as queries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

from torch.utils.data import Dataset

from data.errors import DatasetError


@dataclass(frozen=True)
class DataRequest:
    """What a script asks of a dataset builder."""
    root: Optional[str] = None  # --data-root (None: the dataset's default location)
    img_size: Optional[int] = None  # None: the dataset's native size
    preset: str = "dcdh"  # transform preset (data/transforms.py)
    augment: bool = True  # random training transforms on the training split
    skip_bad_images: bool = False
    cross_dataset: bool = False  # OPQN -c: cross_train/ and cross_test/
    options: Dict[str, Any] = field(default_factory=dict)  # builder specific (synthetic sizes, ...)


@dataclass
class Splits:
    train: Dataset  # training split, training transform
    database: Dataset  # the same items in order, test transform: the retrieval database
    queries: Dataset  # test split, test transform
    num_classes: int  # size of a classifier head (identities of the training split)
    img_size: Optional[int]
    root: Optional[str] = None
    in_memory: bool = False  # tensors already in memory: no loader workers needed

    def describe(self) -> str:
        size = f", {self.img_size}x{self.img_size}" if self.img_size else ""
        return (f"{len(self.database)} training items, {self.num_classes} classes, "
                f"{len(self.queries)} test items{size}")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    kinds: tuple  # what it holds: "faces", "images", "multiview", ...
    builder: Callable[[str, DataRequest], Splits]
    summary: str = ""


_REGISTRY: Dict[str, DatasetSpec] = {}


def register_dataset(name: str, kinds, summary: str = ""):
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)

    def decorate(builder):
        if name in _REGISTRY:
            raise ValueError(f"dataset {name!r} is registered twice")
        _REGISTRY[name] = DatasetSpec(name, kinds, builder, summary)
        return builder
    return decorate


def dataset_names(kind: Optional[str] = None) -> tuple:
    return tuple(n for n, spec in _REGISTRY.items() if kind is None or kind in spec.kinds)


def dataset_spec(name: str) -> DatasetSpec:
    if name not in _REGISTRY:
        raise DatasetError(f"unknown dataset {name!r}: expected one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def build_splits(name: str, request: DataRequest = DataRequest()) -> Splits:
    splits = dataset_spec(name).builder(name, request)
    if len(splits.database) == 0 or len(splits.queries) == 0:
        raise DatasetError(f"{name}: the train or test split is empty")
    return splits
