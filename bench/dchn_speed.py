"""Speed of a DCHN view network's training step and of SHAM.

1. The view-network training step (forward, the DCHN loss with the target
   codes of the batch, backward, Adam step) against the bare network step
   (forward, the sum of the outputs as loss, backward, Adam step), on the
   same batch of 4096-d features (batch 64, as published): the ratio is what
   the method costs beyond the MLP.
2. SHAM's solve (models/sham.py: 50 alternating steps with a Sylvester
   solve each) against one training epoch of the view network on the same
   number of training rows, and against the published algorithm written as
   published (the same arithmetic; this project adds only the bookkeeping of
   the loss trajectory): both ratios in the same run.

Run from the repository root:  python3 -m bench.dchn_speed [--json OUT]
"""


import numpy as np
import torch

from bench.timing import bare_and_full_step, fastest, write_json
from utils.cli import (ArgumentParser, code_length, positive_int)

from data import DataFacts
from methods import create_method
from methods.recipes.dchn import PUBLISHED
from models.sham import train_sham


def published_sham(num_classes, bits, gama, available):
    """The published utils.SHAM loop, for the baseline (same arithmetic)."""
    from scipy.linalg import solve_sylvester, svd

    rng = np.random.RandomState(5555)
    w = rng.randn(num_classes, bits)
    u, _, v = svd(w)
    w = np.dot(u, np.dot(np.eye(num_classes, bits), v))
    inx = np.arange(num_classes)
    rng.shuffle(inx)
    y = np.concatenate([np.identity(num_classes)[:, inx], available])
    hash_opt = lambda x: (x > 0.).astype("float32") * 2 - 1  # noqa: E731
    loss_of = lambda x, b, w_: np.abs(x - b @ w_.T).sum(1).mean() + gama * np.abs(b - x @ w_).sum(1).mean()  # noqa: E731,E501
    losses = {}
    for _ in range(50):
        b = hash_opt((1 + gama) * np.dot(y, np.dot(w, np.linalg.inv(np.dot(w.T, w) + gama * np.identity(bits)).T)))
        w = solve_sylvester(np.dot(b.T, b), gama * np.dot(y.T, y), (1 + gama) * np.dot(b.T, y)).T
        losses[loss_of(y, b, w)] = w
    return losses[min(losses)]


def get_args_parser():
    p = ArgumentParser(description=__doc__)
    p.add_argument("--input-dim", type=positive_int, default=4096, help="feature width of the view network")
    p.add_argument("--bits", type=code_length, default=64, help="code length")
    p.add_argument("--classes", type=positive_int, default=24, help="labels")
    p.add_argument("--batch", type=positive_int, default=64, help="batch size")
    p.add_argument("--train-rows", type=positive_int, default=10000, help="rows of one epoch (SHAM ratio)")
    p.add_argument("--available", type=positive_int, default=100,
                   help="labelled rows SHAM uses")
    p.add_argument("--steps", type=positive_int, default=10, help="timed training steps")
    p.add_argument("--json", metavar="OUT", help="write the figures as JSON")
    return p


def main(args):
    rng = np.random.default_rng(0)
    labels = (rng.random((args.batch, args.classes)) < 0.15).astype(np.float32)
    available = (rng.random((args.available, args.classes)) < 0.15).astype(np.float64)
    W = train_sham(args.classes, args.bits, 1.0, available).W
    sham_s = fastest(lambda: train_sham(args.classes, args.bits, 1.0, available), 3)
    published_sham_s = fastest(lambda: published_sham(args.classes, args.bits, 1.0, available), 3)
    method = create_method("dchn", {"bits": args.bits, "view": 0},
                           DataFacts(args.classes, input_dim=args.input_dim, multi_label=True))
    method.set_targets(W)
    x = torch.randn(args.batch, args.input_dim)
    y = torch.from_numpy(labels)
    optimizer, _ = method.configure_optimizers(PUBLISHED)
    bare_s, full_s = bare_and_full_step(method, x, y, optimizer, args.steps)
    epoch_s = full_s * -(-args.train_rows // args.batch)
    figures = {"input_dim": args.input_dim, "bits": args.bits, "batch": args.batch,
               "bare_step_s": bare_s, "train_step_s": full_s, "step_over_bare": full_s / bare_s,
               "sham_s": sham_s, "published_sham_s": published_sham_s,
               "sham_speedup": published_sham_s / sham_s, "epoch_s": epoch_s,
               "sham_over_epoch": sham_s / epoch_s}
    print(f"view network {args.input_dim} -> 4096 -> 4096 -> {args.bits}, batch {args.batch}, "
          f"{torch.get_num_threads()} threads:")
    print(f"  bare MLP step          {1e3 * bare_s:9.2f} ms")
    print(f"  DCHN training step     {1e3 * full_s:9.2f} ms   {full_s / bare_s:.3f}x the bare step")
    print(f"SHAM ({args.classes} classes, {args.bits} bits, {args.available} labelled rows, 50 steps):")
    print(f"  this project           {sham_s:9.3f} s")
    print(f"  published algorithm    {published_sham_s:9.3f} s   {published_sham_s / sham_s:.2f}x this project's time")
    print(f"  one epoch of {args.train_rows} rows  {epoch_s:9.3f} s   SHAM = {sham_s / epoch_s:.4f} epochs")
    write_json(args.json, figures)
    return figures


if __name__ == "__main__":
    main(get_args_parser().parse_args())
