"""CIFAR-10 in the three protocols of DeepHash-pytorch (``utils/tools.py``,
``cifar_dataset``), read from torchvision's copy of the python batches.

Layout (``--data-root DIR``, default ``data/cifar``; DIR may also be the batch
folder itself)::

    DIR/cifar-10-batches-py/data_batch_1 ... data_batch_5, test_batch, batches.meta

each batch a pickled dict with ``data`` (uint8 [n, 3072], channel-major 32x32)
and ``labels`` (``fine_labels`` is read too, as torchvision does), as
``torchvision.datasets.CIFAR10`` reads them; the reader admits only arrays,
numbers and containers in them (nothing in a pickle runs).  Nothing is
downloaded unless asked (reader option ``download``: torchvision's
``CIFAR10(root, download=True)``, which checks the archive's MD5).

The selection (DeepHash-pytorch's rule, made deterministic): the images of the
five training batches and then the test batch are pooled (60,000, in file
order); for each class 0..9 in turn, its positions in the pool are shuffled
by ``RandomState(seed).permutation`` (one generator drawn class after class;
DeepHash-pytorch draws from numpy's unseeded global generator, so seed s
gives its selection after ``np.random.seed(s)``; seed 0 by default, reader
option ``split_seed``); the first q are queries, the next t training
images, the rest left over.  Each split lists class 0's picks, then class
1's, and so on.

==========  =====  =====  ===========================================  =========================
name        q      t      database                                     sizes (queries/train/db)
==========  =====  =====  ===========================================  =========================
cifar10     100    500    the left-over images                         1,000 / 5,000 / 54,000
cifar10-1   100    500    the training images, then the left-over ones 1,000 / 5,000 / 59,000
cifar10-2   1000   5000   the training images                          10,000 / 50,000 / 50,000
==========  =====  =====  ===========================================  =========================

Images are given to the method's transform preset as 32x32 PIL images, at
224 for presets made for ImageNet-sized input (triplet: DeepHash-pytorch also
resizes CIFAR-10 to 224) and at 32 for the others, unless ``--img-size``
says otherwise.  Labels are class ids.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

import numpy as np
from torch.utils.data import Dataset

from data.errors import DatasetError
from data.layout import one_line
from data.registry import DataRequest, Splits, register_dataset

BATCH_FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
BATCH_FILES = (*TRAIN_BATCHES, TEST_BATCH, META)
DEFAULT_ROOT = os.path.join("data", "cifar")
ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
NUM_CLASSES = 10
SIDE = 32
ROW = 3 * SIDE * SIDE

# per class: (queries, training images), DeepHash-pytorch's test_size / train_size
PER_CLASS: Dict[str, Tuple[int, int]] = {"cifar10": (100, 500), "cifar10-1": (100, 500),
                                         "cifar10-2": (1000, 5000)}
DEFAULT_SPLIT_SEED = 0


def batch_folder(root: str) -> Optional[str]:
    """The folder holding the batches: ROOT/cifar-10-batches-py, or ROOT itself."""
    for folder in (os.path.join(root, BATCH_FOLDER), root):
        if os.path.isfile(os.path.join(folder, TRAIN_BATCHES[0])):
            return folder
    return None


def _missing(root: str) -> DatasetError:
    return DatasetError(
        f"CIFAR-10 not found: expected {os.path.join(root, BATCH_FOLDER)}/ (torchvision's python "
        f"batches: data_batch_1..5, test_batch, batches.meta); pass --download to fetch them "
        f"through torchvision (online), or unpack {ARCHIVE_URL} into {root}")


def download(root: str) -> None:
    """torchvision's download of the archive (MD5-checked) into ROOT/cifar-10-batches-py."""
    try:
        from torchvision.datasets import CIFAR10

        CIFAR10(root, train=True, download=True)
    except Exception as err:  # offline: URLError; a bad archive: RuntimeError
        raise DatasetError(f"cannot download CIFAR-10 into {root}: {one_line(err)} (offline? "
                           f"put a copy of {ARCHIVE_URL}, unpacked, there)") from err


def _unpickle(path: str):
    from data.ddh import BatchUnpickler, RefusedGlobal

    try:
        with open(path, "rb") as f:
            return BatchUnpickler(f, encoding="latin1").load()  # torchvision's encoding
    except FileNotFoundError:
        raise DatasetError(f"CIFAR-10: {path} is missing (expected "
                           f"{', '.join(BATCH_FILES)} beside it)") from None
    except RefusedGlobal as err:
        raise DatasetError(f"refusing to read CIFAR-10 batch {path}: it names {err}, not only "
                           f"arrays, numbers and containers (it was not run)") from None
    except Exception as err:  # unpickling a bad file can raise almost anything
        raise DatasetError(f"cannot read CIFAR-10 batch {path}: {one_line(err)}") from err


def read_batch(path: str) -> Tuple[np.ndarray, np.ndarray]:
    """One batch as (uint8 [n, 32, 32, 3] HWC images, int64 [n] labels)."""
    entry = _unpickle(path)
    if not isinstance(entry, dict) or "data" not in entry or \
            not ("labels" in entry or "fine_labels" in entry):
        keys = sorted(map(str, entry)) if isinstance(entry, dict) else type(entry).__name__
        raise DatasetError(f"CIFAR-10 batch {path} is not a dict with 'data' and 'labels' (it "
                           f"holds {keys})")
    data = np.asarray(entry["data"])
    labels = np.asarray(entry["labels"] if "labels" in entry else entry["fine_labels"])
    n = data.shape[0] if data.ndim else 0
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != ROW:
        raise DatasetError(f"CIFAR-10 batch {path}: data must be uint8 rows of {ROW} values, got "
                           f"{data.dtype} {data.shape}")
    if labels.shape != (n,) or labels.dtype.kind not in "iu":
        raise DatasetError(f"CIFAR-10 batch {path}: {n} images but labels of shape "
                           f"{labels.shape} ({labels.dtype}); expected one class id each")
    if n and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DatasetError(f"CIFAR-10 batch {path}: class ids must lie in 0..9, found "
                           f"{labels.min()}..{labels.max()}")
    return data.reshape(n, 3, SIDE, SIDE).transpose(0, 2, 3, 1), labels.astype(np.int64)


def read_meta(path: str) -> List[str]:
    entry = _unpickle(path)
    names = entry.get("label_names") if isinstance(entry, dict) else None
    if not isinstance(names, list) or len(names) != NUM_CLASSES:
        raise DatasetError(f"CIFAR-10 {path} holds no list of {NUM_CLASSES} 'label_names'")
    return [str(x) for x in names]


def read_cifar(folder: str):
    """(images [60000, 32, 32, 3] uint8, labels [60000], class names, files read):
    the training batches in order, then the test batch."""
    parts = [read_batch(os.path.join(folder, name)) for name in (*TRAIN_BATCHES, TEST_BATCH)]
    classes = read_meta(os.path.join(folder, META))
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return images, labels, classes, tuple(os.path.join(folder, name) for name in BATCH_FILES)


def select(labels: np.ndarray, name: str, seed: int = DEFAULT_SPLIT_SEED,
           per_class: Optional[Tuple[int, int]] = None):
    """(train, database, queries) positions in the pooled images under protocol
    ``name``; ``per_class``: (queries, training images) per class instead of
    the protocol's (to scale it down)."""
    queries_per_class, train_per_class = per_class or PER_CLASS[name]
    rng = np.random.RandomState(seed)
    queries, train, rest = [], [], []
    for label in range(NUM_CLASSES):
        index = np.where(labels == label)[0]
        index = index[rng.permutation(index.shape[0])]
        queries.append(index[:queries_per_class])
        train.append(index[queries_per_class:queries_per_class + train_per_class])
        rest.append(index[queries_per_class + train_per_class:])
    queries, train, rest = (np.concatenate(x) for x in (queries, train, rest))
    database = {"cifar10": rest, "cifar10-1": np.concatenate([train, rest]),
                "cifar10-2": train}[name]
    return train, database, queries


class CifarSplit(Dataset):
    """Rows of the pooled CIFAR-10 images: (transformed 32x32 PIL image, class id)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, rows: np.ndarray, transform):
        self.images, self.rows, self.transform = images, np.asarray(rows), transform
        self.targets = labels[self.rows].tolist()

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        from PIL import Image

        image = Image.fromarray(self.images[self.rows[index]])
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]


def default_side(preset: str) -> int:
    from data.transforms import default_size

    return default_size(preset) if default_size(preset) >= 224 else SIDE


@register_dataset("cifar10-2", ("faces", "images"),
                  "CIFAR-10, DeepHash-pytorch's cifar10-2: 10,000 queries, 50,000 train = database")
@register_dataset("cifar10-1", ("faces", "images"),
                  "CIFAR-10, DeepHash-pytorch's cifar10-1: 1,000 queries, 5,000 train in a "
                  "59,000 database")
@register_dataset("cifar10", ("faces", "images"),
                  "CIFAR-10, DeepHash-pytorch's cifar10: 1,000 queries, 5,000 train, 54,000 "
                  "database (torchvision's batches)")
def build_cifar(name: str, request: DataRequest) -> Splits:
    from data.protocols import resolve_protocol
    from data.transforms import folder_transform

    if request.cross_dataset:
        raise DatasetError(f"cross-dataset evaluation needs an image-folder dataset with "
                           f"cross_train/ and cross_test/, not {name}")
    proto = resolve_protocol(name, request.options.get("protocol"))
    root = request.root or DEFAULT_ROOT
    if request.options.get("download") and batch_folder(root) is None:
        download(root)
    folder = batch_folder(root)
    if folder is None:
        raise _missing(root)
    images, labels, _, files = read_cifar(folder)
    train, database, queries = select(labels, name, request.options.get("split_seed",
                                                                        DEFAULT_SPLIT_SEED),
                                      request.options.get("per_class"))
    if not (len(train) and len(database) and len(queries)):
        raise DatasetError(f"{name}: {len(images)} images in {folder} leave {len(train)} training, "
                           f"{len(database)} database and {len(queries)} query images "
                           f"(expected the 60,000 of CIFAR-10)")
    size = request.img_size or default_side(request.preset)
    test_tf = folder_transform(request.preset, size, train=False)
    train_tf = folder_transform(request.preset, size, train=True) if request.augment else test_tf
    return Splits(CifarSplit(images, labels, train, train_tf),
                  CifarSplit(images, labels, database, test_tf),
                  CifarSplit(images, labels, queries, test_tf), NUM_CLASSES, size, root,
                  sources=files, protocol=proto.name)
