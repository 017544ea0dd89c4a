"""CPU kernel behind utils.retrieval.metrics: Hamming-ranking statistics without sorting.

For each query (queries run in parallel) one pass over the database, in
index order: the distance by XOR and popcount of 64-bit words, the count of
all items and of relevant items at each distance 0..L, and for every relevant
item its distance and how many items / relevant items at that distance came
before it (the histogram entries at that moment).  Once the pass is done the
histograms' prefix sums turn those into ranks: an item at distance d has rank
1 + (items at distance < d) + (items at distance d with a lower index), which
is exactly the stable (distance, index) order, and its rank among relevant
items follows the same way.  AP, hits at the requested positions and
DeepHash's AP@k accumulate from the two ranks, in index order, over the
relevant items only.

Codes of at most 64 bits with class-id labels (the usual case) have their
own inner loop, with the query's code word and label held in registers.

Compiled once by numba and cached next to this file.
"""

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic


@intrinsic
def _popcount(typingctx, word):
    """The CPU's population count of a uint64 (llvm.ctpop)."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
        return builder.call(fn, args)

    return sig, codegen


def pack_words(bits: np.ndarray) -> np.ndarray:
    """Bool/0-1 rows [n, L] -> uint64 words [n, ceil(L/64)] (zero padded)."""
    packed = np.packbits(np.ascontiguousarray(bits, dtype=np.uint8), axis=1)
    n_words = max(1, -(-packed.shape[1] // 8))
    out = np.zeros((packed.shape[0], n_words * 8), np.uint8)
    out[:, :packed.shape[1]] = packed
    return out.view(np.uint64)


@njit(inline="always")
def _relevant(q, n, q_single, d_single, q_multi, d_multi, multilabel):
    if multilabel:
        for w in range(q_multi.shape[1]):
            if q_multi[q, w] & d_multi[n, w]:
                return True
        return False
    return q_single[q] == d_single[n]


@njit(parallel=True, cache=True)
def ranking_stats(qw, dw, q_single, d_single, q_multi, d_multi, multilabel,
                  positions, map_at, num_bits):
    """Per-query AP, hits at ``positions``, AP@``map_at`` and distance histograms."""
    n_q, n_words = qw.shape
    n_db = dw.shape[0]
    n_pos, n_map = positions.shape[0], map_at.shape[0]
    nb1 = num_bits + 1
    ap = np.zeros(n_q)
    hits = np.zeros((n_q, n_pos), np.int64)
    map_k = np.zeros((n_q, n_map))
    hist_all = np.zeros((n_q, nb1), np.int64)
    hist_rel = np.zeros((n_q, nb1), np.int64)
    dw0 = dw[:, 0]  # the only word when n_words == 1
    for q in prange(n_q):
        # per relevant item, in index order: its distance, and the items and
        # relevant items at that distance with a lower index
        rel_d = np.empty(n_db, np.int32)
        rel_all = np.empty(n_db, np.int32)
        rel_rel = np.empty(n_db, np.int32)
        h_all = np.zeros(nb1, np.int64)
        h_rel = np.zeros(nb1, np.int64)
        r = 0
        if n_words == 1 and not multilabel:
            qv = qw[q, 0]
            ql = q_single[q]
            for n in range(n_db):
                d = _popcount(qv ^ dw0[n])
                if d_single[n] == ql:
                    rel_d[r] = d
                    rel_all[r] = h_all[d]
                    rel_rel[r] = h_rel[d]
                    h_rel[d] += 1
                    r += 1
                h_all[d] += 1
        else:
            for n in range(n_db):
                d = 0
                for w in range(n_words):
                    d += _popcount(qw[q, w] ^ dw[n, w])
                if _relevant(q, n, q_single, d_single, q_multi, d_multi, multilabel):
                    rel_d[r] = d
                    rel_all[r] = h_all[d]
                    rel_rel[r] = h_rel[d]
                    h_rel[d] += 1
                    r += 1
                h_all[d] += 1
        # first rank (0-based) at each distance, for all and relevant items
        start_all = np.empty(nb1, np.int64)
        start_rel = np.empty(nb1, np.int64)
        c_all = 0
        c_rel = 0
        for d in range(nb1):
            start_all[d] = c_all
            start_rel[d] = c_rel
            c_all += h_all[d]
            c_rel += h_rel[d]
        hit_count = np.zeros(n_pos, np.int64)
        map_sum = np.zeros(n_map)
        map_cnt = np.zeros(n_map, np.int64)
        ap_sum = 0.0
        for k in range(r):
            d = rel_d[k]
            rank = start_all[d] + rel_all[k] + 1
            j = start_rel[d] + rel_rel[k] + 1
            precision = j / rank
            ap_sum += precision
            for i in range(n_pos):
                if rank <= positions[i]:
                    hit_count[i] += 1
            for i in range(n_map):
                if rank <= map_at[i]:
                    map_sum[i] += precision
                    map_cnt[i] += 1
        if c_rel > 0:
            ap[q] = ap_sum / c_rel
        for i in range(n_pos):
            hits[q, i] = hit_count[i]
        for i in range(n_map):
            if map_cnt[i] > 0:
                map_k[q, i] = map_sum[i] / map_cnt[i]
        hist_all[q] = h_all
        hist_rel[q] = h_rel
    return ap, hits, map_k, hist_all, hist_rel
