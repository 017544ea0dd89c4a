"""Folder-layout helpers shared by the dataset readers."""

import os
from typing import Sequence

SPLITS = ("train", "test")


def one_line(err: BaseException) -> str:
    """An exception as a single line: 'Type: message'."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def has_splits(root: str, splits: Sequence[str] = SPLITS) -> bool:
    return all(os.path.isdir(os.path.join(root, split)) for split in splits)


def splits_text(root: str, splits: Sequence[str] = SPLITS) -> str:
    """'root/train/ and root/test/', for messages."""
    return " and ".join(f"{os.path.join(root, split)}/" for split in splits)
