"""Dataset readers: DDH pickles, image folder trees, the registry, transform presets, errors.

Everything is built in tmp_path: tiny pickled batches with known values and a
few small PNG/JPEG files written with PIL.
"""

import io
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch._utils import ExceptionWrapper
from torch.utils.data import DataLoader
from torchvision import transforms

from data import DataRequest, DatasetError, DDHFaces, build_splits, dataset_names, locate_faces
from data.ddh import ROW_LENGTH, load_ddh_split
from data.folders import ImageFolderSplit, find_bad_images, find_folder_root
from data.transforms import folder_transform, resize_for


def splits_of(name, preset="opqn", **request):
    return build_splits(name, DataRequest(preset=preset, **request))


def facts(splits):
    return {"num_classes": splits.num_classes, "img_size": splits.img_size, "root": splits.root,
            "in_memory": splits.in_memory}

# --------------------------------------------------------------------------
# DDH pickled batches


def write_batch(path, data, labels, protocol=2):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump((data, labels), f, protocol=protocol)


def batch_values(n, seed):
    """uint8 rows around 100 with a few 255s, so clipping happens."""
    rng = np.random.default_rng(seed)
    data = rng.integers(90, 111, size=(n, ROW_LENGTH), dtype=np.uint8)
    data[0, :5] = 255
    data[-1, -3:] = 0
    return data


def official_formula(rows):
    """The normalisation of the official DCDH get_data, written out."""
    x = np.asarray(rows, dtype=float)
    x = x - x.mean()
    x = x / (x.std() + 1e-5)
    x = x * 0.1
    return np.clip(x, -1, 1).astype(np.float32).reshape(-1, 3, 32, 32)


@pytest.fixture
def ddh_root(tmp_path):
    """Two batches per split; 'b' is written before 'a' to test the order."""
    root = tmp_path / "facescrub"
    batches = {
        "train": {
            "batch_b": (batch_values(3, 1), [2, 0, 1]),
            # labels as a [n, 1] column, as some batches store them
            "batch_a": (batch_values(2, 2), np.array([[1], [3]])),
        },
        "test": {
            "batch_b": (batch_values(2, 3), np.array([3, 2])),
            "batch_a": (batch_values(1, 4), [0]),
        },
    }
    for split, files in batches.items():
        for name, (data, labels) in files.items():
            write_batch(root / split / name, data, labels)
    return root, batches


def test_ddh_reads_sorted_concatenates_and_normalises(ddh_root):
    root, batches = ddh_root
    for split in ("train", "test"):
        files = batches[split]
        rows = np.concatenate([files["batch_a"][0], files["batch_b"][0]])
        labels = np.concatenate(
            [np.asarray(files["batch_a"][1]).reshape(-1), np.asarray(files["batch_b"][1])]
        )
        ds = DDHFaces(str(root), split)
        assert len(ds) == len(rows)
        assert ds.images.dtype == torch.float32
        assert ds.images.shape == (len(rows), 3, 32, 32)
        # bit-identical to the official formula, over the whole split
        expected = official_formula(rows)
        assert np.array_equal(ds.images.numpy(), expected)
        assert ds.labels.tolist() == labels.tolist()
        image, label = ds[0]
        assert image.shape == (3, 32, 32) and image.dtype == torch.float32
        assert type(label) is int and label == labels[0]

    ds = DDHFaces(str(root), "train")
    # channel-major: value k of a row is channel k // 1024, row (k % 1024) // 32
    first = np.concatenate([batches["train"]["batch_a"][0], batches["train"]["batch_b"][0]])
    x = first.astype(np.float64)
    mean = x.mean()
    std = (x - mean).std()
    k = 1024 + 32 * 5 + 7  # green, row 5, column 7 of image 0
    want = np.float32(np.clip(0.1 * (x[0, k] - mean) / (std + 1e-5), -1, 1))
    assert ds.images[0, 1, 5, 7].item() == want
    # the 255s of batch_b's first row (image 2) are > 10 std away: clipped
    assert torch.all(ds.images[2, 0, 0, :5] == 1.0)
    assert ds.images.abs().max().item() == 1.0
    # ids 0..3 in train: head size 4
    assert ds.num_classes == 4


def test_ddh_transform_and_hidden_files(ddh_root):
    root, _ = ddh_root
    (root / "train" / ".DS_Store").write_bytes(b"\x00junk")
    (root / "train" / "subdir").mkdir()
    ds = DDHFaces(str(root), "train", transform=lambda t: t * 2)
    assert len(ds) == 5
    assert torch.equal(ds[1][0], ds.images[1] * 2)


def test_ddh_python3_lists_and_float_labels(tmp_path):
    rows = [[float(i % 7)] * ROW_LENGTH for i in range(3)]
    write_batch(tmp_path / "train" / "x", rows, [0.0, 1.0, 1.0], protocol=4)
    images, labels = load_ddh_split(str(tmp_path / "train"))
    assert images.shape == (3, 3, 32, 32)
    assert labels.dtype == np.int64 and labels.tolist() == [0, 1, 1]
    assert np.array_equal(images, official_formula(rows))


@pytest.mark.parametrize(
    "content, message",
    [
        (("only one",), "is not a (data, labels) pair: it holds tuple of length 1"),
        ({"data": 1}, "is not a (data, labels) pair: it holds dict"),
        (
            (np.zeros((2, 100)), [0, 1]),
            "rows hold 100 values, expected 3072 (3x32x32, channel-major)",
        ),
        (
            (np.zeros((2, ROW_LENGTH)), [0, 1, 2]),
            "holds 2 images but labels of shape (3,): expected one label per image",
        ),
        ((np.zeros((2, ROW_LENGTH)), [0, -1]), "labels must be >= 0, found -1"),
        ((np.zeros((2, ROW_LENGTH)), [0.5, 1]), "labels must be integers"),
    ],
)
def test_ddh_malformed_batches_name_the_file(tmp_path, content, message):
    path = tmp_path / "train" / "bad_batch"
    path.parent.mkdir()
    with open(path, "wb") as f:
        pickle.dump(content, f)
    with pytest.raises(DatasetError) as err:
        load_ddh_split(str(tmp_path / "train"))
    text = str(err.value)
    assert str(path) in text and message in text and "\n" not in text


def test_ddh_unreadable_and_empty(tmp_path):
    split = tmp_path / "train"
    split.mkdir()
    with pytest.raises(DatasetError) as err:
        load_ddh_split(str(split))
    assert str(err.value) == (
        f"no images in {split}/: expected DDH pickled batches of (data, labels)"
    )

    (split / "garbage").write_bytes(b"this is not a pickle")
    with pytest.raises(DatasetError) as err:
        load_ddh_split(str(split))
    assert str(err.value).startswith(f"cannot read DDH batch {split / 'garbage'}: UnpicklingError")
    assert "\n" not in str(err.value)

    with pytest.raises(DatasetError) as err:
        DDHFaces(str(tmp_path), "test")
    assert str(err.value) == (
        f"DDH split not found: expected {tmp_path / 'test'}/ holding the DDH pickled batches"
    )


def ddh_tree(root, classes=3):
    for split in ("train", "test"):
        write_batch(root / split / "batch_1", batch_values(classes, 1), list(range(classes)))


def folder_tree(root, classes=5):
    for split in ("train", "test"):
        for i in range(classes):
            write_image(root / split / f"id{i}" / "0.png", size=(32, 32))


def test_each_method_looks_where_its_published_code_looks(tmp_path, monkeypatch, caplog):
    """DCDH reads the DDH pickles at ./FaceScrub, OPQN the image folders at
    ./data/facescrub; either falls back to the other layout only saying so."""
    monkeypatch.chdir(tmp_path)

    def located(preset, **options):
        return locate_faces("facescrub", DataRequest(preset=preset, options=options))

    with pytest.raises(DatasetError) as err:
        located("dcdh")
    assert str(err.value) == (
        "FaceScrub not found: expected the DDH pickled batches at ./FaceScrub or ./data/facescrub "
        "(train/ and test/) or the 32x32 image folders (one per identity) at ./data/facescrub; the "
        "DDH pickles are linked from the Data section of https://github.com/mzhang367/DCDH-PyTorch")
    ddh_tree(tmp_path / "FaceScrub")
    assert located("dcdh") == ("FaceScrub", "ddh")
    with caplog.at_level("INFO", logger="hashing"):
        assert located("opqn") == ("FaceScrub", "ddh")  # no folders: the pickles, said in one line
    assert caplog.messages == [
        "FaceScrub: no 32x32 image folders (one per identity) at ./data/facescrub, where this "
        "method's published code reads them; reading the DDH pickled batches at ./FaceScrub "
        "instead (--layout folders refuses that)"]
    with pytest.raises(DatasetError, match="expected the 32x32 image folders"):
        located("opqn", layout="folders")
    folder_tree(tmp_path / "data" / "facescrub")
    assert located("dcdh") == ("FaceScrub", "ddh")  # both published layouts: each its own
    assert located("opqn") == (os.path.join("data", "facescrub"), "folders")
    assert located("dcdh", layout="folders") == (os.path.join("data", "facescrub"), "folders")
    assert splits_of("facescrub", preset="dcdh").num_classes == 3
    assert splits_of("facescrub", preset="opqn").num_classes == 5
    # one train/ folder holding both is an error naming both and the flag
    write_batch(tmp_path / "data" / "facescrub" / "train" / "batch_1", batch_values(2, 1), [0, 1])
    with pytest.raises(DatasetError) as err:
        located("opqn")
    assert str(err.value) == (f"{os.path.join('data', 'facescrub', 'train')}/ holds both DDH "
                              f"pickle files and identity folders; pass --layout ddh or "
                              f"--layout folders")
    # --data-root is the only place looked at
    assert locate_faces("facescrub", DataRequest(root="FaceScrub")) == ("FaceScrub", "ddh")
    with pytest.raises(DatasetError) as err:
        locate_faces("facescrub", DataRequest(root="elsewhere"))
    assert str(err.value) == ("FaceScrub not found: expected elsewhere/train/ and elsewhere/test/ "
                              "holding the DDH pickled batches or the 32x32 image folders (one "
                              "per identity)")
    with pytest.raises(DatasetError, match="--layout folders: FaceScrub/train/ holds the DDH"):
        locate_faces("facescrub", DataRequest(root="FaceScrub", options={"layout": "folders"}))


def test_build_splits_ddh(ddh_root, tmp_path, monkeypatch):
    root, _ = ddh_root
    s = splits_of("facescrub", root=str(root))
    train, test = s.train, s.queries
    assert isinstance(train, DDHFaces) and isinstance(test, DDHFaces) and s.database is train
    assert (len(train), len(test)) == (5, 3)
    assert facts(s) == {"num_classes": 4, "img_size": 32, "root": str(root), "in_memory": True}
    with pytest.raises(DatasetError) as err:
        splits_of("facescrub", root=str(root), img_size=64)
    assert str(err.value) == (
        "FaceScrub DDH batches are 32x32 images; image size 64 is not available"
    )

    # default location, relative to the current directory
    monkeypatch.chdir(root.parent)
    os.rename(root, tmp_path / "YouTube")
    s = splits_of("youtube")
    train = s.train
    assert s.root == "YouTube" and len(train) == 5

    labels = next(iter(DataLoader(train, batch_size=4)))[1]
    assert labels.shape == (4,) and labels.dtype == torch.int64


# --------------------------------------------------------------------------
# Image folder trees


def write_image(path, colour=(200, 100, 50), size=(40, 48), fmt="PNG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, fmt)


@pytest.fixture
def tree(tmp_path):
    """train: alice, bob, carol; test: bob, carol and the test-only dave."""
    root = tmp_path / "faces"
    for split, names in (("train", ("alice", "bob", "carol")), ("test", ("carol", "bob", "dave"))):
        for i, name in enumerate(names):
            for j in range(2):
                write_image(root / split / name / f"{j}.png", colour=(40 * i, 30 * j, 200))
    (root / "train" / "alice" / "notes.txt").write_text("not an image")
    return root


def test_folder_ids_shared_between_splits(tree):
    train = ImageFolderSplit(str(tree), "train")
    test = ImageFolderSplit(str(tree), "test")
    assert train.class_to_idx == {"alice": 0, "bob": 1, "carol": 2}
    assert test.class_to_idx == {"alice": 0, "bob": 1, "carol": 2, "dave": 3}
    assert test.classes == ["alice", "bob", "carol", "dave"]
    assert train.num_classes == test.num_classes == 3
    assert len(train) == 6 and len(test) == 6  # notes.txt is not an image
    by_name = {os.path.basename(os.path.dirname(p)): t for p, t in test.samples}
    assert by_name == {"bob": 1, "carol": 2, "dave": 3}
    assert test.targets == [t for _, t in test.samples] == [1, 1, 2, 2, 3, 3]
    assert train.skipped_files == []


def test_resize_rule():
    assert [resize_for(s) for s in (112, 64, 32, 224)] == [120, 69, 34, 240]
    # halves round up: 7 * 120 / 112 = 7.5, 21 * 120 / 112 = 22.5
    assert resize_for(7) == 8 and resize_for(21) == 23


@pytest.mark.parametrize("size, resize", [(112, 120), (64, 69)])
def test_opqn_folder_transforms(size, resize):
    test_tf = folder_transform("opqn", size, train=False)
    train_tf = folder_transform("opqn", size, train=True)
    kinds = [type(t) for t in test_tf.transforms]
    assert kinds == [
        transforms.ToTensor,
        transforms.Resize,
        transforms.CenterCrop,
        transforms.Normalize,
    ]
    assert test_tf.transforms[1].size == resize
    kinds = [type(t) for t in train_tf.transforms]
    assert kinds == [
        transforms.ToTensor,
        transforms.Resize,
        transforms.RandomCrop,
        transforms.RandomHorizontalFlip,
        transforms.Normalize,
    ]
    assert train_tf.transforms[1].size == resize

    img = Image.new("RGB", (50, 40), (255, 0, 51))
    out = test_tf(img)
    assert out.shape == (3, size, size) and out.dtype == torch.float32
    # a flat image stays flat: (v / 255 - 0.5) / 0.5 per channel
    want = torch.tensor([1.0, -1.0, 51 / 255 * 2 - 1]).view(3, 1, 1).expand_as(out)
    assert torch.allclose(out, want, atol=1e-6)
    assert train_tf(img).shape == (3, size, size)


def test_folder_split_items(tree):
    train = ImageFolderSplit(str(tree), "train", folder_transform("dcdh", 64, train=True), img_size=64)
    image, label = train[2]
    assert image.shape == (3, 64, 64) and label == 1
    test = ImageFolderSplit(str(tree), "test", folder_transform("dcdh", 112, train=False))
    image, label = test[5]
    assert image.shape == (3, 112, 112) and label == 3


def test_folder_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetError) as err:
        find_folder_root("folder")
    assert str(err.value) == (
        "--dataset folder needs --data-root DIR: a folder with train/ and test/ "
        "holding one folder of images per identity"
    )
    with pytest.raises(DatasetError) as err:
        splits_of("folder", root="mine")
    assert str(err.value) == (
        "image folder tree not found: expected mine/train/ and mine/test/ "
        "holding one folder of images per identity"
    )
    with pytest.raises(DatasetError) as err:
        splits_of("vggface2")
    assert str(err.value) == (
        "VGGFace2 not found: expected data/vggface2/train/ and data/vggface2/test/ "
        "holding one folder of images per identity (or ./vggface2, ./vgg_face2)"
    )

    (tmp_path / "mine" / "train").mkdir(parents=True)
    (tmp_path / "mine" / "test").mkdir()
    with pytest.raises(DatasetError) as err:
        splits_of("folder", root="mine")
    assert str(err.value) == (
        "no identity folders in mine/train/: expected one folder of images per identity"
    )
    (tmp_path / "mine" / "train" / "alice").mkdir()
    with pytest.raises(DatasetError) as err:
        splits_of("folder", root="mine")
    assert str(err.value).startswith(
        "no images in mine/train/: expected image files (.jpg, .jpeg, .png,"
    )
    assert str(err.value).endswith(") inside its identity folders")
    write_image(tmp_path / "mine" / "train" / "alice" / "a.png")
    with pytest.raises(DatasetError) as err:
        splits_of("folder", root="mine")
    assert str(err.value) == (
        "no identity folders in mine/test/: expected one folder of images per identity"
    )
    write_image(tmp_path / "mine" / "test" / "alice" / "b.png")
    s = splits_of("folder", root="mine", img_size=48)
    assert facts(s) == {"num_classes": 1, "img_size": 48, "root": "mine", "in_memory": False}
    assert s.queries[0][0].shape == (3, 48, 48)


def test_vggface2_default_roots(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for split in ("train", "test"):
        write_image(tmp_path / "vgg_face2" / split / "n000001" / "0001.jpg", fmt="JPEG")
    assert find_folder_root("vggface2") == "vgg_face2"
    for split in ("train", "test"):
        write_image(tmp_path / "data" / "vggface2" / split / "n000002" / "0001.jpg", fmt="JPEG")
    s = splits_of("vggface2")
    assert s.root == os.path.join("data", "vggface2") and s.img_size == 112
    assert s.train.classes == ["n000002"] and s.queries[0][0].shape == (3, 112, 112)


def corrupt_tree(root):
    """A tree with a non-image .jpg and a truncated JPEG in train/bob."""
    for split in ("train", "test"):
        write_image(root / split / "alice" / "0.png")
        write_image(root / split / "bob" / "0.png")
    (root / "train" / "bob" / "garbage.jpg").write_bytes(b"definitely not a jpeg")
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    jpeg = buf.getvalue()
    (root / "train" / "bob" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    return root / "train" / "bob" / "garbage.jpg", root / "train" / "bob" / "truncated.jpg"


def test_corrupt_images_fail_on_access(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    corrupt_tree(tmp_path / "x")
    train = splits_of("folder", root="x").train
    assert len(train) == 4 and train.skipped_files == []
    paths = [p for p, _ in train.samples]
    for bad in ("x/train/bob/garbage.jpg", "x/train/bob/truncated.jpg"):
        with pytest.raises(DatasetError) as err:
            train[paths.index(bad)]
        text = str(err.value)
        assert text.startswith(f"cannot read image {bad}: ")
        assert text.endswith("; pass --skip-bad-images to leave such files out")
        assert "\n" not in text

    # A DataLoader worker hands its exception to the main process through
    # ExceptionWrapper, which re-creates it with the traceback as message; the
    # message must still be the one line. (Called directly: a real worker that
    # raised takes 5 s to shut down.)
    try:
        train[paths.index("x/train/bob/garbage.jpg")]
    except DatasetError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(DatasetError) as err:
        wrapped.reraise()
    assert str(err.value).startswith("cannot read image x/train/bob/garbage.jpg: ")
    assert "\n" not in str(err.value)


def test_corrupt_images_skipped(tmp_path):
    garbage, truncated = corrupt_tree(tmp_path / "x")
    assert [p for p, _ in find_bad_images([str(garbage), str(truncated)])] == [
        str(garbage),
        str(truncated),
    ]
    s = splits_of("folder", root=str(tmp_path / "x"), skip_bad_images=True)
    train, test = s.train, s.queries
    assert sorted(train.skipped_files) == [str(garbage), str(truncated)]
    assert set(train.skip_reasons) == set(train.skipped_files)
    assert len(train) == 2 and train.targets == [0, 1]
    assert len(train.imgs) == 2
    assert test.skipped_files == []
    assert [label for _, label in train] == [0, 1]

    # nothing readable left: an error, not an empty dataset
    root = tmp_path / "y"
    for split in ("train", "test"):
        (root / split / "alice").mkdir(parents=True)
        (root / split / "alice" / "0.png").write_bytes(b"")
    with pytest.raises(DatasetError) as err:
        ImageFolderSplit(str(root), "train", skip_bad_images=True)
    assert str(err.value) == (
        f"no readable images in {root / 'train'}/: all 1 image files failed to decode"
    )


def test_ddh_datasets_as_opqn_image_folders(tmp_path):
    """OPQN's facescrub: 32x32 images in identity folders under data/facescrub."""
    root = tmp_path / "facescrub"
    for split in ("train", "test"):
        for name in ("id0", "id1"):
            write_image(root / split / name / "0.png", colour=(163, 122, 103), size=(32, 32))
    s = splits_of("facescrub", root=str(root))
    train, test = s.train, s.queries
    assert facts(s) == {"num_classes": 2, "img_size": 32, "root": str(root), "in_memory": False}
    assert isinstance(train, ImageFolderSplit)
    assert test.transform.transforms[1].size == 35
    image, label = test[1]
    assert image.shape == (3, 32, 32) and label == 1
    mean = torch.tensor([0.639, 0.479, 0.404])
    std = torch.tensor([0.216, 0.183, 0.171])
    want = (torch.tensor([163, 122, 103]) / 255 - mean) / std
    assert torch.allclose(image[:, 10, 10], want, atol=1e-5)


def test_cfw_uses_opqn_small_transforms(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for split in ("train", "test"):
        write_image(tmp_path / "data" / "cfw" / split / "p0" / "0.png", size=(32, 32))
    s = splits_of("cfw", preset="dcdh")  # only OPQN's pipeline reads 32x32 folders
    train, test = s.train, s.queries
    assert s.img_size == 32 and s.root == os.path.join("data", "cfw")
    assert test.transform.transforms[1].size == 35 and test[0][0].shape == (3, 32, 32)
    assert isinstance(train.transform.transforms[2], transforms.RandomCrop)


def test_cross_dataset_splits(tmp_path):
    root = tmp_path / "vgg"
    for split, names in (("cross_train", ("a", "b")), ("cross_test", ("b", "c"))):
        for name in names:
            write_image(root / split / name / "0.png", size=(130, 130))
    with pytest.raises(DatasetError) as err:
        splits_of("vggface2", root=str(tmp_path / "none"), cross_dataset=True)
    assert str(err.value) == (f"VGGFace2 not found: expected {tmp_path / 'none' / 'cross_train'}/ and "
                              f"{tmp_path / 'none' / 'cross_test'}/ holding one folder of images "
                              f"per identity")
    s = splits_of("vggface2", root=str(root), cross_dataset=True)
    train, test = s.train, s.queries
    assert s.img_size == 112 and len(train) == 2 and len(test) == 2 and s.database is train
    assert [label for _, label in test] == [1, 2]  # b keeps its id, c is new
    # both splits get the deterministic test transform, as in the official code
    assert not any(isinstance(t, transforms.RandomCrop) for t in train.transform.transforms)
    with pytest.raises(DatasetError, match="cross-dataset evaluation needs an image-folder dataset"):
        splits_of("synthetic", cross_dataset=True)


# --------------------------------------------------------------------------
# the registry


def test_build_splits_synthetic():
    s = splits_of("synthetic", img_size=16,
                  options=dict(num_identities=3, train_per_identity=2, test_per_identity=1))
    train, test = s.train, s.queries
    assert facts(s) == {"num_classes": 3, "img_size": 16, "root": None, "in_memory": True}
    assert (len(train), len(test)) == (6, 3)
    image, label = train[0]
    assert image.shape == (3, 16, 16) and type(label) is int


def test_build_splits_unknown():
    assert dataset_names("faces") == ("facescrub", "youtube", "cfw", "vggface2", "folder",
                                      "synthetic", "imagelist", "cifar10", "cifar10-1",
                                      "cifar10-2")
    with pytest.raises(DatasetError) as err:
        splits_of("mnist")
    assert str(err.value).startswith(
        "unknown dataset 'mnist': expected one of facescrub, youtube, cfw, vggface2, folder, "
        "synthetic, cub, dogs, ")
    assert str(err.value).endswith("imagelist, cifar10, cifar10-1, cifar10-2")


def test_dataset_error_is_one_line():
    worker_text = (
        "Caught DatasetError in DataLoader worker process 0.\n"
        "Original Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\ndata.errors.DatasetError: cannot read image a.png: bad\n'
    )
    assert str(DatasetError(worker_text)) == "cannot read image a.png: bad"
    assert str(DatasetError("plain")) == "plain"


# --------------------------------------------------------------------------
# one transform preset per method, each its published pipeline

FIXED_IMAGE = os.path.join(os.path.dirname(__file__), "fixtures", "triplet", "transforms",
                           "fixed_image.png")


def _centre_crop(array, size):
    top = int(round((array.shape[0] - size) / 2.0))
    left = int(round((array.shape[1] - size) / 2.0))
    return array[top:top + size, left:left + size]


def test_dcdh_preset_resizes_the_pil_image_then_crops():
    """DCDH's published pipeline on a fixed 300x200 image: PIL bilinear resize
    of the shorter side to 120 (antialiased), centre crop 112, /255, (x-0.5)/0.5.
    Written here with PIL and numpy only, not torchvision."""
    img = Image.open(FIXED_IMAGE).convert("RGB")
    resized = np.asarray(img.resize((180, 120), Image.BILINEAR), dtype=np.float32) / 255
    want = (_centre_crop(resized, 112) - 0.5) / 0.5
    got = folder_transform("dcdh", 112, train=False)(img)
    assert got.shape == (3, 112, 112)
    assert np.abs(got.permute(1, 2, 0).numpy() - want).max() <= 1e-6


def test_opqn_preset_resizes_the_tensor_without_antialiasing():
    """OPQN's published pipeline: ToTensor first, then a bilinear resize of the
    float tensor without antialiasing, then the crop; not DCDH's pixels."""
    img = Image.open(FIXED_IMAGE).convert("RGB")
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    resized = torch.nn.functional.interpolate(x, size=(120, 180), mode="bilinear",
                                              align_corners=False, antialias=False)[0]
    want = (_centre_crop(resized.permute(1, 2, 0).numpy(), 112) - 0.5) / 0.5
    got = folder_transform("opqn", 112, train=False)(img).permute(1, 2, 0).numpy()
    assert np.abs(got - want).max() <= 1e-6
    dcdh = folder_transform("dcdh", 112, train=False)(img).permute(1, 2, 0).numpy()
    assert np.abs(dcdh - got).max() > 0.05  # the two methods really see other pixels


def test_skip_bad_images_decodes_each_file_once(tmp_path, monkeypatch):
    import data.folders

    corrupt_tree(tmp_path / "x")
    checked = []
    real = data.folders.image_problem
    monkeypatch.setattr(data.folders, "image_problem", lambda p: checked.append(p) or real(p))
    s = splits_of("folder", preset="dcdh", root=str(tmp_path / "x"), skip_bad_images=True)
    assert len(checked) == len(set(checked)) == 6  # 4 train files, 2 test files, once each
    assert s.database.samples == s.train.samples and s.database is not s.train
    assert s.database.transform is not s.train.transform
