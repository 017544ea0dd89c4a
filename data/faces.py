"""The face datasets of DCDH and OPQN, registered by name.

=========  ================================================  ==========================
dataset    default location                                  reader
=========  ================================================  ==========================
facescrub  ./FaceScrub (DDH pickles, where DCDH looks) or    DDH pickles (ddh.py), or
           data/facescrub (image folders, where OPQN looks)  32x32 identity folders
youtube    ./YouTube or data/youtube, likewise               likewise
cfw        data/cfw                                          32x32 identity folders
vggface2   data/vggface2 (or ./vggface2, ./vgg_face2)        identity folders (folders.py)
folder     --data-root DIR, required                         identity folders (folders.py)
synthetic  built in, nothing to download                     synthetic.py
=========  ================================================  ==========================

FaceScrub and YouTube Faces come in two published layouts: the DDH pickles
that DCDH reads at ``./FaceScrub`` and the 32x32 image folders
(``train/<identity>/*.png``) that OPQN reads at ``./data/facescrub``.  Each
method looks first where its published code looks (OPQN's preset: the
folders; every other method: the pickles), falls back to the other layout
only saying so in one line, and ``--layout ddh|folders`` picks one; a
``train/`` folder holding both is an error naming both.
"""

from __future__ import annotations

import os

from data.ddh import DDH_DATASETS, DDH_SOURCE, IMG_SIZE as DDH_IMG_SIZE, DDHFaces
from data.errors import DatasetError
from data.layout import has_splits, splits_text
from data.registry import DataRequest, Splits, register_dataset
from utils.engine.logs import log

# the built-in faces hold at most this many float32 values (8 GiB)
SYNTHETIC_MAX_VALUES = 2 ** 31
# OPQN's cross-dataset protocol (-c): identities unseen in training
CROSS_SPLITS = ("cross_train", "cross_test")
FOLDER_IMG_SIZE = 112


LAYOUT_WHAT = {"ddh": "DDH pickled batches", "folders": "32x32 image folders (one per identity)"}


def split_layout(root: str):
    """What ``root/train`` holds: "ddh" (pickle files), "folders" (identity
    folders), "both", or None (no train/ and test/, or nothing in train/)."""
    if not has_splits(root):
        return None
    try:
        entries = [e for e in os.scandir(os.path.join(root, "train")) if not e.name.startswith(".")]
    except OSError:
        return "ddh"  # the DDH reader then reports the unreadable folder
    files, folders = any(e.is_file() for e in entries), any(e.is_dir() for e in entries)
    return "both" if files and folders else "folders" if folders else "ddh" if files else None


def _refuse_both(root: str) -> None:
    raise DatasetError(f"{os.path.join(root, 'train')}/ holds both DDH pickle files and identity "
                       f"folders; pass --layout ddh or --layout folders")


def locate_faces(name: str, request: DataRequest):
    """(root, layout) of FaceScrub / YouTube Faces for ``request``: --data-root,
    else the method's own published location first."""
    display, official = DDH_DATASETS[name]
    wanted = request.options.get("layout")
    if request.root is not None:
        kind = split_layout(request.root)
        if kind is None:
            raise DatasetError(f"{display} not found: expected {splits_text(request.root)} "
                               f"holding the {LAYOUT_WHAT['ddh']} or the {LAYOUT_WHAT['folders']}")
        if kind == "both" and not wanted:
            _refuse_both(request.root)
        if wanted and kind not in (wanted, "both"):
            raise DatasetError(f"--layout {wanted}: {os.path.join(request.root, 'train')}/ holds "
                               f"the {LAYOUT_WHAT[kind]}")
        return request.root, wanted or kind
    default = os.path.join("data", name)
    places = {"ddh": [official, default], "folders": [default]}
    found = {}
    for layout, folders in places.items():
        for folder in folders:
            kind = split_layout(folder)
            if kind == "both":
                _refuse_both(folder)
            if kind == layout:
                found[layout] = folder
                break
    preferred = wanted or ("folders" if request.preset == "opqn" else "ddh")
    if preferred in found:
        return found[preferred], preferred
    where = {k: " or ".join(f"./{f}" for f in v) for k, v in places.items()}
    other = "ddh" if preferred == "folders" else "folders"
    if other in found and not wanted:
        log.info(f"{display}: no {LAYOUT_WHAT[preferred]} at {where[preferred]}, where this "
                 f"method's published code reads them; reading the {LAYOUT_WHAT[other]} at "
                 f"./{found[other]} instead (--layout {preferred} refuses that)")
        return found[other], other
    raise DatasetError(f"{display} not found: expected the {LAYOUT_WHAT[preferred]} at "
                       f"{where[preferred]} (train/ and test/)"
                       + (f" or the {LAYOUT_WHAT[other]} at {where[other]}" if not wanted else "")
                       + f"; the DDH pickles are linked from {DDH_SOURCE}")


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
    root, layout = locate_faces(name, request)
    if layout == "folders":
        return folder_splits(root, request, small=True)
    if request.img_size not in (None, DDH_IMG_SIZE):
        raise DatasetError(f"{DDH_DATASETS[name][0]} DDH batches are {DDH_IMG_SIZE}x{DDH_IMG_SIZE} "
                           f"images; image size {request.img_size} is not available")
    train = DDHFaces(root, "train")
    return Splits(train, train, DDHFaces(root, "test"), train.num_classes, DDH_IMG_SIZE, root,
                  in_memory=True)


@register_dataset("folder", ("faces", "images"), "any train/ and test/ tree of class folders")
@register_dataset("vggface2", ("faces", "images"), "VGGFace2 subset: 112x112 identity folders",
                  aliases=("vgg", "vgg_face2"))
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
    from data import synthetic

    images = kwargs.get("num_identities", synthetic.DEFAULT_NUM_IDENTITIES) * (
        kwargs.get("train_per_identity", synthetic.DEFAULT_TRAIN_PER_IDENTITY)
        + kwargs.get("test_per_identity", synthetic.DEFAULT_TEST_PER_IDENTITY))
    side = kwargs.get("img_size", synthetic.DEFAULT_IMG_SIZE)
    if images * 3 * side * side > SYNTHETIC_MAX_VALUES:
        raise DatasetError(f"the built-in data of {images} images at {side}x{side} would take "
                           f"{4 * images * 3 * side * side / 2**30:.0f} GiB; lower "
                           f"--synthetic-ids, --synthetic-train, --synthetic-test or --img-size")
    train = SyntheticFaceDataset("train", **kwargs)
    queries = SyntheticFaceDataset("test", **kwargs)
    return Splits(train, train, queries, train.num_classes, int(train.images.shape[-1]),
                  in_memory=True)
