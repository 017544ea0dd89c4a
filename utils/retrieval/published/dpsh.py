"""DPSH's published evaluation (jiangqy/DPSH-pytorch ``utils/CalcHammingRanking.py``).

* Hamming distance ``0.5 * (bits - q . b)`` of +-1 codes (``torch.sign``
  codes may hold 0: they count half a bit each way, as published);
* each query's database ranked by ``np.argsort`` (unstable: ties come in
  an order of numpy's choosing); ``stable=True`` (the default here) ranks
  ties by database index, as the toolkit's metrics do;
* AP = the mean over relevant items of (relevant so far) / position;
* ``CalcMap``: a query without a relevant item is skipped **but counted** in
  the mean (AP 0), which is what the toolkit's metrics do by default;
  ``CalcTopMap`` does the same on the first ``topk`` positions.

Labels are label matrices [n, C] as published (relevant: a common positive
column) or class ids [n] (relevant: the same id).

``python -m utils.retrieval.published.dpsh CODES.npz [--topk K] [--unstable]``
prints the published number for a stored-codes file
(``evaluation.py --load CKPT --save-codes CODES.npz``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional

import numpy as np


def calc_hamming_dist(b1: np.ndarray, b2: np.ndarray) -> np.ndarray:
    """``CalcHammingDist``: 0.5 * (bits - b1 . b2') (float64)."""
    b1, b2 = np.asarray(b1, dtype=np.float64), np.asarray(b2, dtype=np.float64)
    return 0.5 * (b2.shape[1] - b1 @ b2.T)


def relevance(query_label: np.ndarray, db_labels: np.ndarray) -> np.ndarray:
    """gnd [N] (float32 0/1) of one query: a shared label."""
    if np.ndim(db_labels) == 1:
        return (db_labels == query_label).astype(np.float32)
    return (db_labels @ query_label > 0).astype(np.float32)


def _ranked_relevance(q: np.ndarray, db: np.ndarray, query_label, db_labels,
                      stable: bool) -> np.ndarray:
    hamm = calc_hamming_dist(q[None, :], db)[0]
    order = np.argsort(hamm, kind="stable") if stable else np.argsort(hamm)
    return relevance(query_label, db_labels)[order]


def _ap(gnd: np.ndarray) -> Optional[float]:
    """Mean of (count / position) over the relevant positions; None without any."""
    total = int(gnd.sum())
    if total == 0:
        return None
    positions = np.flatnonzero(gnd == 1) + 1.0
    return float(np.mean(np.linspace(1, total, total) / positions))


def ap_per_query(qB, rB, query_labels, db_labels, topk: Optional[int] = None,
                 stable: bool = True) -> np.ndarray:
    """AP of every query (0 for a query without a relevant item)."""
    qB, rB = np.asarray(qB), np.asarray(rB)
    query_labels, db_labels = np.asarray(query_labels), np.asarray(db_labels)
    out = np.zeros(len(qB))
    for i in range(len(qB)):
        gnd = _ranked_relevance(qB[i], rB, query_labels[i], db_labels, stable)
        ap = _ap(gnd if topk is None else gnd[:topk])
        out[i] = 0.0 if ap is None else ap
    return out


def calc_map(qB, rB, query_labels, db_labels, stable: bool = True) -> float:
    """``CalcMap``: the sum of APs over **all** queries' count."""
    return float(ap_per_query(qB, rB, query_labels, db_labels, None, stable).sum() / len(qB))


def calc_top_map(qB, rB, query_labels, db_labels, topk: int, stable: bool = True) -> float:
    """``CalcTopMap``: AP over the first ``topk`` positions, over all queries' count."""
    return float(ap_per_query(qB, rB, query_labels, db_labels, topk, stable).sum() / len(qB))


def main(argv=None) -> int:
    from utils.errors import UsageError
    from utils.retrieval.codes_io import load_npz
    from utils.retrieval.metrics import to_bits

    p = argparse.ArgumentParser(prog="python -m utils.retrieval.published.dpsh",
                                description="DPSH's published mAP (CalcMap / CalcTopMap) of a "
                                            "stored-codes file")
    p.add_argument("codes", help="an .npz written by evaluation.py --save-codes")
    p.add_argument("--topk", type=int, default=None, help="CalcTopMap over the first K positions")
    p.add_argument("--unstable", action="store_true",
                   help="np.argsort's default order of ties, as the published code")
    args = p.parse_args(argv)
    try:
        z = load_npz(args.codes)
        # +-1 codes (stored 0/1 codes are mapped to -1/+1)
        qB, rB = (to_bits(z[k], name=k).astype(np.int8) * 2 - 1
                  for k in ("query_codes", "db_codes"))
    except (UsageError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args_ = (qB, rB, z["query_labels"], z["db_labels"])
    if args.topk:
        value, name = calc_top_map(*args_, args.topk, not args.unstable), f"CalcTopMap@{args.topk}"
    else:
        value, name = calc_map(*args_, not args.unstable), "CalcMap"
    ties = "np.argsort order" if args.unstable else "ties by database index"
    print(f"DPSH {name} ({ties}, queries without a relevant item counted as 0): {value:.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
