"""A whole training run as the scripts do it: the output files checked (and an
existing checkpoint protected) before any data is read, the log file, ``fit``,
then the final evaluation of the file a user will evaluate (the best one)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from utils.cli.output import check_writable_file, ensure_dir, format_metrics
from utils.engine.checkpoint import (last_path_for, load_checkpoint, refuse_overwrite,
                                     resume_from)
from utils.engine.logs import log
from utils.engine.loop import FitConfig, fit


@dataclass(frozen=True)
class RunFiles:
    best: Path  # the --save file
    last: Path  # the resume file beside it


def check_run_files(args, save_name, checkpoint_dir=None, last_name=None) -> RunFiles:
    """The files a training run writes, checked before any training.

    A fresh run (no ``--resume``) refuses to replace an existing ``--save``
    file unless ``--overwrite`` is given, so that a typo never destroys a
    week of training."""
    ckpt_dir = ensure_dir(checkpoint_dir or args.checkpoint_dir, "--checkpoint-dir")
    best = check_writable_file(ckpt_dir / save_name, "--save")
    last = check_writable_file(ckpt_dir / last_name if last_name else last_path_for(best), "--save")
    if not args.resume and not getattr(args, "overwrite", False):
        refuse_overwrite(best)
    return RunFiles(best, last)


def load_resume(args, files: RunFiles) -> Optional[dict]:
    return resume_from(args.resume, files.last, args.checkpoint_dir)


@dataclass
class RunOutcome:
    """What a training run ends with: the metrics of the best file and its codes."""
    metrics: dict
    queries: object  # methods.base.Encoded
    database: object

    def save_codes(self, path) -> None:
        from utils.retrieval.codes_io import save_codes

        save_codes(path, self.database.values.cpu(), self.queries.values.cpu(),
                   self.database.labels.cpu(), self.queries.labels.cpu())


def train_and_report(method, optimizer, scheduler, loaders, config: FitConfig,
                     resume: Optional[dict] = None, title: str = "") -> Optional[RunOutcome]:
    """``fit``, then the metrics of the best file (the one a user evaluates);
    None on processes other than the first."""
    result = fit(method, optimizer, scheduler, loaders, config, resume)
    if not config.dist.is_main:
        return None
    what = "loss" if config.monitor == "loss" else "mAP"
    if config.best_path is not None and Path(config.best_path).is_file():
        ckpt = load_checkpoint(config.best_path, expect_dict=not method.bare_state_dict)
        method.load_official_state(ckpt, config.best_path)
        log.info(f"Training completed: best {what} {result.best_value:.4f} at epoch "
                 f"{result.best_epoch}; model saved as {config.best_path}")
        evaluated = f"{title or config.best_path} (best {what}, epoch {result.best_epoch})"
    else:  # e.g. monitoring mAP with no evaluation: the last weights are what there is
        log.info(f"Training completed after {result.epochs_run} epochs; no best file was "
                 f"written, the last weights are in {config.resume_path()}")
        evaluated = f"{title or config.resume_path()} (last epoch)"
    from utils.engine.precision import amp_dtype

    final, queries, database = method.evaluate(loaders.database, loaders.queries, config.device,
                                               config.metrics, config.progress,
                                               amp_dtype(config.device, config.amp))
    final.update(checkpoint=str(config.best_path), best_epoch=result.best_epoch,
                 epochs_run=result.epochs_run, train_seconds=round(result.train_seconds, 3))
    final["best_loss" if what == "loss" else "best_mAP_during_training"] = result.best_value
    log.info(format_metrics(final, evaluated))
    return RunOutcome(final, queries, database)
