"""CPU kernel behind utils.metrics: Hamming-ranking statistics without sorting.

For each query (queries run in parallel) two passes over the database:

1. distances by XOR and popcount of 64-bit words, counting all items and
   relevant items at each distance 0..L;
2. in database-index order, hand out ranks: an item at distance d gets rank
   1 + (items at distance < d) + (items at distance d seen so far), which is
   exactly the stable (distance, index) order; a relevant item's rank among
   relevant items follows the same way.  AP, hits at the requested positions
   and DeepHash's AP@k accumulate from those two ranks.

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
    ap = np.zeros(n_q)
    hits = np.zeros((n_q, n_pos), np.int64)
    map_k = np.zeros((n_q, n_map))
    hist_all = np.zeros((n_q, num_bits + 1), np.int64)
    hist_rel = np.zeros((n_q, num_bits + 1), np.int64)
    for q in prange(n_q):
        dist = np.empty(n_db, np.int16)  # distance, negated-minus-one when relevant
        h_all = np.zeros(num_bits + 1, np.int64)
        h_rel = np.zeros(num_bits + 1, np.int64)
        for n in range(n_db):
            d = 0
            for w in range(n_words):
                d += _popcount(qw[q, w] ^ dw[n, w])
            h_all[d] += 1
            if _relevant(q, n, q_single, d_single, q_multi, d_multi, multilabel):
                h_rel[d] += 1
                dist[n] = -d - 1
            else:
                dist[n] = d
        # next free rank (0-based) at each distance, for all and relevant items
        next_all = np.empty(num_bits + 1, np.int64)
        next_rel = np.empty(num_bits + 1, np.int64)
        c_all = 0
        c_rel = 0
        for d in range(num_bits + 1):
            next_all[d] = c_all
            next_rel[d] = c_rel
            c_all += h_all[d]
            c_rel += h_rel[d]
        hit_count = np.zeros(n_pos, np.int64)
        map_sum = np.zeros(n_map)
        map_cnt = np.zeros(n_map, np.int64)
        ap_sum = 0.0
        for n in range(n_db):
            d = dist[n]
            if d >= 0:
                next_all[d] += 1
                continue
            d = -d - 1
            rank = next_all[d] + 1
            j = next_rel[d] + 1
            next_all[d] += 1
            next_rel[d] += 1
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
