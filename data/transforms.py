"""Image transforms, one preset per method and kind of data, each the pipeline
of that method's published code.

================  ===================================================  ===========================
preset            steps (S = output side)                              published source
================  ===================================================  ===========================
``dcdh``          PIL Resize(round(S*120/112)) (bilinear, antialiased) DCDH dcdh_train.py / utils.py
                  -> RandomCrop(S) + HorizontalFlip (train) or         (PIL transforms on the
                  CenterCrop(S) (test) -> ToTensor -> Normalize(0.5,   ImageFolder images)
                  0.5)
``opqn``          ToTensor -> tensor Resize(round(S*120/112), no       OPQN main.py: ToTensor in
                  antialiasing) -> RandomCrop(S) + flip / CenterCrop   the dataset, then the
                  -> Normalize(0.5, 0.5)                               resize/crop nn.Sequential on
                                                                       float batches
``opqn_small``    ToTensor -> tensor Resize(35 at S=32, no antialias)  OPQN main.py, FaceScrub /
                  RandomCrop(32) + flip / CenterCrop(32) ->            YouTube / CFW as 32x32
                  Normalize((0.639, 0.479, 0.404), (0.216, 0.183,      images
                  0.171))
``triplet``       PIL Resize((R, R)), R = round(S*256/224) (aspect ratio   Image-Retrieval main.py
                  ignored) -> RandomCrop(S) + flip / CenterCrop(S) ->  ``get_dataset``
                  ToTensor -> Normalize with the CIFAR-10 statistics
                  (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
================  ===================================================  ===========================

The triplet preset keeps the published CIFAR-10 normalisation although the
backbone is ImageNet-pretrained (as published).  The 32-pixel image folders (CFW, and FaceScrub / YouTube stored as images)
exist only in OPQN's published code, so DCDH reads them with ``opqn_small``
too.  Random crops and flips are drawn per image, except in OPQN's training:
its published code applies the training transform to each batch tensor (one
crop and one flip per batch), and so does ``OPQN.batch_augment`` here
(data/loaders.py, data/cache.py).
"""

from __future__ import annotations

from typing import Callable, Dict, Sequence

FACE_MEAN = (0.5, 0.5, 0.5)
FACE_STD = (0.5, 0.5, 0.5)
# OPQN's statistics of FaceScrub, used for every 32x32 image folder
SMALL_FACE_MEAN = (0.639, 0.479, 0.404)
SMALL_FACE_STD = (0.216, 0.183, 0.171)
SMALL_RESIZE = 35


def resize_for(img_size: int) -> int:
    """Shorter-side resize before cropping ``img_size``: round(S * 120 / 112),
    halves rounded up (integer arithmetic, whatever float rounding would do)."""
    return (img_size * 240 + 112) // 224


def _crop_and_flip(transforms, img_size: int, train: bool) -> list:
    if train:
        return [transforms.RandomCrop(img_size), transforms.RandomHorizontalFlip()]
    return [transforms.CenterCrop(img_size)]


def dcdh_preset(img_size: int, train: bool) -> Callable:
    """PIL image -> float32 [3, S, S]: resize the PIL image, then crop."""
    from torchvision import transforms

    return transforms.Compose([
        transforms.Resize(resize_for(img_size)),  # PIL bilinear with antialiasing
        *_crop_and_flip(transforms, img_size, train),
        transforms.ToTensor(),
        transforms.Normalize(FACE_MEAN, FACE_STD),
    ])


def _tensor_resize_preset(img_size: int, train: bool, resize: int, mean: Sequence[float],
                          std: Sequence[float]) -> Callable:
    from torchvision import transforms

    return transforms.Compose([
        transforms.ToTensor(),
        # the published OPQN code resizes float tensors, which had no antialiasing
        transforms.Resize(resize, antialias=False),
        *_crop_and_flip(transforms, img_size, train),
        transforms.Normalize(mean, std),
    ])


def opqn_preset(img_size: int, train: bool) -> Callable:
    """PIL image -> float32 [3, S, S]: to a tensor first, then resize and crop."""
    return _tensor_resize_preset(img_size, train, resize_for(img_size), FACE_MEAN, FACE_STD)


def opqn_small_preset(img_size: int, train: bool) -> Callable:
    """OPQN's 32-pixel folders: resize 35 (at another S, round(S * 120 / 112))."""
    resize = SMALL_RESIZE if img_size == 32 else resize_for(img_size)
    return _tensor_resize_preset(img_size, train, resize, SMALL_FACE_MEAN, SMALL_FACE_STD)


# the published statistics of triplet hashing (CIFAR-10's, on CUB and Dogs)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)


def triplet_preset(img_size: int, train: bool) -> Callable:
    """PIL image -> float32 [3, S, S]: square resize to 256 (at S = 224), crop."""
    from torchvision import transforms

    resize = (img_size * 256 * 2 + 224) // 448  # round(S * 256 / 224), halves up
    return transforms.Compose([
        transforms.Resize((resize, resize)),
        *_crop_and_flip(transforms, img_size, train),
        transforms.ToTensor(),
        transforms.Normalize(CIFAR_MEAN, CIFAR_STD),
    ])


PRESETS: Dict[str, Callable] = {
    "dcdh": dcdh_preset,
    "opqn": opqn_preset,
    "opqn_small": opqn_small_preset,
    "triplet": triplet_preset,
}


# the image side each preset's published code reads an image folder at
DEFAULT_SIZES = {"dcdh": 112, "opqn": 112, "opqn_small": 32, "triplet": 224}


def default_size(preset: str) -> int:
    return DEFAULT_SIZES.get(preset, 112)


def folder_transform(preset: str, img_size: int, train: bool, small: bool = False) -> Callable:
    """The transform of ``preset`` for an image folder (``small``: a 32-pixel
    face folder, which only OPQN's pipeline reads)."""
    name = "opqn_small" if small and preset in ("dcdh", "opqn") else preset
    if name not in PRESETS:
        raise ValueError(f"unknown transform preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name](img_size, train)
