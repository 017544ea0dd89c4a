"""Optimizers the published code uses that torch does not ship."""

from __future__ import annotations

import torch


class AdamInverseSqrt(torch.optim.Adam):
    """Adam with a linear warm-up then an inverse-square-root decay of the lr,
    per update (the published triplet code's ``adam_inverse_sqrt``, from the
    XLM ``optim.py``: betas (0.9, 0.98), lr 1e-3, 4000 warm-up updates from
    1e-7).  The published call crashes on Python >= 3.11 (``inspect.getargspec``);
    this is the same schedule written for torch.  The update count lives in
    each param group, so it is saved with ``state_dict``."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.98), eps: float = 1e-8,
                 weight_decay: float = 0.0, warmup_updates: int = 4000,
                 warmup_init_lr: float = 1e-7):
        super().__init__(params, lr=warmup_init_lr, betas=betas, eps=eps,
                         weight_decay=weight_decay)
        for group in self.param_groups:
            group.update(peak_lr=lr, warmup_updates=warmup_updates,
                         warmup_init_lr=warmup_init_lr, num_updates=0)

    @staticmethod
    def lr_at(group) -> float:
        n, warmup = group["num_updates"], group["warmup_updates"]
        if n < warmup:
            return group["warmup_init_lr"] + n * (group["peak_lr"] - group["warmup_init_lr"]) / warmup
        return group["peak_lr"] * warmup ** 0.5 * n ** -0.5

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            group["lr"] = self.lr_at(group)
        loss = super().step(closure)
        for group in self.param_groups:
            group["num_updates"] += 1
        return loss
