"""The fine-grained image sets of triplet-ranking hashing: CUB-200-2011 and
Stanford Dogs, in the layouts of their official releases, with the published
splits and labels.

``cub`` (``data/CUB_200_2011`` by default)::

    images.txt              "<image_id> <class_dir>/<file>.jpg"
    image_class_labels.txt  "<image_id> <class_id>"      (1-based, kept as published)
    train_test_split.txt    "<image_id> <1|0>"           (1 = train)
    images/<class_dir>/<file>.jpg

``dogs`` (``data/Stanford_Dogs`` by default)::

    train_list.mat, test_list.mat   (or lists/train_list.mat, lists/test_list.mat, as the
                                     official lists.tar may be unpacked)
        'file_list'  N x 1 cell of relative paths,  'labels'  N x 1, 1-based (read 0-based)
    Images/<wnid>-<Name>/<file>.jpg

Item order is the order of ``images.txt`` / the ``.mat`` lists.  Every image
is converted to RGB (the published CUB reader converts only grayscale ones).
"""

from __future__ import annotations

import os
from typing import Callable, List, Optional, Tuple

from PIL import Image
from torch.utils.data import Dataset

from data.errors import DatasetError
from data.layout import one_line
from data.registry import DataRequest, Splits, register_dataset

CUB_FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt")
CUB_LAYOUT = "images.txt, image_class_labels.txt, train_test_split.txt and images/"
DOGS_LAYOUT = "train_list.mat and test_list.mat (or lists/...) and Images/"
TRIPLET_IMG_SIZE = 224


class ListedImages(Dataset):
    """Images listed as (relative path, label) under ``image_dir``."""

    def __init__(self, image_dir: str, items: List[Tuple[str, int]], transform: Optional[Callable]):
        self.image_dir, self.items, self.transform = image_dir, list(items), transform
        self.targets = [label for _, label in self.items]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        name, label = self.items[index]
        path = os.path.join(self.image_dir, name)
        try:
            with Image.open(path) as img:
                image = img.convert("RGB")
        except Exception as err:  # PIL reports bad data with many exception types
            raise DatasetError(f"cannot read image {path}: {one_line(err)}") from err
        if self.transform is not None:
            image = self.transform(image)
        return image, label

    def with_transform(self, transform) -> "ListedImages":
        return ListedImages(self.image_dir, self.items, transform)


def _read_pairs(path: str, what: str) -> dict:
    """``<image_id> <value>`` lines as a dict (ids and values as strings)."""
    pairs = {}
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 2:
                    raise DatasetError(f"{path}, line {number}: expected '<image_id> <{what}>', "
                                       f"got {line.strip()!r}")
                pairs[parts[0]] = parts[1]
    except OSError as err:
        raise DatasetError(f"cannot read {path}: {one_line(err)}") from err
    return pairs


def cub_items(root: str) -> Tuple[List[Tuple[str, int]], List[Tuple[str, int]]]:
    """(train, test) lists of (path under images/, 1-based class id), in images.txt order."""
    for name in (*CUB_FILES, "images"):
        if not os.path.exists(os.path.join(root, name)):
            raise DatasetError(f"CUB-200-2011 not found: {os.path.join(root, name)} is missing "
                               f"(expected {CUB_LAYOUT} in {root}; pass --data-root or "
                               f"--datapath_CUB)")
    names = _read_pairs(os.path.join(root, "images.txt"), "path")
    labels = _read_pairs(os.path.join(root, "image_class_labels.txt"), "class_id")
    split = _read_pairs(os.path.join(root, "train_test_split.txt"), "1|0")
    train, test = [], []
    for image_id, name in names.items():
        if image_id not in labels:
            raise DatasetError(f"{os.path.join(root, 'image_class_labels.txt')} has no label for "
                               f"image {image_id} ({name})")
        try:
            label = int(labels[image_id])
        except ValueError:
            raise DatasetError(f"image_class_labels.txt: class id of image {image_id} is not an "
                               f"integer: {labels[image_id]!r}") from None
        (train if split.get(image_id) == "1" else test).append((name, label))
    return train, test


def _mat_list(path: str):
    from scipy.io import loadmat

    try:
        z = loadmat(path)
    except Exception as err:  # noqa: BLE001 - scipy raises several types for bad files
        raise DatasetError(f"cannot read {path} as a MATLAB file: {one_line(err)}") from err
    for key in ("file_list", "labels"):
        if key not in z:
            raise DatasetError(f"{path} has no '{key}' entry (expected 'file_list' and 'labels', "
                               f"as in the official Stanford Dogs lists)")
    files = [str(entry[0][0]) if getattr(entry[0], "size", 1) else "" for entry in z["file_list"]]
    labels = [int(value[0]) - 1 for value in z["labels"]]  # 1-based in the files, 0-based as published
    if len(files) != len(labels):
        raise DatasetError(f"{path}: {len(files)} files but {len(labels)} labels")
    return list(zip(files, labels))


def dogs_items(root: str):
    """(train, test) lists of (path under Images/, 0-based label)."""
    for folder in ("", "lists"):
        train_mat = os.path.join(root, folder, "train_list.mat")
        test_mat = os.path.join(root, folder, "test_list.mat")
        if os.path.isfile(train_mat) and os.path.isfile(test_mat):
            break
    else:
        raise DatasetError(f"Stanford Dogs not found: {os.path.join(root, 'train_list.mat')} is "
                           f"missing (expected {DOGS_LAYOUT} in {root}; pass --data-root or "
                           f"--datapath_dog)")
    if not os.path.isdir(os.path.join(root, "Images")):
        raise DatasetError(f"Stanford Dogs: {os.path.join(root, 'Images')} is missing "
                           f"(expected {DOGS_LAYOUT} in {root})")
    return _mat_list(train_mat), _mat_list(test_mat)


def _listed_splits(root, image_dir, train, test, request: DataRequest) -> Splits:
    from data.transforms import folder_transform

    size = request.img_size or TRIPLET_IMG_SIZE
    test_tf = folder_transform(request.preset, size, train=False)
    train_tf = folder_transform(request.preset, size, train=True) if request.augment else test_tf
    train_set = ListedImages(image_dir, train, train_tf)
    database = train_set.with_transform(test_tf) if train_tf is not test_tf else train_set
    labels = {label for _, label in train}
    return Splits(train_set, database, ListedImages(image_dir, test, test_tf), len(labels), size,
                  root)


@register_dataset("cub", "images", "CUB-200-2011 (official release layout), 200 bird species",
                  aliases=("CUB_200_2011",))
def build_cub(name: str, request: DataRequest) -> Splits:
    root = request.root or os.path.join("data", "CUB_200_2011")
    train, test = cub_items(root)
    return _listed_splits(root, os.path.join(root, "images"), train, test, request)


@register_dataset("dogs", "images", "Stanford Dogs (train_list.mat / test_list.mat), 120 breeds",
                  aliases=("Stanford_Dogs",))
def build_dogs(name: str, request: DataRequest) -> Splits:
    root = request.root or os.path.join("data", "Stanford_Dogs")
    train, test = dogs_items(root)
    return _listed_splits(root, os.path.join(root, "Images"), train, test, request)
