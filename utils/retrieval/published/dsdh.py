"""DSDH's published evaluation (liqi-casia/DSDH-HashingCode, MATLAB:
``test.m``, ``compute_S.m``, ``return_map.m``, ``calcHammingRank.m``,
``calcHammingDist.m``, ``calcMAP.m``).

* codes are 0/1 (``B = U > 0``); ``calcHammingDist``: ``P = sign(B - 0.5)``,
  ``D = round((bits - P1 P2') / 2)``;
* ``calcHammingRank``: MATLAB's ``sort(distH, 2)``, which is stable: ties
  by database index, as the toolkit's metrics rank;
* ``calcMAP``: AP = mean of ``cumsum(ngb) ./ pos`` over the relevant
  positions, averaged over the queries **with** a relevant item only
  (``numSucc``; ``succRate`` = their share): the toolkit's
  ``--skip-no-relevant``, DSDH's default here.

Indices here are 0-based (MATLAB's ``orderH`` is 1-based).

``python -m utils.retrieval.published.dsdh CODES.npz`` prints the published
mAP of a stored-codes file (``evaluation.py --load CKPT --save-codes CODES.npz``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Tuple

import numpy as np


def calc_hamming_dist(b1: np.ndarray, b2: np.ndarray) -> np.ndarray:
    """D [n1, n2] (int64) between the 0/1 rows of ``b1`` and ``b2``."""
    p1 = np.sign(np.asarray(b1, dtype=np.float64) - 0.5)
    p2 = np.sign(np.asarray(b2, dtype=np.float64) - 0.5)
    return np.round((p1.shape[1] - p1 @ p2.T) / 2).astype(np.int64)


def calc_hamming_rank(b_database: np.ndarray,
                      b_queries: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(distH [Q, N], orderH [Q, N] 0-based): each query's database by
    distance, ties by index (MATLAB's stable ``sort``)."""
    dist = calc_hamming_dist(b_queries, b_database)
    return dist, np.argsort(dist, axis=1, kind="stable")


def calc_map(order: np.ndarray, neighbor: np.ndarray) -> Tuple[float, float]:
    """(MAP, succRate) of ``calcMAP.m``: ``neighbor`` [Q, N] 0/1, ``order`` 0-based."""
    neighbor = np.asarray(neighbor).astype(bool)
    positions = np.arange(1, neighbor.shape[1] + 1)
    total, succeeded = 0.0, 0
    for i in range(neighbor.shape[0]):
        ngb = neighbor[i, order[i]]
        if ngb.any():
            total += float(np.mean((np.cumsum(ngb) / positions)[ngb]))
            succeeded += 1
    return (total / succeeded if succeeded else float("nan")), succeeded / neighbor.shape[0]


def compute_s(database_labels: np.ndarray, query_labels: np.ndarray) -> np.ndarray:
    """S [N, Q]: same class id (``compute_S.m``); label matrices: a common label."""
    db, q = np.asarray(database_labels), np.asarray(query_labels)
    if db.ndim == 2:
        return db @ q.T > 0
    return db[:, None] == q[None, :]


def return_map(b_database, b_queries, S) -> float:
    """``return_map.m``: the mAP of 0/1 codes with ``S`` [N, Q]."""
    _, order = calc_hamming_rank(b_database, b_queries)
    return calc_map(order, np.asarray(S).T)[0]


def main(argv=None) -> int:
    from utils.errors import UsageError
    from utils.retrieval.codes_io import load_npz
    from utils.retrieval.metrics import to_bits

    p = argparse.ArgumentParser(prog="python -m utils.retrieval.published.dsdh",
                                description="DSDH's published mAP (calcMAP) of a stored-codes file")
    p.add_argument("codes", help="an .npz written by evaluation.py --save-codes")
    args = p.parse_args(argv)
    try:
        z = load_npz(args.codes)
        db, queries = to_bits(z["db_codes"], name="db_codes"), to_bits(z["query_codes"],
                                                                       name="query_codes")
    except (UsageError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    S = compute_s(z["db_labels"], z["query_labels"])
    _, order = calc_hamming_rank(db, queries)
    value, rate = calc_map(order, S.T)
    print(f"DSDH calcMAP (ties by database index, over the {rate:.1%} of queries with a "
          f"relevant item): {value:.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
