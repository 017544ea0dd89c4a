"""The decoded cache: for every preset, the cached path (head once, tail
replayed on batches) gives the uncached path's tensors to the last bit for
the same generator state; the loaders serve the same data either way."""

import numpy as np
import pytest
import torch
from PIL import Image

from data.cache import (CachedBatches, CachedSplit, build_store, choose_mode, split_preset)
from data.errors import DatasetError
from data.fine_grained import ListedImages
from data.transforms import folder_transform

# non-square images of several sizes: shorter-side resizes give ragged heads
SIZES = [(40, 52), (47, 47), (64, 38), (33, 90), (50, 50), (41, 63)]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    items = []
    for i, (h, w) in enumerate(SIZES):
        name = f"im{i}.{'jpg' if i % 2 else 'png'}"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / name)
        items.append((name, i % 3))
    return root, items


def cases():
    for preset, size, small in (("dcdh", 32, False), ("dcdh", 48, False), ("opqn", 32, False),
                                ("opqn", 32, True), ("triplet", 32, False)):
        for train in (True, False):
            yield pytest.param(preset, size, small, train,
                               id=f"{preset}{'_small' if small else ''}-{size}-"
                                  f"{'train' if train else 'test'}")


@pytest.mark.parametrize("preset, size, small, train", cases())
@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_the_cached_path_equals_the_uncached_one(images, tmp_path, preset, size, small, train,
                                                mode):
    root, items = images
    transform = folder_transform(preset, size, train, small=small)
    dataset = ListedImages(str(root), items, transform)
    head, tail = split_preset(transform)
    store, labels = build_store(dataset, head, mode, str(tmp_path), workers=0, progress=False)
    assert labels.tolist() == [label for _, label in items]
    assert list(tmp_path.iterdir()) == []  # a disk cache leaves no file behind
    cached = CachedSplit(store, labels, tail)
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        expected = torch.stack([dataset[i][0] for i in range(len(items))])
        torch.manual_seed(seed)
        got = cached.batch(range(len(items)), "cpu")
        assert got.dtype == expected.dtype == torch.float32 and got.shape == expected.shape
        assert torch.equal(got, expected), (preset, train, seed)
        # a GPU's path (the compact crops travel, flip and arithmetic there), run on the CPU
        torch.manual_seed(seed)
        assert torch.equal(cached.batch(range(len(items)), "cpu", travel=True), expected)
    # the random draws of the replay are torchvision's: the generator ends in the same state
    torch.manual_seed(5)
    [dataset[i] for i in range(len(items))]
    after_uncached = torch.rand(1)
    torch.manual_seed(5)
    cached.batch(range(len(items)), "cpu")
    assert torch.rand(1) == after_uncached


def test_dchn_raw_images_through_the_cache():
    """DCHN's raw-image view (uint8 [3, W, H] rows -> PIL -> ToTensor -> Normalize)."""
    from data.multiview import ImageRows

    rng = np.random.default_rng(1)

    class View:
        data = rng.integers(0, 256, (5, 3, 24, 20), dtype=np.uint8)
        labels = np.eye(5, 3, dtype=np.float32)

    rows = ImageRows(View(), [4, 0, 2])
    head, tail = split_preset(rows.transform)
    store, labels = build_store(rows, head, "memory", workers=0, progress=False)
    cached = CachedSplit(store, labels, tail)
    expected = torch.stack([rows[i][0] for i in range(3)])
    assert torch.equal(cached.batch([0, 1, 2], "cpu"), expected)
    assert np.array_equal(labels, View.labels[[4, 0, 2]])


def write_faces(root, seed, test_per_person, shape):
    """An identity-folder tree: 3 people, 4 training and ``test_per_person`` test images."""
    rng = np.random.default_rng(seed)
    for split, per in (("train", 4), ("test", test_per_person)):
        for person in range(3):
            folder = root / split / f"p{person}"
            folder.mkdir(parents=True)
            for i in range(per):
                Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(
                    folder / f"{i}.png")


def test_loaders_serve_the_same_data_cached_or_not(tmp_path):
    """A folder dataset: database and queries (deterministic transforms) are
    identical either way; the training batches cover the same items."""
    from data import DataRequest, build_splits, make_loaders
    from data.loaders import CacheOptions

    write_faces(tmp_path / "faces", seed=2, test_per_person=2, shape=(40, 36, 3))
    splits = build_splits("folder", DataRequest(root=str(tmp_path / "faces"), img_size=32,
                                                preset="dcdh"))
    plain = make_loaders(splits, 5, torch.device("cpu"), workers=0)
    cached = make_loaders(splits, 5, torch.device("cpu"), workers=0,
                          cache=CacheOptions("memory", progress=False))
    assert isinstance(cached.train, CachedBatches) and not isinstance(plain.train, CachedBatches)
    for a, b in ((plain.database, cached.database), (plain.queries, cached.queries)):
        x = torch.cat([batch[0] for batch in a])
        y = torch.cat([batch[0] for batch in b])
        assert torch.equal(x, y)
    seen = sorted(int(label) for batch in cached.train for label in batch[1])
    assert seen == sorted(int(label) for batch in plain.train for label in batch[1])
    assert len(cached.train) == len(plain.train) == 3  # 12 images in batches of 5


def test_when_to_cache(monkeypatch):
    import data.cache as cache

    monkeypatch.setattr(cache, "free_memory", lambda: 10 * 2 ** 30)
    assert choose_mode("auto", 4 * 2 ** 30, None) == "memory"
    assert choose_mode("auto", 6 * 2 ** 30, "/tmp/c") == "disk"
    assert choose_mode("auto", 6 * 2 ** 30, None) == "off"
    assert choose_mode("off", 1, None) == "off"
    with pytest.raises(DatasetError, match=r"^--cache disk needs --cache-dir DIR"):
        choose_mode("disk", 1, None)


def test_a_transform_the_replay_does_not_know_is_read_uncached():
    from torchvision import transforms as T

    assert split_preset(T.Compose([T.Resize(40), T.RandomCrop(32, padding=4), T.ToTensor()])) \
        is None
    assert split_preset(T.Compose([T.Resize(40), T.ColorJitter(0.1), T.RandomCrop(32)])) is None
    assert split_preset(None) is None



def test_one_draw_per_batch_is_torchvisions_on_the_batch_tensor(tmp_path):
    """OPQN's published training applies its crop and flip to each batch
    tensor (one draw per batch): the cached replay (CPU and device paths) and
    the uncached loader's collate give exactly that; drawn per image, not."""
    import dataclasses

    from data.cache import BatchTail, preset_tail

    rng = np.random.default_rng(3)
    items = []
    for i, side in enumerate((40, 47, 50, 64, 40, 52)):  # squares: one size after the resize
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(
            tmp_path / f"{i}.png")
        items.append((f"{i}.png", i % 2))
    transform = folder_transform("opqn", 32, True, small=True)
    dataset = ListedImages(str(tmp_path), items, transform)
    head, tail = split_preset(transform)
    store, labels = build_store(dataset, head, "memory", None, workers=0, progress=False)
    cached = CachedSplit(store, labels, dataclasses.replace(tail, per_batch=True))
    per_image = CachedSplit(store, labels, tail)
    heads = [dataset.with_transform(head)[i] for i in range(len(items))]
    published = preset_tail(transform, head)
    differs = False
    for seed in range(6):
        torch.manual_seed(seed)
        expected = published(torch.stack([x for x, _ in heads]))  # the published call
        for served in (lambda: cached.batch(range(len(items)), "cpu"),
                       lambda: cached.batch(range(len(items)), "cpu", travel=True),
                       lambda: BatchTail(published)(heads)[0]):
            torch.manual_seed(seed)
            assert torch.equal(served(), expected), seed
        torch.manual_seed(seed)
        differs |= not torch.equal(per_image.batch(range(len(items)), "cpu"), expected)
    assert differs


def test_loaders_draw_once_per_batch_for_opqn_cached_or_not(tmp_path):
    """make_loaders(batch_augment=True) on a folder: uncached, the DataLoader
    collates the heads and applies the tail per batch; cached, the replay does;
    both serve every training image once per epoch."""
    from data import DataRequest, build_splits, make_loaders
    from data.cache import BatchTail
    from data.loaders import CacheOptions

    write_faces(tmp_path / "faces", seed=4, test_per_person=1, shape=(40, 40, 3))
    splits = build_splits("folder", DataRequest(root=str(tmp_path / "faces"), img_size=32,
                                                preset="opqn_small"))
    plain = make_loaders(splits, 5, torch.device("cpu"), workers=0, batch_augment=True)
    cached = make_loaders(splits, 5, torch.device("cpu"), workers=0, batch_augment=True,
                          cache=CacheOptions("memory", progress=False))
    assert isinstance(plain.train.collate_fn, BatchTail)
    assert cached.train.split.tail.per_batch and not cached.database.split.tail.per_batch
    for loader in (plain.train, cached.train):
        batches = list(loader)
        assert [tuple(x.shape) for x, _ in batches] == [(5, 3, 32, 32), (5, 3, 32, 32),
                                                       (2, 3, 32, 32)]
        assert sorted(int(v) for _, y in batches for v in y) == [0] * 4 + [1] * 4 + [2] * 4


def test_disk_cache_without_a_folder_is_one_line_and_keeps_the_checkpoint(tmp_path, capsys):
    import train as train_script
    from script_runner import run

    write_faces(tmp_path / "faces", seed=5, test_per_person=1, shape=(40, 40, 3))
    good = tmp_path / "ck" / "dcdh_folder_12bits.tar"
    good.parent.mkdir()
    good.write_bytes(b"a good checkpoint")
    assert run(train_script, "--method", "dcdh", "--dataset", "folder", "--data-root",
               tmp_path / "faces", "--len", 12, "--epochs", 1, "--img-size", 32, "--cache",
               "disk", "--overwrite", "--no-progress", "--checkpoint-dir", tmp_path / "ck",
               "--log-dir", tmp_path / "log") == 2
    assert capsys.readouterr().err == ("error: --cache disk needs --cache-dir DIR (where the "
                                       "decoded images go)\n")
    assert good.read_bytes() == b"a good checkpoint"
