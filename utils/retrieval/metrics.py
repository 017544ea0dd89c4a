"""Retrieval metrics shared by every script: Hamming ranking for binary codes,
score ranking for product quantization.

Ranking rule (the official implementations' behaviour, with their sorts made
stable): database items are ordered by Hamming distance ascending (or score
descending), ties by database index ascending.

Everything is computed from per-query *ranking statistics* (`RankingStats`,
numpy arrays): the AP, the number of relevant items in the first k positions
for every k asked for, DeepHash's AP@k, and for Hamming ranking the
per-distance counts of all and of relevant items.  `summarize` turns them
into the reported numbers.

Two interchangeable back ends compute the Hamming statistics:

* ``"numba"`` (CPU): never sorts.  With integer distances 0..L and ties in
  index order, the rank of an item is one plus the items at smaller distance
  plus the items at equal distance with a lower index; one pass over the
  database counts items per distance, a second pass in index order hands out
  ranks.  Memory stays O(N) per worker thread.  This path is numpy only:
  evaluating stored codes never imports torch.
* ``"torch"`` (any device, CUDA included): a stable sort of each query chunk,
  the plain reading of the definition.  Also the score-ranking path.

Both reproduce the official values (tests/test_metrics.py checks both against
the fixtures produced by the original code).  Inputs may be numpy arrays or
torch tensors on any device.
"""

from __future__ import annotations

import contextlib
import math
import sys
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from utils.retrieval.options import DEFAULT_TOPK
from utils.retrieval.tensors import rows_per_chunk

try:  # the fast CPU kernel; the torch back end covers its absence
    from utils.retrieval import _hamming_kernel
except ImportError:  # pragma: no cover - exercised only without numba
    _hamming_kernel = None

DEFAULT_CURVE = (1, 5, 10, 20, 50, 100, 200, 500, 1000)


# ---------------------------------------------------------------------------
# Input normalisation (numpy)
# ---------------------------------------------------------------------------

def _numpy(x) -> np.ndarray:
    """A numpy view of an array or a tensor (any device), without importing torch."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def to_bits(codes, num_bits: Optional[int] = None, name: str = "codes") -> np.ndarray:
    """Binary codes as a bool array [n, L] (True = bit set / +1).

    Accepts ±1 or 0/1 values of any numeric or bool dtype (numpy or torch),
    or, with ``num_bits``, rows packed by ``np.packbits`` (uint8 [n, ceil(L/8)]).
    """
    if num_bits is not None:
        packed = _numpy(codes)
        if packed.dtype != np.uint8 or packed.ndim != 2 or packed.shape[1] * 8 < num_bits:
            raise ValueError(f"{name}: packed codes must be uint8 [n, {math.ceil(num_bits / 8)}]")
        return np.unpackbits(packed, axis=1, count=num_bits).astype(bool)
    t = _numpy(codes)
    if t.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [n, bits], got shape {tuple(t.shape)}")
    if t.shape[1] == 0:
        raise ValueError(f"{name} have 0 bits: nothing to rank by")
    if t.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold -1/+1 or 0/1 numbers, got dtype {t.dtype}")
    if t.dtype == np.bool_:
        return t
    if t.size == 0:
        return t.astype(bool)
    # cheap elementwise checks first: np.unique on a large database costs a sort
    positive = t == 1
    if bool((positive | (t == -1)).all()) or bool((positive | (t == 0)).all()):
        return positive
    values = np.unique(t)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise ValueError(f"{name} must hold only -1/+1 or 0/1 values, found NaN or inf")
    if values.dtype.kind == "f" and not np.array_equal(values, np.round(values)):
        raise ValueError(f"{name} must hold only -1/+1 or 0/1 values, found non-integer values")
    vals = sorted(int(v) for v in values.tolist())
    raise ValueError(f"{name} must hold only -1/+1 or 0/1 values, found {vals[:5]}")


def ternary_as_bits(codes) -> np.ndarray:
    """Codes with -1 / 0 / +1 entries (what ``torch.sign`` gives for an exact 0,
    as the published triplet and DCDH code keep them) as bits that rank the
    same way: each position becomes 3 one-hot bits, so two codes differ in 2
    bits wherever their entries differ.  Hamming distances are doubled (a
    radius r is 2r here); the ranking and every ranking metric are the
    published ones, which count differing entries (``(q != x).sum()``)."""
    t = _numpy(codes)
    if t.ndim != 2:
        raise ValueError(f"codes must be a 2-D array [n, bits], got shape {tuple(t.shape)}")
    values = np.round(t).astype(np.int64)
    if not bool(((values >= -1) & (values <= 1)).all()) or not np.array_equal(values, t):
        raise ValueError("ternary codes must hold only -1, 0 and +1")
    return np.eye(3, dtype=bool)[values + 1].reshape(t.shape[0], -1)


def as_labels(labels, name: str = "labels") -> np.ndarray:
    """Integer ids [n] (single label) or a bool matrix [n, C] (multi-label).

    A column vector [n, 1], as DCDH's FaceScrub/YouTube loader yields, is
    taken as single-label ids.
    """
    t = _numpy(labels)
    if t.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numbers, got dtype {t.dtype}")
    if t.dtype.kind == "f" and not np.isfinite(t).all():
        raise ValueError(f"{name} hold NaN or inf")
    if t.ndim == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if t.ndim == 1:
        if t.dtype.kind == "f" and not np.array_equal(t, np.round(t)):
            raise ValueError(f"{name} must be integer class ids")
        return t.astype(np.int64)
    if t.ndim == 2:
        return t != 0
    raise ValueError(f"{name} must be [n] class ids or an [n, C] 0/1 matrix, got shape {tuple(t.shape)}")


def _check_pair(query_labels: np.ndarray, db_labels: np.ndarray) -> None:
    if (query_labels.ndim == 1) != (db_labels.ndim == 1):
        raise ValueError("query and database labels must both be class ids or both 0/1 matrices")
    if query_labels.ndim == 2 and query_labels.shape[1] != db_labels.shape[1]:
        raise ValueError(
            f"query labels have {query_labels.shape[1]} columns, database labels {db_labels.shape[1]}")


def _check_codes(query_bits, db_bits, query_labels, db_labels):
    if query_bits.shape[1] != db_bits.shape[1]:
        raise ValueError(
            f"query codes have {query_bits.shape[1]} bits but database codes have {db_bits.shape[1]}")
    if query_labels.shape[0] != query_bits.shape[0]:
        raise ValueError(
            f"{query_labels.shape[0]} query labels for {query_bits.shape[0]} query codes")
    if db_labels.shape[0] != db_bits.shape[0]:
        raise ValueError(f"{db_labels.shape[0]} database labels for {db_bits.shape[0]} database codes")
    _check_pair(query_labels, db_labels)


# ---------------------------------------------------------------------------
# Distances (torch)
# ---------------------------------------------------------------------------

def _plus_minus(bits):
    return bits.float() * 2 - 1


def _distance_chunk(q_pm, d_pm):
    import torch

    # ±1 products summed in float32 are exact integers for any L < 2**24.
    num_bits = q_pm.shape[1]
    return ((num_bits - q_pm @ d_pm.T) * 0.5).round().to(torch.int32)


def hamming_distance(query_codes, db_codes, device=None):
    """Hamming distances [Q, N] (an int32 torch tensor) by an integer-exact
    matrix product.  For small problems and for users; the metrics never hold
    the full matrix."""
    import torch

    q = torch.from_numpy(to_bits(query_codes, name="query codes"))
    d = torch.from_numpy(to_bits(db_codes, name="database codes"))
    device = torch.device(device) if device is not None else torch.device("cpu")
    out = torch.empty(q.shape[0], d.shape[0], dtype=torch.int32, device=device)
    step = rows_per_chunk(d.shape[0])
    d_pm = _plus_minus(d.to(device))
    for s in range(0, q.shape[0], step):
        out[s:s + step] = _distance_chunk(_plus_minus(q[s:s + step].to(device)), d_pm)
    return out


# ---------------------------------------------------------------------------
# Ranking statistics
# ---------------------------------------------------------------------------

@dataclass
class RankingStats:
    """Per-query quantities from which every reported metric follows (numpy).

    ``positions`` and ``map_at`` are sorted and deduplicated; ``hits_at[:, i]``
    counts relevant items among the first ``positions[i]`` ranked items, and
    ``map_at_k[:, i]`` is DeepHash's AP@``map_at[i]`` (normalised by the relevant
    items found in the top k).  ``hist_all``/``hist_rel`` ([Q, L+1], Hamming
    ranking only) count all / relevant items at each distance.
    """

    num_database: int
    num_relevant: np.ndarray  # [Q] int64
    ap: np.ndarray  # [Q] float64, 0 where num_relevant == 0
    ap_tie_aware: np.ndarray  # [Q] float64
    positions: np.ndarray  # [P] int64
    hits_at: np.ndarray  # [Q, P] int64
    map_at: np.ndarray  # [K] int64
    map_at_k: np.ndarray  # [Q, K] float64
    hist_all: Optional[np.ndarray] = None
    hist_rel: Optional[np.ndarray] = None


def _sorted_unique(values: Sequence[int]) -> np.ndarray:
    vals = sorted(set(int(v) for v in values))
    if any(v < 1 for v in vals):
        raise ValueError(f"ranking positions must be >= 1, got {vals}")
    return np.array(vals, dtype=np.int64)


def _is_cpu(device) -> bool:
    return device is None or str(device) == "cpu" or getattr(device, "type", None) == "cpu"


def hamming_ranking_stats(query_codes, db_codes, query_labels, db_labels, positions=(),
                          map_at=(), device=None, backend: str = "auto") -> RankingStats:
    """Ranking statistics of Hamming ranking (distance ascending, index ascending).

    ``backend``: ``"numba"`` (CPU kernel), ``"torch"`` (stable sort, runs on
    ``device``), or ``"auto"``: numba when the work is on the CPU and numba is
    installed, torch otherwise.
    """
    q_bits = to_bits(query_codes, name="query codes")
    d_bits = to_bits(db_codes, name="database codes")
    q_lab = as_labels(query_labels, "query labels")
    d_lab = as_labels(db_labels, "database labels")
    _check_codes(q_bits, d_bits, q_lab, d_lab)
    pos = _sorted_unique(positions)
    mk = _sorted_unique(map_at)
    if backend == "auto":
        backend = "numba" if _is_cpu(device) and _hamming_kernel is not None else "torch"
    if backend == "numba":
        if _hamming_kernel is None:
            raise RuntimeError("the numba back end needs the numba package (pip install numba)")
        return _hamming_stats_numba(q_bits, d_bits, q_lab, d_lab, pos, mk)
    if backend == "torch":
        return _hamming_stats_torch(q_bits, d_bits, q_lab, d_lab, pos, mk, device)
    raise ValueError(f"unknown backend {backend!r}; use auto, numba or torch")


@contextlib.contextmanager
def _torch_threads_kept():
    """numba's OpenMP threading layer shares the OpenMP runtime with torch and
    sets its thread count when a parallel kernel starts: torch's count (e.g.
    --threads, or a test's one thread) is put back afterwards."""
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    try:
        yield
    finally:
        if threads is not None and torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _hamming_stats_numba(q_bits, d_bits, q_lab, d_lab, pos, mk) -> RankingStats:
    num_bits = q_bits.shape[1]
    qw = _hamming_kernel.pack_words(q_bits)
    dw = _hamming_kernel.pack_words(d_bits)
    if q_lab.ndim == 1:
        multilabel = False
        q_single, d_single = q_lab, d_lab
        q_multi = d_multi = np.zeros((1, 1), np.uint64)
    else:
        multilabel = True
        q_single = d_single = np.zeros(1, np.int64)
        q_multi = _hamming_kernel.pack_words(q_lab)
        d_multi = _hamming_kernel.pack_words(d_lab)
    with _torch_threads_kept():
        ap, hits, mapk, hall, hrel = _hamming_kernel.ranking_stats(
            qw, dw, q_single, d_single, q_multi, d_multi, multilabel, pos, mk, num_bits)
    return RankingStats(
        num_database=d_bits.shape[0], num_relevant=hrel.sum(1), ap=ap,
        ap_tie_aware=tie_aware_ap(hall, hrel), positions=pos, hits_at=hits,
        map_at=mk, map_at_k=mapk, hist_all=hall, hist_rel=hrel)


def _relevance(query_labels, db_labels):
    """Bool [Q, N] torch: equal ids, or label vectors sharing at least one label."""
    if query_labels.ndim == 1:
        return query_labels[:, None] == db_labels[None, :]
    return (query_labels.float() @ db_labels.float().T) > 0


def _hamming_stats_torch(q_bits, d_bits, q_lab, d_lab, pos, mk, device) -> RankingStats:
    import torch

    device = torch.device(device) if device is not None else torch.device("cpu")
    num_bits = q_bits.shape[1]
    n_db = d_bits.shape[0]
    d_pm = _plus_minus(torch.from_numpy(d_bits).to(device))
    d_lab_dev = torch.from_numpy(d_lab).to(device)
    pos_t, mk_t = torch.from_numpy(pos).to(device), torch.from_numpy(mk).to(device)
    step = rows_per_chunk(n_db)
    parts = []
    for s in range(0, q_bits.shape[0], step):
        q_chunk = torch.from_numpy(q_bits[s:s + step]).to(device)
        dist = _distance_chunk(_plus_minus(q_chunk), d_pm).long()
        rel = _relevance(torch.from_numpy(q_lab[s:s + step]).to(device), d_lab_dev)
        order = torch.sort(dist, dim=1, stable=True).indices
        part = _sorted_relevance_stats(rel.gather(1, order), pos_t, mk_t)
        hall = torch.zeros(dist.shape[0], num_bits + 1, dtype=torch.int64, device=device)
        hall.scatter_add_(1, dist, torch.ones_like(dist))
        hrel = torch.zeros_like(hall).scatter_add_(1, dist, rel.long())
        parts.append(part + (hall, hrel))
    ap, hits, mapk, hall, hrel = (torch.cat(x).cpu().numpy() for x in zip(*parts))
    return RankingStats(
        num_database=n_db, num_relevant=hrel.sum(1), ap=ap,
        ap_tie_aware=tie_aware_ap(hall, hrel), positions=pos, hits_at=hits,
        map_at=mk, map_at_k=mapk, hist_all=hall, hist_rel=hrel)


def _sorted_relevance_stats(rel_sorted, pos, mk):
    """AP, hits at positions and AP@k (torch) from relevance in ranked order [Qc, N]."""
    import torch

    n_db = rel_sorted.shape[1]
    relf = rel_sorted.double()
    found = relf.cumsum(1)  # relevant items so far, at each position
    rank = torch.arange(1, n_db + 1, device=relf.device, dtype=torch.float64)
    precision_at_hits = found / rank * relf  # j / pos_j at relevant positions, 0 elsewhere
    num_rel = found[:, -1] if n_db else torch.zeros(relf.shape[0], dtype=torch.float64)
    ap = torch.where(num_rel > 0, precision_at_hits.sum(1) / num_rel.clamp(min=1), 0.0)
    idx = (pos.clamp(max=n_db) - 1).clamp(min=0)
    hits = found[:, idx].long() if n_db else torch.zeros(relf.shape[0], len(pos), dtype=torch.long)
    cum_prec = precision_at_hits.cumsum(1)
    kidx = (mk.clamp(max=n_db) - 1).clamp(min=0)
    found_k = found[:, kidx]
    mapk = torch.where(found_k > 0, cum_prec[:, kidx] / found_k.clamp(min=1), 0.0)
    return ap, hits, mapk


def score_ranking_stats(score_chunks: Callable, num_queries: int, query_labels, db_labels,
                        positions=(), map_at=(), chunk_size=None, device=None) -> RankingStats:
    """Ranking statistics of a real-valued score (higher first, ties by index).

    ``score_chunks(start, stop)`` returns the scores [stop - start, N] (a
    tensor) of queries ``start:stop`` against the whole database, so that the
    full Q x N matrix never needs to exist.
    """
    import torch

    q_lab = as_labels(query_labels, "query labels")
    d_lab = as_labels(db_labels, "database labels")
    _check_pair(q_lab, d_lab)
    if q_lab.shape[0] != num_queries:
        raise ValueError(f"{q_lab.shape[0]} query labels for {num_queries} queries")
    pos = _sorted_unique(positions)
    mk = _sorted_unique(map_at)
    n_db = d_lab.shape[0]
    step = chunk_size or rows_per_chunk(n_db)
    q_lab_t, d_lab_t = torch.from_numpy(q_lab), torch.from_numpy(d_lab)
    parts = []
    for s in range(0, num_queries, step):
        e = min(num_queries, s + step)
        scores = torch.as_tensor(score_chunks(s, e))
        if device is not None:
            scores = scores.to(device)
        if scores.shape != (e - s, n_db):
            raise ValueError(f"score chunk has shape {tuple(scores.shape)}, expected {(e - s, n_db)}")
        dev = scores.device
        rel = _relevance(q_lab_t[s:e].to(dev), d_lab_t.to(dev))
        sorted_scores, order = torch.sort(scores, dim=1, descending=True, stable=True)
        rel_sorted = rel.gather(1, order)
        ap, hits, mapk = _sorted_relevance_stats(rel_sorted, torch.from_numpy(pos).to(dev),
                                                 torch.from_numpy(mk).to(dev))
        parts.append((ap, hits, mapk, _tie_aware_ap_sorted(sorted_scores, rel_sorted), rel.sum(1)))
    ap, hits, mapk, ap_tie, num_rel = (torch.cat(x).cpu().numpy() for x in zip(*parts))
    return RankingStats(num_database=n_db, num_relevant=num_rel, ap=ap, ap_tie_aware=ap_tie,
                        positions=pos, hits_at=hits, map_at=mk, map_at_k=mapk)


# ---------------------------------------------------------------------------
# Tie-aware AP
# ---------------------------------------------------------------------------
#
# Items with equal keys form groups in rank order.  With the items inside each
# group in uniformly random order, a group of n items holding r relevant ones,
# preceded by c items of which rc are relevant, adds to the sum of precisions
# at relevant positions (McSherry & Najork, ECIR 2008):
#   (r/n) * sum_{i=1..n} (rc + 1 + (i-1)(r-1)/(n-1)) / (c + i)
# = (r/n) * [(rc + 1) dH + (r-1)/(n-1) * (n - (c+1) dH)],  dH = H(c+n) - H(c),
# with H the harmonic numbers, from one table.

def _harmonic(upto: int) -> np.ndarray:
    """H(0..upto): H(m) = sum_{i<=m} 1/i."""
    return np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, upto + 1, dtype=np.float64))])


def _group_contribution(n, r, c, rc):
    n, r, c, rc = (np.asarray(x, dtype=np.float64) for x in (n, r, c, rc))
    table = _harmonic(int((c + n).max()) if n.size else 0)
    dh = table[(c + n).astype(np.int64)] - table[c.astype(np.int64)]
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(n > 1, (r - 1) / np.maximum(n - 1, 1), 0.0)
        value = r / np.maximum(n, 1) * ((rc + 1) * dh + slope * (n - (c + 1) * dh))
    return np.where(r > 0, value, 0.0)


def tie_aware_ap(hist_all, hist_rel) -> np.ndarray:
    """Expected AP [Q] under random order within equal distances, from the
    per-distance counts [Q, L+1] of all and of relevant items."""
    hist_all, hist_rel = _numpy(hist_all), _numpy(hist_rel)
    c = hist_all.cumsum(1) - hist_all
    rc = hist_rel.cumsum(1) - hist_rel
    total = _group_contribution(hist_all, hist_rel, c, rc).sum(1)
    num_rel = hist_rel.sum(1).astype(np.float64)
    return np.where(num_rel > 0, total / np.maximum(num_rel, 1), 0.0)


def _tie_aware_ap_sorted(sorted_keys, rel_sorted):
    """Tie-aware AP [Qc] (a torch tensor) from keys and relevance in ranked order [Qc, N]."""
    import torch

    rows, n_db = sorted_keys.shape
    if n_db == 0:
        return torch.zeros(rows, dtype=torch.float64)
    new_group = torch.ones_like(sorted_keys, dtype=torch.bool)
    new_group[:, 1:] = sorted_keys[:, 1:] != sorted_keys[:, :-1]
    group = new_group.long().cumsum(1) - 1  # group id of each position
    relv = rel_sorted.long()
    n = torch.zeros_like(group).scatter_add_(1, group, torch.ones_like(group))
    r = torch.zeros_like(group).scatter_add_(1, group, relv)
    c = n.cumsum(1) - n
    rc = r.cumsum(1) - r
    num_rel = relv.sum(1).double().cpu().numpy()
    total = _group_contribution(*(x.cpu().numpy() for x in (n, r, c, rc))).sum(1)
    return torch.from_numpy(np.where(num_rel > 0, total / np.maximum(num_rel, 1), 0.0))


# ---------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------

def default_curve_positions(num_database: int) -> list:
    """The official precision-curve positions: those below N, then N."""
    return [k for k in DEFAULT_CURVE if k < num_database] + [num_database]


def _mean(values: np.ndarray, keep: np.ndarray):
    values = np.asarray(values)
    if values.ndim > 1:
        return [_mean(values[:, i], keep) for i in range(values.shape[1])]
    if int(keep.sum()) == 0:
        return float("nan")
    return float(values[keep].astype(np.float64).mean())


def _lookup(table: np.ndarray, keys: np.ndarray, wanted) -> np.ndarray:
    index = {int(k): i for i, k in enumerate(keys.tolist())}
    return table[:, [index[int(k)] for k in wanted]]


def summarize(stats: RankingStats, bits: Optional[int] = None, radius: Optional[int] = 2,
              topk=DEFAULT_TOPK, curve_positions=None, map_at=(),
              skip_no_relevant: bool = False) -> dict:
    """The reported metrics as a JSON-ready dict.

    Queries without a relevant database item score AP 0 and recall 0 and are
    counted in ``queries_without_relevant``; ``skip_no_relevant`` leaves them
    out of every mean instead.
    """
    n_db = stats.num_database
    curve = list(curve_positions) if curve_positions is not None else default_curve_positions(n_db)
    num_rel = np.asarray(stats.num_relevant)
    keep = num_rel > 0 if skip_no_relevant else np.ones(num_rel.shape, dtype=bool)
    rel_d = num_rel.astype(np.float64)

    def recall(hits):
        return np.where(rel_d[:, None] > 0, hits / np.maximum(rel_d, 1)[:, None], 0.0)

    top_hits = _lookup(stats.hits_at, stats.positions, topk).astype(np.float64)
    topk_prec = top_hits / np.array([float(k) for k in topk], dtype=np.float64)
    curve_hits = _lookup(stats.hits_at, stats.positions, curve).astype(np.float64)
    curve_prec = curve_hits / np.array([float(k) for k in curve], dtype=np.float64)
    out = {
        "bits": bits,
        "num_queries": int(num_rel.shape[0]),
        "num_database": n_db,
        "mAP": _mean(stats.ap, keep),
        "mAP_tie_aware": _mean(stats.ap_tie_aware, keep),
        "precision_at_k": {str(k): v for k, v in zip(topk, _mean(topk_prec, keep))},
        "map_at_k": {str(k): v for k, v in
                     zip(map_at, _mean(_lookup(stats.map_at_k, stats.map_at, map_at), keep))}
        if len(map_at) else {},
    }
    if stats.hist_all is not None:
        # precision / recall of the Hamming ball of every radius 0..L
        within_all = np.cumsum(stats.hist_all, 1).astype(np.float64)
        within_rel = np.cumsum(stats.hist_rel, 1).astype(np.float64)
        ball_prec = np.where(within_all > 0, within_rel / np.maximum(within_all, 1), 0.0)
        ball_rec = recall(within_rel)
        if radius is not None:
            r = min(int(radius), within_all.shape[1] - 1)
            out.update({
                "radius": int(radius),
                "precision_within_radius": _mean(ball_prec[:, r], keep),
                "recall_within_radius": _mean(ball_rec[:, r], keep),
            })
    out["curve"] = {"positions": [int(k) for k in curve],
                    "precision": _mean(curve_prec, keep),
                    "recall": _mean(recall(curve_hits), keep)}
    if stats.hist_all is not None:
        out["pr_curve_radius"] = {"radius": list(range(within_all.shape[1])),
                                  "precision": _mean(ball_prec, keep),
                                  "recall": _mean(ball_rec, keep)}
    out["queries_without_relevant"] = int((num_rel == 0).sum())
    out["skip_no_relevant"] = bool(skip_no_relevant)
    return out


def _all_positions(n_db, topk, curve_positions, extra=()):
    curve = list(curve_positions) if curve_positions is not None else default_curve_positions(n_db)
    return list(topk) + curve + list(extra)


def evaluate_codes(query_codes, db_codes, query_labels, db_labels, radius: int = 2,
                   topk=DEFAULT_TOPK, curve_positions=None, map_at=(),
                   skip_no_relevant: bool = False, device=None, backend: str = "auto") -> dict:
    """Every Hamming-ranking metric of binary codes, as ``summarize`` reports them."""
    n_db = len(db_codes)
    stats = hamming_ranking_stats(query_codes, db_codes, query_labels, db_labels,
                                  positions=_all_positions(n_db, topk, curve_positions),
                                  map_at=map_at, device=device, backend=backend)
    bits = stats.hist_all.shape[1] - 1  # distances run 0..L
    return summarize(stats, bits=bits, radius=radius, topk=topk, curve_positions=curve_positions,
                     map_at=map_at, skip_no_relevant=skip_no_relevant)


def evaluate_scores(scores, query_labels, db_labels, bits: Optional[int] = None,
                    topk=DEFAULT_TOPK, curve_positions=None, map_at=(),
                    skip_no_relevant: bool = False, device=None) -> dict:
    """Every score-ranking metric (higher score first).

    ``scores`` is a [Q, N] tensor/array, or a callable ``(start, stop) -> [stop-start, N]``.
    """
    import torch

    n_db = as_labels(db_labels).shape[0]
    num_queries = as_labels(query_labels).shape[0]
    if callable(scores):
        chunks = scores
    else:
        table = torch.as_tensor(_numpy(scores)) if not isinstance(scores, torch.Tensor) else scores
        chunks = (lambda s, e: table[s:e])
    stats = score_ranking_stats(chunks, num_queries, query_labels, db_labels,
                                positions=_all_positions(n_db, topk, curve_positions),
                                map_at=map_at, device=device)
    return summarize(stats, bits=bits, radius=None, topk=topk, curve_positions=curve_positions,
                     map_at=map_at, skip_no_relevant=skip_no_relevant)
