"""The method interface: everything the training loop and the evaluation code
know about a method.

A method is an ``nn.Module`` that owns its networks and losses and answers
five questions:

* ``unpack(batch, device)``: which part of a loader's batch is the input and
  which the supervision (images + class ids, features + label matrices, ...);
* ``forward(inputs, targets)``: the training loss of one batch (so one
  optimizer, one DistributedDataParallel wrapper and one autocast cover
  every parameter the method trains);
* ``embed(inputs)`` and ``codes(outputs)``: what evaluation encodes (binary
  codes, or PQ features);
* ``rank(queries, database, options, device)``: how the database is ranked
  (Hamming distance, or the PQ score) and scored, with the shared metrics;
* ``official_state()`` / ``load_official_state(ckpt, path)``: the model
  entries of its checkpoint in the published layout, and back, with a
  one-line error when a file does not fit.

``utils.engine.loop.fit`` trains any method; ``Method.evaluate`` encodes a
database and queries and ranks them on the training device.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn as nn
from tqdm import tqdm

from utils.engine.precision import autocast
from utils.retrieval.metrics import evaluate_codes
from utils.retrieval.options import MetricOptions


@dataclass
class Encoded:
    """What a method's encoding gives for one split: ``values`` [n, ...] (codes
    or features, on the encoding device) and ``labels`` ([n] ids or [n, C])."""
    values: torch.Tensor
    labels: torch.Tensor
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.values.shape[0])


def class_ids(labels) -> torch.Tensor:
    """Integer ids [n] from a batch of labels [n] or [n, 1] (the DDH loader's
    shape).  A label matrix [n, C] is an error, never silently flattened."""
    labels = torch.as_tensor(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise ValueError(f"expected one class id per item, got labels of shape "
                         f"{tuple(labels.shape)}")
    return labels.long()


def sign_codes(outputs: torch.Tensor) -> torch.Tensor:
    """+1 where the output is > 0, else -1 (int8): the binarisation of every
    Hamming method here (``torch.sign`` would give 0 for an exact 0)."""
    return torch.where(outputs > 0, 1, -1).to(torch.int8)


class Method(nn.Module):
    """Base class of the four methods; subclasses fill in the abstract parts."""

    #: registry name (``methods.create_method``)
    name = ""
    #: the published checkpoint is a bare state_dict (no room for our keys)
    bare_state_dict = False

    def __init__(self):
        super().__init__()
        self.channels_last = False  # set by utils.engine.precision.prepare

    # -- training ---------------------------------------------------------------
    @property
    def network(self) -> nn.Module:
        """The network that encodes inputs (compiled / converted by ``prepare``):
        every method keeps it as ``self.net``."""
        return self.net

    def unpack(self, batch, device):
        """(inputs, targets) of a loader batch, on ``device``."""
        images, labels = batch
        images = images.to(device, non_blocking=True)
        if self.channels_last and images.ndim == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, class_ids(labels).to(device, non_blocking=True)

    def forward(self, inputs, targets) -> torch.Tensor:
        raise NotImplementedError

    # -- evaluation -------------------------------------------------------------
    def embed(self, inputs) -> torch.Tensor:
        """The evaluation output of one batch (the network in eval mode)."""
        return self.network(inputs)

    def codes(self, outputs: torch.Tensor) -> torch.Tensor:
        """What is stored and ranked, from the concatenated outputs."""
        return sign_codes(outputs)

    @torch.inference_mode()
    def encode(self, loader, device, progress: bool = True, desc: str = "encoding",
               dtype: Optional[torch.dtype] = None) -> Encoded:
        """Encode every item of ``loader`` (in its order), kept on ``device``.

        Data in memory (``TensorBatches``) is encoded in the largest chunks
        that fit on a GPU; other loaders in their own batches."""
        was_training = self.training
        self.eval()
        try:
            if hasattr(loader, "images"):
                outputs, labels = self._encode_in_chunks(loader, device, dtype)
            else:
                outputs, labels = [], []
                for batch in tqdm(loader, desc=desc, leave=False, disable=not progress,
                                  file=sys.stderr):
                    inputs, targets = self.unpack(batch, device)
                    with autocast(device, dtype):
                        outputs.append(self.embed(inputs).float())
                    labels.append(targets)
        finally:
            self.train(was_training)
        if not outputs:
            raise ValueError("nothing to encode: the split is empty")
        return Encoded(self.codes(torch.cat(outputs)), torch.cat(labels))

    def _encode_in_chunks(self, loader, device, dtype):
        """In-memory data: on a GPU, chunks as large as it takes (from 4096 items,
        halved after an out-of-memory error); on the CPU the loader's batch
        (host memory is not reclaimed from an out-of-memory kill)."""
        size = 4096 if torch.device(device).type == "cuda" else loader.batch_size
        outputs, labels, start, n = [], [], 0, loader.images.shape[0]
        while start < n:
            chunk = (loader.images[start:start + size], loader.labels[start:start + size])
            try:
                inputs, targets = self.unpack(chunk, device)
                with autocast(device, dtype):
                    outputs.append(self.embed(inputs).float())
            except torch.cuda.OutOfMemoryError:
                if size == 1:
                    raise
                size //= 2
                torch.cuda.empty_cache()
                continue
            labels.append(targets)
            start += size
        return outputs, labels

    def rank(self, queries: Encoded, database: Encoded, options: MetricOptions, device) -> dict:
        """Hamming ranking by default (ties by database index)."""
        return evaluate_codes(queries.values, database.values, queries.labels, database.labels,
                              radius=options.radius, device=device, backend=options.backend,
                              **options.ranking_kwargs())

    def top_k(self, queries: Encoded, database: Encoded, k: int, rows):
        """(indices [n, k], Hamming distances [n, k]) of the first k database
        items of the queries ``rows``, in ranking order (ties by index)."""
        from utils.retrieval.metrics import hamming_distance

        dist = hamming_distance(queries.values[rows].cpu(), database.values.cpu()).long()
        order = torch.sort(dist, dim=1, stable=True).indices[:, :k]
        return order.numpy(), dist.gather(1, order).numpy()

    def evaluate(self, database_loader, query_loader, device, options: MetricOptions,
                 progress: bool = True, dtype: Optional[torch.dtype] = None):
        """(metrics, queries, database): the test split ranked against the database."""
        database = self.encode(database_loader, device, progress, "encoding database", dtype)
        queries = self.encode(query_loader, device, progress, "encoding queries", dtype)
        return self.rank(queries, database, options, device), queries, database

    # -- checkpoints --------------------------------------------------------------
    def official_state(self) -> dict:
        """The model entries of the published checkpoint layout."""
        raise NotImplementedError

    def load_official_state(self, checkpoint: dict, path="checkpoint") -> None:
        """Load what ``official_state`` writes (or the published files), or
        raise CheckpointError saying in one line why the file does not fit."""
        raise NotImplementedError

    def resume_state(self) -> dict:
        """Entries besides the official ones that a continuation needs."""
        return {}

    def epoch_finished(self, epoch: int, loss: float) -> None:
        """Called after each epoch (0-based) with its mean loss, before the
        checkpoints are written (DCHN records its loss history)."""

    def load_resume_state(self, checkpoint: dict) -> None:
        pass

    def info(self) -> dict:
        """Our own keys describing the model (architecture, sizes), stored in
        every checkpoint we write."""
        return {}

    def describe(self) -> str:
        return self.name
