"""FaceScrub and YouTube Faces as the DDH pickled 32x32 batches that DCDH reads.

Layout: ``<root>/train/`` and ``<root>/test/`` each hold pickle files, every one
a ``(data, labels)`` pair: ``data`` has one row of 3*32*32 values per image,
channel-major (all red, then green, then blue values, each 32 rows of 32),
and ``labels`` one integer identity per row, counted from 0.

Preprocessing follows the official DCDH ``get_data``: all batches of a split
are stacked into one float64 array, which is standardised with the split's own
scalar mean and standard deviation (over every value, not per channel), scaled
by 0.1 and clipped to [-1, 1]::

    x = x - x.mean()
    x = x / (x.std() + 1e-5)     # population std, of the centred values
    x = clip(0.1 * x, -1, 1)

The result is cast to float32, as the official loader does per item.

Differences from the official loader, on purpose:

* batches are read in sorted file-name order (``os.listdir`` order, which the
  official code uses, depends on the file system); files whose name starts
  with a dot are not batches and are left out;
* a label is returned as a Python int, so a DataLoader batch of labels has
  shape [B], where the official dataset returns shape [B, 1];
* the transform, if any, receives the normalised float32 tensor [3, 32, 32]
  (the official one received an HWC array and only applied ToTensor).

The batches are pickles, and a pickle can run code when it is loaded: they
are read with an unpickler that admits only what the format holds (NumPy
arrays and scalars, lists, tuples, numbers, strings) and refuses anything
else in one line, without running it.
"""

import os
import pickle
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from data.errors import DatasetError
from data.layout import one_line

IMG_SIZE = 32
ROW_LENGTH = 3 * IMG_SIZE * IMG_SIZE

# dataset key -> (name shown to users, folder name the official DCDH code uses)
DDH_DATASETS = {
    "facescrub": ("FaceScrub", "FaceScrub"),
    "youtube": ("YouTube Faces", "YouTube"),
}
# where the DDH pickles are published (the Data section of the DCDH README)
DDH_SOURCE = "the Data section of https://github.com/mzhang367/DCDH-PyTorch"

def _batch_files(split_dir: str) -> List[str]:
    try:
        names = sorted(os.listdir(split_dir))
    except OSError as err:
        raise DatasetError(f"cannot list {split_dir}/: {one_line(err)}") from err
    paths = [os.path.join(split_dir, name) for name in names if not name.startswith(".")]
    return [path for path in paths if os.path.isfile(path)]


# What a pickled batch may name: NumPy's array / scalar / dtype rebuilders
# (under NumPy 1.x and 2.x module names) and the bytes decoder of protocol-2
# pickles.  Nothing here can run a command.
ALLOWED_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class RefusedGlobal(pickle.UnpicklingError):
    pass


class BatchUnpickler(pickle.Unpickler):
    """Unpickles arrays, numbers and containers; refuses every other class or function."""

    def find_class(self, module, name):
        if (module, name) not in ALLOWED_GLOBALS:
            raise RefusedGlobal(f"{module}.{name}")
        return super().find_class(module, name)


def _read_batch(path: str) -> Tuple[np.ndarray, np.ndarray]:
    """One pickled ``(data, labels)`` pair as ([n, 3072] array, [n] int64)."""
    try:
        with open(path, "rb") as f:
            # The batches were written by Python 2; 'bytes' is how the
            # official loader reads them (Python 3 pickles ignore it).
            obj = BatchUnpickler(f, encoding="bytes").load()
    except RefusedGlobal as err:
        raise DatasetError(f"refusing to read DDH batch {path}: it names {err}, not only the "
                           f"arrays and numbers of a (data, labels) pair (it was not run)") from None
    except Exception as err:  # unpickling a bad file can raise almost anything
        raise DatasetError(f"cannot read DDH batch {path}: {one_line(err)}") from err

    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise DatasetError(
            f"DDH batch {path} is not a (data, labels) pair: it holds {type(obj).__name__}"
            + (f" of length {len(obj)}" if isinstance(obj, (tuple, list)) else "")
        )
    try:
        data = np.asarray(obj[0])
        labels = np.asarray(obj[1])
    except Exception as err:
        raise DatasetError(
            f"DDH batch {path}: data or labels are not arrays: {one_line(err)}"
        ) from err

    if data.dtype.kind not in "biuf" or data.ndim < 1:
        raise DatasetError(
            f"DDH batch {path}: data must be numeric rows of {ROW_LENGTH} values, "
            f"got an array of dtype {data.dtype} and shape {data.shape}"
        )
    n = data.shape[0]
    row = data.size // n if n else 0
    if n and (data.ndim < 2 or row != ROW_LENGTH):
        raise DatasetError(
            f"DDH batch {path}: rows hold {row if data.ndim >= 2 else 1} values, "
            f"expected {ROW_LENGTH} (3x32x32, channel-major)"
        )
    # Labels come as a list, a [n] array or a [n, 1] column.
    if labels.ndim > 2 or (labels.ndim == 2 and labels.shape[1] != 1) or labels.size != n:
        raise DatasetError(
            f"DDH batch {path} holds {n} images but labels of shape {labels.shape}: "
            "expected one label per image"
        )
    labels = labels.reshape(n)
    if labels.dtype.kind == "f" and n and not np.all(labels == np.round(labels)):
        raise DatasetError(f"DDH batch {path}: labels must be integers")
    if labels.dtype.kind not in "iuf" and n:
        raise DatasetError(f"DDH batch {path}: labels must be integers, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if n and labels.min() < 0:
        raise DatasetError(f"DDH batch {path}: labels must be >= 0, found {labels.min()}")
    return data.reshape(n, ROW_LENGTH), labels


def ddh_normalize(x: np.ndarray) -> np.ndarray:
    """The official DCDH normalisation of a whole split, in place on float64.

    Same operations in the same order as the official code, so the float32
    result is bit-identical to what its dataset returns.
    """
    x -= x.mean()
    x /= x.std() + 1e-5
    x *= 0.1
    np.clip(x, -1.0, 1.0, out=x)
    return x.astype(np.float32)


def _stack_split(split_dir: str) -> Tuple[np.ndarray, np.ndarray]:
    paths = _batch_files(split_dir)
    batches = [_read_batch(path) for path in paths]
    n = sum(len(labels) for _, labels in batches)
    if n == 0:
        raise DatasetError(
            f"no images in {split_dir}/: expected DDH pickled batches of (data, labels)"
            + (f" (its {len(paths)} file(s) hold no rows)" if paths else "")
        )
    # Filled batch by batch (rather than concatenated, then cast) to keep the
    # peak memory at one float64 copy of the split.
    x = np.empty((n, ROW_LENGTH), dtype=np.float64)
    start = 0
    for data, labels in batches:
        x[start : start + len(labels)] = data
        start += len(labels)
    return x, np.concatenate([labels for _, labels in batches])


def load_ddh_split(split_dir: str) -> Tuple[np.ndarray, np.ndarray]:
    """All batches of one split: (float32 [n, 3, 32, 32] normalised, int64 [n])."""
    x, labels = _stack_split(split_dir)
    images = ddh_normalize(x).reshape(-1, 3, IMG_SIZE, IMG_SIZE)
    return images, labels


class DDHFaces(Dataset):
    """One split of a DDH pickled dataset; items are (float32 [3, 32, 32], int)."""

    def __init__(self, root: str, split: str = "train", transform: Optional[Callable] = None):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        split_dir = os.path.join(root, split)
        if not os.path.isdir(split_dir):
            raise DatasetError(
                f"DDH split not found: expected {split_dir}/ holding the DDH pickled batches"
            )
        images, labels = load_ddh_split(split_dir)
        self.root = root
        self.split = split
        self.transform = transform
        self.images = torch.from_numpy(images)
        self.labels = torch.from_numpy(labels)
        # Labels are 0-based identity ids; the official code sizes its heads
        # with the count of distinct train labels, which is the same number
        # when ids are 0..C-1, and max + 1 never indexes out of range.
        self.num_classes = int(labels.max()) + 1

    def __len__(self) -> int:
        return self.labels.numel()

    def __getitem__(self, index: int):
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])
