"""Dataset names -> builders.  A reader module registers each dataset it
provides with ``@register_dataset(name, kinds)``; the scripts list the
names of a kind for their ``--dataset`` choices, so nothing keeps a list of
names in sync by hand.  A name may be registered once per kind of data
(``synthetic`` is built-in faces for the image methods and built-in
multi-view features for DCHN).

A builder takes a ``DataRequest`` and returns ``Splits``: the training split
(with the training transform), the retrieval database (the training items
with the test transform, or the dataset's own retrieval set) and the test
split as queries.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional

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


@dataclass(frozen=True)
class DataFacts:
    """What a method needs to know of its data to be built."""
    num_classes: int
    img_size: Optional[int] = None  # image side (None: feature vectors)
    input_dim: Optional[int] = None  # feature width (None: images)
    multi_label: bool = False

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping) -> "DataFacts":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


@dataclass
class Splits:
    train: Dataset  # training split, training transform
    database: Dataset  # the retrieval database, test transform
    queries: Dataset  # test split, test transform
    num_classes: int  # size of a classifier head (identities of the training split)
    img_size: Optional[int]
    root: Optional[str] = None
    in_memory: bool = False  # tensors already in memory: no loader workers needed
    input_dim: Optional[int] = None  # feature vectors: their width
    multi_label: bool = False  # label matrices [n, C] instead of class ids
    view_names: tuple = ()  # multi-view data: every view's name
    view: Optional[int] = None  # multi-view data: the view these splits hold
    sources: tuple = ()  # the list / batch files read (checksums in the protocol statement)
    protocol: Optional[str] = None  # the named protocol these splits follow (data/protocols.py)

    def facts(self) -> DataFacts:
        return DataFacts(self.num_classes, self.img_size, self.input_dim, self.multi_label)

    def describe(self) -> str:
        size = f", {self.img_size}x{self.img_size}" if self.img_size else ""
        width = f", {self.input_dim}-d features" if self.input_dim else ""
        view = f"view {self.view} ({self.view_names[self.view]}): " if self.view is not None else ""
        return (f"{view}{len(self.train)} training items, {len(self.database)} database items, "
                f"{self.num_classes} {'labels' if self.multi_label else 'classes'}, "
                f"{len(self.queries)} test items{size}{width}")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    kinds: tuple  # what it holds: "faces", "images", "multiview", ...
    builder: Callable[[str, DataRequest], Splits]
    summary: str = ""
    aliases: tuple = ()  # other spellings the published scripts take (e.g. "vgg")


_REGISTRY: Dict[str, List[DatasetSpec]] = {}


def register_dataset(name: str, kinds, summary: str = "", aliases=()):
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)

    def decorate(builder):
        specs = _REGISTRY.setdefault(name, [])
        if any(set(kinds) & set(s.kinds) for s in specs):
            raise ValueError(f"dataset {name!r} is registered twice for one kind")
        specs.append(DatasetSpec(name, kinds, builder, summary, tuple(aliases)))
        return builder
    return decorate


def canonical_dataset(text: str, kind: Optional[str] = None) -> str:
    """The registry name a user's spelling means: the name itself, any
    capitalisation of it (the published scripts match some names without
    case: OPQN's CFW / VGGFace2, DCHN's xmedia) or an alias (``vgg``)."""
    names = dataset_names(kind)
    if text in names:
        return text
    folded = str(text).lower()
    for name in names:
        spellings = [name] + [a for spec in _REGISTRY[name] for a in spec.aliases
                              if kind is None or kind in spec.kinds]
        if folded in (x.lower() for x in spellings):
            return name
    raise DatasetError(f"unknown dataset {text!r}; choose one of {', '.join(names)}")


def dataset_names(kind: Optional[str] = None) -> tuple:
    return tuple(n for n, specs in _REGISTRY.items()
                 if kind is None or any(kind in s.kinds for s in specs))


def dataset_spec(name: str, kinds=None) -> DatasetSpec:
    """The spec of ``name`` that holds every one of ``kinds`` (any, when None)."""
    wanted = set((kinds,) if isinstance(kinds, str) else kinds or ())
    for spec in _REGISTRY.get(name, []):
        if wanted <= set(spec.kinds):
            return spec
    names = dataset_names(next(iter(wanted))) if len(wanted) == 1 else tuple(_REGISTRY)
    what = f" of {'/'.join(sorted(wanted))} data" if wanted else ""
    raise DatasetError(f"unknown dataset {name!r}{what}: expected one of {', '.join(names)}")


def build_splits(name: str, request: DataRequest = DataRequest(), kinds=None) -> Splits:
    splits = dataset_spec(name, kinds).builder(name, request)
    if len(splits.database) == 0 or len(splits.queries) == 0:
        raise DatasetError(f"{name}: the train or test split is empty")
    return splits
