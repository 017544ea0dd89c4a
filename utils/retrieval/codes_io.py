"""The stored-codes format: an .npz with db_codes [N, L], query_codes [Q, L]
(int8 in {-1, +1} or {0, 1}), db_labels, query_labels ([n] ids or [n, C] 0/1)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from utils.atomic import atomic_open
from utils.errors import UsageError

CODE_ARRAYS = ("db_codes", "query_codes", "db_labels", "query_labels")


def load_npz(path, required=CODE_ARRAYS) -> dict:
    """Read the named arrays of an .npz, or raise UsageError saying what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no such file: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [name for name in required if name not in z.files]
            if missing:
                raise UsageError(
                    f"{path} lacks array(s) {', '.join(missing)} (needs {', '.join(required)})")
            return {name: z[name] for name in z.files}
    except UsageError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise UsageError(f"cannot read {path} as an .npz file: {exc}") from exc


def save_npz(path, **arrays) -> None:
    """np.savez through a temporary file renamed over ``path`` (never a partial file)."""
    with atomic_open(path) as f:
        np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})


def save_codes(path, db_codes, query_codes, db_labels, query_labels) -> None:
    """Write codes as int8 ±1 with their labels."""
    save_npz(path,
             db_codes=np.where(np.asarray(db_codes) > 0, 1, -1).astype(np.int8),
             query_codes=np.where(np.asarray(query_codes) > 0, 1, -1).astype(np.int8),
             db_labels=db_labels, query_labels=query_labels)
