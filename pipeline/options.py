"""What a user asks of the pipeline, as typed options (the scripts build them
from their flags; nothing below reads an argparse namespace)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Tuple

from data import DataRequest
from utils.engine.files import RunNames
from utils.report.outputs import ReportOptions
from utils.engine.precision import Speed
from utils.retrieval.options import MetricOptions


@dataclass(frozen=True)
class DataOptions:
    """Which data, where, and how it is read."""
    dataset: str
    root: Optional[str] = None  # --data-root (None: the dataset's default location)
    img_size: Optional[int] = None
    workers: Optional[int] = None  # loader processes (None: from the CPU count)
    skip_bad_images: bool = False
    cross_dataset: bool = False  # OPQN -c evaluation: cross_train/ and cross_test/
    options: Mapping[str, Any] = field(default_factory=dict)  # reader options (synthetic sizes, ...)
    cache: str = "auto"  # --cache: image files decoded once per run (data/cache.py)
    cache_dir: Optional[str] = None  # --cache-dir: where --cache disk keeps them

    def request(self, cls, given: Mapping, train: bool) -> DataRequest:
        """The dataset builder's request for method class ``cls``."""
        return DataRequest(root=self.root, img_size=self.img_size or cls.default_img_size(
            self.dataset), preset=cls.preset, augment=train, skip_bad_images=self.skip_bad_images,
            cross_dataset=self.cross_dataset and not train,
            options=cls.data_options(self.dataset, given, dict(self.options)))

    def record(self) -> dict:
        """What a checkpoint records of its data (evaluation reads the built-in
        data's size back from it)."""
        return {"dataset": self.dataset, "root": self.root, "img_size": self.img_size,
                "options": dict(self.options)}


@dataclass(frozen=True)
class EngineOptions:
    device: str = "auto"
    seed: int = 0
    deterministic: bool = False
    speed: Speed = Speed()
    progress: bool = True
    devices: Tuple[str, ...] = ()  # per model of a call, cycled (DCHN --gpu_id -1); else device


@dataclass(frozen=True)
class OutputOptions:
    checkpoint_dir: str = "checkpoint"
    log_dir: str = "log"
    tag: str = ""  # triplet --log_postfix
    json: Optional[str] = None
    save_codes: Tuple[str, ...] = ()  # one file per model
    resume: Optional[str] = None  # None, "auto" or a checkpoint path
    overwrite: bool = False
    report: ReportOptions = ReportOptions()

    def names(self, save: Optional[str]) -> RunNames:
        return RunNames(save, self.checkpoint_dir, self.log_dir, self.tag)


@dataclass(frozen=True)
class TrainOptions:
    """One training call: one or several models of one method on one dataset."""
    method: str
    data: DataOptions
    configs: Tuple[Mapping, ...] = ({},)  # the given config values of each model
    saves: Tuple[Optional[str], ...] = (None,)  # each model's --save name
    overrides: Mapping[str, Any] = field(default_factory=dict)  # recipe values set by flags
    engine: EngineOptions = EngineOptions()
    output: OutputOptions = OutputOptions()
    metrics: Mapping[str, Any] = field(default_factory=dict)  # metric flags a user set
    init_from: Optional[str] = None  # start from this snapshot's weights (triplet --load_model)
    evaluate_after: bool = True  # evaluate the file a user will evaluate, at the end
    parallel: bool = False  # train a call's models in parallel processes (DCHN's views)


@dataclass(frozen=True)
class EvalOptions:
    """Evaluating checkpoint files (any registered method, recognised from the files)."""
    checkpoints: Tuple[str, ...]
    data: DataOptions
    checkpoint_dir: Optional[str] = "checkpoint"  # bare names are looked up here first
    method: Optional[str] = None  # only files of this method
    expect: Tuple[Mapping, ...] = ()  # per file: {field: (value, flag)} the user asked for
    engine: EngineOptions = EngineOptions()
    metrics: Mapping[str, Any] = field(default_factory=dict)
    batch: int = 256
    json: Optional[str] = None
    save_codes: Tuple[str, ...] = ()
    report: ReportOptions = ReportOptions()


def data_protocol(data: DataOptions, kind: Optional[str] = None):
    """The named protocol a run's data follows (``--protocol``, checked against
    the dataset, else the dataset's own), or None; one line when they do not fit."""
    from data.protocols import resolve_protocol

    return resolve_protocol(data.dataset, data.options.get("protocol"), kind, data.cross_dataset)


def metric_options(cls, given: Mapping, data: Optional[DataOptions] = None) -> MetricOptions:
    """The metric options of a method: its defaults, the R of the data's
    protocol (mAP@R reported beside the mAP over the whole ranking), then what
    the user set."""
    layers = [getattr(cls, "metric_defaults", {})]
    found = data_protocol(data, cls.data_kind) if data is not None else None
    if found is not None and found.map_at:
        layers.append({"map_at": (found.map_at,)})
    return MetricOptions.of(*layers, given)


def settings(options) -> dict:
    """The settings a report shows: every option that differs from its default."""
    out = {}
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        if dataclasses.is_dataclass(value):
            out.update({f"{f.name}.{k}": v for k, v in settings(value).items()})
        elif value not in (None, False, (), [], {}, "") and value != f.default:
            out[f.name] = value if not isinstance(value, Mapping) else dict(value)
    return out
