"""Tests of the built-in synthetic face data (data/synthetic.py).

Besides shapes and determinism, these check the two properties the data is
tuned for: raw pixels and an untrained network rank the database poorly by
Hamming distance, and a small conv net trained for a few seconds ranks it well.

Measured on 2 CPU cores, data seeds 0-4 (the bars below leave a wide margin):
raw pixel signs 0.14-0.16 mAP, 48-bit random projection 0.13-0.15, untrained
net 0.09-0.13, the quick-trained net below 0.91-0.96 (seed 0: 0.93) after
about 9 s of training on an idle machine.
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from data.synthetic import (
    DEFAULT_IMG_SIZE,
    DEFAULT_NUM_IDENTITIES,
    DEFAULT_TEST_PER_IDENTITY,
    DEFAULT_TRAIN_PER_IDENTITY,
    SyntheticFaceDataset,
    SyntheticFaces,
    make_synthetic_faces,
)
from utils.retrieval.metrics import evaluate_codes

BITS = 48
LOW_MAP = 0.3  # "hard": raw pixels / untrained net must stay below this
HIGH_MAP = 0.8  # "learnable": the quick-trained net must reach this

SMALL = dict(num_identities=3, train_per_identity=4, test_per_identity=2)


def _signs(x):
    # +1/-1 without the zeros torch.sign would give for exact ties.
    return torch.where(x > 0, 1, -1).to(torch.int8)


def _map(query_real, db_real, query_labels, db_labels):
    """mAP of the sign codes of real-valued embeddings, queries = test split."""
    result = evaluate_codes(_signs(query_real), _signs(db_real), query_labels, db_labels)
    return result["mAP"]


@pytest.fixture(scope="module")
def faces():
    return make_synthetic_faces()


# --------------------------------------------------------------------------
# shapes, types, ranges


def test_default_shapes_and_labels(faces):
    assert isinstance(faces, SyntheticFaces)
    n_train = DEFAULT_NUM_IDENTITIES * DEFAULT_TRAIN_PER_IDENTITY
    n_test = DEFAULT_NUM_IDENTITIES * DEFAULT_TEST_PER_IDENTITY
    s = DEFAULT_IMG_SIZE
    assert s == 32
    assert faces.train_images.shape == (n_train, 3, s, s)
    assert faces.test_images.shape == (n_test, 3, s, s)
    assert faces.train_images.dtype == faces.test_images.dtype == torch.float32
    assert faces.train_labels.shape == (n_train,) and faces.test_labels.shape == (n_test,)
    assert faces.train_labels.dtype == faces.test_labels.dtype == torch.int64
    # every identity appears the requested number of times in each split
    assert torch.equal(
        torch.bincount(faces.train_labels),
        torch.full((DEFAULT_NUM_IDENTITIES,), DEFAULT_TRAIN_PER_IDENTITY),
    )
    assert torch.equal(
        torch.bincount(faces.test_labels),
        torch.full((DEFAULT_NUM_IDENTITIES,), DEFAULT_TEST_PER_IDENTITY),
    )


def test_value_range(faces):
    for images in (faces.train_images, faces.test_images):
        assert torch.isfinite(images).all()
        assert images.min() >= -1.0 and images.max() <= 1.0
        # uses the range like normalised real data: centred, not flat
        assert abs(images.mean().item()) < 0.3
        assert 0.3 < images.std().item() < 0.8


def test_size_112_and_configurable_counts():
    data = make_synthetic_faces(**SMALL, img_size=112, seed=3)
    assert data.train_images.shape == (12, 3, 112, 112)
    assert data.test_images.shape == (6, 3, 112, 112)
    assert data.train_labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert data.test_labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert data.train_images.min() >= -1.0 and data.train_images.max() <= 1.0


def test_same_faces_at_every_size():
    # Geometry is drawn in normalised coordinates, so a 64x64 render pooled to
    # 32x32 matches the 32x32 render of the same seed up to pixel noise.
    small = make_synthetic_faces(**SMALL).train_images
    big = F.avg_pool2d(make_synthetic_faces(**SMALL, img_size=64).train_images, 2)
    other = F.avg_pool2d(make_synthetic_faces(**SMALL, img_size=64, seed=1).train_images, 2)

    def corr(a, b):
        return torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()

    assert corr(small, big) > 0.85
    assert abs(corr(small, other)) < 0.3


def test_empty_split_and_bad_arguments():
    data = make_synthetic_faces(num_identities=2, train_per_identity=0, test_per_identity=1)
    assert data.train_images.shape == (0, 3, 32, 32) and data.train_labels.shape == (0,)
    assert data.test_images.shape == (2, 3, 32, 32)
    with pytest.raises(ValueError):
        make_synthetic_faces(num_identities=0)
    with pytest.raises(ValueError):
        make_synthetic_faces(train_per_identity=-1)
    with pytest.raises(ValueError):
        make_synthetic_faces(img_size=4)


# --------------------------------------------------------------------------
# determinism


def test_same_seed_is_bit_identical(faces):
    again = make_synthetic_faces()
    for a, b in zip(faces, again):
        assert torch.equal(a, b)
    small = make_synthetic_faces(**SMALL, img_size=112, seed=7)
    for a, b in zip(small, make_synthetic_faces(**SMALL, img_size=112, seed=7)):
        assert torch.equal(a, b)


def test_other_seed_gives_other_data(faces):
    other = make_synthetic_faces(seed=1)
    assert torch.equal(faces.train_labels, other.train_labels)
    assert (faces.train_images - other.train_images).abs().mean() > 0.3
    assert (faces.test_images - other.test_images).abs().mean() > 0.3


def test_generation_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    make_synthetic_faces(**SMALL)
    assert torch.equal(torch.rand(3), expected)


def test_queries_do_not_depend_on_database_size():
    a = make_synthetic_faces(num_identities=3, train_per_identity=2, test_per_identity=2)
    b = make_synthetic_faces(num_identities=3, train_per_identity=5, test_per_identity=2)
    assert torch.equal(a.test_images, b.test_images)


# --------------------------------------------------------------------------
# Dataset wrapper


def test_dataset_splits_items_and_transform():
    train = SyntheticFaceDataset("train", **SMALL, seed=5)
    test = SyntheticFaceDataset(split="test", **SMALL, seed=5)
    data = make_synthetic_faces(**SMALL, seed=5)
    assert (len(train), len(test)) == (12, 6)
    assert train.num_classes == 3
    image, label = train[5]
    assert type(label) is int and label == 1
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert torch.equal(image, data.train_images[5])
    image, label = test[-1]
    assert label == 2 and torch.equal(image, data.test_images[-1])

    flipped = SyntheticFaceDataset("train", **SMALL, seed=5, transform=lambda x: x.flip(-1))
    assert torch.equal(flipped[0][0], data.train_images[0].flip(-1))

    with pytest.raises(ValueError):
        SyntheticFaceDataset("val", **SMALL)


def test_dataset_generates_once_per_arguments():
    kwargs = dict(num_identities=2, train_per_identity=3, test_per_identity=1, seed=11)
    train = SyntheticFaceDataset("train", **kwargs)
    again = SyntheticFaceDataset("train", **kwargs)
    test = SyntheticFaceDataset("test", **kwargs)
    assert again.images is train.images  # cached, not regenerated
    assert test.images.shape[0] == 2
    assert SyntheticFaceDataset("train", **dict(kwargs, seed=12)).images is not train.images


# --------------------------------------------------------------------------
# hard for raw pixels and untrained networks, easy to learn


class SmallNet(nn.Module):
    """Three conv layers with batch norm, a 48-d hash layer, a class head."""

    def __init__(self, num_classes, bits=BITS, width=16):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.hash = nn.Linear(2 * w, bits)
        self.classifier = nn.Linear(bits, num_classes)

    def forward(self, x):
        codes = self.hash(self.features(x))
        return codes, self.classifier(torch.tanh(codes))


@torch.no_grad()
def _embed(net, images):
    net.eval()
    return torch.cat([net(chunk)[0] for chunk in images.split(500)])


def _net_map(net, faces):
    return _map(_embed(net, faces.test_images), _embed(net, faces.train_images),
                faces.test_labels, faces.train_labels)


def test_raw_pixels_score_low(faces):
    mean = faces.train_images.mean(0, keepdim=True)
    db = (faces.train_images - mean).flatten(1)
    query = (faces.test_images - mean).flatten(1)
    pixel_map = _map(query, db, faces.test_labels, faces.train_labels)
    projection = torch.randn(db.shape[1], BITS, generator=torch.Generator().manual_seed(0))
    projected_map = _map(query @ projection, db @ projection,
                         faces.test_labels, faces.train_labels)
    assert pixel_map < LOW_MAP, pixel_map
    assert projected_map < LOW_MAP, projected_map


def test_untrained_net_scores_low(faces):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = SmallNet(DEFAULT_NUM_IDENTITIES)
    untrained = _net_map(net, faces)
    assert untrained < LOW_MAP, untrained


def test_small_net_learns_quickly(faces):
    epochs, batch = 15, 64
    steps = epochs * -(-len(faces.train_labels) // batch)
    threads = torch.get_num_threads()
    # One thread: on a shared 2-core box two OpenMP threads can run many
    # times slower than one (each waits for the other to be scheduled).
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            net = SmallNet(DEFAULT_NUM_IDENTITIES)
            opt = torch.optim.Adam(net.parameters(), lr=1e-2)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=steps)
            for _ in range(epochs):
                net.train()
                order = torch.randperm(len(faces.train_labels))
                for idx in order.split(batch):
                    _, logits = net(faces.train_images[idx])
                    loss = F.cross_entropy(logits, faces.train_labels[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    sched.step()
        trained = _net_map(net, faces)
    finally:
        torch.set_num_threads(threads)
    assert trained >= HIGH_MAP, trained
