"""DDAH's published evaluation (deephashface/DDAH ``utils.compute_mAP``,
``compute_result``; train.py:84-93), quirks included:

* codes are ``torch.sign(hash_a)``: +1, -1, or 0 for an exact 0;
* the distance is the number of differing code entries (a 0 differs from
  both +1 and -1);
* the database is ranked by ``.sort()`` (unstable: ties in an order torch
  chooses); ``stable=True`` (the default) breaks ties by database index, as
  the toolkit's metrics do;
* AP = mean over the relevant items of (hits so far) / (position), over the
  full ranking; a query without a relevant item gives ``mean([]) = NaN``, and
  then the mAP (the float32 mean over the queries) is NaN.

(The published evaluation also computes the codes with the network in train
mode and a shuffled database: see docs/baselines.md.)

    python -m utils.retrieval.published.ddah CODES.npz [--unstable]

reads stored codes (``evaluation.py --load CKPT --save-codes CODES.npz``) and
prints the published mAP in one line.
"""

from __future__ import annotations

import torch

from utils.cli import ArgumentParser, run_script
from utils.retrieval.published import class_id_codes


def average_precisions(trn_binary, tst_binary, trn_label, tst_label,
                       stable: bool = True) -> torch.Tensor:
    """float32 [Q]: each query's (``tst_*``) AP over the whole database
    (``trn_*``), NaN without a relevant item.  Labels are class ids, [n] or
    [n, 1] (the published loader's)."""
    trn_binary, tst_binary = torch.as_tensor(trn_binary), torch.as_tensor(tst_binary)
    trn_label = torch.as_tensor(trn_label).reshape(-1)
    tst_label = torch.as_tensor(tst_label).reshape(-1)
    aps = []
    for query_binary, query_label in zip(tst_binary, tst_label):
        distance = (query_binary != trn_binary).long().sum(dim=1)
        order = distance.sort(stable=stable).indices
        correct = (trn_label[order] == query_label).float()
        positions = correct.nonzero()[:, 0].float() + 1  # 1-based positions of the hits
        hits = torch.arange(1, positions.numel() + 1, dtype=torch.float32)
        aps.append(torch.mean(hits / positions))
    return torch.stack(aps) if aps else torch.zeros(0)


def compute_mAP(trn_binary, tst_binary, trn_label, tst_label, stable: bool = True) -> float:
    """The published ``compute_mAP`` (its arguments, without the device): the
    float32 mean of the APs, NaN if any is NaN."""
    return float(torch.mean(average_precisions(trn_binary, tst_binary, trn_label, tst_label,
                                               stable)))


def get_args_parser():
    p = ArgumentParser(description="DDAH's published mAP of stored codes (the database ranked "
                                   "for every query)")
    p.add_argument("codes", metavar="CODES.npz", help="stored codes (evaluation.py --save-codes)")
    p.add_argument("--unstable", action="store_true",
                   help="torch's default sort, as published (ties in torch's order)")
    return p


def main(args):
    z = class_id_codes(args.codes, "DDAH")
    value = compute_mAP(z["db_codes"], z["query_codes"], z["db_labels"], z["query_labels"],
                        stable=not args.unstable)
    print(f"mAP {value:.5f}")
    return value


if __name__ == "__main__":
    raise SystemExit(run_script(main, get_args_parser().parse_args()))
