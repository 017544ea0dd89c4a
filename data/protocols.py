"""Named evaluation protocols: what a number was measured under, stated.

A ``Protocol`` names the data (the registry dataset that reads it), the split
sizes its published definition fixes (None where it leaves them to the data),
the R of mAP@R (None: the whole database), the label width, the relevance
rule, how a query without a relevant item counts, the tie rule, how the
training set relates to the database, and the published source of each.
``statement(protocol, splits)`` turns one into the JSON-ready record a
result carries: the protocol's fields, the sizes actually found and the
sha256 of every list or batch file read.

The DeepHash-pytorch protocols follow ``utils/tools.py`` of
swuxyj/DeepHash-pytorch (``config_dataset``: topK and n_class per dataset;
``cifar_dataset``: the three CIFAR-10 splits) and its ``data/<name>/*.txt``
list files (the sizes below were counted in those files where the snapshot
holds them).  DeepHash's topK -1 ("all") slices ``[0:-1]`` of the ranking,
i.e. every item but the last; mAP@all here ranks every item.  Its mAP@R
divides by the relevant items found in the first R and counts a query with
none there as 0 (``map_at`` in utils/retrieval/metrics.py is that definition).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Dict, Iterable, Optional

from data.errors import DatasetError

DEEPHASH = "https://github.com/swuxyj/DeepHash-pytorch"
HASHNET = "https://github.com/thuml/HashNet"
DCDH = "https://github.com/mzhang367/DCDH-PyTorch"
OPQN = "https://github.com/mzhang367/opqn"
DCHN = "https://github.com/penghu-cs/DCHN"
TRIPLET = "https://github.com/zhongzhh8/Image-Retrieval"

SAME_CLASS = "same class: a database item is relevant to a query when their class ids are equal"
SAME_IDENTITY = "same identity: a database face is relevant to a query when both show one person"
SHARED_LABEL = ("sharing a label: a database item is relevant to a query when their 0/1 label "
                "vectors have at least one label in common")
NO_RELEVANT = ("a query without any relevant database item scores AP 0 and counts in every "
               "mean (the metrics' queries_without_relevant says how many); --skip-no-relevant "
               "leaves such queries out")
NO_RELEVANT_SKIPPED = ("queries without any relevant database item are left out of every mean "
                       "(as published for this protocol; the metrics' queries_without_relevant "
                       "says how many)")
TIES = ("database items ranked by Hamming distance ascending, items at equal distance by "
        "database index ascending (a stable sort); PQ scores: score descending, then index")

# how the training set relates to the database
DISJOINT, INSIDE, EQUAL = "disjoint", "inside", "equal"
TRAIN_DATABASE = {
    DISJOINT: "the training set and the database are disjoint",
    INSIDE: "the training set is part of the database",
    EQUAL: "the database is the training set",
    "": "as the data defines it",
}

# the DeepHash-pytorch list-file layout (data/imagelist.py reads it)
LIST_DATASET = "imagelist"


@dataclass(frozen=True)
class Protocol:
    name: str
    dataset: str  # the registry dataset that reads it (imagelist: the list files)
    kind: str  # "images", "faces" or "multiview"
    summary: str
    train: Optional[int] = None  # split sizes the published definition fixes (None: the data's)
    database: Optional[int] = None
    queries: Optional[int] = None
    map_at: Optional[int] = None  # the R of mAP@R (None: the whole database)
    num_labels: Optional[int] = None  # label width / number of classes (None: the data's)
    multi_label: bool = False
    train_database: str = ""  # DISJOINT, INSIDE, EQUAL or "" (the data's)
    relevance: str = SAME_CLASS
    skip_no_relevant: bool = False  # the published evaluation leaves such queries out
    source: str = DEEPHASH  # published source: repository URL
    source_file: str = "utils/tools.py"  # ... and the file(s) in it
    cross_dataset: bool = False  # OPQN's -c evaluation
    notes: str = ""
    aliases: tuple = ()  # other spellings (DeepHash-pytorch's dataset names)

    @property
    def lists(self) -> bool:
        """Read from DeepHash-pytorch list files (``--dataset imagelist --protocol NAME``)."""
        return self.dataset == LIST_DATASET

    def sizes(self) -> Dict[str, Optional[int]]:
        return {"train": self.train, "database": self.database, "queries": self.queries}

    def no_relevant_text(self, skip: Optional[bool] = None) -> str:
        skip = self.skip_no_relevant if skip is None else skip
        return NO_RELEVANT_SKIPPED if skip else NO_RELEVANT

    def map_at_text(self) -> str:
        return "all" if self.map_at is None else f"{self.map_at:,}"


def _deephash_lists(name, summary, train, database, queries, map_at, labels, multi, relation,
                    folder, notes="", aliases=(), source=DEEPHASH):
    return Protocol(name, LIST_DATASET, "images", summary, train, database, queries, map_at,
                    labels, multi, relation, SHARED_LABEL if multi else SAME_CLASS,
                    source=source, source_file=f"utils/tools.py, data/{folder}/*.txt",
                    notes=notes, aliases=aliases)


_CIFAR_NOTE = ("per class, in class order 0..9, the 6,000 images of the pooled torchvision "
               "CIFAR-10 (the five training batches, then the test batch) are shuffled by one "
               "numpy RandomState(seed) drawn in turn (DeepHash-pytorch draws from numpy's "
               "unseeded global generator; seed 0 here, its selection after np.random.seed(0)); "
               "the first {q} are queries, the next {t} training images, the rest {rest}. "
               "mAP over all: DeepHash-pytorch's topK -1 leaves out the last ranked item")

PROTOCOLS = [
    Protocol("cifar10", "cifar10", "images",
             "CIFAR-10: 1,000 queries, 5,000 training images, the other 54,000 the database",
             5000, 54000, 1000, None, 10, False, DISJOINT,
             source_file="utils/tools.py (config_dataset, cifar_dataset), README.md",
             notes=_CIFAR_NOTE.format(q=100, t=500, rest="the database")),
    Protocol("cifar10-1", "cifar10-1", "images",
             "CIFAR-10: 1,000 queries, the other 59,000 the database, 5,000 of them training",
             5000, 59000, 1000, None, 10, False, INSIDE,
             source_file="utils/tools.py (config_dataset, cifar_dataset), README.md",
             notes=_CIFAR_NOTE.format(q=100, t=500, rest="with the training images the "
                                      "database (training images first)")),
    Protocol("cifar10-2", "cifar10-2", "images",
             "CIFAR-10: 10,000 queries, 50,000 training images that are also the database",
             50000, 50000, 10000, None, 10, False, EQUAL,
             source_file="utils/tools.py (config_dataset, cifar_dataset), README.md",
             notes=_CIFAR_NOTE.format(q=1000, t=5000, rest="(none); the database is the "
                                      "training set") + "; the queries are drawn from all "
                                      "60,000 images, not torchvision's test batch"),
    _deephash_lists("nuswide21", "NUS-WIDE, the 21 most frequent concepts (195,834 images): "
                    "2,100 queries (100 per concept), the other 193,734 the database, 10,500 of "
                    "them training (500 per concept)", 10500, 193734, 2100, 5000, 21, True, INSIDE,
                    "nuswide_21", aliases=("nuswide_21", "nus-wide-21", "nuswide-21"),
                    notes="the database.txt published with DeepHash-pytorch is about 2,000 "
                          "images short of 193,734 (DeepHash-pytorch issue #46); "
                          "data/nuswide_21/code.py draws the split"),
    _deephash_lists("nuswide81", "NUS-WIDE as HashNet lists it (81 concepts): 5,000 queries, "
                    "10,000 training images drawn from the database", 10000, None, 5000, 5000,
                    81, True, INSIDE, "nuswide_81_m", aliases=("nuswide_81_m", "nuswide_81",
                                                               "nus-wide-81"),
                    notes="the database size is the list's: the DeepHash-pytorch snapshot read "
                          "for this table lacks database.txt"),
    _deephash_lists("coco", "MS-COCO as HashNet lists it (122,218 labelled images): 5,000 "
                    "queries, the other 117,218 the database, 10,000 of them training", 10000,
                    117218, 5000, 5000, 80, True, INSIDE, "coco", aliases=("mscoco", "ms-coco"),
                    notes="database size from the HashNet paper (122,218 images with a label, "
                          "less the 5,000 queries); not counted in a list file"),
    _deephash_lists("imagenet100", "ImageNet-100 as HashNet lists it: the 5,000 validation "
                    "images of 100 classes as queries, their training images the database, "
                    "13,000 of them training (130 per class)", 13000, None, 5000, 1000, 100,
                    False, INSIDE, "imagenet", aliases=("imagenet", "imagenet-100"),
                    notes="single-label (one-hot rows); the database size is the list's: the "
                          "DeepHash-pytorch snapshot read for this table lacks database.txt"),
    _deephash_lists("mirflickr25k", "MIRFLICKR-25K (38 labels): 1,000 queries, 4,000 training "
                    "images, the other 20,000 the database", 4000, 20000, 1000, None, 38, True,
                    DISJOINT, "mirflickr", aliases=("mirflickr", "mirflickr-25k"),
                    notes="data/mirflickr/code.py draws the split (a permutation: 4,000 train, "
                          "1,000 test, the rest database); 419 of the 25,000 rows carry no label"),
    _deephash_lists("voc2012", "PASCAL VOC 2012 trainval (20 labels): 1,000 queries, 4,000 "
                    "training images, the other 6,540 the database", 4000, 6540, 1000, None, 20,
                    True, DISJOINT, "voc2012", aliases=("voc", "pascal-voc2012"),
                    notes="data/voc2012/code.py draws the split"),
    # the face protocols: the database is the training split, the queries the test split
    Protocol("facescrub", "facescrub", "faces",
             "FaceScrub (530 identities) as DDH's pickled batches or OPQN's 32x32 folders: test "
             "split as queries against the training split", num_labels=530,
             train_database=EQUAL, relevance=SAME_IDENTITY, source=DCDH,
             source_file="README.md (DDH data), evaluation.py",
             notes="sizes are the release's; mAP over the whole database at 12-48 bits"),
    Protocol("youtube", "youtube", "faces",
             "YouTube Faces (1,595 identities) as DDH's pickled batches or OPQN's 32x32 "
             "folders: test split as queries against the training split", num_labels=1595,
             train_database=EQUAL, relevance=SAME_IDENTITY, source=DCDH,
             source_file="README.md (DDH data), evaluation.py",
             notes="sizes are the release's; mAP over the whole database at 12-48 bits"),
    Protocol("cfw", "cfw", "faces",
             "CFW-60K as OPQN reads it (32x32 identity folders): test against train",
             train_database=EQUAL, relevance=SAME_IDENTITY, source=OPQN,
             source_file="opqn_main.py, data_loader.py"),
    Protocol("vggface2", "vggface2", "faces",
             "VGGFace2 subset (112x112 identity folders): test/ as queries against train/",
             train_database=EQUAL, relevance=SAME_IDENTITY, source=OPQN,
             source_file="opqn_main.py, data_loader.py"),
    Protocol("vggface2-cross", "vggface2", "faces",
             "OPQN's cross-dataset evaluation (-c): cross_test/ as queries against "
             "cross_train/, identities unseen in training", train_database="",
             relevance=SAME_IDENTITY, source=OPQN, source_file="opqn_main.py (-c)",
             cross_dataset=True, aliases=("vggface2-c",)),
    Protocol("synthetic", "synthetic", "faces",
             "the built-in procedural faces: test images as queries against the training images",
             train_database=EQUAL, relevance=SAME_IDENTITY, source="this toolkit",
             source_file="data/synthetic.py", notes="sizes set by --synthetic-* flags"),
    Protocol("cub", "cub", "images",
             "CUB-200-2011 (official train/test split): test images against the training images",
             num_labels=200, train_database=EQUAL, source=TRIPLET, source_file="main.py"),
    Protocol("dogs", "dogs", "images",
             "Stanford Dogs (official lists): test images against the training images",
             num_labels=120, train_database=EQUAL, source=TRIPLET, source_file="main.py"),
]

# DCHN's cross-view sets (data/multiview.py): query rows first, then training rows; the
# retrieval set is every row after the queries (it holds the training rows)
_DCHN_SPLITS = {
    "mirflickr25k": (10000, 2000, "MIRFLICKR-25K, VGG image and text features"),
    "mirflickr25k_raw": (10000, 2000, "MIRFLICKR-25K, raw images and text"),
    "nus_wide_tc21": (10500, 2100, "NUS-WIDE-TC21, VGG image and text features"),
    "IAPR-TC12": (10000, None, "IAPR-TC12: the test rows as queries"),
    "MSCOCO_doc2vec": (10000, 5000, "MS-COCO, image features and doc2vec text"),
    "XMedia": (None, None, "XMedia, five views: per view its test rows against its training rows"),
    "features": (None, None, "a feature file: --query-size / --train-size rows"),
    "synthetic": (None, None, "the built-in multi-view features"),
}
for _name, (_train, _queries, _summary) in _DCHN_SPLITS.items():
    PROTOCOLS.append(Protocol(
        f"dchn-{_name}", _name, "multiview", _summary + " (DCHN's split)", _train, None, _queries,
        None, None, _name != "XMedia", EQUAL if _name == "XMedia" else INSIDE,
        SAME_CLASS if _name == "XMedia" else SHARED_LABEL, skip_no_relevant=True, source=DCHN,
        source_file="data_loader.py, main_DCHN.py",
        notes="cross-view: every view's queries against every other view's retrieval rows"))

_BY_NAME: Dict[str, Protocol] = {p.name: p for p in PROTOCOLS}
assert len(_BY_NAME) == len(PROTOCOLS), "protocol names must be unique"


def protocol_names() -> tuple:
    return tuple(_BY_NAME)


def protocol(name: str) -> Protocol:
    """The protocol ``name`` (any capitalisation, or a published spelling such as
    DeepHash-pytorch's ``nuswide_21``); an unknown name is one line."""
    if name in _BY_NAME:
        return _BY_NAME[name]
    folded = str(name).lower()
    for p in PROTOCOLS:
        if folded in (x.lower() for x in (p.name, *p.aliases)):
            return p
    raise DatasetError(f"unknown protocol {name!r}; choose one of {', '.join(_BY_NAME)}")


def list_protocols() -> tuple:
    """The protocols read from DeepHash-pytorch list files."""
    return tuple(p.name for p in PROTOCOLS if p.lists)


def protocol_for_dataset(dataset: str, kind: Optional[str] = None,
                         cross_dataset: bool = False) -> Optional[Protocol]:
    """The default protocol of a registry dataset name (``kind`` "multiview":
    DCHN's split of that name), or None where the data alone defines it
    (``imagelist`` without --protocol, ``folder``, ``features`` ...)."""
    if dataset == LIST_DATASET:
        return None
    for p in PROTOCOLS:
        if p.dataset != dataset or p.cross_dataset != bool(cross_dataset):
            continue
        if kind is None or (p.kind == "multiview") == (kind == "multiview"):
            return p
    return None


def resolve_protocol(dataset: str, name: Optional[str] = None, kind: Optional[str] = None,
                     cross_dataset: bool = False) -> Optional[Protocol]:
    """The protocol a run follows: ``name`` (``--protocol``) checked against the
    dataset, else the dataset's default.  One line when they do not fit."""
    if not name:
        return protocol_for_dataset(dataset, kind, cross_dataset)
    p = protocol(name)
    if dataset == LIST_DATASET:
        if not p.lists:
            raise DatasetError(f"--protocol {p.name} is not read from list files; with "
                               f"--dataset imagelist choose one of {', '.join(list_protocols())}")
        return p
    if p.dataset != dataset:
        hint = (f"--dataset imagelist --protocol {p.name}" if p.lists else
                f"--dataset {p.dataset}")
        raise DatasetError(f"--protocol {p.name} is not a protocol of --dataset {dataset}; "
                           f"use {hint}")
    return p


def protocol_of(dataset: str, splits, kind: Optional[str] = None,
                cross_dataset: bool = False) -> Optional[Protocol]:
    """The protocol built ``splits`` follow: the one the reader recorded, else the
    dataset's default."""
    recorded = getattr(splits, "protocol", None)
    return protocol(recorded) if recorded else protocol_for_dataset(dataset, kind, cross_dataset)


def sha256_of(path: str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(chunk), b""):
                digest.update(block)
    except OSError as err:
        raise DatasetError(f"cannot read {path} for its checksum: {err.strerror or err}") from err
    return digest.hexdigest()


def found_sizes(splits) -> Dict[str, int]:
    return {"train": len(splits.train), "database": len(splits.database),
            "queries": len(splits.queries)}


def statement(protocol: Optional[Protocol], splits, files: Iterable[str] = (),
              skip_no_relevant: Optional[bool] = None) -> dict:
    """The JSON-ready statement of ``protocol`` as ``splits`` met it: the
    protocol's fields, the split sizes found and the sha256 of every file the
    reader read (``splits.sources``) and of ``files``.  ``protocol`` None: an
    unnamed protocol (the data's own splits, the toolkit's rules).
    ``skip_no_relevant``: what the evaluation did, when known."""
    p = protocol or Protocol("", "", "", "the data's own splits (no named protocol)",
                             relevance=SHARED_LABEL if getattr(splits, "multi_label", False)
                             else SAME_CLASS, source="", source_file="")
    paths = list(dict.fromkeys([*getattr(splits, "sources", ()), *files]))
    return {
        "name": p.name or None,
        "dataset": p.dataset or None,
        "summary": p.summary,
        "sizes": p.sizes(),
        "found": found_sizes(splits),
        "map_at": p.map_at if p.map_at is not None else "all",
        "labels": p.num_labels,
        "multi_label": bool(getattr(splits, "multi_label", p.multi_label)),
        "relevance": p.relevance,
        "no_relevant": p.no_relevant_text(skip_no_relevant),
        "ties": TIES,
        "train_database": TRAIN_DATABASE[p.train_database],
        "source": {"url": p.source, "file": p.source_file} if p.source else None,
        "notes": p.notes,
        "files": [_file_record(path) for path in paths],
    }


def _file_record(path: str) -> dict:
    digest = sha256_of(path)
    return {"path": path, "name": os.path.basename(path), "bytes": os.path.getsize(path),
            "sha256": digest}
