"""Training-engine pieces shared by the scripts: seeding, logging to a file,
learning-rate schedules, loss bookkeeping and encoding a dataset."""

from __future__ import annotations

import contextlib
import os
import random
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (every device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: derive NumPy/random seeds from torch's per-worker seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def step_lr(base_lr: float, epoch: int, step: int, gamma: float) -> float:
    """lr * gamma ** (epoch // step), the official step decay (epoch 0-based)."""
    return base_lr * gamma ** (epoch // step)


def set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


@dataclass
class AverageMeter:
    """Running, count-weighted mean of a per-batch quantity."""
    total: float = 0.0
    count: int = 0

    def update(self, value: float, n: int = 1) -> None:
        self.total += value * n
        self.count += n

    @property
    def avg(self) -> float:
        return self.total / max(self.count, 1)


class _Tee:
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for s in self.streams:
            s.write(text)
        return len(text)

    def flush(self):
        for s in self.streams:
            s.flush()

    def isatty(self):
        return False


def log_path(log_dir, bits: int, dataset: str) -> Path:
    """The official log name: <len>bits_<dataset>_<MMDDHHMM>.txt."""
    return Path(log_dir) / f"{bits}bits_{dataset}_{datetime.now().strftime('%m%d%H%M')}.txt"


@contextlib.contextmanager
def tee_stdout(path):
    """Everything printed inside the block also goes to ``path`` (appended),
    as the official scripts log; progress bars go to stderr and stay out."""
    with open(path, "a", buffering=1) as f:
        old = sys.stdout
        sys.stdout = _Tee(old, f)
        try:
            yield Path(path)
        finally:
            sys.stdout = old


@contextlib.contextmanager
def silenced():
    """Processes other than the first print nothing (torchrun would repeat every line)."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield


@torch.no_grad()
def encode(net, loader, device, desc="encoding", progress=True):
    """Real-valued network outputs [n, L] (float32, CPU) and labels [n] for a loader."""
    net.eval()
    outputs, labels = [], []
    for images, targets in tqdm(loader, desc=desc, leave=False, disable=not progress,
                                file=sys.stderr):
        outputs.append(net(images.to(device, non_blocking=True)).float().cpu())
        labels.append(torch.as_tensor(targets).view(-1).cpu())
    if not outputs:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return torch.cat(outputs), torch.cat(labels)


def sign_codes(outputs: torch.Tensor) -> torch.Tensor:
    """DCDH's binarisation: +1 where the output is > 0, else -1 (int8)."""
    return torch.where(outputs > 0, 1, -1).to(torch.int8)


def ensure_dir(path, flag: str) -> Path:
    """Create a folder the run will write to, or fail before any training."""
    from utils.cli import UsageError

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {flag} {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write to {flag} {path}: permission denied")
    return path
