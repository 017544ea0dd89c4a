"""DDH's published evaluation (xjcvip007/DDH ``model_predict``, DDH.py:193-224,
and ``utils/compactbit.py``, ``hammingDist.py``, ``evaluate_macro.py``,
``cat_apcal.py``), vectorised, quirks included:

* codes are ``T.sgn(A6)``: +1, -1, or 0 for an exact 0;
* ``compactbit`` packs 8 entries per byte as ``sum_i 2^i * b_i`` -- applied to
  the +-1 (and 0) entries, not to 0/1 bits.  The negative sum wraps into
  uint8: for +-1 entries the byte is ``(2V - 255) mod 256`` =
  ``((V << 1) | 1) & 0xFF`` for the intended byte V, so bit 7 of every byte
  never reaches the distance (48 bits count as 42); a last partial byte of k
  bits becomes ``(2V - 2^k + 1) mod 256``; 0 entries shift the value;
* ``hammingDist`` = popcount of the byte XORs;
* precision and recall within Hamming radius 2 (``<= 2 + 1e-6``),
  macro-averaged over the queries (0 where nothing is retrieved / relevant);
* ``np.argsort(hammTrainTest, axis=0)`` (unstable: ties in an order numpy
  chooses), then ``cat_apcal``: AP over the whole gallery ranking (0 for a
  query without a relevant item, still averaged) and the precision of the
  first ``TOP_K = 50``.

``packing="intended"`` packs ``b > 0`` instead (the correct bits);
``stable=True`` (the default) breaks distance ties by gallery index, as the
toolkit's metrics do.

    python -m utils.retrieval.published.ddh CODES.npz [--top-k 50] [--intended] [--unstable]

reads stored codes (``evaluation.py --load CKPT --save-codes CODES.npz``; the
database is the gallery) and prints the four published numbers in one line.
"""

from __future__ import annotations

import numpy as np

from utils.cli import ArgumentParser, positive_int, run_script
from utils.retrieval.published import class_id_codes

HAMMING_RADIUS = 2
TOP_K = 50
# popcount of every byte value (hammingDist.py's bit_in_char)
BITS_IN_BYTE = np.array([bin(v).count("1") for v in range(256)], dtype=np.uint16)


def compactbit(codes, packing: str = "published") -> np.ndarray:
    """uint8 [n, ceil(bits / 8)]: ``sum_i 2^i * b[8j + i]`` per byte j, of the
    entries themselves (``published``) or of ``b > 0`` (``intended``)."""
    codes = np.asarray(codes)
    if packing not in ("published", "intended"):
        raise ValueError(f"packing must be 'published' or 'intended', got {packing!r}")
    values = (codes > 0).astype(np.int64) if packing == "intended" else \
        np.rint(codes).astype(np.int64)
    n, bits = values.shape
    words = -(-bits // 8)
    padded = np.zeros((n, words * 8), dtype=np.int64)
    padded[:, :bits] = values
    weights = 2 ** np.arange(8, dtype=np.int64)
    sums = (padded.reshape(n, words, 8) * weights).sum(axis=2)
    return np.mod(sums, 256).astype(np.uint8)  # x86's wrap of the negative value into uint8


def hamming_dist(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """uint16 [Q, N]: popcount of the byte-wise XOR (``hammingDist(tB, B)``)."""
    out = np.zeros((queries.shape[0], gallery.shape[0]), dtype=np.uint16)
    for j in range(queries.shape[1]):
        out += BITS_IN_BYTE[queries[:, j, None] ^ gallery[None, :, j]]
    return out


def evaluate_macro(relevant: np.ndarray, retrieved: np.ndarray) -> tuple:
    """Per-query (precision, recall) [Q] of boolean [N, Q] relevance and
    retrieval (0 where a query retrieves nothing / has nothing relevant);
    the published function returns their means (macro averages)."""
    hits = (relevant & retrieved).sum(axis=0)
    n_retrieved, n_relevant = retrieved.sum(axis=0), relevant.sum(axis=0)
    precision = np.where(n_retrieved > 0, hits / np.maximum(n_retrieved, 1), 0.0)
    recall = np.where(n_relevant > 0, hits / np.maximum(n_relevant, 1), 0.0)
    return precision, recall


def cat_apcal(gallery_labels, query_labels, ranking: np.ndarray, top_n: int) -> tuple:
    """Per-query (AP over the full ranking, precision of the first ``top_n``)
    [Q]; ``ranking`` [N, Q] holds gallery indices per query column
    (``HammingRank``); the published function returns their means."""
    gallery_labels, query_labels = np.ravel(gallery_labels), np.ravel(query_labels)
    relevant = gallery_labels[ranking] == query_labels[None, :]  # [N, Q] in ranked order
    hits = np.cumsum(relevant, axis=0, dtype=np.int64)
    positions = np.arange(1, relevant.shape[0] + 1, dtype=np.float64)[:, None]
    found = hits[-1]
    ap = np.where(found > 0, (relevant * hits / positions).sum(axis=0) / np.maximum(found, 1), 0.0)
    return ap, relevant[:top_n].sum(axis=0) / top_n


def published_metrics(gallery_codes, query_codes, gallery_labels, query_labels,
                      top_k: int = TOP_K, packing: str = "published", stable: bool = True,
                      radius: int = HAMMING_RADIUS, chunk: int = 256) -> dict:
    """``model_predict``'s numbers from sign codes (+1 / -1 / 0): {"Pre", "Rec",
    "MAP", "p_topN"}, computed ``chunk`` queries at a time (the published
    [N, Q] arrays of a whole test set take gigabytes)."""
    gallery_labels, query_labels = np.ravel(gallery_labels), np.ravel(query_labels)
    gallery_bytes = compactbit(gallery_codes, packing)
    query_bytes = compactbit(query_codes, packing)
    parts = []
    for start in range(0, len(query_labels), chunk):
        rows = slice(start, start + chunk)
        distance = hamming_dist(query_bytes[rows], gallery_bytes).T  # hammTrainTest [N, q]
        relevant = gallery_labels[:, None] == query_labels[None, rows]
        precision, recall = evaluate_macro(relevant, distance <= radius + 0.000001)
        ranking = np.argsort(distance, axis=0, kind="stable" if stable else None)
        parts.append((precision, recall, *cat_apcal(gallery_labels, query_labels[rows],
                                                    ranking, top_k)))
    pre, rec, ap, p_top = (np.concatenate(values) for values in zip(*parts))
    return {"Pre": float(pre.mean()), "Rec": float(rec.mean()), "MAP": float(ap.mean()),
            "p_topN": float(p_top.mean())}


def get_args_parser():
    p = ArgumentParser(description="DDH's published evaluation of stored codes (the database "
                                   "as gallery): precision and recall within Hamming radius "
                                   "2, MAP, precision of the top K")
    p.add_argument("codes", metavar="CODES.npz", help="stored codes (evaluation.py --save-codes)")
    p.add_argument("--top-k", type=positive_int, default=TOP_K,
                   help="the precision's K (published TOP_K = 50)")
    p.add_argument("--intended", action="store_true",
                   help="pack the 0/1 bits (the correct distance) instead of the +-1 entries")
    p.add_argument("--unstable", action="store_true",
                   help="numpy's default argsort, as published (ties in numpy's order)")
    return p


def main(args):
    z = class_id_codes(args.codes, "DDH")
    out = published_metrics(z["db_codes"], z["query_codes"], z["db_labels"], z["query_labels"],
                            args.top_k, "intended" if args.intended else "published",
                            not args.unstable)
    print(f"Pre@r2 {out['Pre']:.6f}  Rec@r2 {out['Rec']:.6f}  MAP {out['MAP']:.6f}  "
          f"P@{args.top_k} {out['p_topN']:.6f}")
    return out


if __name__ == "__main__":
    raise SystemExit(run_script(main, get_args_parser().parse_args()))
