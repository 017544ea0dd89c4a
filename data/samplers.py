"""Batch samplers for metric-learning losses that need several images of a
class in a batch (triplet-ranking hashing).

* ``ClassBalancedBatchSampler``: what the published triplet code intends:
  each batch holds ``classes_per_batch`` distinct classes, each with up to
  ``images_per_class`` of its images (all it has if fewer), in random order;
  ``len(training_items) // batch`` batches per epoch.  It works from the
  labels in dataset order (0- or 1-based ids alike), draws from its own
  ``torch.Generator`` (seeded by ``--seed``; saved in every resume file) and
  its ``__len__`` is the number of batches it yields.
* ``RandomBatchSampler``: uniformly random batches of a fixed size (a random
  permutation cut into ``N // batch`` batches): what the published run really
  did, since its sampler was built from labels collected through a shuffled
  loader (``--sampler published``; docs/differences.md says more).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterator, List, Sequence

import torch
from torch.utils.data import Sampler


def dataset_labels(dataset) -> list:
    """The labels of a dataset in index order, without reading its images."""
    for name in ("targets", "labels"):
        labels = getattr(dataset, name, None)
        if labels is not None:
            return [int(v) for v in labels]
    return [int(dataset[i][1]) for i in range(len(dataset))]


class ClassBalancedBatchSampler(Sampler[List[int]]):
    """Under torchrun (``world_size`` > 1) every process draws the same batches
    and keeps every ``world_size``-th one, starting at its ``rank``."""

    def __init__(self, labels: Sequence[int], classes_per_batch: int = 10,
                 images_per_class: int = 8, seed: int = 0, rank: int = 0, world_size: int = 1):
        if classes_per_batch < 1 or images_per_class < 1:
            raise ValueError("classes_per_batch and images_per_class must be positive")
        groups = defaultdict(list)
        for index, label in enumerate(labels):
            groups[int(label)].append(index)
        self.classes = sorted(groups)
        self.members = [torch.tensor(groups[c], dtype=torch.int64) for c in self.classes]
        self.classes_per_batch = classes_per_batch
        self.images_per_class = images_per_class
        self.batch_size = classes_per_batch * images_per_class
        self.num_items = len(labels)
        self.rank, self.world_size = rank, world_size
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return (self.num_items // self.batch_size) // self.world_size

    def __iter__(self) -> Iterator[List[int]]:
        for number in range(len(self) * self.world_size):
            chosen = torch.randperm(len(self.classes), generator=self.generator)
            batch = []
            for c in chosen[:self.classes_per_batch].tolist():
                members = self.members[c]
                pick = torch.randperm(len(members), generator=self.generator)[:self.images_per_class]
                batch.append(members[pick])
            batch = torch.cat(batch)
            batch = batch[torch.randperm(len(batch), generator=self.generator)].tolist()
            if number % self.world_size == self.rank:
                yield batch


class RandomBatchSampler(Sampler[List[int]]):
    def __init__(self, num_items: int, batch_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        self.num_items, self.batch_size = num_items, batch_size
        self.rank, self.world_size = rank, world_size
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return (self.num_items // self.batch_size) // self.world_size

    def __iter__(self) -> Iterator[List[int]]:
        order = torch.randperm(self.num_items, generator=self.generator)
        for b in range(self.rank, len(self) * self.world_size, self.world_size):
            yield order[b * self.batch_size:(b + 1) * self.batch_size].tolist()
