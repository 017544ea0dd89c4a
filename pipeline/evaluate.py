"""Evaluation: checkpoint files of any registered method (recognised from the
files, published ones included) on a dataset, and stored codes / features.

``evaluate(EvalOptions)`` is what ``evaluation.py --load``, ``opqn_main.py
-e``, ``triplet_main.py -e``, ``main_DCHN.py --mode eval``, ``reproduce.py``
and training's final evaluation call; stored codes and features are
``pipeline/stored.py``."""

from __future__ import annotations

from itertools import groupby
from pathlib import Path
from typing import Mapping, Optional, Sequence

from pipeline.options import DataOptions, EvalOptions, data_protocol, metric_options
from pipeline.outputs import claim_call_outputs, write_results
from utils.engine.provenance import of_checkpoint


def resolve_device(name: str):
    from utils.cli.device import resolve_device as resolve

    return resolve(name)


def _data_for(item, data: DataOptions) -> DataOptions:
    """The data a checkpoint is evaluated on: the call's, with the reader
    options the file records (the built-in data's size) where the call sets none."""
    recorded = item.data if item.data.get("dataset") == data.dataset else {}
    options = {**(recorded.get("options") or {}), **data.options}
    img_size = data.img_size or recorded.get("img_size")
    return DataOptions(data.dataset, data.root, img_size, data.workers, data.skip_bad_images,
                       data.cross_dataset, options)


def splits_for(cls, config: Mapping, data: DataOptions, cache: dict):
    """The evaluation splits of a model of ``cls`` (built once per request)."""
    from data import build_splits

    request = data.request(cls, config, train=False)
    key = (cls.data_kind, data.dataset, repr(request))
    if key not in cache:
        cache[key] = build_splits(data.dataset, request, kinds=cls.data_kind)
    return cache[key]


def evaluate_loaded(loaded: Sequence, data: DataOptions, ctx, expects: Sequence[Mapping] = (),
                    known: Optional[Mapping] = None, cache: Optional[dict] = None) -> list:
    """Evaluations of recognised checkpoint files (``methods.registry.LoadedCheckpoint``),
    grouped by method; ``known`` maps a path to an already built (method,
    splits) pair (training's final evaluation reuses its data); ``cache``
    holds splits already built."""
    expect_of = {str(item.path): (expects[i] if i < len(expects) else {})
                 for i, item in enumerate(loaded)}
    cache = {} if cache is None else cache

    built_splits = {}

    def build(item):
        if known and str(item.path) in known:
            built = known[str(item.path)]
        else:
            splits = splits_for(item.cls, item.config, _data_for(item, data), cache)
            method = item.build(splits.facts(), expect_of.get(str(item.path)) or {})
            built = method.to(ctx.device), splits
        built_splits[str(item.path)] = built[1]
        return built

    results = []
    for cls, group in groupby(loaded, key=lambda item: item.cls):
        group = list(group)
        evaluations = cls.evaluate_group(group, build, ctx)
        records = [{"file": str(item.path), **of_checkpoint(item.obj)} for item in group]
        for evaluation in evaluations:  # one per file, or one for a group (DCHN's views)
            mine = [r for r in records if r["file"] == evaluation.metrics.get("checkpoint")]
            record = mine[0] if mine else (records[0] if len(records) == 1 else records)
            evaluation.metrics["provenance"] = record
            first = record if isinstance(record, dict) else record[0]
            splits = built_splits.get(first["file"])
            if splits is not None:
                evaluation.metrics["protocol"] = protocol_statement(cls, data, splits, ctx)
        results += evaluations
    return results


def protocol_statement(cls, data: DataOptions, splits, ctx) -> dict:
    """How the numbers were measured: the protocol, the split sizes found, the
    files read (sha256), relevance, ties and the policy for queries without a
    relevant item."""
    from data.protocols import protocol_of, statement

    return statement(protocol_of(data.dataset, splits, cls.data_kind, data.cross_dataset), splits,
                     skip_no_relevant=ctx.metrics.skip_no_relevant)


def evaluate(options: EvalOptions) -> list:
    """Evaluate checkpoint files; writes --json, --save-codes and the report
    options; returns the evaluations."""
    from utils.engine.checkpoint import resolve_checkpoint
    from utils.engine.logs import logging_to

    data_protocol(options.data)  # --protocol fits --dataset: before any file is read
    paths = [resolve_checkpoint(name, options.checkpoint_dir) for name in options.checkpoints]
    claim = claim_call_outputs(options.json, options.save_codes, options.report,
                               inputs=[(p, "--load") for p in paths])
    try:
        with logging_to(None):  # the readers' notes (e.g. a layout fallback) go to stdout
            evaluations = _evaluate_files(options, paths)
        where = f"{options.data.dataset}{' (cross-dataset)' if options.data.cross_dataset else ''}"
        for e in evaluations:
            if not e.text:
                e.title = f"{e.title} on {where}"
        write_results(evaluations, options.json, options.save_codes, options.report,
                      f"evaluation on {where}", {"checkpoints": " ".join(map(str, paths)),
                                                 "dataset": where})
        return evaluations
    finally:
        claim.release()


def _evaluate_files(options: EvalOptions, paths) -> list:
    from methods import from_checkpoint, method_class
    from methods.base import EvalContext

    cache = {}
    if options.method:  # the data is checked before any (large) checkpoint is read
        splits_for(method_class(options.method), {}, options.data, cache)
    loaded = [from_checkpoint(p, options.method) for p in paths]
    ctx = EvalContext(resolve_device(options.engine.device),
                      metric_options(loaded[0].cls, options.metrics, options.data),
                      options.batch, options.data.workers, options.engine.progress)
    return evaluate_loaded(loaded, options.data, ctx, options.expect, cache=cache)


def _image(path):
    from PIL import Image

    from utils.errors import UsageError

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except Exception as exc:  # noqa: BLE001 - PIL reports bad data with many exception types
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UsageError(f"--images: cannot read {path} as an image ({reason})") from None


def encode_queries(path, data: DataOptions, images=None, method: Optional[str] = None,
                   device: str = "auto", bits: Optional[int] = None):
    """(method, query values on the CPU, what they are) of a checkpoint of any
    method: the test split of ``data``, or the image files of the folder
    ``images`` through the method's test transform.  Values are sign codes
    (int8) for Hamming methods, features for PQ ones."""
    import torch

    from data import DataFacts, make_loaders
    from data.transforms import default_size, folder_transform
    from methods import from_checkpoint
    from utils.errors import UsageError

    loaded = from_checkpoint(path, method)
    device = resolve_device(device)
    expect = {"bits": (bits, "--bits")}
    if images is None:
        from data import build_splits

        options = _data_for(loaded, data)
        splits = build_splits(options.dataset, options.request(loaded.cls, loaded.config,
                                                               train=False),
                              kinds=loaded.cls.data_kind)
        model = loaded.build(splits.facts(), expect).to(device)
        loaders = make_loaders(splits, 256, device, workers=data.workers, train=False)
        values = model.encode(loaders.queries, device, progress=False).values
        return model, values.cpu(), f"the {data.dataset} test split through {path}"
    folder = Path(images)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in
                   (".png", ".jpg", ".jpeg", ".bmp", ".webp")) if folder.is_dir() else []
    if not files:
        raise UsageError(f"--images {images}: no image files (.png, .jpg, .jpeg, .bmp, .webp)")
    size = data.img_size or loaded.facts.get("img_size") or default_size(loaded.cls.preset)
    try:
        transform = folder_transform(loaded.cls.preset, size, train=False)
    except ValueError:
        raise UsageError(f"--images: {loaded.cls.name} does not read image files") from None
    model = loaded.build(DataFacts(loaded.facts.get("num_classes", 1), size), expect)
    model = model.to(device).eval()
    batch = torch.stack([transform(_image(f)) for f in files])
    with torch.inference_mode():
        values = model.codes(model.embed(batch.to(device)).float())
    return model, values.cpu(), f"{len(files)} images of {images} through {path}"
