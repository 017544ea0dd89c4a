"""Timing helpers the benchmarks share."""

import json
import time


def fastest(fn, repeat: int) -> float:
    """The fastest of ``repeat`` runs after a warm-up (the least disturbed by
    other work on a shared machine)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bare_and_full_step(method, inputs, targets, optimizer, repeat: int):
    """(bare, full) seconds of one training step on the same batch: the
    network with the sum of its outputs as loss, and the method's loss."""
    import torch

    with torch.no_grad():
        out = method.network(inputs)
    out = out[-1] if isinstance(out, list) else out
    # fixed random signs: a plain sum's gradient vanishes behind a final BatchNorm
    signs = torch.randint(0, 2, out.shape, generator=torch.Generator().manual_seed(1)).to(
        out.device, out.dtype) * 2 - 1

    def bare():
        optimizer.zero_grad(set_to_none=True)
        out = method.network(inputs)
        ((out[-1] if isinstance(out, list) else out) * signs).sum().backward()
        optimizer.step()

    def full():
        optimizer.zero_grad(set_to_none=True)
        method(inputs, targets).backward()
        optimizer.step()

    method.train()
    return fastest(bare, repeat), fastest(full, repeat)


def write_json(path, figures) -> None:
    """Every figure of a run as JSON, when --json names a file."""
    if path:
        with open(path, "w") as f:
            json.dump(figures, f, indent=2)
        print(f"wrote {path}")
