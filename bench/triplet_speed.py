"""Speed of triplet-ranking hashing's loss and training step.

1. Loss + mining of one batch (10 classes x 8 images = 80 embeddings, 20,160
   triplets): this project's mask-based loss (models/losses/triplet.py)
   against the published algorithm written as published (a Python loop over
   the classes building the triplet list, then gathering the three embedding
   sets), forward and backward, on the same embeddings; it checks that both
   give the same loss.
2. The training step (forward, mining, loss, backward, SGD step) against the
   bare network step (forward, the sum of the outputs as loss, backward, SGD
   step) on the same batch.

Run from the repository root:  python3 -m bench.triplet_speed [--img-size 224] [--json OUT]
"""

import itertools

import numpy as np
import torch
import torch.nn.functional as F

from bench.timing import bare_and_full_step, fastest, write_json
from utils.cli import (ArgumentParser, code_length, image_side, positive_int)

from data import DataFacts
from methods import create_method
from models.losses.triplet import triplet_hashing_loss


def published_triplets(labels: torch.Tensor) -> torch.Tensor:
    """utils.get_triplets of the published code, as written (loops and lists)."""
    labels = labels.cpu().numpy()
    triplets = []
    for label in set(labels):
        mask = labels == label
        members = np.where(mask)[0]
        if len(members) < 2:
            continue
        negatives = np.where(np.logical_not(mask))[0]
        pairs = [p for p in itertools.permutations(members, 2) if p[0] < p[1]]
        triplets += [[a, p, n] for a, p in pairs for n in negatives]
    return torch.LongTensor(np.array(triplets))


def published_loss(embeddings, labels, margin):
    t = published_triplets(labels)
    a, p, n = embeddings[t[:, 0]], embeddings[t[:, 1]], embeddings[t[:, 2]]
    return F.relu((a - p).pow(2).sum(1) - (a - n).pow(2).sum(1) + margin).mean()


def get_args_parser():
    p = ArgumentParser(description=__doc__)
    p.add_argument("--bits", type=code_length, default=64, help="code length")
    p.add_argument("--classes", type=positive_int, default=10, help="classes in a batch")
    p.add_argument("--per-class", type=positive_int, default=8, help="images per class")
    p.add_argument("--img-size", type=image_side, default=224, help="image side")
    p.add_argument("--repeat", type=positive_int, default=20, help="timed repetitions of the loss")
    p.add_argument("--steps", type=positive_int, default=3, help="timed training steps")
    p.add_argument("--json", help="write the figures as JSON")
    return p


def main(args):
    torch.manual_seed(0)
    batch = args.classes * args.per_class
    labels = torch.arange(args.classes).repeat_interleave(args.per_class)[torch.randperm(batch)]
    base = torch.tanh(torch.randn(batch, args.bits))

    def run(loss_fn):
        e = base.clone().requires_grad_()
        loss = loss_fn(e, labels, 20.0)
        loss.backward()
        return loss.item()

    assert abs(run(triplet_hashing_loss) - run(published_loss)) < 1e-4
    ours, theirs = fastest(lambda: run(triplet_hashing_loss), args.repeat), \
        fastest(lambda: run(published_loss), max(2, args.repeat // 4))
    method = create_method("triplet", {"bits": args.bits, "margin": 20.0},
                           DataFacts(args.classes, args.img_size))
    images = torch.randn(batch, 3, args.img_size, args.img_size)
    optimizer = torch.optim.SGD(method.parameters(), lr=1e-3, momentum=0.9)

    bare_s, full_s = bare_and_full_step(method, images, labels, optimizer, args.steps)
    figures = {"batch": batch, "bits": args.bits, "triplets": int(len(published_triplets(labels))),
               "loss_ms": 1e3 * ours, "published_loss_ms": 1e3 * theirs,
               "loss_speedup": theirs / ours, "img_size": args.img_size,
               "bare_step_s": bare_s, "train_step_s": full_s, "step_over_bare": full_s / bare_s}
    print(f"loss + mining, batch {batch} ({figures['triplets']} triplets), forward + backward:")
    print(f"  published list-based   {1e3 * theirs:9.2f} ms")
    print(f"  this project (masks)   {1e3 * ours:9.2f} ms   {theirs / ours:.1f}x faster")
    print(f"training step at {args.img_size}x{args.img_size}, {torch.get_num_threads()} threads:")
    print(f"  bare network step      {bare_s:9.3f} s")
    print(f"  full triplet step      {full_s:9.3f} s   {full_s / bare_s:.3f}x the bare step")
    write_json(args.json, figures)
    return figures


if __name__ == "__main__":
    main(get_args_parser().parse_args())
