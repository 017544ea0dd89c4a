"""Encode a database and a query set with a hashing network and score the
retrieval: the evaluation step shared by training and evaluation scripts."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from utils.engine import encode, sign_codes
from utils.metrics import evaluate_codes


@dataclass
class EncodedSplits:
    db_codes: torch.Tensor  # int8 ±1 [N, L]
    db_labels: torch.Tensor
    query_codes: torch.Tensor  # int8 ±1 [Q, L]
    query_labels: torch.Tensor


def encode_splits(net, db_loader, query_loader, device, progress=True) -> EncodedSplits:
    """Sign codes of the database (training split) and the queries (test split)."""
    db_out, db_labels = encode(net, db_loader, device, desc="encoding database", progress=progress)
    q_out, q_labels = encode(net, query_loader, device, desc="encoding queries", progress=progress)
    return EncodedSplits(sign_codes(db_out), db_labels, sign_codes(q_out), q_labels)


def evaluate_hashing(net, db_loader, query_loader, device, progress=True, **metric_kwargs):
    """(metrics dict, EncodedSplits): Hamming ranking of test queries against the training set."""
    splits = encode_splits(net, db_loader, query_loader, device, progress=progress)
    result = evaluate_codes(splits.query_codes, splits.db_codes, splits.query_labels,
                            splits.db_labels, **metric_kwargs)
    return result, splits
