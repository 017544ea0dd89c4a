"""A dataset checked against its protocol before training (``check_data.py``).

``check_dataset`` reads a dataset as its reader does and returns a
``CheckResult``: the sizes found and a list of ``Problem``s, one per kind of
problem and split, each with its count, an example and its one-line text.
It looks for

* split sizes that differ from the protocol's, and a label width other than
  its own (list files) or rows that are not single-label under a
  single-label protocol;
* entries without any label, and duplicate entries in a split;
* overlap the protocol forbids: queries in the database or in the training
  set, and a training set that is not disjoint from / inside / equal to the
  database as the protocol says;
* missing and unreadable images (every listed image is opened once);
* CIFAR-10 batch files that are not the published ones (torchvision's MD5s).

It never prints: the script does (and draws the progress bar through
``progress``, a wrapper ``progress(iterable, total, desc) -> iterable``).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, List, Optional

import numpy as np

from data.errors import DatasetError
from data.protocols import DISJOINT, EQUAL, INSIDE, LIST_DATASET, Protocol, resolve_protocol
from data.registry import DataRequest, build_splits, dataset_spec

SPLITS = ("train", "database", "queries")


@dataclass(frozen=True)
class Problem:
    kind: str  # size, label width, single label, no label, duplicate, overlap, missing image, ...
    where: str  # the list file(s) or split(s) it concerns
    count: int
    example: str
    text: str  # the one line a user reads

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class SplitView:
    """What the checks read of one split."""
    split: str  # train, database, queries
    name: str  # how messages name it: train.txt, or the split
    size: int
    keys: Optional[list] = None  # each entry's identity (duplicates, overlap); None: not known
    shown: Optional[list] = None  # how an example names each entry
    paths: Optional[list] = None  # image files to open; None: images in memory
    labels: Optional[np.ndarray] = None  # [n] class ids or [n, C] 0/1

    def example(self, index: int) -> str:
        if self.shown is not None:
            return self.shown[index]
        return str(self.keys[index]) if self.keys is not None else f"item {index}"


@dataclass
class CheckResult:
    dataset: str
    protocol: Optional[Protocol]
    found: dict  # split -> size
    problems: List[Problem] = field(default_factory=list)
    images_checked: int = 0
    notes: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        sizes = ", ".join(f"{split} {self.found[split]:,}" for split in SPLITS)
        opened = f"; {self.images_checked:,} images checked" if self.images_checked else ""
        if self.protocol is None:
            what = f"{self.dataset} (no protocol named: sizes and overlap not compared)"
        else:
            what = f"{self.dataset} under protocol {self.protocol.name}"
        if self.ok:
            return f"{what}: no problem found ({sizes}{opened})"
        verdict = "the protocol is not met" if self.protocol else "the data needs fixing"
        kinds = _plural(len(self.problems), "kind of problem", "kinds of problem")
        return f"{what}: {kinds}, {verdict} ({sizes}{opened})"

    def as_dict(self) -> dict:
        return {"dataset": self.dataset, "protocol": self.protocol.name if self.protocol else None,
                "ok": self.ok, "found": dict(self.found),
                "expected": self.protocol.sizes() if self.protocol else None,
                "images_checked": self.images_checked, "notes": list(self.notes),
                "problems": [p.as_dict() for p in self.problems], "summary": self.summary()}


# -- reading the splits ------------------------------------------------------------------

def _list_views(root: str, list_dir: Optional[str]):
    """The three list files as views (label width as the files have it)."""
    from data.imagelist import join_root, read_lists

    lists = read_lists(list_dir or root)
    views = {}
    for split, listed in lists.items():
        views[split] = SplitView(
            split, listed.name, len(listed.entries),
            keys=[os.path.normpath(e) for e in listed.entries],
            shown=[f"line {n}: {e}" for n, e in zip(listed.lines, listed.entries)],
            paths=[join_root(root, e) for e in listed.entries], labels=listed.labels)
    return views, lists


def _labels_of(dataset) -> Optional[np.ndarray]:
    for name in ("label_matrix", "targets", "labels"):
        value = getattr(dataset, name, None)
        if value is not None:
            value = value.cpu().numpy() if hasattr(value, "cpu") else value
            return np.asarray(value)
    return None


def _view(split: str, dataset) -> SplitView:
    """A built split as a view: what its reader exposes of its entries."""
    labels = _labels_of(dataset)
    if hasattr(dataset, "rows") and hasattr(dataset, "images"):  # CIFAR-10 rows of the pool
        rows = [int(r) for r in dataset.rows]
        return SplitView(split, split, len(dataset), keys=rows,
                         shown=[f"image {r} of the pooled batches" for r in rows], labels=labels)
    if hasattr(dataset, "samples"):  # image folders
        paths = [path for path, _ in dataset.samples]
        return SplitView(split, split, len(dataset), keys=paths, paths=paths, labels=labels)
    if hasattr(dataset, "items") and hasattr(dataset, "image_dir"):  # CUB, Stanford Dogs
        names = [name for name, _ in dataset.items]
        return SplitView(split, split, len(dataset), keys=names,
                         paths=[os.path.join(dataset.image_dir, n) for n in names], labels=labels)
    return SplitView(split, split, len(dataset), labels=labels)


# -- the checks -----------------------------------------------------------------------------

def _plural(n: int, word: str, words: Optional[str] = None) -> str:
    return f"{n:,} {word if n == 1 else words or word + 's'}"


def _entries(n: int) -> str:
    return _plural(n, "entry", "entries")


def _sizes(views, proto: Protocol) -> List[Problem]:
    out = []
    for split, expected in proto.sizes().items():
        found = views[split].size
        if expected is None or found == expected:
            continue
        diff = abs(found - expected)
        side = "fewer" if found < expected else "more"
        name = views[split].name
        out.append(Problem("size", name, diff, f"found {found:,}",
                           f"{name}: {_entries(diff)} {side} than {proto.name}'s "
                           f"{expected:,} (found {found:,})"))
    return out


def _width(views, proto: Protocol) -> List[Problem]:
    width = views["train"].labels.shape[1]
    if proto.num_labels is None or width == proto.num_labels:
        return []
    names = ", ".join(views[s].name for s in SPLITS)
    count = sum(v.size for v in views.values())
    return [Problem("label width", names, count, views["train"].example(0),
                    f"{names}: {_entries(count)} with {width} labels, {proto.name} "
                    f"has {proto.num_labels} (e.g. {views['train'].example(0)})")]


def _label_rows(views, proto: Optional[Protocol]) -> List[Problem]:
    out = []
    for view in views.values():
        if view.labels is None or view.labels.ndim != 2:
            continue
        counts = view.labels.sum(1)
        empty = np.flatnonzero(counts == 0)
        if len(empty):
            out.append(Problem("no label", view.name, len(empty), view.example(int(empty[0])),
                               f"{view.name}: {_entries(len(empty))} without any "
                               f"label (e.g. {view.example(int(empty[0]))})"))
        if proto is not None and not proto.multi_label:
            several = np.flatnonzero(counts > 1)
            if len(several):
                out.append(Problem(
                    "single label", view.name, len(several), view.example(int(several[0])),
                    f"{view.name}: {_entries(len(several))} with more than one "
                    f"label; {proto.name} is single-label (e.g. "
                    f"{view.example(int(several[0]))})"))
    return out


def _duplicates(views) -> List[Problem]:
    out = []
    for view in views.values():
        if view.keys is None:
            continue
        counts = Counter(view.keys)
        extra = sum(c - 1 for c in counts.values() if c > 1)
        if not extra:
            continue
        key = next(k for k, c in counts.items() if c > 1)
        first, second = [i for i, k in enumerate(view.keys) if k == key][:2]
        out.append(Problem("duplicate", view.name, extra, view.example(second),
                           f"{view.name}: {_plural(extra, 'duplicate entry', 'duplicate entries')} "
                           f"(e.g. {view.example(first)} and {view.example(second)})"))
    return out


def _first(view: SplitView, wanted: set) -> str:
    return next(view.example(i) for i, k in enumerate(view.keys) if k in wanted)


def _overlap(views, proto: Protocol) -> List[Problem]:
    if any(views[s].keys is None for s in SPLITS):
        return []
    keys = {s: set(views[s].keys) for s in SPLITS}
    train, database, queries = views["train"], views["database"], views["queries"]
    out = []

    def both(a: SplitView, b: SplitView, rule: str):
        common = keys[a.split] & keys[b.split]
        if common:
            out.append(Problem("overlap", f"{a.name} and {b.name}", len(common), _first(a, common),
                               f"{a.name} and {b.name}: {_entries(len(common))} in "
                               f"both (e.g. {_first(a, common)}); {proto.name}'s {rule}"))

    def outside(a: SplitView, b: SplitView, rule: str):
        missing = keys[a.split] - keys[b.split]
        if missing:
            out.append(Problem("overlap", a.name, len(missing), _first(a, missing),
                               f"{a.name}: {_entries(len(missing))} not in {b.name} "
                               f"(e.g. {_first(a, missing)}); {proto.name}'s {rule}"))

    both(queries, database, "queries are not in its database")
    both(queries, train, "queries are not in its training set")
    if proto.train_database == DISJOINT:
        both(train, database, "training set and database are disjoint")
    elif proto.train_database == INSIDE:
        outside(train, database, "training set is part of its database")
    elif proto.train_database == EQUAL:
        outside(train, database, "database is its training set")
        outside(database, train, "database is its training set")
    return out


def _image_check(path: str, decode: Callable) -> Optional[str]:
    if not os.path.isfile(path):
        return "missing"
    return decode(path)


def _images(views, workers: Optional[int], progress) -> tuple:
    """(problems, images opened): every distinct listed image opened once."""
    paths = list(dict.fromkeys(p for v in views.values() if v.paths for p in v.paths))
    if not paths:
        return [], 0
    from data.folders import image_problem  # imported here, not in every thread

    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(functools.partial(_image_check, decode=image_problem), paths)
        if progress is not None:
            results = progress(results, total=len(paths), desc="images")
        why = dict(zip(paths, results))
    out = []
    for view in views.values():
        if not view.paths:
            continue
        missing = [i for i, p in enumerate(view.paths) if why[p] == "missing"]
        bad = [i for i, p in enumerate(view.paths) if why[p] not in (None, "missing")]
        if missing:
            i = missing[0]
            example = f"{view.example(i)} -> {view.paths[i]}" if view.shown else view.paths[i]
            out.append(Problem("missing image", view.name, len(missing), example,
                               f"{view.name}: {_plural(len(missing), 'missing image')} (e.g. "
                               f"{example})"))
        if bad:
            i = bad[0]
            example = f"{view.paths[i]}: {why[view.paths[i]]}"
            out.append(Problem("unreadable image", view.name, len(bad), example,
                               f"{view.name}: {_plural(len(bad), 'unreadable image')} (e.g. "
                               f"{example})"))
    return out, len(paths)


def _cifar_files(files) -> List[Problem]:
    """Batch files whose MD5 differs from torchvision's list of the published ones."""
    import hashlib

    from torchvision.datasets import CIFAR10

    published = dict(CIFAR10.train_list + CIFAR10.test_list)
    published[CIFAR10.meta["filename"]] = CIFAR10.meta["md5"]
    differ = []
    for path in files:
        with open(path, "rb") as f:
            digest = hashlib.md5(f.read()).hexdigest()
        if published.get(os.path.basename(path)) != digest:
            differ.append(os.path.basename(path))
    if not differ:
        return []
    folder = os.path.dirname(files[0])
    return [Problem("checksum", folder, len(differ), differ[0],
                    f"{folder}: {_plural(len(differ), 'batch file')} with another MD5 than "
                    f"the published CIFAR-10's (torchvision's list; e.g. {differ[0]})")]


def check_dataset(dataset: str, request: DataRequest = DataRequest(),
                  protocol_name: Optional[str] = None, images: bool = True,
                  workers: Optional[int] = None,
                  progress: Optional[Callable] = None) -> CheckResult:
    """Check ``dataset`` (a registry name) as ``request`` reads it against
    ``protocol_name`` (default: the dataset's own protocol, if it has one)."""
    kinds = dataset_spec(dataset).kinds
    kind = "multiview" if "multiview" in kinds and len(kinds) == 1 else None
    proto = resolve_protocol(dataset, protocol_name, kind, request.cross_dataset)
    if proto is not None and proto.cross_dataset:
        request = dataclasses.replace(request, cross_dataset=True)
    notes, problems = [], []
    if dataset == LIST_DATASET:
        if request.root is None:
            raise DatasetError("--dataset imagelist needs --data-root DIR: the folder holding "
                               "train.txt, database.txt and test.txt")
        views, _ = _list_views(request.root, request.options.get("list_dir"))
        sources = ()
    else:
        options = {k: v for k, v in request.options.items() if k != "protocol"}
        splits = build_splits(dataset, dataclasses.replace(request, augment=False, options=options),
                              kinds)
        views = {s: _view(s, getattr(splits, s)) for s in SPLITS}
        sources = splits.sources
    if proto is not None:
        problems += _sizes(views, proto)
        if dataset == LIST_DATASET:
            problems += _width(views, proto)
    problems += _label_rows(views, proto)
    problems += _duplicates(views)
    if proto is not None:
        problems += _overlap(views, proto)
    opened = 0
    if images:
        found, opened = _images(views, workers, progress)
        problems += found
    else:
        notes.append("images not opened (--no-images)")
    if dataset.startswith("cifar10") and sources:
        problems += _cifar_files(list(sources))
    return CheckResult(dataset, proto, {s: views[s].size for s in SPLITS}, problems, opened, notes)
