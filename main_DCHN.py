"""DCHN: decoupled cross-view hashing (Hu et al., IEEE TCYB 2021), the
published main_DCHN.py: one hashing network per view, trained independently
to produce the SHAM codes (run trainSHAM.py first), then cross-view
evaluation.

Published forms:
  python main_DCHN.py --mode train --epochs 100 --view 0 --datasets mirflickr25k --output_shape 64 --alpha 0.02 --gama 1 --available_num 100 --gpu_id 0
  python main_DCHN.py --mode train --epochs 100 --view 1 --datasets mirflickr25k --output_shape 64 --alpha 0.02 --gama 1 --available_num 100 --gpu_id 1
  python main_DCHN.py --mode eval --view -1 --datasets mirflickr25k --output_shape 64 --alpha 0.02 --gama 1 --available_num 100 --num_workers 0
Built-in data:
  python trainSHAM.py --datasets synthetic --output_shape 32 && python main_DCHN.py --mode train --datasets synthetic --output_shape 32 && python main_DCHN.py --mode eval --datasets synthetic --output_shape 32
"""

import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.optim.lr_scheduler import StepLR
from torch.utils.data import DataLoader, Dataset

from methods.dchn import CHECKPOINT_ALLOW, DCHNView, checkpoint_name, cross_view_map, published_line
from methods.recipes.dchn import PUBLISHED, per_view, recipe_for
from utils.cli import (ArgumentParser, UsageError, add_report_args, add_speed_args,
                       check_writable_file, ensure_dir, fraction, int_at_least,
                       non_negative_float, non_negative_int, positive_float, positive_int,
                       run_script, write_json)
from utils.engine.checkpoint import CheckpointError, load_checkpoint
from utils.engine.logs import logging_to
from utils.engine.loop import FitConfig, fit
from utils.engine.rng import seed_everything

from data.multiview import DATASETS as MULTIVIEW_DATASETS  # noqa: E402

DATASET_CHOICES = list(MULTIVIEW_DATASETS)


def add_config_args(p):
    """The published config.py flags (every one, with its default), made settable."""
    p.add_argument("--beta1", type=fraction, default=PUBLISHED.beta1)
    p.add_argument("--beta2", type=fraction, default=PUBLISHED.beta2)
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--prefix", default="checkpoint", help="folder of the view checkpoints")
    p.add_argument("--mode", default="train", choices=["train", "eval"])
    p.add_argument("--multiprocessing", action="store_true",
                   help="with --view -1: train the views in parallel processes")
    p.add_argument("--view", type=int_at_least(-1), default=-1,
                   help="the view to train or evaluate (-1: every view)")
    p.add_argument("--num_workers", type=non_negative_int, default=2,
                   help="loader processes for raw images (features are served from memory)")
    p.add_argument("--lr_update", type=positive_int, default=PUBLISHED.lr_update,
                   help="lr x0.1 after every this many epochs")
    # published as type=list (which no command line can set): one value per view, or one for all
    p.add_argument("--batch_sizes", type=positive_int, nargs="+",
                   help="batch size per view (default 64 64 64 32 64)")
    p.add_argument("--lr", type=positive_float, nargs="+",
                   help="learning rate per view (default 1e-4 for each)")
    p.add_argument("--output_shape", type=positive_int, default=PUBLISHED.output_shape,
                   help="code length")
    p.add_argument("--alpha", type=fraction, default=PUBLISHED.alpha,
                   help="weight of the pairwise term (1 - alpha: the label regression)")
    p.add_argument("--gama", type=non_negative_float, default=PUBLISHED.gama,
                   help="SHAM's balance of its two terms")
    p.add_argument("--datasets", default="mirflickr25k", choices=DATASET_CHOICES)
    p.add_argument("--epochs", type=positive_int, help="epochs (published 100)")
    p.add_argument("--available_num", type=non_negative_int, default=PUBLISHED.available_num,
                   help="labelled rows SHAM uses (the SHAM file is named by this count)")
    p.add_argument("--gpu_id", type=int_at_least(-1), default=0,
                   help="CUDA device (-1: view v on device (v + 1) %% count, as published)")
    # added here
    g = p.add_argument_group("data (added)")
    g.add_argument("--data-root", help="dataset folder (default ../datasets/<FOLDER>, as "
                                       "published), or the file of the features layout")
    g.add_argument("--views", nargs="+", help="features layout: the arrays of the file, one per view")
    g.add_argument("--labels-key", default="labels", help="features layout: the label matrix")
    g.add_argument("--query-size", type=positive_int, default=2000,
                   help="features layout: the first rows are the queries")
    g.add_argument("--train-size", type=positive_int, default=10000,
                   help="features layout: the next rows are the training rows")
    g.add_argument("--synthetic-rows", type=positive_int, default=1200)
    g.add_argument("--synthetic-classes", type=positive_int, default=12)
    g.add_argument("--synthetic-views", type=positive_int, default=2, choices=[2, 3])
    g.add_argument("--sham-dir", default="SHAM", help="folder of the SHAM files")
    return p


def get_args_parser():
    p = ArgumentParser(description=__doc__)
    add_config_args(p)
    e = p.add_argument_group("added")
    e.add_argument("--eval-views", type=non_negative_int, nargs="+",
                   help="evaluate these views only (default: --view, or all)")
    e.add_argument("--features-dir", default="features", help="where eval writes the codes .mat")
    e.add_argument("--pretrained", help="mirflickr25k_raw: local torchvision vgg19_bn state_dict")
    e.add_argument("--count-no-relevant", action="store_true",
                   help="count queries without a relevant item as AP 0 in the table (the "
                        "published evaluation leaves them out; the JSON has both)")
    e.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (overrides --gpu_id)")
    e.add_argument("--resume", choices=["auto"], help="continue each view from its checkpoint")
    e.add_argument("--overwrite", action="store_true",
                   help="train afresh although the view's checkpoint exists")
    e.add_argument("--deterministic", action="store_true", help="deterministic algorithms only")
    add_speed_args(e, layout=False)
    e.add_argument("--log-dir", default="log")
    e.add_argument("--json", metavar="OUT", help="write the results as JSON")
    e.add_argument("--no-progress", action="store_true")
    add_report_args(p)  # with --mode eval: one curve per query view -> retrieval view
    return p


# -- data -------------------------------------------------------------------------------

class RowsDataset(Dataset):
    """Rows of one view: (features float32, label row); raw images go through
    the published transform (uint8 [3, W, H] -> PIL -> CenterCrop 224 ->
    ImageNet normalisation)."""

    def __init__(self, view, rows):
        self.view, self.rows = view, np.asarray(rows)
        self.labels = np.asarray(view.labels)
        self.transform = None
        if view.is_images:
            from torchvision import transforms

            self.transform = transforms.Compose([
                transforms.ToPILImage(), transforms.CenterCrop(224), transforms.ToTensor(),
                transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
        else:
            self.data = torch.from_numpy(np.asarray(view.data)[self.rows])
            self.label_rows = torch.from_numpy(self.labels[self.rows])

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        if self.transform is None:
            return self.data[index], self.label_rows[index]
        image = np.asarray(self.view.data[int(self.rows[index])]).astype("uint8").transpose(2, 1, 0)
        return self.transform(image), torch.from_numpy(self.labels[self.rows[index]])


def load_views(args, view: int):
    from data.multiview import load_multiview

    options = {"views": args.views, "labels_key": args.labels_key, "query": args.query_size,
               "train": args.train_size, "rows": args.synthetic_rows,
               "classes": args.synthetic_classes, "seed": args.seed,
               "widths": (64, 48, 32)[:args.synthetic_views]}
    if args.datasets == "synthetic":
        options.update(query=args.synthetic_rows // 6, train=args.synthetic_rows // 2)
    return load_multiview(args.datasets, args.data_root, view, options)


def sham_matrix(args, num_classes: int) -> np.ndarray:
    from models.sham import load_sham, sham_file_name

    path = Path(args.sham_dir) / sham_file_name(num_classes, args.output_shape, args.gama,
                                                args.available_num)
    if not path.is_file():
        raise UsageError(f"{path} not found: run trainSHAM.py --datasets {args.datasets} "
                         f"--output_shape {args.output_shape} --gama {args.gama:g} "
                         f"--available_num {args.available_num} first")
    try:
        W = load_sham(path)
    except Exception as exc:  # noqa: BLE001
        raise UsageError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
    if W.shape != (num_classes, args.output_shape):
        raise UsageError(f"{path} holds W of shape {W.shape}, expected ({num_classes}, "
                         f"{args.output_shape})")
    return W


def device_for(args, view: int) -> torch.device:
    from utils.cli.device import resolve_device

    if args.device != "auto" or not torch.cuda.is_available():
        return resolve_device(args.device)
    count = torch.cuda.device_count()
    index = args.gpu_id if args.gpu_id >= 0 else (view + 1) % count
    if index >= count:
        raise UsageError(f"--gpu_id {args.gpu_id}: this machine has {count} CUDA device(s)")
    return torch.device("cuda", index)


def options_namespace(args):
    """The Namespace stored as 'opt', with the published per-view lists."""
    import argparse

    values = {k: v for k, v in vars(args).items()}
    values["batch_sizes"], values["lr"] = batch_sizes(args), learning_rates(args)
    return argparse.Namespace(**values)


def batch_sizes(args):
    recipe = recipe_for(args.datasets)
    return list(args.batch_sizes) * 5 if args.batch_sizes and len(args.batch_sizes) == 1 \
        else list(args.batch_sizes or recipe.batch_sizes)


def learning_rates(args):
    recipe = recipe_for(args.datasets)
    return list(args.lr) * 5 if args.lr and len(args.lr) == 1 else list(args.lr or recipe.lrs)


def view_method(args, view_data, view: int, W, device) -> DCHNView:
    return DCHNView(view, view_data.input_dim, args.output_shape, W, args.alpha,
                    images=view_data.is_images, pretrained=args.pretrained,
                    opt=options_namespace(args)).to(device)


class _Loaders:
    def __init__(self, train, database=None, queries=None):
        self.train, self.database, self.queries = train, database, queries


# -- training -----------------------------------------------------------------------------

def train_view(args, view: int) -> dict:
    """Train one view (its data read here, so parallel processes read their own)."""
    data = load_views(args, view)
    view_data = data.views[0]
    W = sham_matrix(args, data.num_classes)
    device = device_for(args, view)
    prefix = ensure_dir(args.prefix, "--prefix")
    path = check_writable_file(prefix / checkpoint_name(args.datasets, view, args.output_shape,
                                                        args.available_num), "--prefix")
    resume = None
    if args.resume and path.is_file():
        resume = load_checkpoint(path, allow=CHECKPOINT_ALLOW)
        if not isinstance(resume.get("train_state"), dict):
            raise CheckpointError(f"{path} holds no training state to resume from (a published "
                                  f"file); start with --overwrite")
    elif path.exists() and not args.overwrite and not args.resume:
        raise CheckpointError(f"{path} exists; pass --resume auto to continue it or --overwrite "
                              f"to train view {view} afresh")
    seed_everything(args.seed, args.deterministic)
    method = view_method(args, view_data, view, W, device)
    recipe = recipe_for(args.datasets)
    epochs = args.epochs or recipe.epochs
    batch = per_view(batch_sizes(args), view)
    if view_data.is_images:
        loader = DataLoader(RowsDataset(view_data, view_data.train), batch_size=batch, shuffle=True,
                            num_workers=args.num_workers, drop_last=False,
                            generator=torch.Generator().manual_seed(args.seed),
                            pin_memory=device.type == "cuda", persistent_workers=args.num_workers > 0)
    else:  # feature matrices: whole batches indexed on the device
        from data.loaders import TensorBatches

        rows = np.asarray(view_data.train)
        loader = TensorBatches(torch.from_numpy(np.asarray(view_data.data)[rows]),
                               torch.from_numpy(np.asarray(view_data.labels)[rows]), batch,
                               shuffle=True, seed=args.seed, device=device)
    optimizer = method.optimizer(per_view(learning_rates(args), view), (args.beta1, args.beta2))
    scheduler = StepLR(optimizer, args.lr_update, recipe.lr_gamma)
    config = FitConfig(epochs, device, best_path=None, last_path=path, amp=args.amp,
                       progress=not args.no_progress, desc=f"view {view} ({view_data.name}), ",
                       extra_state={"args": vars(args)})
    log_dir = ensure_dir(args.log_dir, "--log-dir")
    with logging_to(log_dir / f"DCHN_{args.datasets}_V{view}_O{args.output_shape}_"
                              f"A{args.available_num}.txt") as log:
        log.info(f"Start {view}-th MHN! {method.describe()}; {len(view_data.train)} training rows, "
                 f"batch {batch}, lr {optimizer.param_groups[0]['lr']}, {epochs} epochs, "
                 f"lr x0.1 every {args.lr_update}, device {device}")
        start = time.perf_counter()
        result = fit(method, optimizer, scheduler, _Loaders(loader), config, resume)
        log.info(f"Training time: {time.perf_counter() - start:.3f}; view {view} saved as {path}")
    return {"view": view, "checkpoint": str(path), "epochs_run": result.epochs_run,
            "last_loss": result.last_loss, "train_seconds": result.train_seconds}


def _train_in_process(payload):
    args, view = payload
    return train_view(args, view)


def train(args):
    data = load_views(args, args.view)  # checks the data and the view before any training
    sham_matrix(args, data.num_classes)
    views = data.view_ids
    start = time.perf_counter()
    if args.multiprocessing and len(views) > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(len(views)) as pool:
            results = pool.map(_train_in_process, [(args, v) for v in views])
    else:
        results = [train_view(args, v) for v in views]
    print("The training time: " + str(time.perf_counter() - start))
    return {"mode": "train", "views": results}


# -- evaluation -----------------------------------------------------------------------------

def evaluate(args):
    data = load_views(args, -1)
    names = [v.name for v in data.views]
    wanted = args.eval_views if args.eval_views else (list(range(data.num_views)) if args.view < 0
                                                      else [args.view])
    bad = [v for v in wanted if v >= data.num_views]
    if bad:
        raise UsageError(f"--eval-views {bad[0]}: {args.datasets} has views 0..{data.num_views - 1}")
    if len(wanted) < 2:
        raise UsageError("cross-view evaluation needs at least two views (--eval-views 0 1)")
    W = sham_matrix(args, data.num_classes)
    paths = {v: Path(args.prefix) / checkpoint_name(args.datasets, v, args.output_shape,
                                                    args.available_num) for v in wanted}
    missing = [v for v in wanted if not paths[v].is_file()]
    if missing:
        listed = ", ".join(f"{v} ({names[v]})" for v in missing)
        raise CheckpointError(f"no checkpoint for view(s) {listed}: expected "
                              f"{paths[missing[0]]}; train it with --mode train --view {missing[0]}")
    if args.json:
        check_writable_file(args.json, "--json")
    if args.show_results:
        raise UsageError("--show-results needs images; DCHN's views are feature vectors")
    report = args.plot or args.report
    if report:
        from utils.report.outputs import check_outputs

        check_outputs(args)
    features_dir = ensure_dir(args.features_dir, "--features-dir")
    queries, retrievals = [], []
    for v in wanted:
        view_data = data.views[v]
        device = device_for(args, v)
        method = view_method(args, view_data, v, W, device)
        ckpt = load_checkpoint(paths[v], allow=CHECKPOINT_ALLOW)
        method.load_official_state(ckpt, paths[v])
        encoded = []
        for rows in (view_data.query, view_data.retrieval):
            if view_data.is_images:
                loader = DataLoader(RowsDataset(view_data, rows), batch_size=256, shuffle=False,
                                    num_workers=args.num_workers)
            else:
                from data.loaders import TensorBatches

                rows = np.asarray(rows)
                loader = TensorBatches(torch.from_numpy(np.asarray(view_data.data)[rows]),
                                       torch.from_numpy(np.asarray(view_data.labels)[rows]), 1024,
                                       device=device)
            enc = method.encode(loader, device, progress=not args.no_progress)
            encoded.append((enc.values.cpu(), enc.labels.cpu()))
        queries.append(encoded[0])
        retrievals.append(encoded[1])
    skip = not args.count_no_relevant
    out = cross_view_map(queries, retrievals, skip_no_relevant=skip)
    results = out["results"]
    print(published_line(results))
    print(format_table(results, [names[v] for v in wanted], skip))
    _save_codes_mat(features_dir / f"{args.datasets}_test_{args.available_num}_"
                    f"{args.output_shape}bit_features.mat", queries, retrievals)
    report = {"mode": "eval", "datasets": args.datasets, "bits": args.output_shape,
              "views": wanted, "view_names": [names[v] for v in wanted],
              "results": results.tolist(), "mean": out["mean"],
              "queries_without_relevant": "left out of the means" if skip else "counted as AP 0",
              "results_counting_no_relevant": out["results_counting_no_relevant"].tolist(),
              "pairs": [{"query_view": wanted[p["query_view"]],
                         "retrieval_view": wanted[p["retrieval_view"]], **p["metrics"]}
                        for p in out["pairs"]]}
    if args.json:
        write_json(args.json, report)
    if args.plot or args.report:
        from utils.report.outputs import write_outputs

        labels = [names[v] for v in wanted]
        runs = [(f"{labels[p['query_view']]}→{labels[p['retrieval_view']]}", p["metrics"])
                for p in out["pairs"]]
        header = ["query view \\ retrieval view", *labels]
        table = [[labels[j], *[float(results[j, i]) for i in range(len(labels))]]
                 for j in range(len(labels))]
        write_outputs(args, f"main_DCHN.py --mode eval: {args.datasets}, {args.output_shape} bits",
                      {k: v for k, v in vars(args).items() if v not in (None, False, [])}, runs,
                      extra_tables=[("cross-view mAP", header, table)])
    return report


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


def _save_codes_mat(path, queries, retrievals) -> None:
    """The published features file: per view its query / retrieval codes and labels."""
    from scipy.io import savemat

    from utils.atomic import atomic_open

    def cells(items, k):
        cell = np.empty((len(items),), dtype=object)
        for i, item in enumerate(items):
            cell[i] = np.asarray(item[k])
        return cell

    with atomic_open(path) as f:
        savemat(f, {"query": cells(queries, 0), "query_labels": cells(queries, 1),
                    "retrieval": cells(retrievals, 0), "retrieval_labels": cells(retrievals, 1)})


def main(args):
    if args.mode == "train" and (args.plot or args.show_results or args.report):
        raise UsageError("--plot, --show-results and --report go with --mode eval")
    result = train(args) if args.mode == "train" else evaluate(args)
    if args.mode == "train" and args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    sys.exit(run_script(main, get_args_parser().parse_args()))
