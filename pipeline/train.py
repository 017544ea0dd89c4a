"""Training: ``train(TrainOptions)`` trains one or several models of one
registered method, as every training script does it:

1. the method's own checks of the given config, and the files of every
   model named (``Method.run_files``) and claimed before any data is read:
   an existing checkpoint is never replaced without ``--resume`` or
   ``--overwrite``, no output is an input, two runs cannot write one file;
2. per model (a DCHN call trains each view): the data, the config completed
   from the method's defaults, the recipe with what the user set, the
   method, its optimizer and scheduler, ``fit`` (with resume), all logged
   to stdout and the method's log file;
3. the evaluation of the file a user will evaluate (the best one), through
   the same code as ``evaluation.py`` (DCHN: across its views), and the
   call's --json and --save-codes.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from pipeline.evaluate import evaluate_loaded, resolve_device
from pipeline.options import TrainOptions, data_protocol, metric_options
from pipeline.outputs import claim_call_outputs, text_of, write_results
from utils.engine.checkpoint import CheckpointError, resolve_checkpoint
from utils.engine.files import Output, RunFiles, ensure_dir
from utils.engine.logs import log, logging_to
from utils.errors import UsageError


@dataclass
class Member:
    """One model of a call: its given config, its files and its resume state."""
    given: dict
    files: RunFiles
    resume: Optional[dict] = None


@dataclass
class MemberResult:
    files: RunFiles
    summary: dict  # JSON-able: checkpoint, epochs, losses, time
    built: Optional[tuple] = None  # (method with the evaluated file's weights, splits)


@dataclass
class TrainOutcome:
    """What a training call gives: per given config, its members' results and
    (when evaluated) its final evaluation."""
    groups: list = field(default_factory=list)  # [(member results, evaluation or None)]

    @property
    def evaluations(self) -> list:
        return [e for _, e in self.groups if e is not None]

    def json(self):
        values = []
        for results, evaluation in self.groups:
            if evaluation is not None:
                values.append(evaluation.metrics)
            else:
                values.append({"mode": "train", "models": [r.summary for r in results]})
        return values[0] if len(values) == 1 else values


def plan(cls, options: TrainOptions) -> list:
    """Per given config, its members with their files (no data read, except
    DCHN's view count)."""
    if len(options.saves) != len(options.configs):
        raise UsageError(f"--save names {len(options.saves)} file(s) for {len(options.configs)} "
                         f"model(s); give one name per model")
    groups = []
    for given, save in zip(options.configs, options.saves):
        cls.check_given(given)
        request = options.data.request(cls, given, train=True)
        groups.append([Member(m, cls.run_files(m, options.data.dataset, options.output.names(save),
                                               options.overrides))
                       for m in cls.members(given, options.data.dataset, request)])
    return groups


def claim(cls, groups: list, options: TrainOptions):
    """Check and lock every file the call writes, before any data is read."""
    members = [m for group in groups for m in group]
    resume = options.output.resume
    if resume not in (None, "auto") and len(members) > 1:
        raise UsageError("--resume PATH takes one model; with several use --resume auto")
    resume_path = None
    if resume not in (None, "auto"):
        resume_path = resolve_checkpoint(resume, options.output.checkpoint_dir)
    continuing = resume == "auto" or (resume_path is not None and any(
        resume_path.resolve() in {p.resolve() for p in m.files.outputs()} for m in members))
    outputs = []
    for m in members:
        ensure_dir(m.files.last.parent, m.files.dir_flag)
        if m.files.log is not None:
            ensure_dir(m.files.log.parent, "--log-dir")
        outputs += [Output(p, m.files.flag, protected=True) for p in m.files.outputs()]
        _refuse_old_snapshots(m.files, continuing or options.output.overwrite)
    inputs = [(resume_path, "--resume"), (options.init_from, "--load_path")]
    inputs += [(v, "--pretrained") for g in options.configs for k, v in g.items()
               if k == "pretrained" and v]
    # under torchrun every process checks, the first one (which writes) locks
    held = claim_call_outputs(options.output.json, options.output.save_codes,
                              options.output.report, inputs, outputs, continuing,
                              options.output.overwrite, lock=os.environ.get("RANK", "0") == "0")
    try:
        lenient = resume == "auto" and any(m.files.last.is_file() for m in members)
        for m in members:
            m.resume = _resume_state(resume, resume_path, m.files, lenient)
    except BaseException:
        held.release()
        raise
    return held


def _refuse_old_snapshots(files: RunFiles, continuing: bool) -> None:
    if not files.snapshot_pattern or continuing:
        return
    earlier = sorted(Path(files.snapshot_pattern).parent.glob(
        Path(files.snapshot_pattern.replace("{epoch:03d}", "*").replace("{epoch}", "*")).name))
    if earlier:
        raise UsageError(f"{files.flag}: {files.folder or earlier[0].parent} already holds "
                         f"snapshots ({earlier[0].name}, ...); pass --resume auto to continue "
                         f"that run or --overwrite to start afresh")


def _resume_state(resume, resume_path, files: RunFiles, lenient: bool) -> Optional[dict]:
    from methods.registry import read_checkpoint

    if resume is None:
        return None
    if resume == "auto":
        if not files.last.is_file():
            if lenient:
                return None
            raise CheckpointError(f"--resume auto: {files.last} does not exist (no epoch of this "
                                  f"run has finished); start without --resume")
        resume_path = files.last
    ckpt = read_checkpoint(resume_path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("train_state"), dict):
        raise CheckpointError(f"{resume_path} holds no training state to resume from (only the "
                              f"_last files and best files this toolkit writes do); start without "
                              f"--resume")
    check_resume(ckpt, resume_path)
    return ckpt


# what the loop reads back from a resume file, and the type it must have
RESUME_ENTRIES = {"optimizer": dict, "lr_scheduler": dict}
STATE_ENTRIES = {"epoch": int, "best": (int, float), "best_epoch": int, "monitor": str,
                 "rng": dict}
RNG_ENTRIES = ("python", "numpy", "torch")


def check_resume(ckpt: dict, path) -> None:
    """A resume file the loop can continue from, or one line naming what is wrong."""
    state = ckpt["train_state"]
    problems = [f"'{k}'" for k, kind in RESUME_ENTRIES.items() if not isinstance(ckpt.get(k), kind)]
    problems += [f"train_state '{k}'" for k, kind in STATE_ENTRIES.items()
                 if not isinstance(state.get(k), kind) or isinstance(state.get(k), bool)]
    if isinstance(state.get("rng"), dict):
        problems += [f"the {k} generator state" for k in RNG_ENTRIES if k not in state["rng"]]
    if problems:
        raise CheckpointError(f"{path} is not a resume file this toolkit can continue from "
                              f"(missing or malformed: {', '.join(problems[:3])}); start without "
                              f"--resume, or with --overwrite")


def train(options: TrainOptions) -> TrainOutcome:
    """Train every model the options name; see the module docstring."""
    from methods import method_class
    from utils.engine.distributed import cleanup, init_distributed

    cls = method_class(options.method)
    data_protocol(options.data, cls.data_kind)  # --protocol fits --dataset: before any work
    groups = plan(cls, options)
    held = claim(cls, groups, options)
    try:
        dist, device = init_distributed(resolve_device(options.engine.device))
        try:
            outcome = TrainOutcome()
            for group in groups:
                outcome.groups.append(_train_group(cls, group, options, dist, device))
            if dist.is_main:
                write_results(outcome.evaluations, None, options.output.save_codes,
                              options.output.report, "", {})
                if options.output.json:
                    from utils.cli.output import write_json

                    write_json(options.output.json, outcome.json())
            return outcome
        finally:
            cleanup()
    finally:
        held.release()


def _train_group(cls, group: list, options: TrainOptions, dist, device):
    if options.parallel and len(group) > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(len(group)) as pool:
            results = pool.starmap(train_member, [(cls.name, m, options, None, None, i)
                                                  for i, m in enumerate(group)])
    else:
        results = [train_member(cls.name, m, options, dist, device, i)
                   for i, m in enumerate(group)]
    if not dist.is_main or not options.evaluate_after:
        return results, None
    return results, _final_evaluation(cls, results, options, device)


def _final_evaluation(cls, results: list, options: TrainOptions, device):
    """The evaluated files, through the evaluation every script uses."""
    from methods.base import EvalContext
    from methods.registry import from_checkpoint
    from utils.engine.precision import amp_dtype

    loaded = [from_checkpoint(r.files.evaluated, cls.name) for r in results]
    known = {str(r.files.evaluated): r.built for r in results if r.built is not None}
    ctx = EvalContext(device, metric_options(cls, options.metrics, options.data),
                      progress=options.engine.progress, workers=options.data.workers,
                      dtype=amp_dtype(device, options.engine.speed.amp))
    with logging_to(results[-1].files.log):
        evaluation = evaluate_loaded(loaded, options.data, ctx, known=known)[0]
        if len(results) == 1:
            evaluation.metrics.update(results[0].summary)
        else:
            evaluation.metrics["models"] = [r.summary for r in results]
        log.info(text_of(evaluation))
    return evaluation


def train_member(name: str, member: Member, options: TrainOptions, dist=None, device=None,
                 index: int = 0) -> MemberResult:
    """Train one model (in this process, or in a process of its own when
    ``dist`` is None)."""
    from data import build_splits, make_loaders
    from data.loaders import CacheOptions
    from methods import method_class
    from methods.registry import read_checkpoint
    from utils.engine.distributed import DistInfo
    from utils.engine.loop import EvalPlan, FitConfig, fit
    from utils.engine.provenance import run_provenance
    from utils.engine.rng import seed_everything

    cls = method_class(name)
    if dist is None:  # a process of its own (parallel members)
        dist = DistInfo()
    engine = options.engine
    if engine.devices:
        device = resolve_device(engine.devices[index % len(engine.devices)])
    elif device is None:
        device = resolve_device(engine.device)
    data, files = options.data, member.files
    seed_everything(engine.seed, engine.deterministic)
    with logging_to(files.log, enabled=dist.is_main):
        splits = build_splits(data.dataset, data.request(cls, member.given, train=True),
                              kinds=cls.data_kind)
        check_labels(cls, splits, data.dataset)
        facts = splits.facts()
        config = cls.make_config(data.dataset, facts, member.given)
        recipe = cls.make_recipe(data.dataset, facts, config, options.overrides)
        method = cls(config, facts).to(device)
        if options.init_from and member.resume is None:
            method.load_file(read_checkpoint(options.init_from), options.init_from)
        method.prepare(splits, files, engine.seed)
        sampler = method.train_sampler(splits.train, recipe, engine.seed, dist.rank,
                                       dist.world_size)
        loaders = make_loaders(splits, recipe.batch, device, engine.seed, data.workers,
                               rank=dist.rank, world_size=dist.world_size, train_sampler=sampler,
                               indexed=cls.indexed, cache=CacheOptions(
                                   data.cache, data.cache_dir, engine.progress and dist.is_main),
                               batch_augment=cls.batch_augment)
        optimizer, scheduler = method.configure_optimizers(recipe)
        metrics = metric_options(cls, options.metrics, options.data)
        our_keys = {**method.our_keys(), "data": data.record(),
                    "recipe": dataclasses.asdict(recipe),
                    "run": {"seed": engine.seed, "deterministic": engine.deterministic,
                            "amp": engine.speed.amp, "compile": engine.speed.compile,
                            "channels_last": engine.speed.channels_last, "device": str(device),
                            "processes": dist.world_size, "workers": data.workers,
                            "checkpoint_dir": options.output.checkpoint_dir},
                    "provenance": run_provenance(device, engine.speed.amp)}
        fit_config = FitConfig(
            recipe.epochs, device, files,
            EvalPlan(recipe.evaluation_epochs(), recipe.monitor, recipe.patience()), metrics,
            engine.speed, dist, engine.progress and dist.is_main,
            desc=f"{config.bits} bits, " if len(options.configs) > 1 else "", our_keys=our_keys)
        log.info(f"[Configuration] {cls.name} on {data.dataset} ({splits.describe()}); "
                 f"{method.describe()}; batch {recipe.batch}, lr {recipe.lr}, {recipe.epochs} "
                 f"epochs, {recipe.describe()}; device {device}, {dist.world_size} process(es), "
                 f"seed {engine.seed}")
        for note in method.notes():
            log.info(note)
        log.info(f"Settings: config {config.as_dict()}; recipe {our_keys['recipe']}; "
                 f"run {our_keys['run']}")
        started = time.perf_counter()
        result = fit(method, optimizer, scheduler, loaders, fit_config, member.resume)
        summary = {"checkpoint": str(files.evaluated), "best_epoch": result.best_epoch,
                   "epochs_run": result.epochs_run, "last_loss": result.last_loss,
                   "losses": list(result.losses),
                   "train_seconds": round(result.train_seconds, 3),
                   "best_loss" if recipe.monitor == "loss" else "best_mAP_during_training":
                   result.best_value, **{k: v for k, v in config.as_dict().items()
                                         if k in ("view",)}}
        built = None
        if dist.is_main:
            what = "loss" if recipe.monitor == "loss" else "mAP"
            if files.best is not None and files.best.is_file():
                log.info(f"Training completed: best {what} {result.best_value:.4f} at epoch "
                         f"{result.best_epoch}; model saved as {files.best}")
                method.load_file(read_checkpoint(files.best), files.best, heads=False)
            else:
                log.info(f"Training completed after {result.epochs_run} epochs "
                         f"({time.perf_counter() - started:.1f} s); the last weights are in "
                         f"{files.last}")
            if files.log is not None:
                log.info(f"log written to {files.log}")
            if dist.world_size == 1 and options.engine.devices == ():
                built = (method, splits)
    return MemberResult(files, summary, built)


def check_labels(cls, splits, dataset: str) -> None:
    """A single-label method refuses multi-label training data in one line
    (rather than silently keeping one label of each row)."""
    if splits.multi_label and not cls.multi_label:
        raise UsageError(f"{cls.name} trains on one class per image, but {dataset} has "
                         f"multi-label rows (0/1 vectors over {splits.num_classes} labels); give "
                         f"single-label lists (exactly one 1 per row) or train a method that "
                         f"takes label vectors")
