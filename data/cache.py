"""Decode once per run: the deterministic head of a method's transform
preset (decode, RGB, the resize) runs once per image and its output is kept
(in memory, or in a file on disk); the random tail (crop, flip) and the
normalisation run per batch: for a GPU the crops go there as they are
(uint8 for PIL heads, pinned, non-blocking) and the flip, ToTensor and the
normalisation run there; on the CPU crop, flip, layout and float conversion
are one strided copy per item.

A preset (data/transforms.py) is a torchvision ``Compose``; it splits at its
first crop or flip (``split_preset``): every preset of this project resizes
before anything random, so the head is deterministic.  The tail is replayed
on batches with the random numbers drawn exactly as torchvision draws them,
item after item from torch's global generator (``RandomCrop``: the top row,
then the left column, both ``torch.randint``; ``RandomHorizontalFlip``:
``torch.rand(1) < p``), and the same float operations (``ToTensor``: x / 255
in float32; ``Normalize``: (x - mean) / std), so the cached path gives the
uncached path's tensors to the last bit for the same generator state
(tests/test_cache.py, per preset).

Head outputs are PIL images (kept as uint8 HWC arrays: the DCDH, triplet and
DCHN presets) or float tensors (OPQN resizes float tensors: kept as float32
CHW, four times the bytes).  Images whose head output sizes differ (a
shorter-side resize of non-square images) are kept one array each.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch

from data.errors import DatasetError

log = logging.getLogger("hashing")

CACHE_MODES = ("auto", "memory", "disk", "off")
# auto keeps a cache in memory when it takes at most this share of the free memory
MEMORY_SHARE = 0.5


# -- the preset, split ------------------------------------------------------------------------

@dataclass(frozen=True)
class Tail:
    """The random part of a preset and what follows it, as parameters."""
    crop: Optional[tuple] = None  # (height, width)
    center: bool = False  # CenterCrop (else RandomCrop)
    flip: float = 0.0  # probability of a horizontal flip
    to_tensor: bool = False  # uint8 HWC -> float32 CHW / 255
    mean: Optional[tuple] = None
    std: Optional[tuple] = None
    per_batch: bool = False  # one crop and one flip for a whole batch (OPQN as published)


def split_preset(transform) -> Optional[tuple]:
    """(head, Tail) of a preset ``Compose``, or None when its tail holds an
    operation the batch replay does not know (the data is then read uncached)."""
    from torchvision import transforms as T

    ops = list(getattr(transform, "transforms", ()))
    if not ops:
        return None
    cut = next((i for i, op in enumerate(ops) if isinstance(
        op, (T.RandomCrop, T.CenterCrop, T.RandomHorizontalFlip))), None)
    if cut is None:  # no crop or flip (DCHN's raw images): cut before ToTensor / Normalize
        cut = next((i for i, op in enumerate(ops) if isinstance(op, (T.ToTensor, T.Normalize))),
                   len(ops))
    if not all(isinstance(op, (T.Resize, T.ToTensor, T.ToPILImage)) for op in ops[:cut]):
        return None  # a head must be deterministic to be run once
    tail = Tail()
    for op in ops[cut:]:
        if isinstance(op, T.RandomCrop) and op.padding is None and not op.pad_if_needed:
            tail = _replace(tail, crop=tuple(op.size), center=False)
        elif isinstance(op, T.CenterCrop):
            tail = _replace(tail, crop=tuple(op.size), center=True)
        elif isinstance(op, T.RandomHorizontalFlip):
            tail = _replace(tail, flip=float(op.p))
        elif isinstance(op, T.ToTensor):
            tail = _replace(tail, to_tensor=True)
        elif isinstance(op, T.Normalize) and not op.inplace:
            tail = _replace(tail, mean=tuple(op.mean), std=tuple(op.std))
        else:
            return None
    return T.Compose(ops[:cut]), tail


def preset_tail(transform, head) -> Callable:
    """The part of a preset after its ``head`` (``split_preset``), as torchvision
    transforms: applied to a batch tensor it draws one crop and flip per batch."""
    from torchvision import transforms as T

    return T.Compose(list(transform.transforms)[len(head.transforms):])


class BatchTail:
    """A DataLoader's collate_fn that applies a preset's tail to each whole
    batch (the items carry the head's output), as the published OPQN applies
    its training transform to the batch tensor."""

    def __init__(self, tail: Callable):
        self.tail = tail

    def __call__(self, items):
        from torch.utils.data import default_collate

        batch = default_collate(items)
        return [self.tail(batch[0]), *batch[1:]]


def _replace(tail: Tail, **values) -> Tail:
    import dataclasses

    return dataclasses.replace(tail, **values)


class Head:
    """The head of a preset, its output as a NumPy array (what is cached)."""

    def __init__(self, head: Callable):
        self.head = head

    def __call__(self, image):
        out = self.head(image)
        if isinstance(out, torch.Tensor):
            return out.numpy()
        return np.asarray(out, dtype=np.uint8)  # a PIL image: HWC (HW for grey)


# -- the stored images ------------------------------------------------------------------------

class ImageStore:
    """The head outputs of a split, by item: one array [N, ...] when all have
    one shape (in memory or a NumPy memmap on disk), else one array each."""

    def __init__(self, arrays, uniform: bool):
        self.arrays, self.uniform = arrays, uniform

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.arrays[index]

    @property
    def nbytes(self) -> int:
        if self.uniform:
            return int(self.arrays.nbytes)
        return int(sum(a.nbytes for a in self.arrays))


def _collate(items):
    return [image for image, _ in items], [label for _, label in items]


def build_store(dataset, head: Callable, mode: str, folder: Optional[str] = None,
                workers: int = 0, progress: bool = True, name: str = "images") -> tuple:
    """(ImageStore, labels): ``head`` run once over every image of ``dataset``
    (a split with ``with_transform``), in ``workers`` loader processes;
    ``mode`` "disk" writes the arrays to a memmap in ``folder``."""
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    source = dataset.with_transform(Head(head))
    loader = DataLoader(source, batch_size=32, num_workers=workers, collate_fn=_collate)
    arrays: List[np.ndarray] = []
    labels: list = []
    bar = tqdm(total=len(source), desc=f"decoding {name} once", leave=False, disable=not progress)
    for images, batch_labels in loader:
        arrays += images
        labels += batch_labels
        bar.update(len(images))
    bar.close()
    labels = np.stack([np.asarray(label) for label in labels])
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        return ImageStore(arrays, uniform=False), labels
    stacked_shape = (len(arrays), *arrays[0].shape)
    if mode == "disk":
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{name}-{os.getpid()}.npy")
        out = np.lib.format.open_memmap(path, mode="w+", dtype=arrays[0].dtype, shape=stacked_shape)
        for i, a in enumerate(arrays):
            out[i] = a
        out.flush()
        del arrays, out
        mapped = np.load(path, mmap_mode="r")
        os.unlink(path)  # the mapping keeps the data; nothing is left behind after the run
        return ImageStore(mapped, uniform=True), labels
    return ImageStore(np.stack(arrays), uniform=True), labels


# -- the tail on batches ----------------------------------------------------------------------

def draw_tail(tail: Tail, shapes: Sequence[tuple]) -> tuple:
    """Per item, in order, what torchvision draws: (tops, lefts, flips).
    ``shapes`` are the items' (height, width).  ``tail.per_batch``: one draw
    for the whole batch, as torchvision draws for a batch tensor."""
    if tail.per_batch and len(shapes) > 1:
        size = (min(h for h, _ in shapes), min(w for _, w in shapes))
        tops, lefts, flips = draw_tail(tail, [size])
        return tops * len(shapes), lefts * len(shapes), flips * len(shapes)
    tops, lefts, flips = [], [], []
    for h, w in shapes:
        top = left = 0
        if tail.crop is not None:
            th, tw = tail.crop
            if h < th or w < tw:
                raise DatasetError(f"an image of {h}x{w} is smaller than the crop {th}x{tw}")
            if tail.center:
                top, left = int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
            elif (h, w) != (th, tw):
                top = int(torch.randint(0, h - th + 1, size=(1,)).item())
                left = int(torch.randint(0, w - tw + 1, size=(1,)).item())
        tops.append(top)
        lefts.append(left)
        flips.append(bool(tail.flip and torch.rand(1) < tail.flip))
    return tops, lefts, flips


def _crop(a: np.ndarray, tail: Tail, top: int, left: int, chw: bool) -> np.ndarray:
    if tail.crop is None:
        return a
    th, tw = tail.crop
    return a[..., top:top + th, left:left + tw] if chw else a[top:top + th, left:left + tw]


def crop_items(items: Sequence[np.ndarray], tail: Tail, tops, lefts, chw: bool) -> np.ndarray:
    """The crops of a batch's items, stacked (a copy on the host, in the items'
    layout and dtype: what goes to a GPU)."""
    return np.stack([_crop(a, tail, top, left, chw) for a, top, left in zip(items, tops, lefts)])


def host_batch(items: Sequence[np.ndarray], tail: Tail, tops, lefts, flips,
               chw: bool) -> torch.Tensor:
    """The CPU's batch: per item, crop, flip, the CHW layout and the float
    conversion in one strided copy (views until then), then ``normalise``."""
    first = _crop(items[0], tail, tops[0], lefts[0], chw)
    shape = first.shape if chw else (first.shape[2:] or (1,)) + first.shape[:2]
    dtype = np.float32 if tail.to_tensor else first.dtype
    out = np.empty((len(items), *shape), dtype)
    for i, (a, top, left, flip) in enumerate(zip(items, tops, lefts, flips)):
        view = _crop(a, tail, top, left, chw)
        if not chw:
            view = view.transpose(2, 0, 1) if view.ndim == 3 else view[None]
        out[i] = view[..., ::-1] if flip else view
    return normalise(torch.from_numpy(out), tail)


def finish_batch(batch: torch.Tensor, tail: Tail, flips: Sequence[bool], chw: bool) -> torch.Tensor:
    """A GPU's batch (``crop_items`` copied to the device as it is): flip,
    ToTensor and Normalize there: [B, C, H, W] float32."""
    if not chw:
        batch = batch.permute(0, 3, 1, 2) if batch.ndim == 4 else batch[:, None]
    if any(flips):
        mask = torch.as_tensor(flips, device=batch.device)[:, None, None, None]
        batch = torch.where(mask, batch.flip(-1), batch)
    return normalise(batch.to(torch.float32 if tail.to_tensor else batch.dtype,
                              memory_format=torch.contiguous_format), tail)


def normalise(batch: torch.Tensor, tail: Tail) -> torch.Tensor:
    """ToTensor's x / 255, then Normalize's (x - mean) / std: torchvision's
    float operations, in place on a batch of our own."""
    if tail.to_tensor:
        batch.div_(255)
    if tail.mean is not None:
        mean = torch.as_tensor(tail.mean, dtype=batch.dtype, device=batch.device).view(-1, 1, 1)
        std = torch.as_tensor(tail.std, dtype=batch.dtype, device=batch.device).view(-1, 1, 1)
        batch.sub_(mean).div_(std)
    return batch


class CachedSplit:
    """A split whose head ran once: items are replayed through the tail, one
    at a time (``__getitem__``, what the tests compare) or by batches
    (``batch``, what the loader serves)."""

    def __init__(self, store: ImageStore, labels, tail: Tail):
        self.store, self.tail = store, tail
        self.labels = torch.as_tensor(np.asarray(labels))
        first = store[0]
        self.chw = first.dtype != np.uint8  # float heads are CHW tensors; PIL heads HWC arrays

    def __len__(self) -> int:
        return len(self.store)

    def _hw(self, a: np.ndarray) -> tuple:
        return tuple(a.shape[-2:]) if self.chw else tuple(a.shape[:2])

    def batch(self, index, device, travel: Optional[bool] = None) -> torch.Tensor:
        """The items' batch on ``device``.  ``travel``: copy the compact crops
        to the device and finish there (default: on any device but the CPU)."""
        items = [self.store[int(i)] for i in index]
        tops, lefts, flips = draw_tail(self.tail, [self._hw(a) for a in items])
        if not (torch.device(device).type != "cpu" if travel is None else travel):
            return host_batch(items, self.tail, tops, lefts, flips, self.chw)
        # elsewhere the compact items travel (uint8 where the head gives uint8)
        host = torch.from_numpy(crop_items(items, self.tail, tops, lefts, self.chw))
        if torch.device(device).type == "cuda":
            host = host.pin_memory()
        return finish_batch(host.to(device, non_blocking=True), self.tail, flips, self.chw)

    def __getitem__(self, index: int):
        return self.batch([index], "cpu")[0], self.labels[index]


class CachedBatches:
    """Batches of a ``CachedSplit`` in a loader's order (shuffled per epoch from
    its own seeded generator, a share per process under torchrun, or a batch
    sampler's), each on ``device``: the interface of ``TensorBatches``."""

    def __init__(self, split: CachedSplit, batch_size: int, shuffle: bool = False, seed: int = 0,
                 device=None, drop_last: bool = False, rank: int = 0, world_size: int = 1,
                 batch_sampler=None, indexed: bool = False):
        self.split, self.labels = split, split.labels
        self.device = torch.device(device or "cpu")
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.rank, self.world_size, self.batch_sampler = rank, world_size, batch_sampler
        self.indexed = indexed
        self.generator = torch.Generator().manual_seed(seed) if shuffle else None
        self.dataset = split

    def _order(self) -> torch.Tensor:
        n = len(self.split)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        return order[self.rank::self.world_size]

    def __len__(self) -> int:
        if self.batch_sampler is not None:
            return len(self.batch_sampler)
        n = len(range(self.rank, len(self.split), self.world_size))
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        if self.batch_sampler is not None:
            batches = (torch.as_tensor(b) for b in self.batch_sampler)
        else:
            order = self._order()
            stop = min(len(self) * self.batch_size, len(order))
            batches = (order[s:s + self.batch_size] for s in range(0, stop, self.batch_size))
        for index in batches:
            images = self.split.batch(index.tolist(), self.device)
            labels = self.labels[index].to(self.device, non_blocking=True)
            yield (images, labels, index.to(self.device)) if self.indexed else (images, labels)


# -- when to cache ----------------------------------------------------------------------------

def free_memory() -> Optional[int]:
    """Bytes of memory available (Linux /proc/meminfo), else None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def estimate_bytes(dataset, head: Callable) -> int:
    """The cache's size, from the first item's head output."""
    image, _ = dataset.with_transform(Head(head))[0]
    return int(image.nbytes) * len(dataset)


def choose_mode(mode: str, size: int, folder: Optional[str]) -> str:
    """memory, disk or off for a cache of ``size`` bytes (``--cache``)."""
    if mode != "auto":
        if mode == "disk" and not folder:
            raise DatasetError("--cache disk needs --cache-dir DIR (where the decoded images go)")
        return mode
    free = free_memory()
    if free is None or size <= MEMORY_SHARE * free:
        return "memory"
    if folder:
        return "disk"
    log.info(f"the decoded images would take {size / 2 ** 30:.1f} GiB, more than half of the "
             f"free memory: read uncached (--cache disk --cache-dir DIR keeps them on disk)")
    return "off"
