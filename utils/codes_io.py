"""The stored-codes format: an .npz with db_codes [N, L], query_codes [Q, L]
(int8 in {-1, +1} or {0, 1}), db_labels, query_labels ([n] ids or [n, C] 0/1)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from utils.cli import UsageError, atomic_write_bytes

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


def save_codes(path, db_codes, query_codes, db_labels, query_labels, **extra) -> None:
    """Write codes as int8 ±1 with their labels, atomically."""
    arrays = {
        "db_codes": np.where(np.asarray(db_codes) > 0, 1, -1).astype(np.int8),
        "query_codes": np.where(np.asarray(query_codes) > 0, 1, -1).astype(np.int8),
        "db_labels": np.asarray(db_labels),
        "query_labels": np.asarray(query_labels),
    }
    arrays.update({k: np.asarray(v) for k, v in extra.items()})
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())
