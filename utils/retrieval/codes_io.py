"""The stored-codes format: an .npz with db_codes [N, L], query_codes [Q, L]
(int8 in {-1, +1} or {0, 1}), db_labels, query_labels ([n] ids or [n, C] 0/1).

Files written by ``save_codes`` also hold what serving needs, so that an index
can be built without converting the codes again:

* ``db_packed`` [N, ceil(L/8)], ``query_packed`` [Q, ceil(L/8)]: uint8, the
  bits packed by ``np.packbits`` (+1 -> 1, first bit = most significant bit of
  byte 0, the last byte padded on the right with 0 bits);
* ``num_bits``: L, which the packed arrays alone do not tell;
* ``db_indices`` int64 [N]: the dataset index of each database item
  (arange(N) unless given); ``db_paths`` (optional) str [N]: its image path,
  a unicode array, so that ``np.load(allow_pickle=False)`` reads every file.

Older files without these arrays still load; ``packed_codes`` packs their
codes on the fly."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from utils.atomic import atomic_open
from utils.errors import UsageError

CODE_ARRAYS = ("db_codes", "query_codes", "db_labels", "query_labels")
WHICH = ("db", "query")


def _check_members(path: Path) -> None:
    """Each member's header, read before its data: a shape the member does not
    hold (a crafted header declaring terabytes) or an object array is refused
    before anything is allocated."""
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with zf.open(info) as f:
                version = np.lib.format.read_magic(f)
                shape, _, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0(f))
            if dtype.hasobject:
                raise UsageError(f"{path}: array {info.filename[:-4]} holds Python objects "
                                 f"(refused: reading them could run code)")
            nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if nbytes > info.file_size:
                raise UsageError(f"{path}: array {info.filename[:-4]} declares shape {shape} "
                                 f"({nbytes} bytes) but holds {info.file_size} bytes")


def load_npz(path, required=CODE_ARRAYS) -> dict:
    """Read the named arrays of an .npz, or raise UsageError saying what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no such file: {path}")
    try:
        _check_members(path)
        with np.load(path, allow_pickle=False) as z:
            missing = [name for name in required if name not in z.files]
            if missing:
                raise UsageError(
                    f"{path} lacks array(s) {', '.join(missing)} (needs {', '.join(required)})")
            return {name: z[name] for name in z.files}
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - zip, zlib, header and allocation errors alike
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UsageError(f"cannot read {path} as an .npz file: {reason}") from None


def save_npz(path, **arrays) -> None:
    """np.savez through a temporary file renamed over ``path`` (never a partial file)."""
    with atomic_open(path) as f:
        np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})


def _numpy(x) -> np.ndarray:
    # torch tensors (any device) and arrays alike, without importing torch here
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def as_bits(codes, name: str = "codes") -> np.ndarray:
    """Bool [n, L] (True = +1 / 1) of ±1 or 0/1 codes; ValueError for other values."""
    codes = _numpy(codes)
    if codes.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [n, bits], got shape {codes.shape}")
    if codes.dtype == bool:
        return codes
    if codes.size and not (np.isin(codes, (-1, 1)).all() or np.isin(codes, (0, 1)).all()):
        raise ValueError(f"{name} must hold only -1/+1 or 0/1 values")
    return codes > 0


def pack_bits(bits) -> np.ndarray:
    """uint8 [n, ceil(L/8)] of bool bits [n, L], as ``np.packbits(axis=1)``."""
    return np.packbits(np.asarray(bits, dtype=bool), axis=1)


def save_codes(path, db_codes, query_codes, db_labels, query_labels, *,
               db_paths=None, db_indices=None) -> None:
    """Write codes as int8 ±1 with their labels, their packed bits, and the
    dataset index (and, when given, the image path) of each database item."""
    # as before the packed arrays existed: > 0 is +1, anything else -1
    db_bits, query_bits = _numpy(db_codes) > 0, _numpy(query_codes) > 0
    for name, bits in (("db_codes", db_bits), ("query_codes", query_bits)):
        if bits.ndim != 2:
            raise ValueError(f"{name} must be a 2-D array [n, bits], got shape {bits.shape}")
    if db_bits.shape[1] != query_bits.shape[1]:
        raise ValueError(f"query codes have {query_bits.shape[1]} bits but database codes "
                         f"have {db_bits.shape[1]}")
    n = db_bits.shape[0]
    arrays = dict(db_codes=np.where(db_bits, 1, -1).astype(np.int8),
                  query_codes=np.where(query_bits, 1, -1).astype(np.int8),
                  db_labels=_numpy(db_labels), query_labels=_numpy(query_labels),
                  db_packed=pack_bits(db_bits), query_packed=pack_bits(query_bits),
                  num_bits=np.int64(db_bits.shape[1]))
    indices = np.arange(n, dtype=np.int64) if db_indices is None else _numpy(db_indices)
    if indices.shape != (n,) or (indices.size and not np.issubdtype(indices.dtype, np.integer)):
        raise ValueError(f"db_indices must be {n} integers, got shape {indices.shape} "
                         f"of dtype {indices.dtype}")
    arrays["db_indices"] = indices.astype(np.int64)
    if db_paths is not None:
        paths = np.asarray([str(p) for p in db_paths], dtype=str)  # 'U': no pickling
        if paths.shape != (n,):
            raise ValueError(f"{len(paths)} db_paths for {n} database codes")
        arrays["db_paths"] = paths
    save_npz(path, **arrays)


def packed_codes(z: dict, which: str = "db"):
    """(packed uint8 [n, ceil(L/8)], L) of the ``which`` ("db" or "query")
    codes of a loaded file; packs ``<which>_codes`` when the file predates the
    packed arrays.  ValueError when the arrays do not fit together."""
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    packed = z.get(f"{which}_packed")
    if packed is None:
        codes = z.get(f"{which}_codes")
        if codes is None:
            raise ValueError(f"the file holds neither {which}_packed nor {which}_codes")
        bits = as_bits(codes, f"{which}_codes")
        return pack_bits(bits), int(bits.shape[1])
    if "num_bits" not in z:
        raise ValueError(f"the file holds {which}_packed but not num_bits")
    num_bits = int(z["num_bits"])
    if packed.dtype != np.uint8 or packed.ndim != 2 or packed.shape[1] != -(-num_bits // 8):
        raise ValueError(f"{which}_packed must be uint8 [n, {-(-num_bits // 8)}] for "
                         f"{num_bits} bits, got {packed.dtype} {packed.shape}")
    return np.ascontiguousarray(packed), num_bits


def db_metadata(z: dict):
    """(dataset index int64 [N] or None, image paths str [N] or None) of the
    database items of a loaded file; None where the file does not hold them."""
    indices = z.get("db_indices")
    paths = z.get("db_paths")
    if indices is not None and (indices.ndim != 1 or indices.dtype.kind not in "iu"):
        raise ValueError(f"db_indices must be integers [N], got {indices.dtype} {indices.shape}")
    if paths is not None and (paths.ndim != 1 or paths.dtype.kind != "U"):
        raise ValueError(f"db_paths must be strings [N], got {paths.dtype} {paths.shape}")
    return (None if indices is None else np.asarray(indices, dtype=np.int64),
            None if paths is None else np.asarray(paths, dtype=str))
