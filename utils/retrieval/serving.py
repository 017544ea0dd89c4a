"""Served indexes: a file ``index.py build`` writes and ``index.py search``
reads, and the sidecar ``INDEX.json`` that says what the index file does not
(code length, index type, item count, the codes file, and each item's
dataset index and image path when the codes file holds them).

Two kinds of database are served:

* binary codes (a stored-codes file): a faiss binary index (flat, hash or
  IVF, ``utils.retrieval.faiss_index``), searched in the project's order
  (Hamming distance ascending, ties by database index);
* PQ features (OPQN's stored features, with their ``mlp``): type ``pq``, an
  .npz of the codeword index [N, M] and the mlp, searched by the asymmetric
  PQ score (score descending, ties by database index), as OPQN ranks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from utils.cli.output import write_json
from utils.errors import UsageError
from utils.retrieval import faiss_index as fi
from utils.retrieval.codes_io import db_metadata, load_npz, packed_codes, save_npz

DEFAULT_TOPK = 10
# up to this many items, dataset indices and paths go into the JSON sidecar;
# beyond, into an .npz beside it
INLINE_MAX_ITEMS = 10_000


def sidecar_path(index_path) -> Path:
    return Path(str(index_path) + ".json")


def ids_path(index_path) -> Path:
    return Path(str(index_path) + ".ids.npz")


def write_sidecar(index_path, meta: dict, indices, paths) -> None:
    """INDEX.json, with the items' dataset indices (left out when they are the
    row numbers) and paths inline for small databases, else in INDEX.ids.npz."""
    meta = dict(meta)
    if indices is not None and np.array_equal(indices, np.arange(len(indices))):
        indices = None
    if indices is not None or paths is not None:
        if meta["num_items"] <= INLINE_MAX_ITEMS:
            if indices is not None:
                meta["db_indices"] = [int(i) for i in indices]
            if paths is not None:
                meta["db_paths"] = [str(p) for p in paths]
        else:
            arrays = {"db_indices": indices, "db_paths": paths}
            save_npz(ids_path(index_path), **{k: v for k, v in arrays.items() if v is not None})
            meta["ids_file"] = ids_path(index_path).name
    write_json(sidecar_path(index_path), meta)


def read_sidecar(index_path):
    """(meta, dataset indices or None, paths or None) of an index, or UsageError."""
    path = sidecar_path(index_path)
    if not path.is_file():
        raise UsageError(f"no sidecar {path} beside {index_path}; index.py build writes both")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"cannot read {path} as JSON: {exc}") from None
    missing = [key for key in ("num_bits", "type", "num_items")
               if not isinstance(meta, dict) or key not in meta]
    if missing:
        raise UsageError(f"{path} lacks {', '.join(missing)}; rebuild with index.py build")
    kinds = (*fi.KINDS, "pq")
    wrong = [key for key, ok in (("num_bits", lambda v: _count(v) and v >= 1),
                                 ("num_items", _count),
                                 ("type", lambda v: v in kinds))
             if not ok(meta[key])]
    for key, kind in (("db_indices", int), ("db_paths", str)):
        values = meta.get(key)
        if values is not None and (not isinstance(values, list) or not all(
                isinstance(v, kind) and not isinstance(v, bool) for v in values)):
            wrong.append(key)
    if wrong:
        raise UsageError(f"{path}: {', '.join(wrong)} of the wrong type or value; rebuild with "
                         f"index.py build")
    indices, paths = meta.pop("db_indices", None), meta.pop("db_paths", None)
    if "ids_file" in meta:
        z = load_npz(path.parent / meta["ids_file"], required=())
        indices, paths = z.get("db_indices"), z.get("db_paths")
    for name, values in (("db_indices", indices), ("db_paths", paths)):
        if values is not None and len(values) != meta["num_items"]:
            raise UsageError(f"{path}: {len(values)} {name} for {meta['num_items']} items; "
                             f"rebuild with index.py build")
    return meta, indices, paths


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class PQIndex:
    """OPQN's database served by the PQ score: codeword ids [N, M] and the mlp."""

    def __init__(self, db_index: np.ndarray, mlp: np.ndarray):
        self.db_index, self.mlp = db_index, mlp
        self.ntotal = int(db_index.shape[0])


def load_served_index(index_path):
    """(index, meta, dataset indices or None, paths or None), checked against each other."""
    path = Path(index_path)
    if not path.is_file():
        raise UsageError(f"no such file: {path}")
    if _sidecar_type(index_path) == "pq":
        z = load_npz(index_path, required=("db_index", "mlp"))
        index, kind = PQIndex(z["db_index"], z["mlp"]), "pq"
    else:
        index = fi.load_index(index_path)
        kind = fi.index_kind(index)
    meta, indices, paths = read_sidecar(index_path)
    fits = kind == "pq" or 8 * fi.code_size(meta["num_bits"]) == index.d
    if meta["num_items"] != index.ntotal or meta["type"] != kind or not fits:
        raise UsageError(f"{sidecar_path(index_path)} does not describe {index_path} "
                         f"(it says {meta['num_items']} items, {meta['type']}, "
                         f"{meta['num_bits']} bits; the index holds {index.ntotal} items, "
                         f"{kind}); rebuild with index.py build")
    meta["index_file"] = str(index_path)
    return index, meta, indices, paths


def _sidecar_type(index_path):
    """The index type the sidecar names, where it can be read (else None:
    ``read_sidecar`` reports the problem)."""
    try:
        meta = json.loads(sidecar_path(index_path).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return meta.get("type") if isinstance(meta, dict) else None


def packed(codes_path, which):
    """(file arrays, packed uint8 codes, bits) of a stored-codes file's ``which`` codes."""
    z = load_npz(codes_path, required=())
    try:
        codes, num_bits = packed_codes(z, which)
    except ValueError as exc:
        raise UsageError(f"{codes_path}: {exc}") from None
    return z, codes, num_bits


def build(codes_path, out, kind=None, nlist=None, hash_bits=None, nprobe=None, nflip=1) -> dict:
    """Index the database of a stored-codes (or stored-features) file into
    ``out`` and its sidecar; returns the sidecar's facts."""
    z = load_npz(codes_path, required=())
    if "mlp" in z:
        if kind not in (None, "pq"):
            raise UsageError(f"{codes_path} holds PQ features: they are served by the PQ score "
                             f"(--type pq), not a {kind} binary index")
        return _build_pq(z, codes_path, out)
    kind = kind or "flat"
    if kind == "pq":
        raise UsageError(f"--type pq serves OPQN's stored features; {codes_path} holds binary codes")
    z, codes, num_bits = packed(codes_path, "db")
    indices, paths = _metadata(z, len(codes), codes_path)
    try:
        index = fi.build_binary_index(codes, num_bits, kind=kind, nlist=nlist,
                                      hash_bits=hash_bits, nprobe=nprobe, nflip=nflip)
    except ValueError as exc:
        raise UsageError(f"--type {kind}: {exc}") from None
    meta = {"num_bits": num_bits, "type": kind, "faiss_class": type(index).__name__,
            "num_items": int(index.ntotal), "bytes_per_item": fi.code_size(num_bits),
            "codes_file": os.path.abspath(codes_path)}
    if kind == "ivf":
        meta.update(nlist=int(index.nlist), nprobe=int(index.nprobe))
    elif kind == "hash":
        nhash, b = fi.hash_layout(num_bits, hash_bits)
        meta.update(nhash=nhash, hash_bits=b, nflip=int(index.nflip))
    _write_pair(out, lambda path: fi.save_index(index, path), meta, indices, paths)
    return meta


def _write_pair(out, write_index, meta, indices, paths) -> None:
    """The index file and its sidecar replaced together: the index is written
    beside its name first, the sidecar next, then the index renamed into
    place; a failure (a full disk) leaves the old pair, or no pair."""
    out = Path(out)
    staged = out.with_name(f".{out.name}.new")
    try:
        write_index(staged)
        write_sidecar(out, meta, indices, paths)
        os.replace(staged, out)
    finally:
        if staged.exists():
            staged.unlink()


def _metadata(z, n, codes_path):
    try:
        indices, paths = db_metadata(z)
    except ValueError as exc:
        raise UsageError(f"{codes_path}: {exc}") from None
    for name, values in (("db_indices", indices), ("db_paths", paths)):
        if values is not None and len(values) != n:
            raise UsageError(f"{codes_path}: {len(values)} {name} for {n} database codes")
    return indices, paths


def _build_pq(z, codes_path, out) -> dict:
    from utils.retrieval.pq import check_mlp, code_bits, quantization_index

    try:
        check_mlp(z["mlp"])
        if "db_index" in z:
            db_index = np.ascontiguousarray(z["db_index"].T)  # stored [M, N], as published
        elif "db_features" in z:
            db_index = quantization_index(z["db_features"], z["mlp"]).numpy()
        else:
            raise ValueError("it holds neither db_index nor db_features")
    except ValueError as exc:
        raise UsageError(f"{codes_path}: {exc}") from None
    indices, paths = _metadata(z, len(db_index), codes_path)
    meta = {"num_bits": int(round(code_bits(z["mlp"]))), "type": "pq",
            "num_items": int(len(db_index)), "bytes_per_item": int(db_index.shape[1]),
            "codes_file": os.path.abspath(codes_path)}
    _write_pair(out, lambda path: save_npz(path, db_index=db_index, mlp=z["mlp"]), meta,
                indices, paths)
    return meta


def search_codes(index, meta: dict, packed_queries, num_bits: int, topk=None, radius=None,
                 source: str = "the queries") -> dict:
    """{"indices": [[...] per query], "distances": [[...] per query]} of packed
    query codes: the top ``topk`` in the project order, or with ``radius``
    every item within that distance (at most ``topk`` of them when given).
    Indices are database rows (faiss ids); entries the index cannot fill are
    left out."""
    if num_bits != meta["num_bits"]:
        raise UsageError(f"{source} are {num_bits}-bit codes but {meta['index_file']} holds "
                         f"{meta['num_bits']}-bit codes; use codes of the same length")
    if radius is None:
        dist, idx = fi.search_exact(index, packed_queries, topk or DEFAULT_TOPK)
        keep = idx >= 0
        indices = [row[m].tolist() for row, m in zip(idx, keep)]
        distances = [row[m].tolist() for row, m in zip(dist, keep)]
    else:
        dists, idxs = fi.range_search(index, packed_queries, radius)
        indices = [row[:topk].tolist() for row in idxs]
        distances = [row[:topk].tolist() for row in dists]
    return {"indices": indices, "distances": distances}


def search_features(index: PQIndex, meta: dict, features, topk=None, radius=None,
                    source: str = "the queries") -> dict:
    """{"indices": ..., "scores": ...}: the top ``topk`` by PQ score (higher is closer)."""
    from utils.retrieval.pq import pq_search

    if radius is not None:
        raise UsageError("--radius applies to Hamming indexes; a pq index ranks by score "
                         "(use --topk)")
    try:
        scores, indices = pq_search(features, index.db_index, index.mlp, topk or DEFAULT_TOPK)
    except ValueError as exc:
        raise UsageError(f"{source} do not fit {meta['index_file']}: {exc}") from None
    return {"indices": indices.tolist(), "scores": np.round(scores.numpy(), 6).tolist()}
