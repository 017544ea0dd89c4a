"""Dataset readers: one entry point, :func:`build_datasets`, for every script.

=========  ==============================================  ====================
dataset    default location                                 reader
=========  ==============================================  ====================
facescrub  data/facescrub (or the official ./FaceScrub)     DDH pickles (ddh.py)
youtube    data/youtube (or the official ./YouTube)         DDH pickles (ddh.py)
vggface2   data/vggface2 (or ./vggface2, ./vgg_face2)        ImageFolder (folders.py)
folder     --data-root DIR, required                        ImageFolder (folders.py)
synthetic  built in, nothing to download                    synthetic.py
=========  ==============================================  ====================

FaceScrub and YouTube Faces also load from image folders: the official OPQN
code reads ``data/facescrub/train/<identity>/*.png`` (the same 32x32 faces as
images) with its own 32-pixel transforms, so when the train folder of these
datasets holds identity folders instead of pickle files, that is what is used.

Problems a user can fix raise :class:`DatasetError` with a one-line message.
"""

import os
from typing import Any, Dict, Optional, Tuple

from torch.utils.data import Dataset

from data.ddh import DDH_DATASETS, IMG_SIZE as DDH_IMG_SIZE, DDHFaces, find_ddh_root
from data.errors import DatasetError
from utils.names import DATASETS  # the names the command lines accept

# image-folder datasets of 32x32 faces, read with OPQN's 32-pixel transforms
SMALL_FOLDER_DATASETS = ("cfw",)
# OPQN's cross-dataset protocol (-c): identities unseen in training
CROSS_SPLITS = ("cross_train", "cross_test")

# OPQN's transforms for FaceScrub / YouTube Faces stored as 32x32 images:
# Resize 35, crop 32, and the FaceScrub per-channel statistics.
OPQN_SMALL_RESIZE = 35
OPQN_SMALL_MEAN = (0.639, 0.479, 0.404)
OPQN_SMALL_STD = (0.216, 0.183, 0.171)

__all__ = [
    "DATASETS",
    "DatasetError",
    "DDHFaces",
    "build_datasets",
    "find_ddh_root",
]


def _holds_identity_folders(split_dir: str) -> bool:
    """True for an ImageFolder split: sub-folders and no (visible) files."""
    try:
        entries = [e for e in os.scandir(split_dir) if not e.name.startswith(".")]
    except OSError:
        return False  # the DDH reader then reports the unreadable folder
    return any(e.is_dir() for e in entries) and not any(e.is_file() for e in entries)


def build_datasets(
    dataset: str,
    augment: bool = True,
    data_root: Optional[str] = None,
    img_size: Optional[int] = None,
    synthetic_kwargs: Optional[Dict[str, Any]] = None,
    skip_bad_images: bool = False,
    cross_dataset: bool = False,
) -> Tuple[Dataset, Dataset, Dict[str, Any]]:
    """(train_set, test_set, info) for ``dataset``, one of :data:`DATASETS`.

    ``augment``: give the train split the random training transform (image
    folders only; DDH and synthetic data are never augmented). Pass False to
    encode the train split as the retrieval database with the deterministic
    test transform. ``data_root``: the folder holding train/ and test/,
    overriding the default location. ``img_size``: output side in pixels
    (default 32 for DDH and synthetic data, 112 for image folders; DDH data
    is 32 only). ``synthetic_kwargs``: passed to ``SyntheticFaceDataset``.
    ``skip_bad_images``: leave out image files that fail to decode.
    ``cross_dataset``: OPQN's cross-dataset protocol, the ``cross_train/``
    and ``cross_test/`` folders of an image-folder dataset, both read with
    the deterministic 112-pixel test transform, as the official code does.

    ``info`` holds ``num_classes`` (identities of the train split, the size
    of a classifier head), ``img_size``, ``root`` (None for synthetic) and
    ``format`` ('ddh', 'folder' or 'synthetic').
    """
    # image folders need torchvision: imported only when used, so that reading
    # stored codes never pays for it
    from data.folders import DEFAULT_IMG_SIZE, FOLDER_DATASETS, find_folder_root

    if cross_dataset:
        if dataset not in FOLDER_DATASETS and dataset != "folder":
            raise DatasetError(f"cross-dataset evaluation needs an image-folder dataset "
                               f"with {' and '.join(s + '/' for s in CROSS_SPLITS)}, not {dataset}")
        root = find_folder_root(dataset, data_root, CROSS_SPLITS)
        size = DEFAULT_IMG_SIZE if img_size is None else img_size
        train_set, test_set = _folder_splits(root, size, False, skip_bad_images, splits=CROSS_SPLITS)
        return train_set, test_set, _info(train_set.num_classes, size, root, "folder")

    if dataset in DDH_DATASETS:
        root = find_ddh_root(dataset, data_root)
        if _holds_identity_folders(os.path.join(root, "train")):
            size = DDH_IMG_SIZE if img_size is None else img_size
            resize = OPQN_SMALL_RESIZE if size == DDH_IMG_SIZE else None
            train_set, test_set = _folder_splits(
                root, size, augment, skip_bad_images,
                mean=OPQN_SMALL_MEAN, std=OPQN_SMALL_STD, resize=resize,
            )
            return train_set, test_set, _info(train_set.num_classes, size, root, "folder")
        if img_size not in (None, DDH_IMG_SIZE):
            raise DatasetError(
                f"{DDH_DATASETS[dataset][0]} DDH batches are {DDH_IMG_SIZE}x{DDH_IMG_SIZE} images; "
                f"image size {img_size} is not available"
            )
        train_set = DDHFaces(root, "train")
        test_set = DDHFaces(root, "test")
        return train_set, test_set, _info(train_set.num_classes, DDH_IMG_SIZE, root, "ddh")

    if dataset in FOLDER_DATASETS or dataset == "folder":
        root = find_folder_root(dataset, data_root)
        small = dataset in SMALL_FOLDER_DATASETS
        size = (DDH_IMG_SIZE if small else DEFAULT_IMG_SIZE) if img_size is None else img_size
        extra = dict(mean=OPQN_SMALL_MEAN, std=OPQN_SMALL_STD,
                     resize=OPQN_SMALL_RESIZE if size == DDH_IMG_SIZE else None) if small else {}
        train_set, test_set = _folder_splits(root, size, augment, skip_bad_images, **extra)
        return train_set, test_set, _info(train_set.num_classes, size, root, "folder")

    if dataset == "synthetic":
        # Imported here, not at the top, so that the file readers do not
        # depend on (or pay for importing) the synthetic generator.
        from data.synthetic import SyntheticFaceDataset

        kwargs = dict(synthetic_kwargs or {})
        if img_size is not None:
            kwargs["img_size"] = img_size
        train_set = SyntheticFaceDataset("train", **kwargs)
        test_set = SyntheticFaceDataset("test", **kwargs)
        size = int(train_set.images.shape[-1])
        return train_set, test_set, _info(train_set.num_classes, size, None, "synthetic")

    raise DatasetError(f"unknown dataset {dataset!r}: expected one of {', '.join(DATASETS)}")


def _folder_splits(root, img_size, augment, skip_bad_images, splits=("train", "test"),
                   **transform_kwargs):
    from data.folders import ImageFolderSplit

    train_set = ImageFolderSplit(
        root, splits[0], img_size, train_transform=augment,
        skip_bad_images=skip_bad_images, reference_split=splits[0], **transform_kwargs,
    )
    test_set = ImageFolderSplit(
        root, splits[1], img_size, train_transform=False,
        skip_bad_images=skip_bad_images, reference_split=splits[0], **transform_kwargs,
    )
    return train_set, test_set


def _info(num_classes: int, img_size: int, root: Optional[str], fmt: str) -> Dict[str, Any]:
    return {"num_classes": num_classes, "img_size": img_size, "root": root, "format": fmt}
