"""Multi-view, multi-label feature sets of DCHN, in the published layouts and
splits (``data_loader.py`` of penghu-cs/DCHN).

Default location: ``../datasets/<FOLDER>/`` relative to the working directory,
as published; ``--data-root`` names the dataset folder (or the file, for the
generic ``features`` layout) instead.

=================  ====================================================  ===============
name               files (keys)                                          query / train
=================  ====================================================  ===============
mirflickr25k       MIRFLICKR25K/mirflickr25k-{iall-vgg,yall,lall}-rand   2000 / 10000
                   .mat (XAll image, YAll text, LAll labels)
mirflickr25k_raw   MIRFLICKR25K/mirflickr25k-iall.mat (HDF5, IAll uint8  2000 / 10000
                   images), -yall.mat, -lall.mat
nus_wide_tc21      NUS-WIDE-TC21/nus-wide-tc21-{xall-vgg,yall,lall}      2100 / 10500
                   -clean.mat
IAPR-TC12          IAPR-TC12/iapr-tc12.mat (VTest/YTest/testL then       all test rows /
                   VDatabase/YDatabase/databaseL)                        10000
MSCOCO_doc2vec     MSCOCO/MSCOCO_deep_doc2vec_data.h5py (train rows      5000 / 10000
                   then test rows)
XMedia             XMedia&Code/XMediaFeatures.mat, five views; per view  test rows / train
                   query = its test rows, train = retrieval = its train  rows
                   rows; one-hot labels over the image view's classes
features           one .npz / .mat, an array per view (``--views``) and  --query-size /
                   a label matrix ``labels``                             --train-size
synthetic          built in: 2 or 3 views of shared latent multi-labels  by size flags
=================  ====================================================  ===============

Split rule (all but XMedia): query = rows [0, Q), train = rows [Q, Q + T),
retrieval = rows [Q, end): the retrieval set contains the training set.
Feature matrices are float32; label matrices keep their dtype (as published:
the loss follows it).  HDF5 files need h5py (an optional dependency).
"""

from __future__ import annotations

import copy

import os
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from data.errors import DatasetError
from data.layout import one_line
from data.registry import DataRequest, Splits, register_dataset


# the built-in sets hold at most this many float32 values (8 GiB)
MAX_SYNTHETIC_VALUES = 2 ** 31


@dataclass
class ViewData:
    name: str
    data: object  # float32 [N, D] array, or an h5py dataset of uint8 images [N, 3, W, H]
    labels: np.ndarray  # [N, C] 0/1
    query: np.ndarray  # row indices
    train: np.ndarray
    retrieval: np.ndarray

    @property
    def input_dim(self) -> int:
        return int(self.data.shape[1]) if len(self.data.shape) == 2 else -1

    @property
    def is_images(self) -> bool:
        return len(self.data.shape) == 4


@dataclass
class MultiView:
    name: str
    views: List[ViewData]  # the requested views, in view order
    view_ids: List[int]  # their view numbers in the dataset
    num_views: int  # views the dataset has
    notes: List[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return int(self.views[0].labels.shape[1])

    def describe(self) -> str:
        parts = [f"view {i} ({v.name}): {len(v.train)} training, {len(v.query)} query, "
                 f"{len(v.retrieval)} retrieval rows" for i, v in zip(self.view_ids, self.views)]
        return f"{self.name}, {self.num_classes} labels; " + "; ".join(parts)


# -- file readers -------------------------------------------------------------------

def _need(path: str, what: str) -> str:
    if not os.path.isfile(path):
        raise DatasetError(f"{what} not found: {path} is missing")
    return path


def _mat(path: str, keys: Sequence[str], what: str) -> dict:
    from scipy.io import loadmat

    _need(path, what)
    try:
        z = loadmat(path)
    except NotImplementedError:  # MATLAB v7.3 files are HDF5
        with _h5(path, what) as f:
            z = {k: np.asarray(f[k]) for k in keys if k in f}
    except Exception as err:  # noqa: BLE001 - scipy raises several types on bad files
        raise DatasetError(f"cannot read {path} as a MATLAB file: {one_line(err)}") from err
    missing = [k for k in keys if k not in z]
    if missing:
        raise DatasetError(f"{path} has no {', '.join(repr(k) for k in missing)} entry (expected "
                           f"{', '.join(keys)})")
    return z


def _h5(path: str, what: str):
    try:
        import h5py
    except ImportError:
        raise DatasetError(f"{what} is stored as HDF5: install h5py (pip install h5py)") from None
    _need(path, what)
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise DatasetError(f"cannot read {path} as an HDF5 file: {one_line(err)}") from err


def _rows(n: int, query: int, train: int):
    """The published split of n rows: query first, then train; retrieval = all after the queries."""
    index = np.arange(n)
    return index[:query], index[query:query + train], index[query:]


def _check_rows(name: str, arrays: dict, labels: np.ndarray) -> None:
    for key, value in arrays.items():
        if value.shape[0] != labels.shape[0]:
            raise DatasetError(f"{name}: {key} has {value.shape[0]} rows but the labels "
                               f"{labels.shape[0]}")
    if labels.ndim != 2:
        raise DatasetError(f"{name}: the label matrix must be [rows, labels], got shape "
                           f"{labels.shape}")


def _paired(name, features: dict, labels, query, train, view_names) -> List[ViewData]:
    _check_rows(name, features, labels)
    q, t, r = _rows(labels.shape[0], query, train)
    return [ViewData(view, np.asarray(features[key], dtype=np.float32), labels, q, t, r)
            for view, key in zip(view_names, features)]


def _mirflickr(root, raw: bool):
    base = os.path.join(root, "mirflickr25k")
    suffix = "" if raw else "-rand"
    labels = _mat(f"{base}-lall{suffix}.mat", ["LAll"], "MIRFLICKR-25K labels")["LAll"]
    text = _mat(f"{base}-yall{suffix}.mat", ["YAll"], "MIRFLICKR-25K text features")["YAll"]
    if raw:
        images = _h5(f"{base}-iall.mat", "MIRFLICKR-25K images")["IAll"]  # kept lazily, as published
        q, t, r = _rows(labels.shape[0], 2000, 10000)
        return [ViewData("Image", images, labels, q, t, r),
                ViewData("Text", np.asarray(text, dtype=np.float32), labels, q, t, r)]
    image = _mat(f"{base}-iall-vgg-rand.mat", ["XAll"], "MIRFLICKR-25K image features")["XAll"]
    return _paired("mirflickr25k", {"XAll": image, "YAll": text}, labels, 2000, 10000,
                   ["Image", "Text"])


def _nus(root):
    base = os.path.join(root, "nus-wide-tc21")
    labels = _mat(f"{base}-lall-clean.mat", ["LAll"], "NUS-WIDE-TC21 labels")["LAll"]
    image = _mat(f"{base}-xall-vgg-clean.mat", ["XAll"], "NUS-WIDE-TC21 image features")["XAll"]
    text = _mat(f"{base}-yall-clean.mat", ["YAll"], "NUS-WIDE-TC21 text features")["YAll"]
    return _paired("nus_wide_tc21", {"XAll": image, "YAll": text}, labels, 2100, 10500,
                   ["Image", "Text"])


def _iapr(root):
    keys = ["VTest", "YTest", "testL", "VDatabase", "YDatabase", "databaseL"]
    z = _mat(os.path.join(root, "iapr-tc12.mat"), keys, "IAPR-TC12")
    labels = np.concatenate([z["testL"], z["databaseL"]])
    features = {"V": np.concatenate([z["VTest"], z["VDatabase"]]),
                "Y": np.concatenate([z["YTest"], z["YDatabase"]])}
    return _paired("IAPR-TC12", features, labels, z["testL"].shape[0], 10000, ["Image", "Text"])


def _mscoco(root):
    path = os.path.join(root, "MSCOCO_deep_doc2vec_data.h5py")
    with _h5(path, "MSCOCO (doc2vec)") as f:
        keys = ["train_imgs_deep", "test_imgs_deep", "train_imgs_labels", "test_imgs_labels",
                "train_text", "test_text"]
        missing = [k for k in keys if k not in f]
        if missing:
            raise DatasetError(f"{path} has no {', '.join(missing)} dataset(s)")
        z = {k: np.asarray(f[k]) for k in keys}
    labels = np.concatenate([z["train_imgs_labels"], z["test_imgs_labels"]])
    features = {"imgs": np.concatenate([z["train_imgs_deep"], z["test_imgs_deep"]]),
                "text": np.concatenate([z["train_text"], z["test_text"]])}
    # the query rows are the first 5000 *training* rows, as published
    return _paired("MSCOCO_doc2vec", features, labels, 5000, 10000, ["Image", "Text"])


XMEDIA_VIEWS = [("image", "I_tr_CNN", "I_te_CNN", "trImgCat", "teImgCat"),
                ("text", "T_tr_BOW", "T_te_BOW", "trTxtCat", "teTxtCat"),
                ("audio", "A_tr", "A_te", "trAudCat", "teAudCat"),
                ("3d", "d3_tr", "d3_te", "tr3dCat", "te3dCat"),
                ("video", "V_tr_CNN", "V_te_CNN", "trVidCat", "teVidCat")]


def _xmedia(root):
    keys = [k for view in XMEDIA_VIEWS for k in view[1:]]
    z = _mat(os.path.join(root, "XMediaFeatures.mat"), keys, "XMedia")
    classes = np.unique(z["trImgCat"].reshape(-1).astype(np.int64))

    def one_hot(cat):
        cat = cat.reshape(-1).astype(np.int64)
        return (cat[:, None] == classes[None, :]).astype(np.float32)

    views = []
    for name, tr, te, trc, tec in XMEDIA_VIEWS:
        data = np.concatenate([z[te], z[tr]]).astype(np.float32)  # test rows first
        labels = np.concatenate([one_hot(z[tec]), one_hot(z[trc])])
        n_test = z[te].shape[0]
        rows = np.arange(data.shape[0])
        views.append(ViewData(name, data, labels, rows[:n_test], rows[n_test:], rows[n_test:]))
    return views


def _features(path, view_keys, label_key, query, train):
    if not view_keys:
        raise DatasetError("--datasets features needs --views NAME ... (the arrays of the file, "
                           "one per view)")
    if path is None or not os.path.isfile(path):
        raise DatasetError(f"--datasets features needs --data-root FILE (.npz or .mat), got {path}")
    if path.endswith(".npz"):
        from utils.errors import UsageError
        from utils.retrieval.codes_io import load_npz

        try:
            z = load_npz(path, required=(*view_keys, label_key))
        except UsageError as exc:
            raise DatasetError(str(exc)) from None
    else:
        z = _mat(path, [*view_keys, label_key], "feature file")
    for key in (*view_keys, label_key):
        value = np.asarray(z[key])
        if value.ndim != 2 or value.dtype.kind not in "biuf" or 0 in value.shape:
            raise DatasetError(f"{path}: {key} must be a non-empty numeric matrix [rows, "
                               f"{'labels' if key == label_key else 'features'}], got "
                               f"{value.dtype} {value.shape}")
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise DatasetError(f"{path}: {key} holds NaN or inf")
    labels = z[label_key]
    return _paired(path, {k: z[k] for k in view_keys}, labels, query, train, list(view_keys))


def _synthetic(options):
    """Views of shared latent multi-labels: item i has 1-3 of C labels; view v
    sees a fixed random projection of the label vector plus noise and a
    nuisance of its own, in its own width."""
    rng = np.random.default_rng(options.get("seed", 0))
    n = options.get("rows", 1200)
    classes = options.get("classes", 12)
    if n * (classes + 64) > MAX_SYNTHETIC_VALUES:
        raise DatasetError(f"the built-in data of {n} rows x {classes} labels would take "
                           f"{4 * n * (classes + 64) / 2**30:.0f} GiB; lower --synthetic-rows "
                           f"or --synthetic-classes")
    widths = options.get("widths", (64, 48))
    labels = np.zeros((n, classes), dtype=np.float32)
    for i in range(n):
        labels[i, rng.choice(classes, size=rng.integers(1, 4), replace=False)] = 1
    views = []
    names = ["Image", "Text", "Audio", "View 3", "View 4"]
    q, t, r = _rows(n, options.get("query", 200), options.get("train", 600))
    for v, width in enumerate(widths):
        proj = rng.normal(size=(classes, width)).astype(np.float32)
        nuisance = rng.normal(size=(n, 4)).astype(np.float32) @ rng.normal(size=(4, width)).astype(np.float32)
        data = labels @ proj + 0.8 * nuisance + 0.5 * rng.normal(size=(n, width)).astype(np.float32)
        views.append(ViewData(names[v], data.astype(np.float32), labels, q, t, r))
    return views


# -- the datasets -----------------------------------------------------------------------
# (their own name -> reader table: 'synthetic' here is not the face data of data/faces.py)

DATASETS = {
    # name: (folder under ../datasets, reader)
    "mirflickr25k": ("MIRFLICKR25K", lambda root, o: _mirflickr(root, raw=False)),
    "mirflickr25k_raw": ("MIRFLICKR25K", lambda root, o: _mirflickr(root, raw=True)),
    "nus_wide_tc21": ("NUS-WIDE-TC21", lambda root, o: _nus(root)),
    "IAPR-TC12": ("IAPR-TC12", lambda root, o: _iapr(root)),
    "MSCOCO_doc2vec": ("MSCOCO", lambda root, o: _mscoco(root)),
    "XMedia": ("XMedia&Code", lambda root, o: _xmedia(root)),
    "features": (None, lambda root, o: _features(root, o.get("views"), o.get("labels_key", "labels"),
                                                 o.get("query", 2000), o.get("train", 10000))),
    "synthetic": (None, lambda root, o: _synthetic(o)),
}


def default_root(name: str) -> Optional[str]:
    folder = DATASETS[name][0]
    return os.path.join("..", "datasets", folder) if folder else None


_CACHE: dict = {}


def _all_views(name: str, root: Optional[str], options: dict) -> list:
    """Every view of ``name``, read once per process (the views of one run
    are built one at a time, each from the same files)."""
    key = (name, root, repr(sorted((k, v) for k, v in options.items() if k != "view")))
    if key not in _CACHE:
        _CACHE.clear()  # one data set at a time: feature matrices are large
        _CACHE[key] = DATASETS[name][1](root, options)
    return _CACHE[key]


def load_multiview(name: str, root: Optional[str] = None, view: int = -1,
                   options: Optional[dict] = None) -> MultiView:
    """The views of ``name`` (``view`` -1: all; k: view k only)."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)}")
    root = root or default_root(name)
    views = _all_views(name, root, dict(options or {}))
    if view >= len(views) or view < -1:
        raise DatasetError(f"{name} has {len(views)} views (0..{len(views) - 1}); --view {view} "
                           f"does not exist")
    ids = list(range(len(views))) if view < 0 else [view]
    chosen = [views[i] for i in ids]
    for v, i in zip(chosen, ids):
        if len(v.train) == 0 or len(v.query) == 0:
            raise DatasetError(f"{name}, view {i}: {v.data.shape[0]} rows leave no training or "
                               f"query rows under the published split")
    return MultiView(name, chosen, ids, len(views))


def training_labels(name: str, root: Optional[str] = None, options: Optional[dict] = None):
    """The label rows ``trainSHAM.py`` draws its available rows from: the
    training rows of view 0 (for XMedia the image view, which the published
    ``load_labels`` meant but crashes on)."""
    data = load_multiview(name, root, 0, options)
    view = data.views[0]
    return np.asarray(view.labels)[view.train]


# -- one view's rows as datasets, registered for the DCHN method ----------------------------

class FeatureRows(Dataset):
    """Rows of one feature view, in memory: (features float32, label row)."""

    def __init__(self, view: ViewData, rows):
        rows = np.asarray(rows)
        self.images = torch.from_numpy(np.asarray(view.data)[rows])
        self.labels = torch.from_numpy(np.asarray(view.labels)[rows])
        self.transform = None

    def __len__(self):
        return self.images.shape[0]

    def __getitem__(self, index):
        return self.images[index], self.labels[index]


class ImageRows(Dataset):
    """Rows of the raw-image view, read lazily through the published transform
    (uint8 [3, W, H] -> PIL -> ToTensor -> ImageNet normalisation, at the
    stored size: the published loader's CenterCrop(224) is commented out, and
    the VGG's adaptive pooling takes any size)."""

    def __init__(self, view: ViewData, rows):
        from torchvision import transforms

        self.view, self.rows = view, np.asarray(rows)
        self.labels = np.asarray(view.labels)[self.rows]  # the rows' label matrix
        self.transform = transforms.Compose([
            transforms.ToPILImage(), transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        image = np.asarray(self.view.data[int(self.rows[index])]).astype("uint8")
        return self.transform(image.transpose(2, 1, 0)), torch.from_numpy(self.labels[index])

    def with_transform(self, transform) -> "ImageRows":
        """The same rows through another transform (the decoded cache's head)."""
        view = copy.copy(self)
        view.transform = transform
        return view


def build_view(name: str, request: DataRequest) -> Splits:
    """One view of a multi-view set (``request.options["view"]``, default 0):
    its training rows, its retrieval rows as the database, its query rows."""
    options = dict(request.options)
    view = int(options.get("view", 0))
    data = load_multiview(name, request.root, view, options)
    v = data.views[0]
    rows = ImageRows if v.is_images else FeatureRows
    names = tuple(x.name for x in _all_views(name, request.root or default_root(name), options))
    return Splits(rows(v, v.train), rows(v, v.retrieval), rows(v, v.query),
                  num_classes=int(v.labels.shape[1]), img_size=224 if v.is_images else None,
                  root=request.root, in_memory=not v.is_images,
                  input_dim=None if v.is_images else v.input_dim, multi_label=True,
                  view_names=names, view=view)


def view_count(name: str, root: Optional[str] = None, options: Optional[dict] = None) -> int:
    return load_multiview(name, root, -1, options).num_views


for _name, (_folder, _reader) in DATASETS.items():
    register_dataset(_name, "multiview", f"multi-view features ({_folder or 'no files'})")(build_view)
