"""The face datasets of DCDH and OPQN, registered by name.

=========  ================================================  ==========================
dataset    default location                                  reader
=========  ================================================  ==========================
facescrub  data/facescrub (or the official ./FaceScrub)      DDH pickles (ddh.py), or
youtube    data/youtube (or the official ./YouTube)          32x32 identity folders
cfw        data/cfw                                          32x32 identity folders
vggface2   data/vggface2 (or ./vggface2, ./vgg_face2)        identity folders (folders.py)
folder     --data-root DIR, required                         identity folders (folders.py)
synthetic  built in, nothing to download                     synthetic.py
=========  ================================================  ==========================

FaceScrub and YouTube Faces also load from image folders: the official OPQN
code reads ``data/facescrub/train/<identity>/*.png`` (the same 32x32 faces as
images), so when the train folder of these datasets holds identity folders
instead of pickle files, that is what is used.
"""

from __future__ import annotations

import os

from data.ddh import DDH_DATASETS, IMG_SIZE as DDH_IMG_SIZE, DDHFaces, find_ddh_root
from data.errors import DatasetError
from data.registry import DataRequest, Splits, register_dataset

# OPQN's cross-dataset protocol (-c): identities unseen in training
CROSS_SPLITS = ("cross_train", "cross_test")
FOLDER_IMG_SIZE = 112


def _holds_identity_folders(split_dir: str) -> bool:
    """True for an ImageFolder split: sub-folders and no (visible) files."""
    try:
        entries = [e for e in os.scandir(split_dir) if not e.name.startswith(".")]
    except OSError:
        return False  # the DDH reader then reports the unreadable folder
    return any(e.is_dir() for e in entries) and not any(e.is_file() for e in entries)


def folder_splits(root: str, request: DataRequest, small: bool = False,
                  splits=("train", "test")) -> Splits:
    """Train / database / queries of an identity-folder tree; the folder is
    scanned (and, with --skip-bad-images, checked) once per split."""
    # image folders need torchvision: imported only when used
    from data.folders import ImageFolderSplit
    from data.transforms import folder_transform

    size = request.img_size or (DDH_IMG_SIZE if small else FOLDER_IMG_SIZE)
    test_tf = folder_transform(request.preset, size, train=False, small=small)
    train_tf = folder_transform(request.preset, size, train=True, small=small) if request.augment else test_tf
    common = dict(img_size=size, skip_bad_images=request.skip_bad_images, reference_split=splits[0])
    train = ImageFolderSplit(root, splits[0], train_tf, **common)
    database = train.with_transform(test_tf) if train_tf is not test_tf else train
    queries = ImageFolderSplit(root, splits[1], test_tf, **common)
    return Splits(train, database, queries, train.num_classes, size, root)


def _cross_dataset(name: str, request: DataRequest) -> Splits:
    """OPQN -c: cross_train/ as database and cross_test/ as queries, both with
    the deterministic 112-pixel test transform, as the official code does."""
    from data.folders import find_folder_root

    root = find_folder_root(name, request.root, CROSS_SPLITS)
    test_only = DataRequest(root=root, img_size=request.img_size, preset=request.preset,
                            augment=False, skip_bad_images=request.skip_bad_images)
    return folder_splits(root, test_only, splits=CROSS_SPLITS)


def _refuse_cross(name: str, request: DataRequest) -> None:
    if request.cross_dataset:
        raise DatasetError(f"cross-dataset evaluation needs an image-folder dataset "
                           f"with {' and '.join(s + '/' for s in CROSS_SPLITS)}, not {name}")


@register_dataset("youtube", "faces", "YouTube Faces, 1595 identities (DDH pickles or 32x32 folders)")
@register_dataset("facescrub", "faces", "FaceScrub, 530 identities (DDH pickles or 32x32 folders)")
def build_ddh(name: str, request: DataRequest) -> Splits:
    _refuse_cross(name, request)
    root = find_ddh_root(name, request.root)
    if _holds_identity_folders(os.path.join(root, "train")):
        return folder_splits(root, request, small=True)
    if request.img_size not in (None, DDH_IMG_SIZE):
        raise DatasetError(f"{DDH_DATASETS[name][0]} DDH batches are {DDH_IMG_SIZE}x{DDH_IMG_SIZE} "
                           f"images; image size {request.img_size} is not available")
    train = DDHFaces(root, "train")
    return Splits(train, train, DDHFaces(root, "test"), train.num_classes, DDH_IMG_SIZE, root,
                  in_memory=True)


@register_dataset("folder", ("faces", "images"), "any train/ and test/ tree of class folders")
@register_dataset("vggface2", ("faces", "images"), "VGGFace2 subset: 112x112 identity folders")
@register_dataset("cfw", ("faces", "images"), "CFW-60K as OPQN reads it: 32x32 identity folders")
def build_folder(name: str, request: DataRequest) -> Splits:
    from data.folders import find_folder_root

    if request.cross_dataset:
        return _cross_dataset(name, request)
    root = find_folder_root(name, request.root)
    return folder_splits(root, request, small=name == "cfw")


@register_dataset("synthetic", ("faces", "images"), "built-in procedural faces, no download")
def build_synthetic(name: str, request: DataRequest) -> Splits:
    # imported here so that the file readers never pay for the generator
    from data.synthetic import SyntheticFaceDataset

    _refuse_cross(name, request)
    # its size options (reader options of other kinds of data are not its own)
    kwargs = {k: v for k, v in request.options.items()
              if k in ("num_identities", "train_per_identity", "test_per_identity")}
    if request.img_size is not None:
        kwargs["img_size"] = request.img_size
    train = SyntheticFaceDataset("train", **kwargs)
    queries = SyntheticFaceDataset("test", **kwargs)
    return Splits(train, train, queries, train.num_classes, int(train.images.shape[-1]),
                  in_memory=True)
