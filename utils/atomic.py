"""Files that are replaced only once fully written: a kill at any moment leaves
either the old file or the new one, never a truncated one; a write that
fails (a full disk) is one line naming the file, and leaves the old file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from utils.errors import UsageError


@contextlib.contextmanager
def atomic_open(path):
    """A binary file object; on success its content replaces ``path``.

    Written to a hidden temporary file beside ``path``, synced, then renamed
    over it (a rename within one folder is atomic)."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path), suffix=".tmp")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would
        os.replace(tmp, path)
    except OSError as exc:  # a full disk, a vanished folder: the old file stays
        _remove(tmp)
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        _remove(tmp)
        raise


def temp_prefix(path: Path) -> str:
    """The hidden name of ``path``'s file while it is written."""
    return f".{path.name}."


def leftovers(path) -> list:
    """Temporary files of ``path`` that an interrupted (killed) write left."""
    path = Path(path)
    return sorted(path.parent.glob(f"{temp_prefix(path)}*.tmp")) if path.parent.is_dir() else []


def _remove(tmp) -> None:
    try:
        os.unlink(tmp)
    except OSError:
        pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path, data: bytes) -> None:
    with atomic_open(path) as f:
        f.write(data)
