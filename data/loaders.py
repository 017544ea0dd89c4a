"""The three loaders of a run: a shuffled training loader, and the database
(training split in index order, test transform) and query loaders."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from data.registry import Splits
from utils.engine.rng import seed_worker


@dataclass
class Loaders:
    train: Optional[DataLoader]  # None when only evaluating
    database: DataLoader
    queries: DataLoader


def default_workers(splits: Splits) -> int:
    """Loader processes: none for data already in memory; for image files one
    per CPU core up to 8, so decoding stays off the training thread."""
    if splits.in_memory:
        return 0
    return max(1, min(8, (os.cpu_count() or 1)))


def make_loaders(splits: Splits, batch_size: int, device: torch.device, seed: int = 0,
                 workers: Optional[int] = None, train: bool = True, rank: int = 0,
                 world_size: int = 1, eval_batch_size: Optional[int] = None,
                 train_sampler=None) -> Loaders:
    """Loaders over ``splits``.  Under torchrun (``world_size`` > 1) each
    process draws its share of every epoch through a DistributedSampler
    (``batch_size`` is then the batch of one process).  ``train_sampler``
    (a batch sampler, e.g. class-balanced) replaces the shuffled order."""
    workers = default_workers(splits) if workers is None else workers
    cuda = device.type == "cuda"
    common = dict(num_workers=workers, pin_memory=cuda, worker_init_fn=seed_worker,
                  persistent_workers=workers > 0)
    eval_bs = eval_batch_size or batch_size
    database = DataLoader(splits.database, batch_size=eval_bs, shuffle=False, **common)
    queries = DataLoader(splits.queries, batch_size=eval_bs, shuffle=False, **common)
    loader = None
    if train:
        if train_sampler is not None:
            loader = DataLoader(splits.train, batch_sampler=train_sampler, **common)
        else:
            if world_size > 1:
                sampler = DistributedSampler(splits.train, world_size, rank, shuffle=True, seed=seed)
                per_process, order = len(sampler), dict(sampler=sampler)
            else:
                per_process = len(splits.train)
                order = dict(shuffle=True, generator=torch.Generator().manual_seed(seed))
            # a last batch of one sample would break BatchNorm in training mode
            drop_last = per_process % batch_size == 1
            loader = DataLoader(splits.train, batch_size=batch_size, drop_last=drop_last,
                                **order, **common)
    return Loaders(loader, database, queries)
