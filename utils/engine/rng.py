"""Seeds and random-number-generator states: every random choice of a run goes
through ``--seed``, and a checkpoint stores every generator so a resumed run
continues exactly where the interrupted one was."""

from __future__ import annotations

import os
import random
from typing import Optional

import numpy as np
import torch

# What cuBLAS needs for deterministic matrix products (its documented setting).
CUBLAS_DETERMINISTIC = ":4096:8"


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (every device).

    ``deterministic``: torch may use deterministic algorithms only (an op that
    has none raises instead of warning), cuBLAS gets its deterministic
    workspace setting and cuDNN stops benchmarking; otherwise cuDNN picks the
    fastest kernels (``cudnn.benchmark``)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        # read by cuBLAS when its first handle is made, so set before any CUDA work
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_DETERMINISTIC
        torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: derive NumPy/random seeds from torch's
    per-worker seed; Ctrl-C is the main process's to report (a worker's
    traceback would only bury its one line)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


# Stored as tensors and plain containers so that weights_only loading reads them.

def capture_rng(loader_generator: Optional[torch.Generator]) -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "loader": loader_generator.get_state() if loader_generator is not None else None,
    }


def restore_rng(state: dict, loader_generator: Optional[torch.Generator]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if loader_generator is not None and state["loader"] is not None:
        loader_generator.set_state(state["loader"])
