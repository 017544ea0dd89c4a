"""Serving stored codes: faiss binary indexes built from packed codes, and
searches that return the project's ranking.

The project ranks by Hamming distance ascending, ties by database index
ascending (``utils.retrieval.metrics``).  What faiss gives:

* ``IndexBinaryFlat`` on the CPU scans the database in index order, replaces
  its worst heap entry only on a strictly smaller distance, and its heaps
  order equal distances by id, so faiss-cpu 1.15.1 returns the project order
  (checked on codes full of ties: tests/test_index.py, bench/index_speed.py).
  That is an implementation detail, not a documented promise: older heaps,
  the GPU k-selection and ``IndexBinaryIVF`` (which scans lists in list
  order, so even with nprobe = nlist equal distances come in visiting order)
  do not keep it.
* ``search`` returns faiss's own answer; ``search_exact`` the project order:
  it asks for k' > k candidates until the k'-th distance is beyond the k-th
  (so every item at the k-th distance is among them), then sorts by
  (distance, index) and cuts at k.  Exact for the flat index and for IVF with
  nprobe = nlist; for approximate indexes it is the project order among the
  items the index reaches.
* Binary range search in faiss keeps distances strictly below the radius; the
  project's radius r is inclusive, so ``range_search`` passes r + 1.

faiss is optional: it is imported when a function needs it, and its absence
is a ``UsageError`` naming the install command.  Codes are packed as
``np.packbits`` packs them (``utils.retrieval.codes_io``); faiss needs the
dimension to be a multiple of 8, and the padding bits, 0 in every code, leave
distances unchanged.  OPQN's features are served without faiss, by a flat
search over the asymmetric PQ scores with the same tie rule
(``utils.retrieval.pq.pq_search``).

Nothing here parses arguments or prints; errors a caller can cause are
ValueError, a missing faiss or GPU build a UsageError.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

from utils.errors import UsageError

KINDS = ("flat", "hash", "ivf")
FAISS_MISSING = "faiss is not installed: pip install faiss-cpu (or faiss-gpu)"
# faiss pads results it cannot fill with this distance and index -1
MISSING_DISTANCE = 2 ** 31 - 1
# longest hashed substring: 2**16 buckets per hash table
HASH_SUBSTRING_BITS = 16
# IVF: the kmeans of training sees at most this many points per list
TRAIN_POINTS_PER_LIST = 64
# faiss's GPU k-selection returns at most this many neighbours
GPU_MAX_K = 2048
# search_exact: how much wider each further round asks
WIDEN = 8


def require_faiss():
    """The faiss module, or UsageError with the install hint."""
    try:
        import faiss
    except ImportError:
        raise UsageError(FAISS_MISSING) from None
    return faiss


def code_size(num_bits: int) -> int:
    """Bytes per packed code: ceil(L / 8)."""
    return -(-int(num_bits) // 8)


def check_packed(packed, num_bits: int, name: str = "codes") -> np.ndarray:
    """C-contiguous uint8 [n, ceil(L/8)], as faiss takes codes; ValueError otherwise."""
    if int(num_bits) < 1:
        raise ValueError(f"num_bits must be positive, got {num_bits}")
    packed = np.asarray(packed)
    width = code_size(num_bits)
    if packed.dtype != np.uint8 or packed.ndim != 2 or packed.shape[1] != width:
        raise ValueError(f"{name}: packed {num_bits}-bit codes must be uint8 [n, {width}], "
                         f"got {packed.dtype} {packed.shape}")
    return np.ascontiguousarray(packed)


# ---------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------

def default_nlist(num_items: int) -> int:
    """About sqrt(N) inverted lists, with at least 39 training points per list
    (faiss's own lower bound for kmeans) and at most 65536."""
    return max(1, min(int(round(math.sqrt(num_items))), num_items // 39, 65536))


def default_nprobe(nlist: int) -> int:
    """Lists visited per query: 1/16 of them, at least one."""
    return max(1, min(nlist, -(-nlist // 16)))


def hash_layout(num_bits: int, hash_bits: Optional[int] = None) -> tuple:
    """(nhash, b): ``nhash`` disjoint substrings of ``b`` bits each are hashed.

    faiss reads a code's bits least-significant first within each byte, so a
    substring that reaches into the last byte of a code whose length is not a
    multiple of 8 would read padding; only whole bytes, 8 * floor(L/8) bits,
    are hashed.  By default b <= 16 (2**16 buckets per table) and the
    substrings cover those bytes: 48 bits -> 3 x 16.  By the pigeonhole
    principle an item within Hamming distance nhash * (nflip + 1) - 1 of the
    query differs from it in at most nflip bits of some substring, so such
    items are always found (48 bits, nflip 1: distance <= 5).
    """
    usable = 8 * (int(num_bits) // 8)
    if usable == 0:
        raise ValueError(f"a hash index needs codes of at least 8 bits, got {num_bits}")
    if hash_bits is None:
        nhash = -(-usable // HASH_SUBSTRING_BITS)
        return nhash, usable // nhash
    hash_bits = int(hash_bits)
    if not 1 <= hash_bits <= min(usable, 64):
        raise ValueError(f"hash_bits must be between 1 and {min(usable, 64)} for "
                         f"{num_bits}-bit codes, got {hash_bits}")
    return usable // hash_bits, hash_bits


def build_binary_index(packed_db, num_bits: int, kind: str = "flat", nlist: Optional[int] = None,
                       hash_bits: Optional[int] = None, nprobe: Optional[int] = None,
                       nflip: int = 1, gpu: bool = False, train_size: Optional[int] = None):
    """A faiss binary index holding ``packed_db`` (uint8 [N, ceil(L/8)]), ids 0..N-1.

    * ``"flat"``: ``IndexBinaryFlat``, exact;
    * ``"hash"``: ``IndexBinaryMultiHash`` over the substrings of
      ``hash_layout`` (``IndexBinaryHash`` when there is one), ``nflip`` bit
      flips probed per substring at search time;
    * ``"ivf"``: ``IndexBinaryIVF`` on an ``IndexBinaryFlat`` quantizer of
      ``nlist`` lists (default ``default_nlist``), trained on the database
      (an evenly spaced sample of at most ``train_size`` items, default
      64 per list), ``nprobe`` lists visited per query.

    ``gpu=True`` moves a flat index to the GPU (``to_gpu``).
    """
    faiss = require_faiss()
    db = check_packed(packed_db, num_bits, "database codes")
    n, d = db.shape[0], 8 * code_size(num_bits)
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}; use one of {', '.join(KINDS)}")
    if gpu and kind != "flat":
        raise ValueError(f"faiss runs only flat binary indexes on the GPU, not {kind!r}")
    if kind == "flat":
        index = faiss.IndexBinaryFlat(d)
    elif kind == "hash":
        nhash, b = hash_layout(num_bits, hash_bits)
        index = faiss.IndexBinaryHash(d, b) if nhash == 1 else faiss.IndexBinaryMultiHash(d, nhash, b)
        index.nflip = _non_negative(nflip, "nflip")
    else:
        if n == 0:
            raise ValueError("an IVF index needs a non-empty database to train on")
        nlist = default_nlist(n) if nlist is None else int(nlist)
        if not 1 <= nlist <= n:
            raise ValueError(f"nlist must be between 1 and the {n} database items, got {nlist}")
        quantizer = faiss.IndexBinaryFlat(d)
        index = faiss.IndexBinaryIVF(quantizer, d, nlist)
        index.referenced_objects = [quantizer]  # keep the quantizer alive with the index
        index.nprobe = min(nlist, _positive(nprobe, "nprobe")) if nprobe else default_nprobe(nlist)
        size = min(n, train_size or TRAIN_POINTS_PER_LIST * nlist)
        sample = db if size >= n else db[np.linspace(0, n - 1, size).astype(np.int64)]
        index.train(np.ascontiguousarray(sample))
    if n:
        index.add(db)
    return to_gpu(index) if gpu else index


def _positive(value, name):
    if int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)


def _non_negative(value, name):
    if int(value) < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value}")
    return int(value)


def index_kind(index) -> str:
    """"flat", "hash" or "ivf" of a faiss binary index (ValueError for others)."""
    faiss = require_faiss()
    if isinstance(index, faiss.IndexBinaryIVF):
        return "ivf"
    if isinstance(index, (faiss.IndexBinaryHash, faiss.IndexBinaryMultiHash)):
        return "hash"
    gpu_flat = getattr(faiss, "GpuIndexBinaryFlat", None)
    if isinstance(index, faiss.IndexBinaryFlat) or (gpu_flat and isinstance(index, gpu_flat)):
        return "flat"
    raise ValueError(f"unsupported faiss index {type(index).__name__}; "
                     f"expected a binary flat, hash or IVF index")


def set_search_params(index, nprobe: Optional[int] = None, nflip: Optional[int] = None) -> None:
    """Lists visited (IVF) or bits flipped per substring (hash) at search time."""
    kind = index_kind(index)
    if nprobe is not None:
        if kind != "ivf":
            raise ValueError(f"nprobe applies to ivf indexes, not to a {kind} index")
        index.nprobe = min(int(index.nlist), _positive(nprobe, "nprobe"))
    if nflip is not None:
        if kind != "hash":
            raise ValueError(f"nflip applies to hash indexes, not to a {kind} index")
        index.nflip = _non_negative(nflip, "nflip")


def is_gpu_index(index) -> bool:
    gpu_flat = getattr(require_faiss(), "GpuIndexBinaryFlat", None)
    return bool(gpu_flat) and isinstance(index, gpu_flat)


def to_gpu(index, device: int = 0):
    """A flat binary index moved to GPU ``device`` (``faiss.index_binary_cpu_to_gpu``).

    UsageError when this faiss has no GPU build or sees no GPU."""
    faiss = require_faiss()
    move = getattr(faiss, "index_binary_cpu_to_gpu", None)
    num_gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if move is None or num_gpus < 1:
        raise UsageError("faiss's GPU build is not present (or sees no GPU): install faiss-gpu "
                         "on a CUDA machine, or search on the CPU")
    if index_kind(index) != "flat":
        raise ValueError("faiss runs only flat binary indexes on the GPU")
    resources = faiss.StandardGpuResources()
    moved = move(resources, int(device), index)
    moved.referenced_objects = [resources]  # the resources must outlive the index
    return moved


# ---------------------------------------------------------------------------
# Searching
# ---------------------------------------------------------------------------

def _queries(index, packed_queries) -> np.ndarray:
    q = np.asarray(packed_queries)
    if q.dtype != np.uint8 or q.ndim != 2 or q.shape[1] * 8 != index.d:
        raise ValueError(f"packed queries must be uint8 [n, {index.d // 8}] for this index, "
                         f"got {q.dtype} {q.shape}")
    return np.ascontiguousarray(q)


def search(index, packed_queries, k: int):
    """faiss's own k nearest: (distances int32 [Q, k], indices int64 [Q, k]).

    Equal distances in faiss's order (see the module docstring); entries the
    index cannot fill have index -1 and distance ``MISSING_DISTANCE``."""
    q = _queries(index, packed_queries)
    return index.search(q, _positive(k, "k"))


def _order(distances: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Row-wise argsort by (distance, index); missing entries (index -1) last.

    One sort of the key distance * 2**32 + index (unique within a row) where
    ids fit in 32 bits, which is several times faster than a lexsort."""
    missing = indices < 0
    last = np.iinfo(np.int64).max
    if not indices.size or int(indices.max()) < 2 ** 32:
        key = (distances.astype(np.int64) << 32) | np.where(missing, 0, indices)
        return np.argsort(np.where(missing, last, key), axis=-1)
    d = np.where(missing, last, distances.astype(np.int64))
    return np.lexsort((np.where(missing, last, indices), d), axis=-1)


def first_width(k: int) -> int:
    """Candidates asked for first: k + 256, at least 2k.  A faiss search costs
    about the same for any such k' (the scan dominates, not the heap), while
    every further round is another scan; at 1M x 48 bits, 2k left over half
    of the queries for a second round, k + 256 nearly none."""
    return max(2 * k, k + 256)


def search_exact(index, packed_queries, k: int):
    """The k nearest in the project order: (distances int32 [Q, k], indices int64 [Q, k]).

    Distance ascending, ties by database index ascending, as
    ``utils.retrieval.metrics`` ranks: faiss is asked for k' candidates
    (``first_width``, then 8 times more, only for the queries not yet
    settled) until the k'-th distance exceeds the k-th, or the index has
    nothing more to give; then the candidates are sorted by (distance,
    index) and cut at k.  When the ties at the k-th distance fit in the
    first k', the cost is that of one faiss search.
    """
    q = _queries(index, packed_queries)
    k = _positive(k, "k")
    nq, n = q.shape[0], int(index.ntotal)
    out_d = np.full((nq, k), MISSING_DISTANCE, dtype=np.int32)
    out_i = np.full((nq, k), -1, dtype=np.int64)
    kk = min(k, n)
    if kk == 0 or nq == 0:
        return out_d, out_i
    cap = min(n, GPU_MAX_K) if is_gpu_index(index) else n  # widest search faiss allows
    if cap < kk:
        raise ValueError(f"k = {kk} is beyond the {cap} results faiss's GPU k-selection "
                         f"returns; search the CPU index")
    todo = np.arange(nq)
    width = min(cap, first_width(kk))
    while todo.size:
        dist, idx = index.search(q[todo], width)
        done = (np.full(len(todo), width >= n) | (idx[:, -1] < 0)
                | (dist[:, -1] > dist[:, kk - 1]))
        rows = np.flatnonzero(done)
        if rows.size:
            d, i = dist[rows], idx[rows]
            order = _order(d, i)[:, :kk]
            out_d[todo[rows], :kk] = np.take_along_axis(d, order, 1)
            out_i[todo[rows], :kk] = np.take_along_axis(i, order, 1)
        todo = todo[~done]
        if todo.size and width >= cap:
            raise ValueError(f"the ties at the {kk}-th distance reach beyond the {cap} results "
                             f"faiss's GPU k-selection returns; search the CPU index")
        width = min(cap, WIDEN * width)
    return out_d, out_i


def range_search(index, packed_queries, radius: int):
    """Every item within Hamming distance ``radius`` (inclusive) of each query.

    Returns (distances, indices): lists with one int array per query, sorted
    by (distance, index).  faiss's binary range search is strict (< radius),
    so it is called with radius + 1.  Exact for the flat index and IVF with
    nprobe = nlist; a hash index finds every item within its pigeonhole
    distance (``hash_layout``)."""
    q = _queries(index, packed_queries)
    radius = _non_negative(radius, "radius")
    try:
        lims, dist, idx = index.range_search(q, radius + 1)
    except RuntimeError as exc:  # e.g. a GPU index: faiss has no binary range search there
        raise ValueError(f"this index cannot range search: {_faiss_reason(exc)}") from None
    distances, indices = [], []
    for s, e in zip(lims[:-1], lims[1:]):
        order = _order(dist[s:e], idx[s:e])
        distances.append(dist[s:e][order].astype(np.int32))
        indices.append(idx[s:e][order].astype(np.int64))
    return distances, indices


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------

def _faiss_reason(exc: BaseException) -> str:
    """The reason of a faiss exception without its C++ location."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    match = re.search(r"\.(?:cpp|h):\d+: (.*)$", text)
    return match.group(1) if match else text


def save_index(index, path) -> None:
    """``faiss.write_index_binary`` to a temporary file beside ``path``, synced,
    then renamed over it: a kill leaves the old file or the new one."""
    faiss = require_faiss()
    if is_gpu_index(index):
        index = faiss.index_binary_gpu_to_cpu(index)
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        faiss.write_index_binary(index, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (RuntimeError, OSError) as exc:  # e.g. a full disk
        os.unlink(tmp)
        reason = getattr(exc, "strerror", None) or _faiss_reason(exc)
        raise UsageError(f"cannot write {path}: {reason}") from None
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_index(path):
    """A faiss binary index read from ``path``; UsageError when it is missing
    or not a binary flat / hash / IVF index file."""
    faiss = require_faiss()
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no such file: {path}")
    try:
        index = faiss.read_index_binary(str(path))
    except RuntimeError as exc:
        raise UsageError(f"cannot read {path} as a faiss binary index: {_faiss_reason(exc)}") from None
    try:
        index_kind(index)
    except ValueError as exc:
        raise UsageError(f"{path}: {exc}") from None
    return index


def index_bytes(index) -> int:
    """Size of the index as written to a file (codes, ids, lists, header)."""
    faiss = require_faiss()
    if is_gpu_index(index):
        index = faiss.index_binary_gpu_to_cpu(index)
    return int(faiss.serialize_index_binary(index).size)
