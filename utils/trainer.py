"""The training loop both methods share: lr schedule, mixed precision,
several processes, evaluation, best-loss and ``last`` checkpoints, early
stopping, resume, and the faults a long run meets (a NaN loss, Ctrl-C).

A method supplies an *objective*: an nn.Module whose ``forward(images,
labels)`` returns the batch loss (DCDH: network + center loss + regression;
OPQN: network + OrthoPQ head + loss), plus two functions: ``model_state()``
gives the checkpoint's model entries in the official layout (and any extra
tensors needed to resume), ``load_model_state(ckpt)`` puts them back.

Every epoch ends with a ``<name>_last.tar`` checkpoint holding everything a
bit-identical continuation needs (weights, optimizer, lr position, best-loss
bookkeeping, early-stopping counter, every random-number generator); the
best-loss file ``<name>.tar`` holds the same for the best epoch.  Both are
written by the main process only, atomically.
"""

from __future__ import annotations

import contextlib
import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from utils.checkpoint import (CheckpointError, load_checkpoint, resolve_checkpoint,
                              save_checkpoint)
from utils.cli import Interrupted
from utils.distributed import DistInfo, all_reduce_sum, barrier
from utils.engine import AverageMeter, set_lr, step_lr


class TrainingError(Exception):
    """Training cannot go on (e.g. the loss became NaN); reported in one line."""


class TrainingInterrupted(Interrupted):
    """Ctrl-C: the message says which checkpoint holds the last complete epoch."""


@dataclass(frozen=True)
class Schedule:
    epochs: int
    lr: float
    lr_step: int
    lr_gamma: float
    eval_every: int = 0
    patience: Optional[int] = None  # stop after this many epochs without a lower loss


@dataclass
class FitResult:
    best_loss: float
    best_epoch: int  # 1-based
    epochs_run: int
    last_metrics: Optional[dict]


def last_path_for(best_path) -> Path:
    """checkpoint/m.tar -> checkpoint/m_last.tar"""
    best_path = Path(best_path)
    return best_path.with_name(f"{best_path.stem}_last{best_path.suffix}")


def resume_from(resume_arg: Optional[str], best_path, checkpoint_dir) -> Optional[dict]:
    """The checkpoint ``--resume PATH|auto`` names, checked to hold a training state."""
    if not resume_arg:
        return None
    if resume_arg == "auto":
        path = last_path_for(best_path)
        if not path.is_file():
            raise CheckpointError(f"--resume auto: {path} does not exist (no epoch of this run "
                                  f"has finished); start without --resume")
    else:
        path = resolve_checkpoint(resume_arg, checkpoint_dir)
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt.get("train_state"), dict):
        raise CheckpointError(f"{path} holds no training state to resume from (only files written "
                              f"by dcdh_train.py / opqn_main.py do); start without --resume")
    return ckpt


# -- random-number generators --------------------------------------------------------
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


# -- mixed precision -------------------------------------------------------------------

def amp_dtype(device: torch.device, enabled: bool):
    """bf16 where the device supports it (CPUs, recent GPUs), fp16 otherwise."""
    if not enabled:
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def prepare(objective: torch.nn.Module, net: torch.nn.Module, device: torch.device,
            dist_info: DistInfo, compile: bool = False, channels_last: bool = False):
    """The module ``fit`` trains: ``objective`` (holding ``net``) after the
    channels-last conversion, in-place compilation of ``net`` (state_dict keys
    stay those of the official layout), and the DistributedDataParallel
    wrapper under torchrun."""
    if channels_last:
        net.to(memory_format=torch.channels_last)
    if compile:
        net.compile()
    if not dist_info.enabled:
        return objective
    return torch.nn.parallel.DistributedDataParallel(
        objective, device_ids=[device.index] if device.type == "cuda" else None)


# -- the loop ---------------------------------------------------------------------------

def fit(objective: torch.nn.Module, optimizer, train_loader, device: torch.device,
        schedule: Schedule, best_path, *, model_state: Callable[[], dict],
        load_model_state: Callable[[dict], None], evaluate: Optional[Callable[[], dict]] = None,
        extra_state: Optional[dict] = None, resume: Optional[dict] = None,
        dist_info: DistInfo = DistInfo(), amp: bool = False, channels_last: bool = False,
        progress: bool = True, desc: str = "", log: Callable[[str], None] = print) -> FitResult:
    """Train ``objective`` for ``schedule.epochs`` epochs (or until early stop).

    ``objective`` may be wrapped in DistributedDataParallel; ``model_state`` and
    ``load_model_state`` work on the unwrapped modules.  ``resume`` is a loaded
    checkpoint written by this function: training continues after its epoch.
    """
    best_path = Path(best_path)
    last_path = last_path_for(best_path)
    dtype = amp_dtype(device, amp)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    generator = getattr(train_loader, "generator", None)
    start, best_loss, best_epoch, metrics = 0, math.inf, -1, None
    if resume is not None:
        state = resume["train_state"]
        load_model_state(resume)
        optimizer.load_state_dict(resume["optimizer"])
        if scaler is not None and resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        start, best_loss, best_epoch = state["epoch"], state["best_loss"], state["best_epoch"] - 1
        metrics = resume.get("metrics")
        restore_rng(state["rng"], generator)
        log(f"resuming after epoch {start} (best loss {best_loss:.4f} at epoch {best_epoch + 1})")

    epoch = start - 1
    try:
        for epoch in range(start, schedule.epochs):
            if isinstance(train_loader.sampler, DistributedSampler):
                train_loader.sampler.set_epoch(epoch)
            set_lr(optimizer, step_lr(schedule.lr, epoch, schedule.lr_step, schedule.lr_gamma))
            loss = _train_one_epoch(objective, optimizer, train_loader, device, dtype, scaler,
                                    channels_last, epoch, progress,
                                    f"{desc}epoch {epoch + 1}/{schedule.epochs}", best_path)
            total, count = all_reduce_sum([loss.total, loss.count], device)
            epoch_loss = total / max(count, 1)
            line = f"[epoch: {epoch + 1}]\t[loss: {epoch_loss:.4f}]"
            due = schedule.eval_every and ((epoch + 1) % schedule.eval_every == 0
                                           or epoch + 1 == schedule.epochs)
            if due and evaluate is not None:
                if dist_info.is_main:
                    metrics = evaluate()
                    line += f"\t[mAP: {100 * metrics['mAP']:.2f}%]"
                barrier()
            log(line)
            improved = epoch_loss < best_loss
            if improved:
                best_loss, best_epoch = epoch_loss, epoch
            if dist_info.is_main:
                state = dict(model_state())
                state.update(extra_state or {})
                state.update(
                    epoch=epoch + 1, loss=epoch_loss, metrics=metrics,
                    optimizer=optimizer.state_dict(),
                    scaler=scaler.state_dict() if scaler is not None else None,
                    train_state={"epoch": epoch + 1, "best_loss": best_loss,
                                 "best_epoch": best_epoch + 1, "rng": capture_rng(generator)})
                if improved:
                    save_checkpoint(state, best_path)
                save_checkpoint(state, last_path)
            barrier()
            if schedule.patience is not None and epoch - best_epoch > schedule.patience:
                log(f"Training terminated at epoch {epoch + 1}: no lower loss for "
                    f"{schedule.patience} epochs")
                break
    except KeyboardInterrupt:
        if epoch >= 1:  # epoch (0-based) = epochs completed before the interrupted one
            raise TrainingInterrupted(
                f"interrupted in epoch {epoch + 1}; {last_path} holds epoch {epoch}: "
                f"run the same command with --resume auto to continue") from None
        raise TrainingInterrupted(f"interrupted in epoch {epoch + 1}, before any checkpoint "
                                  f"was written; nothing to resume") from None
    return FitResult(best_loss, best_epoch + 1, epoch + 1, metrics)


def _train_one_epoch(objective, optimizer, loader, device, dtype, scaler, channels_last, epoch,
                     progress, desc, best_path) -> AverageMeter:
    objective.train()
    meter = AverageMeter()
    autocast = (torch.autocast(device.type, dtype=dtype) if dtype is not None
                else contextlib.nullcontext())
    for step, (images, labels) in enumerate(tqdm(loader, desc=desc, leave=False,
                                                  disable=not progress, file=sys.stderr)):
        images = images.to(device, non_blocking=True)
        if channels_last and images.ndim == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = torch.as_tensor(labels).view(-1).to(device)
        with autocast:
            loss = objective(images, labels)
        value = loss.item()
        if not math.isfinite(value):
            raise TrainingError(
                f"the loss became {value} at epoch {epoch + 1}, step {step + 1}; stopped, the last "
                f"good checkpoints are kept ({best_path} and its _last file); try a lower --lr")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        meter.update(value, len(images))
    return meter
