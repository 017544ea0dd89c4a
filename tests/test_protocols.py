"""The standard protocols: DeepHash-pytorch list files, CIFAR-10 from
torchvision's batches in its three splits, the protocol table and statement,
and check_data.py.

Every tree is written here in the published layout: list files of
"<path> <0/1 labels>" lines with a few PNG/JPEG images, and CIFAR-10's python
batches (data_batch_1..5, test_batch, batches.meta, the dict keys torchvision
reads) with a few hundred rows whose pixels encode their row number."""

import hashlib
import json
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

import check_data
import train as train_script
from data import DataRequest, DatasetError, build_splits
from data import cifar, protocols
from data.check import check_dataset
from data.imagelist import join_root
from data.protocols import (INSIDE, SHARED_LABEL, TIES, Protocol, protocol, protocol_for_dataset,
                            protocol_names, resolve_protocol, statement)
from script_runner import run


# -- trees in the published layouts --------------------------------------------------------

def write_image(path, seed, size=12, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path, fmt)


def write_lists(root, rows, images=True):
    """rows: split file name -> [(listed path, labels)]; the images are written
    under root (PNG, every third as JPEG) unless ``images`` is False."""
    root.mkdir(parents=True, exist_ok=True)
    seen = set()
    for name, entries in rows.items():
        lines = [f"{path} {' '.join(map(str, labels))}\n" for path, labels in entries]
        (root / name).write_text("".join(lines))
        for path, _ in entries:
            if images and path not in seen:
                seen.add(path)
                write_image(root / path, len(seen), fmt="JPEG" if len(seen) % 3 == 0 else "PNG")
    return root


def one_hot(c, width=4):
    return [int(i == c) for i in range(width)]


def single_rows(classes=4, train=4, database=6, queries=2):
    """Single-label rows: database images first, the training ones a part of them."""
    rows = {"train.txt": [], "database.txt": [], "test.txt": []}
    for c in range(classes):
        db = [(f"images/c{c}/db{i}.png", one_hot(c, classes)) for i in range(database)]
        rows["database.txt"] += db
        rows["train.txt"] += db[:train]
        rows["test.txt"] += [(f"images/c{c}/q{i}.png", one_hot(c, classes)) for i in range(queries)]
    return rows


@pytest.fixture
def single_tree(tmp_path):
    return write_lists(tmp_path / "lists", single_rows())


MULTI = {  # 4 labels, two rows with two labels each
    "train.txt": [("img/a.png", [1, 0, 0, 0]), ("img/b.png", [0, 1, 1, 0]),
                  ("img/c.png", [0, 0, 0, 1])],
    "database.txt": [("img/a.png", [1, 0, 0, 0]), ("img/b.png", [0, 1, 1, 0]),
                     ("img/c.png", [0, 0, 0, 1]), ("img/d.png", [1, 0, 0, 1])],
    "test.txt": [("img/q.png", [0, 0, 1, 0]), ("img/r.png", [1, 0, 0, 0])],
}


def splits_of(root, **request):
    return build_splits("imagelist", DataRequest(root=str(root), **request))


# -- the list-file reader ----------------------------------------------------------------------

def test_single_label_lists_give_class_ids(single_tree):
    s = splits_of(single_tree, preset="dcdh", img_size=32)
    assert not s.multi_label and s.num_classes == 4 and s.img_size == 32
    assert (len(s.train), len(s.database), len(s.queries)) == (16, 24, 8)
    assert s.sources == tuple(str(single_tree / n)
                              for n in ("train.txt", "database.txt", "test.txt"))
    assert s.protocol is None
    assert s.queries.targets == [c for c in range(4) for _ in range(2)]
    image, label = s.queries[3]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and label == 1
    # database and queries: the test transform (deterministic); train: the training one
    assert torch.equal(s.database[5][0], s.database[5][0])
    assert s.train.transform is not s.database.transform
    # default sides: the preset's (224 for triplet, the images methods' preset; 112 for faces)
    assert splits_of(single_tree, preset="triplet").img_size == 224
    assert splits_of(single_tree, preset="dcdh").img_size == 112


def test_multi_label_lists_give_label_matrices(tmp_path):
    root = write_lists(tmp_path / "m", MULTI)
    s = splits_of(root, preset="dcdh", img_size=16)
    assert s.multi_label and s.num_classes == 4 and s.facts().multi_label
    _, label = s.database[3]
    assert label.dtype == torch.float32 and label.tolist() == [1, 0, 0, 1]
    assert not hasattr(s.train, "targets")  # no class ids a sampler could misread
    # relevance: sharing a label (the metrics read the matrices as such)
    from utils.retrieval.metrics import evaluate_codes

    codes = np.ones((4, 8))
    db_labels = np.stack([s.database[i][1].numpy() for i in range(4)])
    q_labels = np.stack([s.queries[i][1].numpy() for i in range(2)])
    result = evaluate_codes(codes[:2], codes, q_labels, db_labels)
    # all at distance 0, ties by index: q shares a label with b only (rank 2); r with a, d (1, 4)
    assert result["mAP"] == pytest.approx(((1 / 2) + (1 + 2 / 4) / 2) / 2)


def test_a_row_without_label_makes_the_lists_multi_label(tmp_path):
    rows = single_rows(classes=2, train=1, database=2, queries=1)
    rows["database.txt"][0] = (rows["database.txt"][0][0], [0, 0])
    s = splits_of(write_lists(tmp_path / "z", rows), img_size=16)
    assert s.multi_label


def test_paths_are_joined_to_the_root_as_deephash_does(tmp_path, single_tree):
    assert join_root("/data/NUS-WIDE/", "images/a.jpg") == "/data/NUS-WIDE/images/a.jpg"
    assert join_root("/data/NUS-WIDE", "images/a.jpg") == "/data/NUS-WIDE/images/a.jpg"
    assert join_root("/data", "/abs/a.jpg") == "/data//abs/a.jpg"  # string concatenation
    assert join_root("/", "/abs/a.jpg") == "//abs/a.jpg"
    with_slash = splits_of(str(single_tree) + "/", img_size=16)
    without = splits_of(single_tree, img_size=16)
    assert with_slash.train.paths[0] == str(single_tree) + "/images/c0/db0.png"
    assert without.train.paths == with_slash.train.paths
    assert torch.equal(with_slash.queries[0][0], without.queries[0][0])
    # the list files may live elsewhere than the images (reader option list_dir)
    other = tmp_path / "elsewhere"
    other.mkdir()
    for name in ("train.txt", "database.txt", "test.txt"):
        os.replace(single_tree / name, other / name)
    moved = splits_of(single_tree, img_size=16, options={"list_dir": str(other)})
    assert moved.train.paths == without.train.paths


def lines_with(root, name, lines):
    (root / name).write_text("".join(line + "\n" for line in lines))


@pytest.mark.parametrize("case", ["missing list", "malformed", "spaces in a path", "width",
                                  "value", "empty", "missing image", "no root", "protocol width",
                                  "not a list protocol", "unknown protocol"])
def test_bad_lists_are_one_line(single_tree, case):
    root, options = single_tree, {}
    lists = "the DeepHash-pytorch list files train.txt, database.txt, test.txt"
    expected = {
        "missing list": f"imagelist: {root}/database.txt is missing (expected {lists}: one "
                        f'"<image path> <0/1 labels>" line per image)',
        "malformed": f"{root}/train.txt line 2: expected an image path and 4 0/1 labels, got "
                     f"'images/c0/db1.png'",
        "spaces in a path": f"{root}/train.txt line 2: expected an image path and 4 0/1 labels, "
                            f"got 'my image.png 0 1 0 0'",
        "width": f"{root}/test.txt line 3: 3 labels, expected 4 (the width of {root}/train.txt "
                 f"line 1)",
        "value": f"{root}/train.txt line 2: label 3 is 2, expected 0 or 1",
        "empty": f'{root}/test.txt lists no images (expected one "<image path> <0/1 labels>" '
                 f"line per image)",
        "missing image": f"imagelist: {root}/images/c0/q0.png ({root}/test.txt line 1) does not "
                         f"exist; listed paths are joined to --data-root as DeepHash-pytorch joins "
                         f"them ('{root}' + path); check --data-root, or run check_data.py for "
                         f"every missing image",
        "no root": "--dataset imagelist needs --data-root DIR: the folder holding train.txt, "
                   'database.txt, test.txt ("<image path> <0/1 labels>" per line)',
        "protocol width": f"{root}/train.txt line 1: 4 labels, expected 21 (nuswide21 has 21 "
                          f"labels)",
        "not a list protocol": "--protocol cifar10 is not read from list files; with --dataset "
                               "imagelist choose one of nuswide21, nuswide81, coco, imagenet100, "
                               "mirflickr25k, voc2012",
        "unknown protocol": "unknown protocol 'nuswide'; choose one of "
                            + ", ".join(protocol_names()),
    }[case]
    train = (root / "train.txt").read_text().splitlines()
    if case == "missing list":
        (root / "database.txt").unlink()
    elif case == "malformed":
        lines_with(root, "train.txt", [train[0], "images/c0/db1.png", *train[2:]])
    elif case == "spaces in a path":
        lines_with(root, "train.txt", [train[0], "my image.png 0 1 0 0"])
    elif case == "width":
        test = (root / "test.txt").read_text().splitlines()
        lines_with(root, "test.txt", [*test[:2], "images/c1/q0.png 0 1 0", *test[3:]])
    elif case == "value":
        lines_with(root, "train.txt", [train[0], "images/c0/db1.png 1 0 2 0"])
    elif case == "empty":
        lines_with(root, "test.txt", ["", "  "])
    elif case == "missing image":
        (root / "images" / "c0" / "q0.png").unlink()
    elif case == "no root":
        root = None
    else:
        options["protocol"] = {"protocol width": "nuswide21", "not a list protocol": "cifar10",
                               "unknown protocol": "nuswide"}[case]
    with pytest.raises(DatasetError) as err:
        build_splits("imagelist", DataRequest(root=root and str(root), options=options))
    assert str(err.value) == expected
    # the scripts: that line, exit status 2 (check_data reads the lists without a width)
    if case in ("missing list", "malformed", "width", "value", "empty"):
        assert run(check_data, "--dataset", "imagelist", "--data-root", root, "--no-progress") == 2


def test_a_missing_image_read_later_names_its_list_line(single_tree, capsys):
    (single_tree / "images" / "c2" / "db3.png").unlink()
    s = splits_of(single_tree, img_size=16)
    with pytest.raises(DatasetError, match=r"cannot read image .*/images/c2/db3.png "
                                           r"\(database.txt line 16\): FileNotFoundError"):
        s.database[15]


def test_unknown_protocol_on_the_command_line(single_tree, capsys):
    assert run(check_data, "--dataset", "imagelist", "--data-root", single_tree,
               "--protocol", "nope") == 2
    assert capsys.readouterr().err == ("error: argument --protocol: unknown protocol 'nope'; "
                                       f"choose one of {', '.join(protocol_names())}\n")


# -- CIFAR-10 from torchvision's batches -------------------------------------------------

CIFAR_ROWS = 40  # per batch: 5 x 40 training rows + 40 test rows, 24 images per class


def cifar_rows(start, n):
    """Rows whose first pixel values encode their position in the pool."""
    rows = np.zeros((n, 3072), dtype=np.uint8)
    index = np.arange(start, start + n)
    rows[:, 0], rows[:, 1] = index % 256, index // 256
    rows[:, 2:] = (index[:, None] * 7) % 251
    labels = [int((i * 3 + i // 10) % 10) for i in index]  # every class 24 times
    return rows, labels


def write_cifar(root):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for number, name in enumerate([*cifar.TRAIN_BATCHES, cifar.TEST_BATCH]):
        data, labels = cifar_rows(number * CIFAR_ROWS, CIFAR_ROWS)
        entry = {"batch_label": f"batch {number}", "labels": labels, "data": data,
                 "filenames": [f"img_{i}.png" for i in range(CIFAR_ROWS)]}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    with open(folder / cifar.META, "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                     "horse", "ship", "truck"], "num_cases_per_batch": CIFAR_ROWS,
                     "num_vis": 3072}, f, protocol=2)
    return root


@pytest.fixture
def cifar_root(tmp_path):
    return write_cifar(tmp_path / "cifar")


def deephash_selection(labels, name, q, t, seed):
    """The published rule as written in DeepHash-pytorch's utils/tools.py, on numpy's
    global generator seeded with ``seed``."""
    np.random.seed(seed)
    test, train, rest = [], [], []
    for label in range(10):
        index = np.where(labels == label)[0]
        index = index[np.random.permutation(index.shape[0])]
        test.append(index[:q])
        train.append(index[q:q + t])
        rest.append(index[q + t:])
    test, train, rest = (np.concatenate(x) for x in (test, train, rest))
    database = {"cifar10": rest, "cifar10-1": np.concatenate((train, rest)),
                "cifar10-2": train}[name]
    return train, database, test


@pytest.mark.parametrize("name", ["cifar10", "cifar10-1", "cifar10-2"])
def test_cifar_selection_is_deephash_pytorchs(cifar_root, name):
    per_class = {"cifar10": (2, 6), "cifar10-1": (2, 6), "cifar10-2": (4, 20)}[name]
    s = build_splits(name, DataRequest(root=str(cifar_root), preset="triplet",
                                       options={"per_class": per_class}))
    labels = np.array(cifar_rows(0, 6 * CIFAR_ROWS)[1])
    train, database, queries = deephash_selection(labels, name, *per_class, seed=0)
    assert np.array_equal(s.train.rows, train) and np.array_equal(s.database.rows, database)
    assert np.array_equal(s.queries.rows, queries)
    q, t = per_class
    sizes = {"cifar10": (10 * t, 240 - 10 * (q + t), 10 * q),
             "cifar10-1": (10 * t, 240 - 10 * q, 10 * q), "cifar10-2": (10 * t, 10 * t, 10 * q)}
    assert (len(s.train), len(s.database), len(s.queries)) == sizes[name]
    assert not set(s.queries.rows) & set(s.database.rows)
    relation = {"cifar10": set(s.train.rows).isdisjoint(s.database.rows),
                "cifar10-1": set(s.train.rows) <= set(s.database.rows),
                "cifar10-2": list(s.train.rows) == list(s.database.rows)}[name]
    assert relation
    # each split lists class 0's picks first, then class 1's ...
    assert s.queries.targets == sorted(s.queries.targets)
    # the pool: the five training batches in order, then the test batch; rows decoded back
    for split in (s.train, s.database, s.queries):
        image = split.images[split.rows[3]]
        # channel-major rows as HWC images: values 0 and 1 are pixels (0, 0) and (0, 1), red
        assert int(image[0, 0, 0]) + 256 * int(image[0, 1, 0]) == split.rows[3]
        assert split.targets[3] == labels[split.rows[3]]
    assert s.num_classes == 10 and not s.multi_label and s.protocol == name
    assert s.img_size == 224 and s.queries[0][0].shape == (3, 224, 224)  # triplet: resized up
    assert isinstance(s.queries[0][1], int)
    # another split seed, another (still per-class) selection
    other = build_splits(name, DataRequest(root=str(cifar_root), options={
        "per_class": per_class, "split_seed": 1}))
    assert not np.array_equal(other.queries.rows, s.queries.rows)
    assert other.img_size == 32  # face presets read CIFAR-10 at its own size


def test_cifar_per_class_counts_are_the_protocols():
    for name, (q, t) in cifar.PER_CLASS.items():
        p = protocol(name)
        assert (10 * q, 10 * t) == (p.queries, p.train)
        assert p.database == {"cifar10": 60000 - 10 * (q + t), "cifar10-1": 60000 - 10 * q,
                              "cifar10-2": 10 * t}[name]
    assert cifar.PER_CLASS["cifar10"] == (100, 500) and cifar.PER_CLASS["cifar10-2"] == (1000, 5000)


def test_cifar_missing_or_hostile_copy_is_one_line(tmp_path, cifar_root, monkeypatch):
    where = tmp_path / "none"
    with pytest.raises(DatasetError) as err:
        build_splits("cifar10", DataRequest(root=str(where)))
    assert str(err.value) == (
        f"CIFAR-10 not found: expected {where}/cifar-10-batches-py/ (torchvision's python batches: "
        "data_batch_1..5, test_batch, batches.meta); pass --download to fetch them through "
        "torchvision (online), or unpack https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz "
        f"into {where}")

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    with pytest.raises(DatasetError, match=r"^cannot download CIFAR-10 into .*: OSError: network "
                                           r"unreachable \(offline\?"):
        build_splits("cifar10", DataRequest(root=str(where), options={"download": True}))
    # the batch folder itself as --data-root; a batch that would run code is refused
    folder = cifar_root / "cifar-10-batches-py"
    s = build_splits("cifar10-2", DataRequest(root=str(folder), options={"per_class": (2, 6)}))
    assert len(s.queries) == 20
    with open(folder / "data_batch_3", "wb") as f:
        f.write(b"cos\nsystem\n(S'true'\ntR.")
    with pytest.raises(DatasetError) as err:
        build_splits("cifar10", DataRequest(root=str(cifar_root)))
    assert str(err.value) == (f"refusing to read CIFAR-10 batch {folder}/data_batch_3: it names "
                              "os.system, not only arrays, numbers and containers (it was not run)")


# -- the protocol table and statement ------------------------------------------------------

def test_protocol_table():
    assert {"cifar10", "cifar10-1", "cifar10-2", "nuswide21", "nuswide81", "coco", "imagenet100",
            "mirflickr25k", "facescrub", "youtube", "vggface2", "vggface2-cross", "synthetic",
            "dchn-mirflickr25k"} <= set(protocol_names())
    # DeepHash-pytorch's config_dataset: topK (-1: all) and n_class; sizes of its lists
    table = {p: (protocol(p).map_at, protocol(p).num_labels, protocol(p).multi_label)
             for p in ("cifar10", "nuswide21", "nuswide81", "coco", "imagenet100", "mirflickr25k")}
    assert table == {"cifar10": (None, 10, False), "nuswide21": (5000, 21, True),
                     "nuswide81": (5000, 81, True), "coco": (5000, 80, True),
                     "imagenet100": (1000, 100, False), "mirflickr25k": (None, 38, True)}
    assert protocol("nuswide21").sizes() == {"train": 10500, "database": 193734, "queries": 2100}
    assert protocol("mirflickr25k").sizes() == {"train": 4000, "database": 20000, "queries": 1000}
    assert protocol("cifar10-2").sizes() == {"train": 50000, "database": 50000, "queries": 10000}
    # DeepHash-pytorch's spellings and any capitalisation
    assert protocol("nuswide_21").name == "nuswide21" and protocol("NUSWIDE81").name == "nuswide81"
    assert protocol("imagenet").name == "imagenet100"
    assert protocol("mirflickr").name == "mirflickr25k"
    assert protocol_for_dataset("cifar10-1").name == "cifar10-1"
    assert protocol_for_dataset("facescrub").relevance.startswith("same identity")
    assert protocol_for_dataset("vggface2", cross_dataset=True).name == "vggface2-cross"
    assert protocol_for_dataset("mirflickr25k", "multiview").name == "dchn-mirflickr25k"
    assert protocol_for_dataset("synthetic", "multiview").name == "dchn-synthetic"
    assert protocol_for_dataset("synthetic", "faces").name == "synthetic"
    assert protocol_for_dataset("imagelist") is None and protocol_for_dataset("folder") is None
    assert protocol("dchn-mirflickr25k").skip_no_relevant and not protocol("coco").skip_no_relevant
    # the protocol built splits follow: the one their reader recorded, else the dataset's
    from types import SimpleNamespace

    from data.protocols import protocol_of

    assert protocol_of("imagelist", SimpleNamespace(protocol="coco")).name == "coco"
    assert protocol_of("youtube", SimpleNamespace(protocol=None)).name == "youtube"
    assert protocol_of("imagelist", SimpleNamespace(protocol=None)) is None
    with pytest.raises(DatasetError) as err:
        resolve_protocol("cifar10", "nuswide21")
    assert str(err.value) == ("--protocol nuswide21 is not a protocol of --dataset cifar10; use "
                              "--dataset imagelist --protocol nuswide21")
    with pytest.raises(DatasetError, match="^--protocol cifar10-2 is not a protocol of --dataset "
                                           "cifar10; use --dataset cifar10-2$"):
        resolve_protocol("cifar10", "cifar10-2")


def test_statement_states_the_protocol_and_the_files_read(tmp_path):
    rows = {name: [(path, labels + [0] * 17) for path, labels in entries]
            for name, entries in MULTI.items()}
    root = write_lists(tmp_path / "nus", rows)
    s = splits_of(root, img_size=16, options={"protocol": "nuswide_21"})
    assert s.protocol == "nuswide21" and s.num_classes == 21
    st = statement(protocol(s.protocol), s)
    json.dumps(st)  # JSON-ready
    assert {k: st[k] for k in ("name", "dataset", "sizes", "found", "map_at", "labels",
                               "multi_label", "relevance", "ties")} == {
        "name": "nuswide21", "dataset": "imagelist",
        "sizes": {"train": 10500, "database": 193734, "queries": 2100},
        "found": {"train": 3, "database": 4, "queries": 2}, "map_at": 5000, "labels": 21,
        "multi_label": True, "relevance": SHARED_LABEL, "ties": TIES}
    assert st["no_relevant"].startswith("a query without any relevant database item scores AP 0")
    assert "--skip-no-relevant" in st["no_relevant"]
    assert statement(protocol("nuswide21"), s, skip_no_relevant=True)["no_relevant"].startswith(
        "queries without any relevant database item are left out")
    assert st["train_database"] == "the training set is part of the database"
    assert st["source"] == {"url": "https://github.com/swuxyj/DeepHash-pytorch",
                            "file": "utils/tools.py, data/nuswide_21/*.txt"}
    assert [f["name"] for f in st["files"]] == ["train.txt", "database.txt", "test.txt"]
    for record in st["files"]:
        data = open(record["path"], "rb").read()
        assert record["sha256"] == hashlib.sha256(data).hexdigest()
        assert record["bytes"] == len(data)
    # unnamed: the data's own splits, the toolkit's rules
    plain = statement(None, splits_of(root, img_size=16))
    assert plain["name"] is None and plain["map_at"] == "all" and plain["relevance"] == SHARED_LABEL
    assert len(plain["files"]) == 3


def test_statement_of_cifar_hashes_the_batches(cifar_root):
    s = build_splits("cifar10", DataRequest(root=str(cifar_root), options={"per_class": (2, 6)}))
    st = statement(protocol(s.protocol), s)
    assert st["map_at"] == "all" and st["found"] == {"train": 60, "database": 160, "queries": 20}
    assert [f["name"] for f in st["files"]] == [*cifar.TRAIN_BATCHES, "test_batch", "batches.meta"]
    assert all(f["sha256"] == hashlib.sha256(open(f["path"], "rb").read()).hexdigest()
               for f in st["files"])


# -- check_data.py ------------------------------------------------------------------------

TINY = Protocol("tiny", "imagelist", "images", "a tiny test protocol", train=4, database=10,
                queries=3, num_labels=4, multi_label=True, train_database=INSIDE,
                relevance=SHARED_LABEL)


@pytest.fixture
def tiny_protocol(monkeypatch):
    monkeypatch.setitem(protocols._BY_NAME, "tiny", TINY)


def problem_tree(root):
    """Each problem once: a database 2 entries too long, a training row without a
    label, a duplicate database entry, a query in the database, a training
    image outside the database, a missing and a broken image."""
    db = [(f"im/d{i}.png", one_hot(i % 4)) for i in range(11)] + [("im/d3.png", one_hot(3))]
    rows = {"database.txt": db,
            "train.txt": [db[0], (db[1][0], [0, 0, 0, 0]), db[2], ("im/t9.png", one_hot(1))],
            "test.txt": [("im/q0.png", one_hot(0)), ("im/q1.png", one_hot(1)), db[5]]}
    write_lists(root, rows)
    (root / "im" / "d7.png").unlink()
    (root / "im" / "q1.png").write_bytes(b"not an image")
    return root


def test_checker_finds_each_problem_with_its_count(tmp_path, tiny_protocol, capsys):
    root = problem_tree(tmp_path / "bad")
    out = tmp_path / "check.json"
    assert run(check_data, "--dataset", "imagelist", "--protocol", "tiny", "--data-root", root,
               "--no-progress", "--workers", 2, "--json", out) == 2
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "database.txt: 2 entries more than tiny's 10 (found 12)",
        "train.txt: 1 entry without any label (e.g. line 2: im/d1.png)",
        "database.txt: 1 duplicate entry (e.g. line 4: im/d3.png and line 12: im/d3.png)",
        "test.txt and database.txt: 1 entry in both (e.g. line 3: im/d5.png); tiny's queries are "
        "not in its database",
        "train.txt: 1 entry not in database.txt (e.g. line 4: im/t9.png); tiny's training set is "
        "part of its database",
        f"database.txt: 1 missing image (e.g. line 8: im/d7.png -> {root}/im/d7.png)",
        f"test.txt: 1 unreadable image (e.g. {root}/im/q1.png: UnidentifiedImageError: cannot "
        f"identify image file '{root}/im/q1.png')",
    ]
    assert captured.err == ("error: imagelist under protocol tiny: 7 kinds of problem, the "
                            "protocol is not met (train 4, database 12, queries 3; 14 images "
                            "checked)\n")
    result = json.loads(out.read_text())
    assert result["ok"] is False and result["protocol"] == "tiny"
    assert [(p["kind"], p["where"], p["count"]) for p in result["problems"]] == [
        ("size", "database.txt", 2), ("no label", "train.txt", 1),
        ("duplicate", "database.txt", 1), ("overlap", "test.txt and database.txt", 1),
        ("overlap", "train.txt", 1), ("missing image", "database.txt", 1),
        ("unreadable image", "test.txt", 1)]


def test_checker_passes_a_tree_that_meets_its_protocol(tmp_path, tiny_protocol, capsys):
    rows = {"database.txt": [(f"im/d{i}.png", one_hot(i % 4)) for i in range(10)],
            "test.txt": [(f"im/q{i}.png", one_hot(i)) for i in range(3)]}
    rows["train.txt"] = rows["database.txt"][:4]
    root = write_lists(tmp_path / "good", rows)
    assert run(check_data, "--dataset", "imagelist", "--protocol", "tiny", "--data-root", root,
               "--no-progress") == 0
    assert capsys.readouterr().out == ("imagelist under protocol tiny: no problem found (train 4, "
                                       "database 10, queries 3; 13 images checked)\n")
    result = check_dataset("imagelist", DataRequest(root=str(root)), "tiny", images=False)
    assert result.ok and result.images_checked == 0


def test_checker_sizes_width_and_single_label(single_tree, tmp_path, capsys):
    """The published protocols against a tiny tree: sizes far off, the width of
    NUS-WIDE-21 not met; ImageNet-100 refuses rows with two labels."""
    assert run(check_data, "--dataset", "imagelist", "--protocol", "nuswide21", "--data-root",
               single_tree, "--no-images") == 2
    assert capsys.readouterr().out.splitlines() == [
        "train.txt: 10,484 entries fewer than nuswide21's 10,500 (found 16)",
        "database.txt: 193,710 entries fewer than nuswide21's 193,734 (found 24)",
        "test.txt: 2,092 entries fewer than nuswide21's 2,100 (found 8)",
        "train.txt, database.txt, test.txt: 48 entries with 4 labels, nuswide21 has 21 "
        "(e.g. line 1: images/c0/db0.png)",
    ]
    rows = {name: [(path, labels + [0] * 96) for path, labels in entries]
            for name, entries in MULTI.items()}
    result = check_dataset("imagelist", DataRequest(root=str(write_lists(tmp_path / "in", rows))),
                           "imagenet", images=False)
    lines = [p.text for p in result.problems if p.kind == "single label"]
    assert lines == ["train.txt: 1 entry with more than one label; imagenet100 is single-label "
                     "(e.g. line 2: img/b.png)",
                     "database.txt: 2 entries with more than one label; imagenet100 is "
                     "single-label (e.g. line 2: img/b.png)"]


def test_checker_on_the_cifar_layout(cifar_root, capsys, monkeypatch):
    monkeypatch.setitem(cifar.PER_CLASS, "cifar10-1", (2, 6))
    assert run(check_data, "--dataset", "CIFAR10-1", "--data-root", cifar_root) == 2
    folder = cifar_root / "cifar-10-batches-py"
    assert capsys.readouterr().out.splitlines() == [
        "train: 4,940 entries fewer than cifar10-1's 5,000 (found 60)",
        "database: 58,780 entries fewer than cifar10-1's 59,000 (found 220)",
        "queries: 980 entries fewer than cifar10-1's 1,000 (found 20)",
        f"{folder}: 7 batch files with another MD5 than the published CIFAR-10's (torchvision's "
        f"list; e.g. data_batch_1)",
    ]


# -- training end to end through the generic script -----------------------------------------

def train_tiny(tmp_path, *data):
    out = tmp_path / "train.json"
    assert run(train_script, "--method", "dcdh", *data, "--len", 16, "--epochs", 1, "--bs", 8,
               "--img-size", 32, "--workers", 0, "--no-progress", "--checkpoint-dir",
               tmp_path / "ck", "--log-dir", tmp_path / "log", "--json", out) == 0
    return json.loads(out.read_text())


def test_dcdh_trains_on_a_list_file_tree(tmp_path):
    tree = write_lists(tmp_path / "lists", single_rows(classes=2, train=4, database=4, queries=1))
    result = train_tiny(tmp_path, "--dataset", "imagelist", "--data-root", tree)
    assert 0 <= result["mAP"] <= 1 and result["num_database"] == 8 and result["num_queries"] == 2
    assert (tmp_path / "ck" / "dcdh_imagelist_16bits.tar").is_file()


def test_dcdh_trains_on_the_cifar_layout(cifar_root, tmp_path, monkeypatch):
    monkeypatch.setitem(cifar.PER_CLASS, "cifar10-2", (1, 1))  # 10 queries, 10 = the database
    result = train_tiny(tmp_path, "--dataset", "cifar10-2", "--data-root", cifar_root)
    assert 0 <= result["mAP"] <= 1 and result["num_database"] == 10 and result["num_queries"] == 10


# -- every image method, the protocol in every result ---------------------------------------

IMAGE_METHODS = [m for m in __import__("methods").method_names() if
                 __import__("methods").method_class(m).data_kind in ("faces", "images")]


@pytest.fixture(scope="module")
def ten_class_data(tmp_path_factory):
    """A list-file tree and a CIFAR-10 tree, both with 10 classes at 32x32."""
    root = tmp_path_factory.mktemp("protocol_data")
    tree = write_lists(root / "lists", single_rows(classes=10, train=2, database=2, queries=1))
    return tree, write_cifar(root / "cifar")


@pytest.mark.parametrize("name", IMAGE_METHODS)
def test_every_image_method_on_a_list_file_tree_and_the_cifar_layout(name, ten_class_data,
                                                                      tmp_path, monkeypatch):
    """Trained on list files, evaluated there and on CIFAR-10 (cifar10-2 cut to
    one image per class and split): each JSON states its protocol."""
    from methods import method_class

    import evaluation

    tree, cifar_root = ten_class_data
    monkeypatch.setitem(cifar.PER_CLASS, "cifar10-2", (1, 1))
    out = tmp_path / "train.json"
    extra = ["--num", 2, "--words", 256] if name == "opqn" else []
    assert run(train_script, "--method", name, "--dataset", "imagelist", "--data-root", tree,
               "--len", 16, *extra, "--epochs", 1, "--bs", 10, "--img-size", 32, "--workers", 0,
               "--no-progress", "--checkpoint-dir", tmp_path / "ck", "--log-dir",
               tmp_path / "log", "--json", out) == 0
    trained = json.loads(out.read_text())
    assert trained["num_database"] == 20 and trained["num_queries"] == 10
    stated = trained["protocol"]
    assert stated["name"] is None and stated["found"] == {"train": 20, "database": 20,
                                                          "queries": 10}
    assert stated["ties"] == TIES and [f["name"] for f in stated["files"]] == \
        ["train.txt", "database.txt", "test.txt"]
    assert run(evaluation, "--load", trained["checkpoint"], "--dataset", "cifar10-2",
               "--data-root", cifar_root, "--img-size", 32, "--workers", 0, "--no-progress",
               "--json", tmp_path / "c.json") == 0
    on_cifar = json.loads((tmp_path / "c.json").read_text())
    assert on_cifar["num_database"] == 10 and on_cifar["num_queries"] == 10
    assert on_cifar["protocol"]["name"] == "cifar10-2" and on_cifar["protocol"]["map_at"] == "all"
    assert on_cifar["provenance"]["method"] == name and on_cifar["provenance"]["known"]
    assert method_class(name).data_kind in ("faces", "images")


def test_a_protocols_r_is_reported_and_a_wrong_protocol_is_one_line(single_tree, tmp_path,
                                                                    capsys, monkeypatch):
    top3 = Protocol("top3", "imagelist", "images", "single-label lists, mAP@3", train=16,
                    database=24, queries=8, map_at=3, num_labels=4, train_database=INSIDE)
    monkeypatch.setitem(protocols._BY_NAME, "top3", top3)
    out = tmp_path / "t.json"
    assert run(train_script, "--method", "dcdh", "--dataset", "imagelist", "--protocol", "top3",
               "--data-root", single_tree, "--len", 16, "--epochs", 1, "--bs", 8, "--img-size",
               32, "--workers", 0, "--no-progress", "--checkpoint-dir", tmp_path / "ck",
               "--log-dir", tmp_path / "log", "--json", out) == 0
    result = json.loads(out.read_text())
    assert result["protocol"]["name"] == "top3" and result["protocol"]["map_at"] == 3
    assert set(result["map_at_k"]) == {"3"} and 0 <= result["map_at_k"]["3"] <= 1
    assert run(train_script, "--method", "dcdh", "--dataset", "facescrub", "--protocol",
               "nuswide21", "--len", 16, "--no-progress", "--checkpoint-dir", tmp_path) == 2
    assert capsys.readouterr().err == ("error: --protocol nuswide21 is not a protocol of "
                                       "--dataset facescrub; use --dataset imagelist --protocol "
                                       "nuswide21\n")


@pytest.mark.parametrize("name", ["dpsh", "dsdh"])
def test_code_table_methods_train_on_multi_label_rows(name, tmp_path):
    """DPSH and DSDH take label vectors (a pair sharing a label is similar), as
    in their papers' NUS-WIDE protocol; the evaluation ranks with the same
    relevance: the JSON's mAP is the metric's on the stored codes and label
    matrices."""
    import evaluation
    from utils.retrieval.metrics import evaluate_codes

    tree = write_lists(tmp_path / "multi", MULTI)
    out = tmp_path / "m.json"
    assert run(train_script, "--method", name, "--dataset", "imagelist", "--data-root", tree,
               "--len", 16, "--epochs", 2, "--bs", 2, "--img-size", 32, "--workers", 0,
               "--no-progress", "--checkpoint-dir", tmp_path / "ck", "--log-dir",
               tmp_path / "log", "--json", out) == 0
    trained = json.loads(out.read_text())
    assert trained["num_database"] == 4 and trained["num_queries"] == 2
    assert run(evaluation, "--load", trained["checkpoint"], "--dataset", "imagelist",
               "--data-root", tree, "--img-size", 32, "--workers", 0, "--no-progress",
               "--save-codes", tmp_path / "c.npz", "--json", tmp_path / "e.json") == 0
    stored = np.load(tmp_path / "c.npz")
    assert stored["db_labels"].tolist() == [labels for _, labels in MULTI["database.txt"]]
    assert stored["query_labels"].tolist() == [labels for _, labels in MULTI["test.txt"]]
    evaluated = json.loads((tmp_path / "e.json").read_text())
    expected = evaluate_codes(stored["query_codes"], stored["db_codes"], stored["query_labels"],
                              stored["db_labels"])["mAP"]
    assert evaluated["mAP"] == pytest.approx(expected) == pytest.approx(trained["mAP"])


def test_single_label_methods_refuse_multi_label_rows(tmp_path, capsys):
    tree = write_lists(tmp_path / "multi", MULTI)
    assert run(train_script, "--method", "dcdh", "--dataset", "imagelist", "--data-root", tree,
               "--len", 16, "--img-size", 32, "--workers", 0, "--no-progress",
               "--checkpoint-dir", tmp_path / "ck") == 2
    assert capsys.readouterr().err == (
        "error: dcdh trains on one class per image, but imagelist has multi-label rows (0/1 "
        "vectors over 4 labels); give single-label lists (exactly one 1 per row) or train a "
        "method that takes label vectors\n")
    assert not (tmp_path / "ck" / "dcdh_imagelist_16bits.tar").exists()
