"""DCHN as a method: one view's network (``Dense_Net`` on features, or
``ImgNet`` on raw images) trained to produce the SHAM target codes
sgn(y W) of its items' labels (models/sham.py, models/losses/dchn.py).
Views are independent models: a training call trains each view of the
dataset (``config.view`` -1) or one; evaluation ranks one view's queries
against another view's retrieval set by Hamming distance with multi-label
relevance (``evaluate_group``, the published cross-view table).

Checkpoint (the published layout, per view):
``<prefix>/<datasets>_last_checkpoint_V<view>_O<bits>_A<available>.pth.tar``
= ``{'epoch': last finished epoch (0-based), 'model': state_dict, 'opt':
argparse.Namespace, 'loss': numpy array of the per-epoch losses}``.  Reading
it with ``weights_only=True`` needs the classes of ``CHECKPOINT_ALLOW``.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from methods.base import DataFacts, Evaluation, Method, MethodConfig, Recognised, option
from methods.recipes.dchn import (ALPHA, AVAILABLE_NUM, GAMA, OUTPUT_SHAPE, DCHNRecipe,
                                  recipe_for)
from methods.registry import register_method
from models import create_network
from models.losses.dchn import codes_of, dchn_loss
from models.pretrained import PretrainedError
from models.sham import load_sham, save_sham, sham_file_name, train_sham
from utils.cli.parser import (code_length, fraction, int_at_least, non_negative_float,
                              non_negative_int)
from utils.engine.checkpoint import CheckpointError, state_dict_mismatch
from utils.engine.files import RunFiles, RunNames
from utils.engine.logs import log
from utils.errors import UsageError
from utils.retrieval.metrics import evaluate_codes

# The smallest allow-list the published files need with weights_only=True
# (tests/fixtures/dchn/README.md): the Namespace of the options and the NumPy
# loss array (float32, or float64 when the labels were float64; files written
# under NumPy 1.x name numpy.core.multiarray; an empty array pickles its
# buffer as bytes()).
_RECONSTRUCT = np.array(0).__reduce__()[0]  # numpy's array unpickler, 1.x and 2.x alike
CHECKPOINT_ALLOW = [argparse.Namespace, _RECONSTRUCT, np.ndarray, np.dtype,
                    type(np.dtype(np.float32)), type(np.dtype(np.float64)), bytes,
                    (_RECONSTRUCT, "numpy.core.multiarray._reconstruct")]
FILE_NAME = re.compile(r"^(?P<datasets>.+)_last_checkpoint_V(?P<view>\d+)_O(?P<bits>\d+)"
                       r"_A(?P<available>\d+)\.pth\.tar$")


def checkpoint_name(datasets: str, view: int, bits: int, available: int) -> str:
    return f"{datasets}_last_checkpoint_V{view}_O{bits}_A{available}.pth.tar"


@dataclass(frozen=True)
class DCHNConfig(MethodConfig):
    bits: int = option(OUTPUT_SHAPE, "code length", type=code_length, flag="--output_shape")
    view: int = option(-1, "the view to train (-1: every view of the dataset)",
                       type=int_at_least(-1))
    alpha: float = option(ALPHA, "weight of the pairwise term (1 - alpha: the label regression)",
                          type=fraction)
    gama: float = option(GAMA, "SHAM's balance of its two terms", type=non_negative_float)
    available_num: int = option(AVAILABLE_NUM, "labelled rows SHAM uses (the SHAM file is "
                                               "named by this count)", type=non_negative_int,
                                flag="--available_num")
    sham_dir: str = option("SHAM", "folder of the SHAM files (computed there when missing)")
    pretrained: Optional[str] = option("imagenet", "mirflickr25k_raw: the VGG-19-BN's start, "
                                                   "as published: imagenet (torchvision's "
                                                   "weights, from the torch hub cache), a local "
                                                   "torchvision vgg19_bn state_dict, or none")


def sham_path(config: DCHNConfig, num_classes: int) -> Path:
    return Path(config.sham_dir) / sham_file_name(num_classes, config.bits, config.gama,
                                                  config.available_num)


def draw_available(labels: np.ndarray, count: int, seed: int) -> Optional[np.ndarray]:
    """The --available_num labelled rows SHAM uses, drawn with ``seed`` (the
    published script draws them unseeded)."""
    if count > labels.shape[0]:
        raise UsageError(f"--available_num {count} exceeds the {labels.shape[0]} training rows")
    order = np.random.RandomState(seed).permutation(labels.shape[0])
    return labels[order[:count]] if count > 0 else None


def read_sham(path: Path, shape) -> np.ndarray:
    try:
        W = load_sham(path)
    except Exception as exc:  # noqa: BLE001 - scipy raises many types on a bad file
        raise UsageError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
    if W.shape != tuple(shape):
        raise UsageError(f"{path} holds W of shape {W.shape}, expected {tuple(shape)}; "
                         f"recompute it with trainSHAM.py --overwrite")
    if not np.isfinite(W).all():
        raise UsageError(f"{path} holds a W with NaN or inf; recompute it with trainSHAM.py "
                         f"--overwrite")
    return W


@register_method("dchn")
class DCHNView(Method):
    """``forward(x, labels)`` is the DCHN loss of the batch (float32)."""

    summary = "decoupled cross-view hashing: SHAM + one network per view"
    Config = DCHNConfig
    Recipe = DCHNRecipe
    data_kind = "multiview"
    multi_label = True  # label matrices [n, C]
    preset = "dchn"
    suffix = ".pth.tar"
    checkpoint_allow = tuple(CHECKPOINT_ALLOW)
    metric_defaults = {"skip_no_relevant": True}  # the published table leaves such queries out

    def __init__(self, config: DCHNConfig, facts: DataFacts):
        super().__init__(config, facts)
        self.images = facts.input_dim is None
        if self.images:
            try:
                self.net = create_network("imgnet_vgg19_bn", config.bits,
                                          pretrained=config.pretrained)
            except PretrainedError as exc:
                raise UsageError(f"--pretrained: {exc}") from None
        else:
            self.net = create_network("dense_net", facts.input_dim, config.bits)
        # the SHAM matrix: set by prepare() from the SHAM file; without it (a
        # benchmark, a test) the class-count-only SHAM. float32, as published;
        # not a parameter, not saved
        self.register_buffer("W", None, persistent=False)

    @property
    def view(self) -> int:
        return self.config.view

    # -- a run: its views, its files, its data ------------------------------------------
    @classmethod
    def members(cls, given, dataset, request) -> list:
        view = cls.given_value(given, "view")
        if view >= 0:
            return [dict(given)]
        from data.multiview import view_count

        return [dict(given, view=v) for v in range(view_count(dataset, request.root,
                                                              request.options))]

    @classmethod
    def data_options(cls, dataset, given, options) -> dict:
        return {**options, "view": max(0, cls.given_value(given, "view"))}

    @classmethod
    def run_files(cls, given, dataset, names: RunNames, overrides={}) -> RunFiles:
        if names.save:
            raise UsageError("dchn names its view checkpoints by the published rule under "
                             "--prefix / --checkpoint-dir; drop --save")
        view, bits = cls.given_value(given, "view"), cls.given_value(given, "bits")
        available = cls.given_value(given, "available_num")
        name = checkpoint_name(dataset, view, bits, available)
        return RunFiles(last=Path(names.checkpoint_dir) / name, flag="--prefix", dir_flag="--prefix",
                        log=Path(names.log_dir) / f"DCHN_{dataset}_V{view}_O{bits}_A{available}.txt")

    @classmethod
    def make_recipe(cls, dataset, facts, config, overrides) -> DCHNRecipe:
        """The per-view lists (--batch_sizes, --lr) are set before the view's
        entries are taken; single values (--bs, --lr of train.py) after."""
        lists = {k: tuple(overrides[k]) for k in ("batch_sizes", "lrs")
                 if overrides.get(k) is not None}
        base = replace(recipe_for(dataset), **lists).for_view(config.view)
        return cls.with_overrides(base, {k: v for k, v in overrides.items() if k not in lists})

    @classmethod
    def recipe_for(cls, dataset, facts, config) -> DCHNRecipe:
        return recipe_for(dataset).for_view(config.view)

    def prepare(self, splits, files, seed: int) -> None:
        """The SHAM matrix of this run: read from its file (as published), or
        computed from the training labels and written there (trainSHAM.py's
        computation, with --seed)."""
        sham = sham_file(self.config, np.asarray(splits.train.labels), seed)
        if not sham.reused:
            r = sham.result
            log.info(f"SHAM W (step {r.best_iter}, loss {r.losses[r.best_iter]:.5f}) computed "
                     f"and written to {sham.path} (as trainSHAM.py would)")
        self.set_targets(sham.W)

    def set_targets(self, W: np.ndarray) -> None:
        if W.shape[1] != self.config.bits:
            raise UsageError(f"the SHAM matrix has {W.shape[1]} bits, not --output_shape "
                             f"{self.config.bits}")
        self.W = torch.tensor(W, dtype=torch.float32, device=next(self.parameters()).device)

    # -- training ---------------------------------------------------------------------
    def unpack(self, batch, device):
        x, labels = batch
        labels = torch.as_tensor(labels)
        if labels.ndim != 2:
            raise ValueError(f"DCHN needs a label matrix per batch [b, classes], got shape "
                             f"{tuple(labels.shape)}")
        return x.to(device, non_blocking=True).float(), labels.to(device, non_blocking=True)

    def forward(self, x, labels):
        if self.W is None:
            self.set_targets(train_sham(self.facts.num_classes, self.config.bits,
                                        self.config.gama).W)
        out = self.net(x)[-1]
        with torch.autocast(out.device.type, enabled=False):
            return dchn_loss(out.float(), codes_of(labels, self.W), labels, self.W,
                             self.config.alpha)

    def embed(self, x):
        return self.net(x)[-1]

    def configure_optimizers(self, recipe: DCHNRecipe):
        """Adam, one group per parameter as published (the VGG part of the
        raw-image net at lr x0.1)."""
        groups = [{"params": [p], "lr": recipe.lr * 0.1} if "vgg" in name else {"params": [p]}
                  for name, p in self.net.named_parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(groups, lr=recipe.lr, betas=(recipe.beta1, recipe.beta2))
        return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, recipe.lr_step,
                                                          recipe.lr_gamma)

    # -- checkpoints ----------------------------------------------------------------
    def official_state(self, progress=None) -> dict:
        epochs_done, losses, ours = (progress.epochs_done, progress.losses, progress.our_keys) \
            if progress is not None else (0, (), {})
        return {"epoch": epochs_done - 1, "model": self.net.state_dict(),
                "opt": self.options_namespace(ours),
                "loss": np.array(losses, dtype=np.float32)}

    def options_namespace(self, ours) -> argparse.Namespace:
        """The published 'opt' entry: the config.py options of the run."""
        recipe, data, run = ours.get("recipe", {}), ours.get("data", {}), ours.get("run", {})
        c = self.config
        return argparse.Namespace(
            beta1=recipe.get("beta1", 0.5), beta2=recipe.get("beta2", 0.999),
            seed=run.get("seed", 0), prefix=run.get("checkpoint_dir", "checkpoint"),
            mode="train", multiprocessing=False, view=c.view,
            num_workers=run.get("workers") or 0, lr_update=recipe.get("lr_step", 50),
            batch_sizes=list(recipe.get("batch_sizes", ())), lr=list(recipe.get("lrs", ())),
            output_shape=c.bits, alpha=c.alpha, gama=c.gama, datasets=data.get("dataset", ""),
            epochs=recipe.get("epochs", 100), available_num=c.available_num, gpu_id=0)

    def load_official_state(self, checkpoint, path="checkpoint", heads: bool = True) -> None:
        state = checkpoint.get("model") if isinstance(checkpoint, dict) else None
        if not isinstance(state, dict):
            keys = ", ".join(map(str, list(checkpoint)[:6])) if isinstance(checkpoint, dict) \
                else type(checkpoint).__name__
            raise CheckpointError(f"{path} is not a DCHN checkpoint: no 'model' state_dict "
                                  f"(top-level keys: {keys or 'none'})")
        last = state.get("hash_layer.4.weight")
        if last is not None and last.shape[0] != self.config.bits:
            raise CheckpointError(f"{path} holds {last.shape[0]}-bit codes; pass --output_shape "
                                  f"{last.shape[0]}")
        first = state.get("hash_layer.0.weight")
        if not self.images and first is not None and first.shape[1] != self.facts.input_dim:
            raise CheckpointError(f"{path} takes {first.shape[1]}-d input, view {self.view} has "
                                  f"{self.facts.input_dim}-d features; check --datasets and --view")
        problem = state_dict_mismatch(self.net.state_dict(), state)
        if problem:
            raise CheckpointError(f"{path} does not fit the view-{self.view} network: {problem}")
        self.net.load_state_dict(state)

    @classmethod
    def recognise(cls, checkpoint, path):
        if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
            return None
        state = checkpoint["model"]
        last = state.get("hash_layer.4.weight")
        if not isinstance(last, torch.Tensor) or not ("opt" in checkpoint or "epoch" in checkpoint):
            return None
        config = {"bits": int(last.shape[0])}
        data, opt = {}, checkpoint.get("opt")
        match = FILE_NAME.match(Path(path).name)
        if match:
            config.update(view=int(match["view"]), available_num=int(match["available"]))
            data["dataset"] = match["datasets"]
        elif isinstance(opt, argparse.Namespace):
            for key, field in (("view", "view"), ("available_num", "available_num"),
                               ("alpha", "alpha"), ("gama", "gama")):
                if isinstance(getattr(opt, key, None), (int, float)):
                    config[field] = getattr(opt, key)
            if isinstance(getattr(opt, "datasets", None), str):
                data["dataset"] = opt.datasets
        return Recognised(config, {}, data)

    # -- evaluation: across views ---------------------------------------------------
    @classmethod
    def run_views(cls, path: Path) -> list:
        """The view files of the run ``path`` belongs to, in view order."""
        match = FILE_NAME.match(path.name)
        if not match:
            return [path]
        pattern = checkpoint_name(match["datasets"], 0, int(match["bits"]),
                                  int(match["available"])).replace("_V0_", "_V*_")
        found = [(int(FILE_NAME.match(p.name)["view"]), p) for p in path.parent.glob(pattern)
                 if FILE_NAME.match(p.name)]
        return [p for _, p in sorted(found)]

    @classmethod
    def evaluate_group(cls, loaded: Sequence, build, ctx) -> list:
        """The published cross-view evaluation: each view's queries against
        every other view's retrieval set.  One file given: every view of its run."""
        from data import make_loaders
        from methods.registry import from_checkpoint

        if len(loaded) == 1:
            loaded = [loaded[0] if p == loaded[0].path else from_checkpoint(p, cls.name)
                      for p in cls.run_views(Path(loaded[0].path))]
        if len(loaded) < 2:
            raise UsageError(f"cross-view evaluation needs at least two views; only "
                             f"{loaded[0].path} was found")
        queries, retrievals, names, views = [], [], [], []
        for item in loaded:
            method, splits = build(item)
            loaders = make_loaders(splits, ctx.batch, ctx.device, workers=ctx.workers, train=False)
            encoded = [method.encode(loader, ctx.device, ctx.progress, desc, ctx.dtype)
                       for loader, desc in ((loaders.queries, "encoding queries"),
                                            (loaders.database, "encoding retrieval set"))]
            queries.append((encoded[0].values.cpu(), encoded[0].labels.cpu()))
            retrievals.append((encoded[1].values.cpu(), encoded[1].labels.cpu()))
            names.append(splits.view_names[splits.view])
            views.append(splits.view)
        skip = ctx.metrics.skip_no_relevant
        out = cross_view_map(queries, retrievals, skip_no_relevant=skip)
        results, first = out["results"], loaded[0]
        report = {"mode": "eval", "datasets": first.data.get("dataset", ""),
                  "bits": int(queries[0][0].shape[1]), "views": views, "view_names": names,
                  "results": results.tolist(), "mean": out["mean"],
                  "queries_without_relevant": "left out of the means" if skip else
                  "counted as AP 0",
                  "results_counting_no_relevant": out["results_counting_no_relevant"].tolist(),
                  "pairs": [{"query_view": views[p["query_view"]],
                             "retrieval_view": views[p["retrieval_view"]], **p["metrics"]}
                            for p in out["pairs"]]}
        rows = [(f"{names[p['query_view']]}→{names[p['retrieval_view']]}", p["metrics"])
                for p in out["pairs"]]
        table = [[names[j], *[float(results[j, i]) for i in range(len(names))]]
                 for j in range(len(names))]
        text = published_line(results) + "\n" + format_table(results, names, skip)
        return [Evaluation(
            title=f"{report['datasets']}, {report['bits']} bits, views {views}", metrics=report,
            rows=rows, text=text,
            tables=[("cross-view mAP", ["query view \\ retrieval view", *names], table)],
            save=lambda out_path: save_codes_mat(out_path, queries, retrievals))]

    @classmethod
    def speed_settings(cls) -> list:
        return [("dchn_mlp", {"bits": 64, "view": 0}, DataFacts(24, input_dim=4096,
                                                               multi_label=True), 64)]

    def describe(self) -> str:
        net = "ImgNet (VGG-19-BN)" if self.images else \
            f"Dense_Net({self.facts.input_dim} -> 4096 -> 4096 -> {self.config.bits})"
        return f"DCHN view {self.view}: {net}, alpha {self.config.alpha}"


@dataclass
class ShamFile:
    """The SHAM matrix of a run and where it lives."""
    path: Path
    W: np.ndarray
    reused: bool  # read from an existing file (as published) rather than computed
    result: Optional[object] = None  # models.sham.ShamResult when computed


def sham_file(config: DCHNConfig, train_labels: np.ndarray, seed: int,
              overwrite: bool = False) -> ShamFile:
    """W of the SHAM file this config names: read when it exists (as
    published; ``overwrite``: computed again), else computed from the
    training labels (``--available_num`` rows drawn with ``seed``) and written."""
    num_classes = int(train_labels.shape[1])
    path = sham_path(config, num_classes)
    if path.is_file() and not overwrite:
        return ShamFile(path, read_sham(path, (num_classes, config.bits)), True)
    result = train_sham(num_classes, config.bits, config.gama,
                        draw_available(train_labels, config.available_num, seed))
    if not np.isfinite(result.W).all():
        raise UsageError(f"SHAM's W came out with NaN or inf ({num_classes} labels, "
                         f"{config.bits} bits, --gama {config.gama:g}): the labels may be "
                         f"degenerate; try another --gama or --available_num")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_sham(path, result.W)
    return ShamFile(path, result.W, False, result)


def cross_view_map(queries: Sequence, retrievals: Sequence, skip_no_relevant: bool = True,
                   device=None) -> dict:
    """results[j][i] = mAP of view j's queries against view i's retrieval set
    (i != j; the diagonal 0, as published), plus each pair's full metrics.
    ``queries`` / ``retrievals``: per view, (codes, label matrix)."""
    n = len(queries)
    results = np.zeros((n, n))
    counted = np.zeros((n, n))
    pairs = []
    for j in range(n):
        for i in range(n):
            if i == j:
                continue
            q_codes, q_labels = queries[j]
            r_codes, r_labels = retrievals[i]
            metrics = evaluate_codes(q_codes, r_codes, q_labels, r_labels, device=device,
                                     skip_no_relevant=skip_no_relevant)
            with_all = evaluate_codes(q_codes, r_codes, q_labels, r_labels, device=device,
                                      skip_no_relevant=not skip_no_relevant)
            results[j, i] = metrics["mAP"]
            counted[j, i] = with_all["mAP"] if skip_no_relevant else metrics["mAP"]
            pairs.append({"query_view": j, "retrieval_view": i, "metrics": metrics})
    return {"results": results, "mean": float(results.sum() / (n * (n - 1))),
            "results_counting_no_relevant": counted, "pairs": pairs}


def published_line(results: np.ndarray) -> str:
    """What the published ``Solver.eval`` prints."""
    n = results.shape[0]
    text = "results: " + " - mean: %.3f" % (results.sum() / (n * (n - 1))) + " - detail: "
    for j in range(n):
        for i in range(n):
            if i != j:
                text += "%.3f" % results[j, i] + " , "
    return text


def format_table(results, names, skip) -> str:
    lines = ["cross-view mAP (queries without a relevant item "
             f"{'left out, as published' if skip else 'counted as AP 0'})"]
    width = max(len(f"{a}→{b}") for a in names for b in names)
    for j, a in enumerate(names):
        for i, b in enumerate(names):
            if i != j:
                lines.append(f"  {a + '→' + b:<{width}}  {results[j, i]:.4f}")
    n = len(names)
    lines.append(f"  {'mean':<{width}}  {results.sum() / (n * (n - 1)):.4f}")
    return "\n".join(lines)


def save_codes_mat(path, queries, retrievals) -> None:
    """The published features file: ``savemat`` of one list per key, each a
    view's array (codes as int64 ±1, labels as read), which scipy stores as
    one stacked [views, rows, bits] array when the views' shapes match (the
    paired data sets) and as a 1 x V cell array otherwise (XMedia's views
    have different row counts), as scipy writes the published call's lists."""
    from scipy.io import savemat

    from utils.atomic import atomic_open

    def stacked(items, k, dtype=None):
        arrays = [np.asarray(item[k], dtype=dtype) for item in items]
        if len({a.shape for a in arrays}) == 1:
            return np.stack(arrays)
        cell = np.empty((len(arrays),), dtype=object)
        cell[:] = arrays
        return cell

    with atomic_open(path) as f:
        savemat(f, {"query": stacked(queries, 0, np.int64), "query_labels": stacked(queries, 1),
                    "retrieval": stacked(retrievals, 0, np.int64),
                    "retrieval_labels": stacked(retrievals, 1)})
