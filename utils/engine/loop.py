"""The training loop every method shares: ``fit(method, optimizer, scheduler,
loaders, config)``.

``method`` is a ``methods.base.Method``: the loop only calls its interface
(``unpack``, the loss in ``forward``, ``evaluate``, and the file hooks
``best_file`` / ``resume_file`` / ``load_file``), so it knows nothing about
images, label matrices, centers, codebooks or any method's file layout.

Every epoch ends with a resume file (``config.files.last``) holding everything
a bit-identical continuation needs: weights, optimizer, lr scheduler, grad
scaler, the best value so far, the loss history and every random-number
generator.  The best file (lowest loss, or highest mAP) is written when the
monitored value improves, and the method's official snapshots (triplet
hashing) at each evaluation.  Files are written by the main process only,
atomically.

The loss is accumulated on the device and read every ``log_every`` steps and
at the epoch's end (not every step, which would wait for the GPU each time);
a NaN or infinite loss is then reported with the step where it appeared.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from utils.engine.checkpoint import save_checkpoint
from utils.engine.distributed import DistInfo, all_reduce_sum, barrier
from utils.engine.files import RunFiles
from utils.engine.logs import log
from utils.engine.precision import Speed, amp_dtype, autocast, prepare
from utils.engine.rng import capture_rng, restore_rng
from utils.errors import Interrupted, UserError
from utils.retrieval.options import MetricOptions


class TrainingError(UserError):
    """Training cannot go on (e.g. the loss became NaN); reported in one line."""


class TrainingInterrupted(Interrupted):
    """Ctrl-C: the message says which checkpoint holds the last complete epoch."""


@dataclass(frozen=True)
class EvalPlan:
    """When to evaluate during training and what decides the best file."""
    epochs: frozenset = frozenset()  # 0-based epochs after which to evaluate
    monitor: str = "loss"  # "loss" (lower is better) or "mAP" (higher, at evaluations)
    patience: Optional[int] = None  # stop after this many epochs without a lower loss

    def better(self, value: float, best: float) -> bool:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        return value < best if self.monitor == "loss" else value > best

    def worst(self) -> float:
        return math.inf if self.monitor == "loss" else -math.inf


@dataclass(frozen=True)
class FitConfig:
    """Everything about a run that is not the method, optimizer, scheduler or data."""
    epochs: int
    device: torch.device
    files: RunFiles
    plan: EvalPlan = EvalPlan()
    metrics: MetricOptions = MetricOptions()
    speed: Speed = Speed()
    dist: DistInfo = DistInfo()
    progress: bool = True
    desc: str = ""
    log_every: int = 50  # steps between reads of the loss (and NaN checks)
    our_keys: Mapping[str, Any] = field(default_factory=dict)  # method, config, data, ...


@dataclass(frozen=True)
class Progress:
    """What a method's files record of the run so far."""
    epochs_done: int  # finished epochs
    losses: tuple = ()  # mean loss of each finished epoch
    our_keys: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class FitResult:
    best_value: float  # best loss, or best mAP when monitoring mAP
    best_epoch: int  # 1-based; 0 when nothing was ever better
    epochs_run: int
    train_seconds: float
    last_loss: float
    losses: list = field(default_factory=list)  # mean loss of every epoch, resumed ones included


def fit(method, optimizer, scheduler, loaders, config: FitConfig,
        resume: Optional[dict] = None) -> FitResult:
    """Train ``method`` for ``config.epochs`` epochs (or until early stop).

    ``loaders`` has ``train``, ``database`` and ``queries`` (the latter two for
    evaluation).  ``resume`` is a checkpoint written by this function:
    training continues after its epoch, bit for bit."""
    device, dist_info, plan = config.device, config.dist, config.plan
    trained = prepare(method, device, dist_info, config.speed)
    dtype = amp_dtype(device, config.speed.amp)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    # the random order of the data: the loader's generator, or its batch sampler's
    generator = getattr(loaders.train, "generator", None) or \
        getattr(getattr(loaders.train, "batch_sampler", None), "generator", None)
    start, best, best_epoch, metrics, losses = 0, plan.worst(), -1, None, []
    if resume is not None:
        start, best, best_epoch, metrics, losses = _restore(method, optimizer, scheduler, scaler,
                                                            resume, generator, config)
    began = time.perf_counter()
    epoch, epoch_loss, state = start - 1, math.nan, None
    completed = start  # epochs whose resume file is written
    try:
        for epoch in range(start, config.epochs):
            if isinstance(getattr(loaders.train, "sampler", None), DistributedSampler):
                loaders.train.sampler.set_epoch(epoch)
            total, count = train_one_epoch(trained, method, optimizer, scaler, loaders.train,
                                           config, epoch, dtype)
            total, count = all_reduce_sum([total, count], device)
            epoch_loss = total / max(count, 1)
            losses.append(epoch_loss)
            line = f"[epoch: {epoch + 1}]\t[loss: {epoch_loss:.4f}]"
            evaluated = epoch in plan.epochs
            if evaluated:
                if dist_info.is_main:
                    metrics = method.evaluate(loaders.database, loaders.queries, device,
                                              config.metrics, config.progress, dtype)[0]
                    line += f"\t[mAP: {100 * metrics['mAP']:.2f}%]"
                barrier()
            with warnings.catch_warnings():
                # a grad scaler skips the steps whose gradients overflow; torch then
                # warns that the scheduler stepped first, which is expected here
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
                scheduler.step()
            value = epoch_loss if plan.monitor == "loss" else (
                metrics["mAP"] if evaluated and dist_info.is_main else None)
            improved = plan.better(value, best)
            if improved:
                best, best_epoch = value, epoch
            if plan.monitor == "mAP" and evaluated and dist_info.is_main:
                line += f"\t[best mAP: {100 * best:.2f}% at epoch {best_epoch + 1}]"
            log.info(line)
            if dist_info.is_main:
                progress = Progress(epoch + 1, tuple(losses), config.our_keys)
                state = _training_state(optimizer, scheduler, scaler, config, generator, epoch,
                                        epoch_loss, metrics, best, best_epoch, losses)
                if improved and config.files.best is not None:
                    save_checkpoint(method.best_file(progress, state), config.files.best)
                if evaluated and config.files.snapshot_pattern:
                    snapshot = Path(config.files.snapshot_pattern.format(epoch=epoch))
                    save_checkpoint(method.best_file(progress, state), snapshot)
                save_checkpoint(method.resume_file(progress, state), config.files.last)
            completed = epoch + 1
            barrier()
            if plan.patience is not None and epoch - best_epoch > plan.patience:
                log.info(f"Training terminated at epoch {epoch + 1}: no lower loss for "
                         f"{plan.patience} epochs")
                break
        if dist_info.is_main and state is not None:
            # the run is complete: say so in the resume file (run_status reads it)
            state["train_state"]["finished"] = True
            save_checkpoint(method.resume_file(progress, state), config.files.last)
    except KeyboardInterrupt:
        if completed >= 1:
            raise TrainingInterrupted(
                f"interrupted in epoch {completed + 1}; {config.files.last} holds epoch "
                f"{completed}: run the same command with --resume auto to continue") from None
        raise TrainingInterrupted("interrupted in epoch 1, before any checkpoint was written; "
                                  "nothing to resume") from None
    return FitResult(best, best_epoch + 1, epoch + 1, time.perf_counter() - began, epoch_loss,
                     losses)


def train_one_epoch(trained, method, optimizer, scaler, loader, config: FitConfig, epoch: int,
                    dtype) -> tuple:
    """(sum of per-item losses, items) of one epoch.  ``trained`` is ``method``
    or its DistributedDataParallel wrapper (the loss must go through it)."""
    device = config.device
    trained.train()
    window = max(1, config.log_every)
    pending = torch.zeros(window, dtype=torch.float64, device=device)
    sizes: list = []
    total, count, first = 0.0, 0, 0
    bar = tqdm(loader, desc=f"{config.desc}epoch {epoch + 1}/{config.epochs}", leave=False,
               disable=not config.progress, file=sys.stderr)

    def flush():
        nonlocal total, count, first, sizes
        if not sizes:
            return
        values = pending[:len(sizes)].cpu()  # the one wait for the device per window
        bad = (~torch.isfinite(values)).nonzero()
        if len(bad):
            step = first + int(bad[0]) + 1
            raise TrainingError(
                f"the loss became {float(values[int(bad[0])])} at epoch {epoch + 1}, step {step}; "
                f"stopped, {_kept(config)}; try a lower --lr")
        weights = torch.tensor(sizes, dtype=torch.float64)
        total += float((values * weights).sum())
        count += int(weights.sum())
        first += len(sizes)
        sizes = []
        bar.set_postfix(loss=f"{total / max(count, 1):.4f}", refresh=False)

    for batch in bar:
        inputs, targets = method.unpack(batch, device)
        with autocast(device, dtype):
            loss = trained(inputs, targets)
        optimizer.zero_grad(set_to_none=True)
        method.backward(loss, scaler)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        pending[len(sizes)] = loss.detach()
        sizes.append(len(targets))
        if len(sizes) == window:
            flush()
    flush()
    return total, count


def _kept(config: FitConfig) -> str:
    """Which good files a stopped run leaves (only those that exist)."""
    kept = [str(p) for p in config.files.outputs() if p.is_file()]
    return f"the last good checkpoints are kept ({' and '.join(kept)})" if kept else \
        "no checkpoint had been written yet"


# -- checkpoint contents ---------------------------------------------------------------

def _training_state(optimizer, scheduler, scaler, config, generator, epoch, loss, metrics, best,
                    best_epoch, losses) -> dict:
    return {
        **config.our_keys,
        "epoch": epoch + 1, "loss": loss, "metrics": metrics,
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "train_state": {"epoch": epoch + 1, "best": best, "best_epoch": best_epoch + 1,
                        "monitor": config.plan.monitor, "history": list(losses),
                        "rng": capture_rng(generator)},
    }


def _restore(method, optimizer, scheduler, scaler, resume: dict, generator, config):
    state = resume["train_state"]
    if "lr_scheduler" not in resume or "best" not in state:
        raise TrainingError("the resume file was written by an older version of this toolkit "
                            "(no lr scheduler state); start without --resume")
    if state.get("monitor", "loss") != config.plan.monitor:
        raise TrainingError(f"the resume file monitors {state.get('monitor')}, this run "
                            f"{config.plan.monitor}; resume with the command that wrote it")
    method.load_file(resume, "the resume file")
    optimizer.load_state_dict(resume["optimizer"])
    scheduler.load_state_dict(resume["lr_scheduler"])
    if scaler is not None and resume.get("scaler"):
        scaler.load_state_dict(resume["scaler"])
    restore_rng(state["rng"], generator)
    start, best, best_epoch = state["epoch"], state["best"], state["best_epoch"] - 1
    what = "loss" if config.plan.monitor == "loss" else "mAP"
    log.info(f"resuming after epoch {start} (best {what} {best:.4f} at epoch {best_epoch + 1})")
    return start, best, best_epoch, resume.get("metrics"), list(state.get("history", []))


def run_status(last_path, load) -> dict:
    """What a run's resume file says: {"exists", "finished", "epochs_done", "our_keys"}.

    ``load`` reads a checkpoint file (the caller's safe loader)."""
    path = Path(last_path)
    if not path.is_file():
        return {"exists": False, "finished": False, "epochs_done": 0, "file": {}}
    ckpt = load(path)
    state = ckpt.get("train_state") or {} if isinstance(ckpt, dict) else {}
    return {"exists": True, "finished": bool(state.get("finished")),
            "epochs_done": int(state.get("epoch", 0)), "file": ckpt}
