"""The three loaders of a run: a shuffled training loader, and the database
(training split in index order, test transform) and query loaders.

Data already in memory as tensors (DDH pickles, the built-in faces) is served
by ``TensorBatches``: whole batches by indexing the tensors, kept on the
training device, with no per-item ``__getitem__``, collation or host-to-device
copy per step.  Image files go through DataLoader workers (decoding off the
training thread), with pinned memory and persistent workers on CUDA."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from data.registry import Splits
from utils.engine.rng import seed_worker


class TensorBatches:
    """Batches of in-memory ``images`` [N, ...] and ``labels`` [N] by indexing.

    ``shuffle`` draws a permutation per epoch from ``generator`` (saved in
    resume files as a DataLoader's is); under torchrun each process keeps its
    share of the permutation (the same on every process, being seeded alike);
    ``batch_sampler`` (e.g. class-balanced) gives the batches instead."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                 shuffle: bool = False, seed: int = 0, device=None, drop_last: bool = False,
                 rank: int = 0, world_size: int = 1, batch_sampler=None, indexed: bool = False):
        device = torch.device(device) if device is not None else images.device
        self.images, self.labels = images.to(device), torch.as_tensor(labels).to(device)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.indexed = indexed  # batches are (inputs, labels, item indices)
        self.rank, self.world_size = rank, world_size
        self.batch_sampler = batch_sampler
        self.generator = torch.Generator().manual_seed(seed) if shuffle else None
        self.dataset = self  # what code written for DataLoader reads (len(loader.dataset))

    def _order(self) -> torch.Tensor:
        n = self.images.shape[0]
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        return order[self.rank::self.world_size]

    def __len__(self) -> int:
        if self.batch_sampler is not None:
            return len(self.batch_sampler)
        n = len(range(self.rank, self.images.shape[0], self.world_size))
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        if self.batch_sampler is not None:
            batches = (torch.as_tensor(b, device=self.images.device) for b in self.batch_sampler)
        else:
            order = self._order().to(self.images.device)
            stop = min(len(self) * self.batch_size, len(order))
            batches = (order[s:s + self.batch_size] for s in range(0, stop, self.batch_size))
        for index in batches:
            batch = (self.images[index], self.labels[index])
            yield (*batch, index) if self.indexed else batch


def in_memory_tensors(dataset):
    """(images, labels) of a dataset that holds them as tensors and transforms
    nothing, else None."""
    images, labels = getattr(dataset, "images", None), getattr(dataset, "labels", None)
    if isinstance(images, torch.Tensor) and labels is not None and \
            getattr(dataset, "transform", None) is None:
        return images, torch.as_tensor(labels)
    return None


@dataclass
class Loaders:
    train: Optional[DataLoader]  # None when only evaluating
    database: DataLoader
    queries: DataLoader


def default_workers(splits: Splits) -> int:
    """Loader processes: none for data already in memory; for image files one
    per CPU core (decoding stays off the training thread, and a GPU box's
    cores all decode; with the decoded cache they decode once, at the start)."""
    if splits.in_memory:
        return 0
    return max(1, os.cpu_count() or 1)


class Indexed(Dataset):
    """A dataset whose items carry their index: (input, label, index)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return (*self.dataset[index], index)


@dataclass(frozen=True)
class CacheOptions:
    """--cache and --cache-dir: keep each image's decoded, resized pixels for
    the run (data/cache.py)."""
    mode: str = "off"  # auto, memory, disk or off
    folder: Optional[str] = None  # where "disk" writes its memmaps
    progress: bool = True


def make_loaders(splits: Splits, batch_size: int, device: torch.device, seed: int = 0,
                 workers: Optional[int] = None, train: bool = True, rank: int = 0,
                 world_size: int = 1, eval_batch_size: Optional[int] = None,
                 train_sampler=None, indexed: bool = False,
                 cache: CacheOptions = CacheOptions(), batch_augment: bool = False) -> Loaders:
    """Loaders over ``splits``.  Under torchrun (``world_size`` > 1) each
    process draws its share of every epoch through a DistributedSampler
    (``batch_size`` is then the batch of one process).  ``train_sampler``
    (a batch sampler, e.g. class-balanced) replaces the shuffled order;
    ``indexed``: training batches also carry the items' indices in the
    training split (for methods with per-item state, DPSH's U); ``cache``:
    image files decoded and resized once, then served in batches;
    ``batch_augment``: the training split's random crop and flip drawn once
    per batch (OPQN's published training), not per image."""
    eval_bs = eval_batch_size or batch_size
    memory = [in_memory_tensors(d) for d in (splits.train, splits.database, splits.queries)]
    if splits.in_memory and all(m is not None for m in memory):
        loader = None
        if train:
            n = len(range(rank, len(splits.train), world_size))
            loader = TensorBatches(*memory[0], batch_size, shuffle=train_sampler is None, seed=seed,
                                   device=device, drop_last=n % batch_size == 1, rank=rank,
                                   world_size=world_size, batch_sampler=train_sampler,
                                   indexed=indexed)
        return Loaders(loader, TensorBatches(*memory[1], eval_bs, device=device),
                       TensorBatches(*memory[2], eval_bs, device=device))
    workers = default_workers(splits) if workers is None else workers
    if cache.mode != "off":
        cached = cached_splits(splits, train, cache, workers, batch_augment)
        if cached is not None:
            return cached_loaders(cached, batch_size, eval_bs, device, seed, train, rank,
                                  world_size, train_sampler, indexed)
    cuda = device.type == "cuda"
    common = dict(num_workers=workers, pin_memory=cuda, worker_init_fn=seed_worker,
                  persistent_workers=workers > 0)
    database = DataLoader(splits.database, batch_size=eval_bs, shuffle=False, **common)
    queries = DataLoader(splits.queries, batch_size=eval_bs, shuffle=False, **common)
    loader = None
    if train:
        train_set, collate = batch_augmented(splits.train) if batch_augment else (splits.train,
                                                                                   None)
        train_set = Indexed(train_set) if indexed else train_set
        if collate is not None:
            common = dict(common, collate_fn=collate)
        if train_sampler is not None:
            loader = DataLoader(train_set, batch_sampler=train_sampler, **common)
        else:
            if world_size > 1:
                sampler = DistributedSampler(splits.train, world_size, rank, shuffle=True, seed=seed)
                per_process, order = len(sampler), dict(sampler=sampler)
            else:
                per_process = len(splits.train)
                order = dict(shuffle=True, generator=torch.Generator().manual_seed(seed))
            # a last batch of one sample would break BatchNorm in training mode
            drop_last = per_process % batch_size == 1
            loader = DataLoader(train_set, batch_size=batch_size, drop_last=drop_last,
                                **order, **common)
    return Loaders(loader, database, queries)


def batch_augmented(dataset):
    """(the dataset with its preset's head only, a collate_fn applying the tail
    to each batch); the dataset as it is when its preset does not split."""
    from data.cache import BatchTail, preset_tail, split_preset

    transform = getattr(dataset, "transform", None)
    parts = split_preset(transform)
    if parts is None or not hasattr(dataset, "with_transform"):
        return dataset, None
    head, _ = parts
    return dataset.with_transform(head), BatchTail(preset_tail(transform, head))


def _items_of(dataset):
    """What identifies a split's items (the training split and the database
    built from it share theirs, and so one cache)."""
    for name in ("samples", "items", "listed", "rows", "view"):
        value = getattr(dataset, name, None)
        if value is not None:
            return name, id(value)
    return None


def cached_splits(splits: Splits, train: bool, options: CacheOptions, workers: int,
                  batch_augment: bool = False):
    """(train, database, queries) as ``data.cache.CachedSplit`` (train None
    when not training), or None where a split cannot be cached (a dataset
    without ``with_transform``, a transform the batch replay does not know)."""
    from data.cache import (CachedSplit, _replace, build_store, choose_mode, estimate_bytes,
                            split_preset)

    wanted = [("train", splits.train if train else None), ("database", splits.database),
              ("queries", splits.queries)]
    plans = []
    for name, dataset in wanted:
        if dataset is None:
            plans.append(None)
            continue
        parts = split_preset(getattr(dataset, "transform", None))
        if parts is None or not hasattr(dataset, "with_transform") or _items_of(dataset) is None:
            return None
        plans.append((name, dataset, *parts))
    unique = {}
    for plan in filter(None, plans):
        name, dataset, head, _ = plan
        unique.setdefault((_items_of(dataset), repr(head)), (name, dataset, head))
    size = sum(estimate_bytes(dataset, head) for _, dataset, head in unique.values())
    mode = choose_mode(options.mode, size, options.folder)
    if mode == "off":
        return None
    stores = {key: build_store(dataset, head, mode, options.folder, workers, options.progress,
                               name) for key, (name, dataset, head) in unique.items()}
    out = []
    for plan in plans:
        if plan is None:
            out.append(None)
            continue
        name, dataset, head, tail = plan
        if name == "train" and batch_augment:
            tail = _replace(tail, per_batch=True)
        store, labels = stores[(_items_of(dataset), repr(head))]
        out.append(CachedSplit(store, labels, tail))
    return out


def cached_loaders(cached, batch_size, eval_bs, device, seed, train, rank, world_size,
                   train_sampler, indexed) -> Loaders:
    from data.cache import CachedBatches

    train_split, database, queries = cached
    loader = None
    if train:
        n = len(range(rank, len(train_split), world_size))
        loader = CachedBatches(train_split, batch_size, shuffle=train_sampler is None, seed=seed,
                               device=device, drop_last=n % batch_size == 1, rank=rank,
                               world_size=world_size, batch_sampler=train_sampler,
                               indexed=indexed)
    return Loaders(loader, CachedBatches(database, eval_bs, device=device),
                   CachedBatches(queries, eval_bs, device=device))
