"""Image list files in the layout of DeepHash-pytorch (swuxyj/DeepHash-pytorch,
``utils/tools.py``: ``ImageList``), registered as ``--dataset imagelist``.

Layout (``--data-root DIR``)::

    DIR/train.txt      the training images
    DIR/database.txt   the retrieval database
    DIR/test.txt       the queries
    each line: "<image path> <l_1> ... <l_C>", the path relative to DIR and C 0/1 labels

An image's file is the data root and the listed path joined as strings, as
DeepHash-pytorch joins them (its data path ends with '/'): ``DIR + path``
when DIR ends with a separator, ``DIR + "/" + path`` otherwise.  A listed
path that starts with '/' therefore stays under DIR, as in the published
code (``--data-root /`` reads absolute lists).  The list files may sit
elsewhere than the images (reader option ``list_dir``).

Labels: when every row of the three files holds exactly one 1, the splits are
single-label (class ids, the position of the 1); otherwise they are 0/1 label
matrices [n, C] (``Splits.multi_label``), relevant when sharing a label.
``--protocol NAME`` (reader option ``protocol``, data/protocols.py) names the
protocol the lists follow: their label width is then checked against it.
Images are read with the method's transform preset: the training split with
its training transform, the database and the queries with its test one.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from data.errors import DatasetError
from data.layout import one_line
from data.registry import DataRequest, Splits, register_dataset

# split -> list file, in the order they are read (the first fixes the label width)
LIST_FILES = {"train": "train.txt", "database": "database.txt", "queries": "test.txt"}
LINE_FORMAT = '"<image path> <0/1 labels>"'
_INTEGER = re.compile(r"[+-]?\d+\Z")
_BITS = frozenset(("0", "1"))
SHOWN = 60  # characters of a bad line shown in a message


@dataclass
class ImageList:
    """One list file as written: entries (paths as listed), 0/1 labels, line numbers."""
    file: str  # the list file's path
    entries: List[str]
    labels: np.ndarray  # uint8 [n, C]
    lines: List[int]  # each entry's line number in the file

    @property
    def name(self) -> str:
        return os.path.basename(self.file)

    @property
    def width(self) -> int:
        return int(self.labels.shape[1])


def join_root(root: str, entry: str) -> str:
    """The image file of a listed path: DeepHash-pytorch's string concatenation,
    with the separator it expects at the end of the root added when missing."""
    if root.endswith("/") or root.endswith(os.sep):
        return root + entry
    return root + "/" + entry


def _shown(line: str) -> str:
    text = " ".join(line.split())
    return repr(text if len(text) <= SHOWN else text[:SHOWN] + "...")


def read_list(path: str, width: Optional[int] = None, width_source: str = "") -> ImageList:
    """A list file; ``width``: the label count every line must have (None: the
    first line's), named in messages by ``width_source``."""
    entries, lines, bits = [], [], []
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                parts = line.split()
                if not parts:
                    continue
                labels = parts[1:]
                expected = (f"an image path and {width} 0/1 labels" if width else
                            "an image path and its 0/1 labels")
                bits_only = _BITS.issuperset(labels)
                if not labels or not (bits_only or all(_INTEGER.match(t) for t in labels)):
                    raise DatasetError(f"{path} line {number}: expected {expected}, got "
                                       f"{_shown(line)}")
                if width is None:
                    width, width_source = len(labels), f"the width of {path} line {number}"
                if len(labels) != width:
                    raise DatasetError(f"{path} line {number}: {len(labels)} labels, expected "
                                       f"{width} ({width_source})")
                for position, token in enumerate(labels if not bits_only else (), 1):
                    if token not in _BITS:
                        raise DatasetError(f"{path} line {number}: label {position} is {token}, "
                                           f"expected 0 or 1")
                entries.append(parts[0])
                lines.append(number)
                bits.append("".join(labels))
    except FileNotFoundError:
        raise DatasetError(f"imagelist: {path} is missing (expected the DeepHash-pytorch list "
                           f"files {', '.join(LIST_FILES.values())}: one {LINE_FORMAT} line per "
                           f"image)") from None
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path} is not a text list file: {one_line(err)}") from None
    except OSError as err:
        raise DatasetError(f"cannot read {path}: {one_line(err)}") from err
    if not entries:
        raise DatasetError(f"{path} lists no images (expected one {LINE_FORMAT} line per image)")
    matrix = np.frombuffer("".join(bits).encode("ascii"), dtype=np.uint8) - ord("0")
    return ImageList(path, entries, matrix.reshape(len(entries), width), lines)


def read_lists(list_dir: str, width: Optional[int] = None,
               width_source: str = "") -> Dict[str, ImageList]:
    """The three list files of ``list_dir`` by split (train, database, queries),
    all of one label width (``width``, else train.txt's first line's)."""
    out = {}
    for split, name in LIST_FILES.items():
        out[split] = read_list(os.path.join(list_dir, name), width, width_source)
        width = out[split].width
        width_source = width_source or f"the width of {out[split].file} line {out[split].lines[0]}"
    return out


def single_label(lists: Dict[str, ImageList]) -> bool:
    """Whether every row of every list holds exactly one 1."""
    return all(bool((lst.labels.sum(1) == 1).all()) for lst in lists.values())


class ImageListSplit(Dataset):
    """One list file's images: (image, class id) or (image, float32 0/1 label row)."""

    def __init__(self, root: str, listed: ImageList, single: bool, transform: Optional[Callable]):
        self.root, self.listed, self.single, self.transform = root, listed, single, transform
        self.paths = [join_root(root, entry) for entry in listed.entries]
        if single:
            self.targets = listed.labels.argmax(1).astype(np.int64).tolist()
        else:
            self.label_matrix = listed.labels.astype(np.float32)

    def __len__(self):
        return len(self.paths)

    def label(self, index: int):
        if self.single:
            return self.targets[index]
        import torch

        return torch.from_numpy(self.label_matrix[index])

    def __getitem__(self, index):
        path = self.paths[index]
        try:
            with Image.open(path) as img:
                image = img.convert("RGB")
        except Exception as err:  # PIL reports bad data with many exception types
            raise DatasetError(f"cannot read image {path} ({self.listed.name} line "
                               f"{self.listed.lines[index]}): {one_line(err)}") from err
        if self.transform is not None:
            image = self.transform(image)
        return image, self.label(index)

    def with_transform(self, transform) -> "ImageListSplit":
        return ImageListSplit(self.root, self.listed, self.single, transform)


def _first_images_exist(root: str, lists: Dict[str, ImageList]) -> None:
    """A wrong --data-root fails at once, not in a loader worker later."""
    for listed in lists.values():
        path = join_root(root, listed.entries[0])
        if not os.path.isfile(path):
            raise DatasetError(f"imagelist: {path} ({listed.file} line {listed.lines[0]}) does not "
                               f"exist; listed paths are joined to --data-root as DeepHash-pytorch "
                               f"joins them ({root!r} + path); check --data-root, or run "
                               f"check_data.py for every missing image")


@register_dataset("imagelist", ("faces", "images"),
                  "DeepHash-pytorch list files (train.txt, database.txt, test.txt) under "
                  "--data-root; --protocol names the published one")
def build_imagelist(name: str, request: DataRequest) -> Splits:
    from data.protocols import LIST_DATASET, resolve_protocol
    from data.transforms import default_size, folder_transform

    if request.root is None:
        raise DatasetError(f"--dataset imagelist needs --data-root DIR: the folder holding "
                           f"{', '.join(LIST_FILES.values())} ({LINE_FORMAT} per line)")
    if request.cross_dataset:
        raise DatasetError("cross-dataset evaluation needs an image-folder dataset with "
                           "cross_train/ and cross_test/, not imagelist")
    proto = resolve_protocol(LIST_DATASET, request.options.get("protocol"))
    width = proto.num_labels if proto else None
    lists = read_lists(request.options.get("list_dir") or request.root, width,
                       f"{proto.name} has {width} labels" if proto else "")
    _first_images_exist(request.root, lists)
    single = single_label(lists)
    size = request.img_size or default_size(request.preset)
    test_tf = folder_transform(request.preset, size, train=False)
    train_tf = folder_transform(request.preset, size, train=True) if request.augment else test_tf
    train = ImageListSplit(request.root, lists["train"], single, train_tf)
    database = ImageListSplit(request.root, lists["database"], single, test_tf)
    queries = ImageListSplit(request.root, lists["queries"], single, test_tf)
    return Splits(train, database, queries, lists["train"].width, size, request.root,
                  multi_label=not single, sources=tuple(l.file for l in lists.values()),
                  protocol=proto.name if proto else None)
