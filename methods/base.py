"""The method interface: everything the pipeline, the training loop and the
evaluation code know about a method.

A method is one registered class (``@register_method(name)``), an
``nn.Module`` built the same way as every other:

* from a frozen **config** (``Method.Config``: the code length and the
  method's own hyper-parameters, each field with its help text) and the
  **facts** of its data (``DataFacts``: classes, image side, feature width):
  ``method_class(name)(config, facts)``; ``make_config`` fills what a user
  did not give from the method's defaults for the dataset;
* with a **recipe** per dataset (``make_recipe``: epochs, batch, lr and its
  schedule, evaluation rule, optimizer settings; each value with its
  published source in ``methods/recipes/``) and ``configure_optimizers``;
* from a **checkpoint file alone** (``methods.registry.from_checkpoint``),
  published files included: ``recognise`` tells whether a loaded file is
  this method's and with which config.

An instance answers, for training: ``unpack(batch, device)`` (which part of a
batch is input, which supervision), ``forward(inputs, targets)`` (the loss of
one batch), ``train_sampler`` (a batch sampler, where the method needs one);
for evaluation: ``embed`` / ``codes`` / ``encode`` (what is stored), ``rank``
(how the database is scored: Hamming distance here, PQ score in OPQN) and
``top_k``; for files: ``official_state`` / ``load_official_state`` (the
published layout, both ways, with one-line errors), ``best_file`` /
``resume_file`` / ``load_file`` (what the loop writes and reads), and
``run_files`` (the names of the files a run writes).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Mapping, Optional, Sequence

import torch
import torch.nn as nn
from tqdm import tqdm

from data.registry import DataFacts
from utils.cli.parser import code_length
from utils.engine.checkpoint import CheckpointError
from utils.engine.files import RunFiles, RunNames, last_path_for
from utils.engine.logs import log_path
from utils.engine.precision import autocast
from utils.errors import UsageError
from utils.report.results import Evaluation
from utils.retrieval.metrics import evaluate_codes
from utils.retrieval.options import MetricOptions


def option(default=None, help: str = "", **meta):
    """A config or recipe field with its command-line help (``help``) and,
    optionally, ``type`` (a checked number type of utils.cli), ``choices``
    and ``flag`` (the generic scripts' spelling, default ``--field-name``)."""
    return field(default=default, metadata={"help": help, **meta})


@dataclass(frozen=True)
class MethodConfig:
    """The fields every method has; each method's ``Config`` adds its own."""
    bits: int = option(48, "code length in bits", type=code_length)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping, source: str = "the checkpoint") -> "MethodConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise CheckpointError(f"{source} records a config with unknown field(s) "
                                  f"{', '.join(unknown)}; written by another version?")
        try:
            return cls(**values)
        except TypeError as exc:
            raise CheckpointError(f"{source} records a config that does not fit: {exc}") from None

    def validate(self) -> None:
        """Checks that need no data; raise UsageError naming the flag."""
        if self.bits < 1:
            raise UsageError(f"the code length must be positive, got {self.bits}")


@dataclass(frozen=True)
class Recipe:
    """A method's training recipe on one dataset (each method's recipe module
    subclasses it and says where each value was published)."""
    epochs: int = option(100, "epochs")
    batch: int = option(256, "batch size (per process under torchrun)")
    lr: float = option(0.01, "learning rate")
    lr_step: int = option(100, "epochs between learning-rate decays (StepLR)")
    lr_gamma: float = option(0.1, "factor of each learning-rate decay")
    momentum: float = option(0.9, "SGD momentum")
    weight_decay: float = option(5e-4, "weight decay")
    eval_every: int = option(0, "evaluate every N epochs and after the last (0: never)")
    monitor: str = "loss"  # what decides the best file: "loss" or "mAP" (at evaluations)

    def evaluation_epochs(self) -> frozenset:
        """0-based epochs after which training evaluates."""
        if not self.eval_every:
            return frozenset()
        return frozenset(e for e in range(self.epochs)
                         if (e + 1) % self.eval_every == 0 or e + 1 == self.epochs)

    def patience(self) -> Optional[int]:
        """Stop after this many epochs without a lower loss (None: never)."""
        return None

    def describe(self) -> str:
        return (f"SGD (momentum {self.momentum}, weight decay {self.weight_decay}), "
                f"lr x{self.lr_gamma} every {self.lr_step} epochs")


@dataclass
class Encoded:
    """What a method's encoding gives for one split: ``values`` [n, ...] (codes
    or features, on the encoding device) and ``labels`` ([n] ids or [n, C])."""
    values: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.values.shape[0])


@dataclass
class Recognised:
    """A checkpoint file recognised as a method's: the config it was trained
    with (as far as the file tells) and the data facts it records."""
    config: dict
    facts: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)  # the data it was trained on, where recorded


@dataclass(frozen=True)
class EvalContext:
    """How an evaluation runs."""
    device: torch.device
    metrics: MetricOptions = MetricOptions()
    batch: int = 256
    workers: Optional[int] = None
    progress: bool = True
    dtype: Optional[torch.dtype] = None  # autocast dtype (--amp)


def class_ids(labels) -> torch.Tensor:
    """Integer ids [n] from a batch of labels [n] or [n, 1] (the DDH loader's
    shape).  A label matrix [n, C] is an error, never silently flattened."""
    labels = torch.as_tensor(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise ValueError(f"expected one class id per item, got labels of shape "
                         f"{tuple(labels.shape)}")
    return labels.long()


def label_targets(labels) -> torch.Tensor:
    """Class ids [n] (see ``class_ids``), or a label matrix [n, C] kept as it
    is: multi-label data, whose relevance is sharing a label.  Training on
    such rows is for methods with ``multi_label`` (pipeline.train refuses
    the others in one line); evaluation ranks any method's codes on them."""
    labels = torch.as_tensor(labels)
    if labels.ndim == 2 and labels.shape[1] > 1:
        return labels
    return class_ids(labels)


def sign_codes(outputs: torch.Tensor) -> torch.Tensor:
    """+1 where the output is > 0, else -1 (int8): the binarisation of every
    Hamming method here (``torch.sign`` would give 0 for an exact 0)."""
    return torch.where(outputs > 0, 1, -1).to(torch.int8)


def merged(official: Mapping, *ours: Mapping) -> dict:
    """The published entries first, and never replaced by ours."""
    out = dict(official)
    for extra in ours:
        out.update({k: v for k, v in extra.items() if k not in out})
    return out


class Method(nn.Module):
    """Base class of the methods; subclasses fill in the abstract parts."""

    #: registry name (set by ``@register_method``)
    name: ClassVar[str] = ""
    #: one line for listings
    summary: ClassVar[str] = ""
    Config: ClassVar[type] = MethodConfig
    Recipe: ClassVar[type] = Recipe
    #: the kind of dataset it reads (``data.dataset_names(kind)``)
    data_kind: ClassVar[str] = "faces"
    #: the transform preset of image files (data/transforms.py)
    preset: ClassVar[str] = "dcdh"
    #: extra classes its published files need under weights_only loading
    checkpoint_allow: ClassVar[tuple] = ()
    #: the extension of its checkpoint files
    suffix: ClassVar[str] = ".tar"
    #: trains on label vectors [n, C] (multi-label data); else one class id per item
    multi_label: ClassVar[bool] = False

    def __init__(self, config: MethodConfig, facts: DataFacts):
        super().__init__()
        self.config, self.facts = config, facts

    # -- construction ---------------------------------------------------------------
    @classmethod
    def default_values(cls, dataset: str, facts: Optional[DataFacts], given: Mapping) -> dict:
        """Defaults that depend on the dataset or the given values (e.g. the
        architecture for an image size); ``facts`` is None before the data is read."""
        return {}

    @classmethod
    def config_flags(cls, config: Mapping, bits_flag: str = "--len") -> str:
        """The flags that select a model of ``config`` (for messages)."""
        return f"{bits_flag} {config.get('bits')}"

    @classmethod
    def check_given(cls, given: Mapping) -> None:
        """Checks of the given values that need no data (before any is read)."""

    @classmethod
    def make_config(cls, dataset: str, facts: Optional[DataFacts], given: Mapping):
        """The config of a run: the given values over the method's defaults."""
        given = {k: v for k, v in given.items() if v is not None}
        config = cls.Config(**{**cls.default_values(dataset, facts, given), **given})
        config.validate()
        return config

    @classmethod
    def recipe_for(cls, dataset: str, facts: Optional[DataFacts], config) -> Recipe:
        """The published recipe of ``dataset`` (methods/recipes/)."""
        return cls.Recipe()

    @classmethod
    def make_recipe(cls, dataset: str, facts: Optional[DataFacts], config,
                    overrides: Mapping) -> Recipe:
        """The recipe with what the user set (``--epochs``, ``--bs``, ``--lr``, ...)."""
        return cls.with_overrides(cls.recipe_for(dataset, facts, config), overrides)

    @classmethod
    def with_overrides(cls, recipe: Recipe, overrides: Mapping) -> Recipe:
        given = {k: v for k, v in overrides.items() if v is not None}
        names = {f.name for f in dataclasses.fields(recipe)}
        unknown = sorted(set(given) - names)
        if unknown:
            raise UsageError(f"{cls.name} has no recipe setting {', '.join(unknown)}")
        return dataclasses.replace(recipe, **given)

    @classmethod
    def members(cls, given: Mapping, dataset: str, data_options: Mapping) -> list:
        """The models one training call trains, as given configs (DCHN: one per view)."""
        return [dict(given)]

    @classmethod
    def data_options(cls, dataset: str, config, options: Mapping) -> dict:
        """The reader options this method's run needs (DCHN: its view)."""
        return dict(options)

    @classmethod
    def default_img_size(cls, dataset: str) -> Optional[int]:
        """The image side this method reads ``dataset`` at, where not the dataset's own."""
        return None

    # -- files ------------------------------------------------------------------
    @classmethod
    def default_save(cls, given: Mapping, dataset: str) -> str:
        return f"{cls.name}_{dataset}_{cls.given_value(given, 'bits')}bits{cls.suffix}"

    @classmethod
    def given_value(cls, given: Mapping, name: str):
        if given.get(name) is not None:
            return given[name]
        return next(f.default for f in dataclasses.fields(cls.Config) if f.name == name)

    @classmethod
    def run_files(cls, given: Mapping, dataset: str, names: RunNames,
                  overrides: Mapping = {}) -> RunFiles:
        """Names of the files a run writes (known before any data is read):
        ``--checkpoint-dir/--save``, its ``_last`` resume file beside it, and
        the published log name ``log/<len>bits_<dataset>_<MMDDHHMM>.txt``."""
        best = Path(names.checkpoint_dir) / (names.save or cls.default_save(given, dataset))
        return RunFiles(last=last_path_for(best), best=best,
                        log=log_path(names.log_dir, cls.given_value(given, "bits"), dataset))

    def official_state(self, progress=None) -> dict:
        """The model entries of the published checkpoint layout."""
        raise NotImplementedError

    def load_official_state(self, checkpoint, path="checkpoint", heads: bool = True) -> None:
        """Load what ``official_state`` writes (or the published files), or
        raise CheckpointError saying in one line why the file does not fit.
        ``heads`` False: only what evaluation needs (as the published
        evaluations load)."""
        raise NotImplementedError

    def resume_state(self) -> dict:
        """Entries besides the official ones that a continuation needs."""
        return {}

    def load_resume_state(self, checkpoint: Mapping) -> None:
        pass

    def best_file(self, progress, ours: Mapping) -> object:
        """What the best and snapshot files hold: the published layout, plus our
        keys where it has room for them."""
        return merged(self.official_state(progress), self.resume_state(), ours)

    def resume_file(self, progress, ours: Mapping) -> dict:
        """What the resume file holds (a dict with ``train_state``)."""
        return merged(self.official_state(progress), self.resume_state(), ours)

    def load_file(self, checkpoint, path="checkpoint", heads: bool = True) -> None:
        """Load any file ``best_file`` or ``resume_file`` wrote (or a published one)."""
        self.load_official_state(checkpoint, path, heads)
        if heads and isinstance(checkpoint, Mapping) and all(k in checkpoint
                                                              for k in self.resume_state()):
            self.load_resume_state(checkpoint)

    @classmethod
    def recognise(cls, checkpoint, path: Path) -> Optional[Recognised]:
        """The config a loaded file was written with, if it is this method's
        (published layout or ours), else None."""
        return None

    # -- training ---------------------------------------------------------------
    @property
    def network(self) -> nn.Module:
        """The network that encodes inputs (compiled / converted by ``prepare``):
        every method keeps it as ``self.net``."""
        return self.net

    def unpack(self, batch, device):
        """(inputs, targets) of a loader batch, on ``device``."""
        images, labels = batch
        return (images.to(device, non_blocking=True),
                label_targets(labels).to(device, non_blocking=True))

    def forward(self, inputs, targets) -> torch.Tensor:
        raise NotImplementedError

    #: training batches carry the items' indices (methods with per-item state)
    indexed: ClassVar[bool] = False
    #: image files: the random crop and flip drawn once per training batch
    #: (OPQN's published training), not per image
    batch_augment: ClassVar[bool] = False

    def backward(self, loss, scaler=None) -> None:
        """The backward pass of one step's loss (``scaler``: fp16's grad
        scaler).  A method whose published step is not one backward of one
        loss (DDAH's two optimizers) overrides it."""
        (scaler.scale(loss) if scaler is not None else loss).backward()

    def configure_optimizers(self, recipe):
        """(optimizer, lr scheduler): by default the recipe's SGD and StepLR."""
        optimizer = torch.optim.SGD(self.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                    weight_decay=recipe.weight_decay)
        return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, recipe.lr_step,
                                                          recipe.lr_gamma)

    def train_sampler(self, dataset, recipe, seed: int, rank: int, world_size: int):
        """A batch sampler for the training split (None: shuffled batches)."""
        return None

    def prepare(self, splits, files: RunFiles, seed: int) -> None:
        """Called once before training, with the data (DCHN reads its SHAM matrix)."""

    # -- evaluation -------------------------------------------------------------
    def embed(self, inputs) -> torch.Tensor:
        """The evaluation output of one batch (the network in eval mode)."""
        return self.network(inputs)

    def codes(self, outputs: torch.Tensor) -> torch.Tensor:
        """What is stored and ranked, from the concatenated outputs."""
        return sign_codes(outputs)

    @torch.inference_mode()
    def encode(self, loader, device, progress: bool = True, desc: str = "encoding",
               dtype: Optional[torch.dtype] = None) -> Encoded:
        """Encode every item of ``loader`` (in its order), kept on ``device``.

        Data in memory (``TensorBatches``) is encoded in the largest chunks
        that fit on a GPU; other loaders in their own batches."""
        was_training = self.training
        self.eval()
        try:
            if hasattr(loader, "images"):
                outputs, labels = self._encode_in_chunks(loader, device, dtype)
            else:
                outputs, labels = [], []
                for batch in tqdm(loader, desc=desc, leave=False, disable=not progress,
                                  file=sys.stderr):
                    inputs, targets = self.unpack(batch, device)
                    with autocast(device, dtype):
                        outputs.append(self.embed(inputs).float())
                    labels.append(targets)
        finally:
            self.train(was_training)
        if not outputs:
            raise ValueError("nothing to encode: the split is empty")
        return Encoded(self.codes(torch.cat(outputs)), torch.cat(labels))

    def _encode_in_chunks(self, loader, device, dtype):
        """In-memory data: on a GPU, chunks as large as it takes (from 4096 items,
        halved after an out-of-memory error); on the CPU the loader's batch
        (host memory is not reclaimed from an out-of-memory kill)."""
        size = 4096 if torch.device(device).type == "cuda" else loader.batch_size
        outputs, labels, start, n = [], [], 0, loader.images.shape[0]
        while start < n:
            chunk = (loader.images[start:start + size], loader.labels[start:start + size])
            try:
                inputs, targets = self.unpack(chunk, device)
                with autocast(device, dtype):
                    outputs.append(self.embed(inputs).float())
            except torch.cuda.OutOfMemoryError:
                if size == 1:
                    raise
                size //= 2
                torch.cuda.empty_cache()
                continue
            labels.append(targets)
            start += size
        return outputs, labels

    def rank(self, queries: Encoded, database: Encoded, options: MetricOptions, device) -> dict:
        """Hamming ranking by default (ties by database index)."""
        return evaluate_codes(queries.values, database.values, queries.labels, database.labels,
                              radius=options.radius, device=device, backend=options.backend,
                              **options.ranking_kwargs())

    def top_k(self, queries: Encoded, database: Encoded, k: int, rows):
        """(indices [n, k], Hamming distances [n, k]) of the first k database
        items of the queries ``rows``, in ranking order (ties by index)."""
        from utils.retrieval.metrics import hamming_distance

        dist = hamming_distance(queries.values[rows].cpu(), database.values.cpu()).long()
        order = torch.sort(dist, dim=1, stable=True).indices[:, :k]
        return order.numpy(), dist.gather(1, order).numpy()

    def evaluate(self, database_loader, query_loader, device, options: MetricOptions,
                 progress: bool = True, dtype: Optional[torch.dtype] = None):
        """(metrics, queries, database): the test split ranked against the database."""
        database = self.encode(database_loader, device, progress, "encoding database", dtype)
        queries = self.encode(query_loader, device, progress, "encoding queries", dtype)
        return self.rank(queries, database, options, device), queries, database

    def save_encoded(self, path, queries: Encoded, database: Encoded) -> None:
        """--save-codes: the stored-codes format (utils/retrieval/codes_io.py)."""
        from utils.retrieval.codes_io import save_codes

        save_codes(path, database.values.cpu(), queries.values.cpu(), database.labels.cpu(),
                   queries.labels.cpu())

    @classmethod
    def evaluate_group(cls, loaded: Sequence, build, ctx: EvalContext) -> list:
        """Evaluations of checkpoint files (``pipeline.evaluate``): each model's
        database and queries ranked.  ``loaded`` are recognised files
        (``methods.registry.LoadedCheckpoint``), ``build(item)`` gives
        (method with its weights, its data's splits).  DCHN overrides this
        with its cross-view evaluation."""
        from data import make_loaders
        from utils.report.outputs import GridInputs

        results = []
        for item in loaded:
            method, splits = build(item)
            loaders = make_loaders(splits, ctx.batch, ctx.device, workers=ctx.workers, train=False)
            metrics, queries, database = method.evaluate(loaders.database, loaders.queries,
                                                         ctx.device, ctx.metrics, ctx.progress,
                                                         ctx.dtype)
            metrics["checkpoint"] = str(item.path)
            results.append(Evaluation(
                title=str(item.path), metrics=metrics, rows=[(None, metrics)], queries=queries,
                database=database, label=f"{cls.name} {method.config.bits} bits",
                grid=GridInputs(method, queries, database, splits.queries, splits.database),
                save=lambda out, m=method, q=queries, d=database: m.save_encoded(out, q, d)))
        return results

    # -- description ---------------------------------------------------------------
    @classmethod
    def speed_settings(cls) -> list:
        """Typical shapes for ``bench/train_speed.py``: (label, config values,
        DataFacts, batch) tuples."""
        return []

    def notes(self) -> list:
        """Lines the training log adds after the configuration."""
        return []

    def our_keys(self) -> dict:
        """What every file we write records about the model."""
        return {"method": self.name, "config": self.config.as_dict(),
                "facts": self.facts.as_dict()}

    def describe(self) -> str:
        return f"{self.name}, {self.config.bits} bits"
