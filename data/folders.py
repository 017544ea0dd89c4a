"""Face datasets stored as image folder trees: VGGFace2 and any ``--data-root``.

Layout: ``<root>/train/<identity>/<image>`` and ``<root>/test/<identity>/<image>``
(torchvision ImageFolder, one folder per identity).

Identity ids come from the train folder (sorted folder names, as ImageFolder
numbers them) and are applied to every split, so the same folder name gets the
same id in train and test even when test holds a subset of the identities; an
identity only present in test gets a fresh id after all train ids.

The transform of each split comes from the method's preset (data/transforms.py).
With ``skip_bad_images`` every file is decoded once; the database view of the
training split (``with_transform``) shares that scan instead of repeating it.
"""

import copy
import functools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from data.errors import DatasetError
from data.layout import SPLITS, has_splits, one_line, splits_text

DEFAULT_IMG_SIZE = 112
PER_IDENTITY = "holding one folder of images per identity"

# dataset key -> (name shown to users, default root, official roots): OPQN
# reads ./data/vggface2; the DCDH scripts read ./vggface2 and ./vgg_face2.
FOLDER_DATASETS = {
    "vggface2": ("VGGFace2", os.path.join("data", "vggface2"), ("vggface2", "vgg_face2")),
    # CFW-60K as OPQN reads it: 32x32 face images, one folder per identity
    "cfw": ("CFW-60K", os.path.join("data", "cfw"), ()),
}




def find_folder_root(dataset: str, data_root: Optional[str] = None,
                     splits: Sequence[str] = SPLITS) -> str:
    """Folder holding the ``splits`` (``train/`` and ``test/``) of an image-folder dataset.

    ``dataset`` is ``vggface2`` (default ``data/vggface2``, also found at the
    official ``./vggface2`` or ``./vgg_face2``), ``cfw`` (``data/cfw``) or
    ``folder`` (``data_root`` required). ``data_root`` wins when given.
    """
    if dataset == "folder":
        if data_root is None:
            raise DatasetError(
                "--dataset folder needs --data-root DIR: "
                f"a folder with {' and '.join(s + '/' for s in splits)} {PER_IDENTITY}"
            )
        name = "image folder tree"
    elif dataset in FOLDER_DATASETS:
        name = FOLDER_DATASETS[dataset][0]
    else:
        raise ValueError(f"not an image-folder dataset: {dataset!r}")

    if data_root is not None:
        if has_splits(data_root, splits):
            return data_root
        where, alternative = splits_text(data_root, splits), ""
    else:
        _, default_dir, official_dirs = FOLDER_DATASETS[dataset]
        for candidate in (default_dir, *official_dirs):
            if has_splits(candidate, splits):
                return candidate
        where = splits_text(default_dir, splits)
        alternative = (f" (or {', '.join('./' + d for d in official_dirs)})"
                       if official_dirs else "")
    raise DatasetError(f"{name} not found: expected {where} {PER_IDENTITY}{alternative}")


def identity_folders(directory: str) -> List[str]:
    """Sorted sub-folder names, exactly the classes ImageFolder would find."""
    try:
        return sorted(entry.name for entry in os.scandir(directory) if entry.is_dir())
    except OSError as err:
        raise DatasetError(f"cannot list {directory}/: {one_line(err)}") from err


def _load_rgb(path: str, hint: str):
    """torchvision's PIL loader, failing with a DatasetError naming the file."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except Exception as err:  # PIL reports bad data with many exception types
        raise DatasetError(f"cannot read image {path}: {one_line(err)}; {hint}") from err


def image_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be decoded, or None if it can."""
    try:
        # verify() catches non-images and broken PNG chunks but not truncated
        # JPEG data, which only decoding finds; draft() lets libjpeg decode at
        # 1/8 scale, which still reads the whole stream, so the scan stays cheap.
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            img.draft("RGB", (1, 1))
            img.load()
    except Exception as err:
        return one_line(err)
    return None


def find_bad_images(paths: Sequence[str], workers: Optional[int] = None) -> List[Tuple[str, str]]:
    """(path, reason) for every file in ``paths`` that cannot be decoded."""
    # Decoding releases the GIL, so threads overlap the work of big trees.
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        problems = list(pool.map(image_problem, paths))
    return [(path, why) for path, why in zip(paths, problems) if why is not None]


class ImageFolderSplit(ImageFolder):
    """One split of an image folder tree with identity ids shared across splits.

    ``root`` holds ``train/`` and ``test/`` (``reference_split`` names the
    split whose folders fix the ids); ``transform`` maps a PIL image to a
    tensor (a preset of data/transforms.py). With ``skip_bad_images`` every file is
    decoded once here and the unreadable ones are left out and listed in
    ``skipped_files`` (reasons in ``skip_reasons``); without it, reading a
    bad file raises :class:`DatasetError` naming it.
    """

    def __init__(
        self,
        root: str,
        split: str,
        transform: Optional[Callable] = None,
        img_size: int = DEFAULT_IMG_SIZE,
        skip_bad_images: bool = False,
        reference_split: str = "train",
    ):
        split_dir = os.path.join(root, split)
        reference_dir = os.path.join(root, reference_split)
        for directory in (reference_dir, split_dir):
            if not os.path.isdir(directory):
                raise DatasetError(
                    f"image folder not found: expected {directory}/ {PER_IDENTITY}"
                )
        # Set before ImageFolder.__init__, which calls find_classes().
        self._class_to_idx, num_reference = self._shared_ids(reference_dir, split_dir)
        hint = (
            "remove or replace the file"
            if skip_bad_images
            else "pass --skip-bad-images to leave such files out"
        )
        # allow_empty: a test split may lack some train identities.
        super().__init__(
            split_dir,
            transform=transform,
            loader=functools.partial(_load_rgb, hint=hint),
            allow_empty=True,
        )
        if not self.samples:
            raise DatasetError(
                f"no images in {split_dir}/: expected image files "
                f"({', '.join(IMG_EXTENSIONS)}) inside its identity folders"
            )
        self.split = split
        self.img_size = img_size
        # Identities of the reference (train) split: the size of a classifier
        # head; ids of test-only identities lie at or beyond it.
        self.num_classes = num_reference
        self.skipped_files: List[str] = []
        self.skip_reasons: Dict[str, str] = {}
        if skip_bad_images:
            bad = find_bad_images([path for path, _ in self.samples])
            if bad:
                self.skip_reasons = dict(bad)
                self.skipped_files = [path for path, _ in bad]
                self.samples = [s for s in self.samples if s[0] not in self.skip_reasons]
                self.imgs = self.samples
                self.targets = [target for _, target in self.samples]
            if not self.samples:
                raise DatasetError(
                    f"no readable images in {split_dir}/: "
                    f"all {len(bad)} image files failed to decode"
                )

    def with_transform(self, transform: Optional[Callable]) -> "ImageFolderSplit":
        """The same items (same scan, same skipped files) through another transform:
        the training split as the retrieval database."""
        view = copy.copy(self)
        view.transform = transform
        return view

    @staticmethod
    def _shared_ids(reference_dir: str, split_dir: str) -> Tuple[Dict[str, int], int]:
        reference = identity_folders(reference_dir)
        if not reference:
            raise DatasetError(
                f"no identity folders in {reference_dir}/: "
                "expected one folder of images per identity"
            )
        present = identity_folders(split_dir)
        if not present:
            raise DatasetError(
                f"no identity folders in {split_dir}/: "
                "expected one folder of images per identity"
            )
        class_to_idx = {name: i for i, name in enumerate(reference)}
        for name in present:
            if name not in class_to_idx:
                class_to_idx[name] = len(class_to_idx)
        return class_to_idx, len(reference)

    def find_classes(self, directory) -> Tuple[List[str], Dict[str, int]]:
        classes = sorted(self._class_to_idx, key=self._class_to_idx.__getitem__)
        return classes, dict(self._class_to_idx)
