"""Built-in procedural face-like dataset, so every script can run and learn
with no download.

Generative model (all geometry in normalised coordinates [-1, 1], so the same
seed gives the same faces, poses and occluders at 32x32 and at 112x112, only
sampled more finely; the pixel noise differs):

* Identity. Each identity has a soft elliptical "face" with its own skin
  colour and shape, and a handful of blurred anisotropic Gaussian blobs
  ("features": eyes, mouth, marks) at identity-specific positions, sizes and
  colours. Identity lives in the mid-frequency arrangement of these blobs.
* Image. Every image of an identity redraws the nuisance: a random background
  colour, a global shift and scale of the whole face, a small jitter of each
  feature, a linear illumination gradient, contrast and per-channel brightness
  changes, additive Gaussian pixel noise and one occluding rectangle of a
  random colour.

The nuisance is chosen to dominate pixel space (raw pixels, or an untrained
network, rank the database poorly by Hamming distance of their signs) while a
small convolutional network, being roughly shift-invariant and able to
normalise brightness and contrast, learns the identities quickly.

Images are float32 in [-1, 1] (like ``Normalize(0.5, 0.5)`` of real data;
about 15% of the values are clipped at the ends, as in over- and under-exposed
photos), labels are int64 in ``[0, num_identities)``; ``train`` is the
retrieval database and ``test`` the queries.
"""

import functools
from typing import Callable, NamedTuple, Optional

import torch
from torch.utils.data import Dataset

DEFAULT_NUM_IDENTITIES = 20
DEFAULT_TRAIN_PER_IDENTITY = 60
DEFAULT_TEST_PER_IDENTITY = 15
DEFAULT_IMG_SIZE = 32
DEFAULT_SEED = 0

# Number of feature blobs per face. Enough that identities differ in layout,
# few enough that each blob stays large and smooth (low/mid frequency).
_NUM_BLOBS = 6

# Nuisance strengths, in normalised coordinates or [0, 1] intensity units.
# Tuned so that raw pixels score low mAP and a small conv net scores high.
_SHIFT = 0.2  # max global shift, fraction of the half-width (3.2 px at 32)
_SCALE = (0.9, 1.1)  # global scale range
_JITTER = 0.04  # std of each feature's own displacement
_GRADIENT = 0.3  # max relative illumination change across the half-width
_CONTRAST = (0.75, 1.25)  # global contrast gain range
_BRIGHTNESS = 0.05  # std of per-channel brightness offset
_OCCLUSION = (0.1, 0.35)  # occluder side as a fraction of the image side
_NOISE = 0.1  # std of additive pixel noise
_BLOB_CONTRAST = 1.5  # max colour difference of a feature from the skin


class SyntheticFaces(NamedTuple):
    train_images: torch.Tensor  # float32 [N, 3, S, S] in [-1, 1]
    train_labels: torch.Tensor  # int64 [N]
    test_images: torch.Tensor  # float32 [Q, 3, S, S]
    test_labels: torch.Tensor  # int64 [Q]


def _uniform(gen, shape, low, high):
    return torch.rand(shape, generator=gen) * (high - low) + low


def _sample_identities(gen, num_identities):
    """Draw the per-identity template parameters (geometry and colours)."""
    c = num_identities
    ident = {
        # Face ellipse: slightly off-centre, with its own width/height.
        "face_center": _uniform(gen, (c, 2), -0.08, 0.08),
        "face_radius": torch.stack(
            [_uniform(gen, (c,), 0.50, 0.72), _uniform(gen, (c,), 0.62, 0.86)], 1
        ),
        "skin": _uniform(gen, (c, 3), 0.25, 0.85),
        # Feature blobs live inside the face so that occlusion and shifts act
        # on them the way they act on eyes/mouth in real crops.
        "blob_pos": _uniform(gen, (c, _NUM_BLOBS, 2), -0.55, 0.55),
        "blob_radius": _uniform(gen, (c, _NUM_BLOBS, 2), 0.08, 0.22),
        # Signed colour contrast relative to the skin: dark or bright features.
        "blob_colour": _uniform(gen, (c, _NUM_BLOBS, 3), -_BLOB_CONTRAST, _BLOB_CONTRAST),
    }
    return ident


def _render(gen, ident, labels, img_size):
    """Render one image per label with freshly drawn nuisance."""
    n = labels.numel()
    s = img_size
    # Pixel centres in normalised coordinates; same sampling grid at any size.
    grid = (torch.arange(s, dtype=torch.float32) + 0.5) / s * 2 - 1

    # Global similarity transform (shift + scale) shared by every part of the
    # face: the main reason pixel positions do not line up between images.
    shift = _uniform(gen, (n, 1, 2), -_SHIFT, _SHIFT)
    scale = _uniform(gen, (n, 1, 1), *_SCALE)

    face_c = ident["face_center"][labels].unsqueeze(1) * scale + shift  # [n,1,2]
    face_r = ident["face_radius"][labels].unsqueeze(1) * scale  # [n,1,2]
    # Small per-feature jitter, like expression or pose changes.
    blob_c = (
        ident["blob_pos"][labels] + _JITTER * torch.randn((n, _NUM_BLOBS, 2), generator=gen)
    ) * scale + shift
    blob_r = ident["blob_radius"][labels] * scale

    # Separable 1-D profiles: [n, parts, s] for x and y.
    gx = (grid.view(1, 1, s) - blob_c[..., 0:1]) / blob_r[..., 0:1]
    gy = (grid.view(1, 1, s) - blob_c[..., 1:2]) / blob_r[..., 1:2]
    gx = torch.exp(-0.5 * gx * gx)
    gy = torch.exp(-0.5 * gy * gy)

    # Soft ellipse mask of the face (not separable, but only [n, s, s]).
    ex = (grid.view(1, 1, s) - face_c[..., 0:1]) / face_r[..., 0:1]  # [n,1,s]
    ey = (grid.view(1, 1, s) - face_c[..., 1:2]) / face_r[..., 1:2]
    d2 = ey.transpose(1, 2) ** 2 + ex**2  # [n, s(y), s(x)]
    face_mask = torch.sigmoid((1.0 - d2) * 8.0).unsqueeze(1)  # [n,1,s,s]

    # Sum of separable blobs as one batched matmul over the blob axis:
    # [n, 3*s(y), K] @ [n, K, s(x)]. The full-size image tensor is then edited
    # in place, because at 112x112 every extra temporary costs ~200 MB.
    colour = ident["blob_colour"][labels]  # [n, K, 3]
    left = (colour.unsqueeze(-1) * gy.unsqueeze(2)).reshape(n, _NUM_BLOBS, 3 * s)
    img = torch.bmm(left.transpose(1, 2), gx).view(n, 3, s, s)

    # Background colour is nuisance: large area, so it dominates raw pixels.
    # The face (skin + features) is pasted over it through the soft mask.
    background = _uniform(gen, (n, 3, 1, 1), 0.0, 1.0)
    skin = ident["skin"][labels].view(n, 3, 1, 1)
    img.add_(skin - background).mul_(face_mask).add_(background)

    # Illumination: linear gradient, global contrast, per-channel brightness,
    # folded into one multiply and one add: (img * ramp - 0.5) * c + 0.5 + b.
    direction = torch.randn((n, 2), generator=gen)
    direction = direction / direction.norm(dim=1, keepdim=True)
    strength = _uniform(gen, (n, 1, 1), 0.0, _GRADIENT)
    ramp = 1.0 + strength * (
        direction[:, 0, None, None] * grid.view(1, 1, s)
        + direction[:, 1, None, None] * grid.view(1, s, 1)
    )
    contrast = _uniform(gen, (n, 1, 1, 1), *_CONTRAST)
    brightness = _BRIGHTNESS * torch.randn((n, 3, 1, 1), generator=gen)
    img.mul_(ramp.unsqueeze(1) * contrast).add_(0.5 * (1.0 - contrast) + brightness)

    # One occluding rectangle per image (hand, scarf, sunglasses...), flat
    # random colour, 10%-35% of the side in each direction.
    size = _uniform(gen, (n, 2), *_OCCLUSION) * s
    corner = torch.rand((n, 2), generator=gen) * (s - size)
    pix = torch.arange(s, dtype=torch.float32).view(1, s)
    in_x = (pix >= corner[:, 0:1]) & (pix < corner[:, 0:1] + size[:, 0:1])
    in_y = (pix >= corner[:, 1:2]) & (pix < corner[:, 1:2] + size[:, 1:2])
    occluded = (in_y[:, :, None] & in_x[:, None, :]).unsqueeze(1)  # [n,1,s,s]
    occ_colour = torch.rand((n, 3, 1, 1), generator=gen)
    torch.where(occluded, occ_colour, img, out=img)

    # Sensor noise, then map [0, 1] -> [-1, 1] like Normalize(0.5, 0.5).
    img.add_(torch.randn(img.shape, generator=gen).mul_(_NOISE))
    return img.clamp_(0.0, 1.0).mul_(2.0).sub_(1.0)


def make_synthetic_faces(
    num_identities: int = DEFAULT_NUM_IDENTITIES,
    train_per_identity: int = DEFAULT_TRAIN_PER_IDENTITY,
    test_per_identity: int = DEFAULT_TEST_PER_IDENTITY,
    img_size: int = DEFAULT_IMG_SIZE,
    seed: int = DEFAULT_SEED,
) -> SyntheticFaces:
    """Generate the dataset; the same arguments give bit-identical tensors."""
    if num_identities < 1 or train_per_identity < 0 or test_per_identity < 0:
        raise ValueError(
            "num_identities must be >= 1 and images per identity >= 0, got "
            f"{num_identities}, {train_per_identity}, {test_per_identity}"
        )
    if img_size < 8:
        raise ValueError(f"img_size must be at least 8, got {img_size}")
    # A private generator: reproducible, and leaves the global RNG untouched.
    gen = torch.Generator().manual_seed(seed)
    ident = _sample_identities(gen, num_identities)
    ids = torch.arange(num_identities, dtype=torch.int64)
    train_labels = ids.repeat_interleave(train_per_identity)
    test_labels = ids.repeat_interleave(test_per_identity)
    # Each split renders from its own generator, seeded from the master one:
    # the splits are separate tensors (saving one never drags the other along)
    # and the queries stay the same when only the database size changes.
    train_seed, test_seed = torch.randint(2**62, (2,), generator=gen).tolist()
    return SyntheticFaces(
        train_images=_render(
            torch.Generator().manual_seed(train_seed), ident, train_labels, img_size
        ),
        train_labels=train_labels,
        test_images=_render(
            torch.Generator().manual_seed(test_seed), ident, test_labels, img_size
        ),
        test_labels=test_labels,
    )


@functools.lru_cache(maxsize=2)
def _cached_faces(num_identities, train_per_identity, test_per_identity, img_size, seed):
    # Train and test datasets built with the same arguments share one render.
    # Two entries: one configuration in use plus one, since a 112x112 default
    # render holds ~280 MB for the life of the process.
    return make_synthetic_faces(
        num_identities, train_per_identity, test_per_identity, img_size, seed
    )


class SyntheticFaceDataset(Dataset):
    """One split of :func:`make_synthetic_faces` as a map-style dataset.

    Returns ``(image, label)`` with ``image`` a float32 tensor [3, S, S] in
    [-1, 1] (after ``transform`` if given) and ``label`` a Python int.
    The images are shared with a cache (train and test splits of the same
    arguments are generated once), so ``transform`` must not modify its input
    in place.
    """

    def __init__(
        self,
        split: str = "train",
        num_identities: int = DEFAULT_NUM_IDENTITIES,
        train_per_identity: int = DEFAULT_TRAIN_PER_IDENTITY,
        test_per_identity: int = DEFAULT_TEST_PER_IDENTITY,
        img_size: int = DEFAULT_IMG_SIZE,
        seed: int = DEFAULT_SEED,
        transform: Optional[Callable] = None,
    ):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        faces = _cached_faces(
            num_identities, train_per_identity, test_per_identity, img_size, seed
        )
        self.split = split
        self.num_classes = num_identities
        self.images = faces.train_images if split == "train" else faces.test_images
        self.labels = faces.train_labels if split == "train" else faces.test_labels
        self.transform = transform

    def __len__(self):
        return self.labels.numel()

    def __getitem__(self, index):
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])
