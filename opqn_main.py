"""Train or evaluate OPQN (orthonormal product quantization network).

Official forms:
  python opqn_main.py --dataset facescrub --save m.tar --len 36 --num 6 --words 64
  python opqn_main.py -e --dataset facescrub --load a.tar b.tar c.tar --len 16 24 36 --num 2 4 6 --words 256 64 64
  (add -c for cross-dataset evaluation)
Stored features:  python opqn_main.py -e --features codes.npz [--json OUT]
Built-in data:    python opqn_main.py --dataset synthetic --save pq.tar --len 24 --num 4 --words 64
Several GPUs:     torchrun --nproc_per_node 4 opqn_main.py --dataset vggface2 --save v.tar --len 48 --num-books 8 --words 64
"""

import argparse
import math
import sys
from dataclasses import dataclass

import torch

from models import OrthoPQ, resnet20_pq
from models.opqn import OPQNObjective
from utils.checkpoint import load_checkpoint, resolve_checkpoint
from utils.cli import (UsageError, add_data_args, add_engine_args, check_writable_file,
                       format_metrics, resolve_device, write_json)
from utils.codes_io import load_npz, save_npz
from utils.distributed import DistInfo, cleanup, init_distributed
from utils.engine import encode, ensure_dir, log_path, seed_everything, silenced, tee_stdout
from utils.opqn_checkpoint import load_opqn, opqn_state
from utils.pq import evaluate_pq, quantization_index
from utils.run_setup import build_run_data, handled_errors, inherit_synthetic_size
from utils.trainer import Schedule, fit, last_path_for, prepare, resume_from

# Epochs for the built-in data: enough for high mAP in a few CPU minutes.
SYNTHETIC_EPOCHS = 7
# The official top-k: 5 for the 32x32 datasets, 10 for VGGFace2; we add 1 and 50.
DEFAULT_TOPK = (1, 5, 10, 50)


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # the official flags and defaults
    p.add_argument("--lr", type=float, default=0.1, help="learning rate")
    p.add_argument("-e", "--evaluate", action="store_true", help="evaluate instead of training")
    p.add_argument("-c", "--cross-dataset", action="store_true",
                   help="cross-dataset protocol: 112x112 network, cross_train/ and cross_test/ for evaluation")
    p.add_argument("--bs", type=int, default=256, help="batch size")
    p.add_argument("--save", nargs="+", help="checkpoint name(s) to write, one per model")
    p.add_argument("--load", nargs="+", help="checkpoint(s) to evaluate, one per model")
    p.add_argument("--len", type=int, nargs="+", help="code length(s) in bits, one per model")
    # --num-books: the same flag under torchrun, whose own parser takes --num as an
    # abbreviation of its --numa-binding
    p.add_argument("--num", "--num-books", dest="num", type=int, nargs="+",
                   help="number of codebooks, one per model")
    p.add_argument("--words", type=int, nargs="+", default=[256], help="codewords per codebook")
    p.add_argument("--margin", type=float, default=0.5, help="additive angular margin")
    p.add_argument("--miu", type=float, default=0.1, help="weight of the assignment entropy")
    # added here
    add_data_args(p)
    p.add_argument("--scale", type=float, help="logit scale (default 20 for 32x32 data, 40 for 112x112 and -c)")
    p.add_argument("--features", nargs="+", metavar="FILE.npz",
                   help="with -e: evaluate stored features instead of a checkpoint")
    p.add_argument("--save-codes", nargs="+", metavar="OUT.npz",
                   help="with -e: store features, database index, mlp and labels, one file per model")
    p.add_argument("--topk", type=int, nargs="+", default=list(DEFAULT_TOPK))
    p.add_argument("--curve", type=int, nargs="+", help="ranking positions of the precision curve")
    p.add_argument("--map-at", type=int, nargs="+", default=[], help="also report mAP@k")
    p.add_argument("--skip-no-relevant", action="store_true",
                   help="leave queries without a relevant item out of the means")
    add_engine_args(p, eval_every=5)  # --epochs: 200 for 32x32 data, 160 for 112x112, 7 synthetic
    return p


@dataclass(frozen=True)
class PQConfig:
    """One model of the call: code length, books, words and the derived shapes."""
    bits: int
    num_books: int
    num_words: int
    feature_dim: int
    size: int  # side of the last feature map: 4 for 32x32 input, 7 for 112x112
    scale: float

    def describe(self) -> str:
        return (f"{self.bits} bits = {self.num_books} books x {self.num_words} words, "
                f"{self.feature_dim}-d features")


def _per_model(values, name, count):
    if values is None:
        raise UsageError(f"--{name} is required (one value per model)")
    if len(values) == 1:
        return list(values) * count
    if len(values) != count:
        raise UsageError(f"--{name} has {len(values)} values for {count} models; "
                         f"give one per model (or one for all)")
    return list(values)


def model_configs(args, img_size: int) -> list:
    """The official rules: len = num * log2(words); feature_dim 512 for 32x32 data
    (516 for 36 bits), num * words for 112x112 data and cross-dataset runs."""
    if not args.len:
        raise UsageError("--len is required: the code length of each model, e.g. --len 24 --num 4 --words 64")
    count = len(args.len)
    nums, words = _per_model(args.num, "num", count), _per_model(args.words, "words", count)
    if img_size not in (32, 112):
        raise UsageError(f"resnet20_pq takes 32x32 or 112x112 images, not {img_size}x{img_size}")
    size = 7 if img_size == 112 else 4
    configs = []
    for bits, m, k in zip(args.len, nums, words):
        if m <= 0 or k < 2 or k & (k - 1):
            raise UsageError(f"--num must be positive and --words a power of two, got {m} and {k}")
        if m * int(math.log2(k)) != bits:
            raise UsageError(f"--len {bits} does not match --num {m} --words {k}: "
                             f"{m} x log2({k}) = {m * int(math.log2(k))} bits")
        feature_dim = m * k if size == 7 or args.cross_dataset else (516 if bits == 36 else 512)
        if feature_dim % m:
            raise UsageError(f"{feature_dim}-d features do not split into {m} books; choose another --num")
        if k > feature_dim // m:
            raise UsageError(f"--words {k} exceeds the codeword length {feature_dim // m} "
                             f"({feature_dim}-d features / {m} books): use fewer words or more books")
        scale = args.scale or (40.0 if size == 7 or args.cross_dataset else 20.0)
        configs.append(PQConfig(bits, m, k, feature_dim, size, scale))
    return configs


def input_size(args) -> int:
    """The image size a run will use, known before any data is read."""
    if args.img_size:
        return args.img_size
    return 112 if args.cross_dataset or args.dataset in ("vggface2", "folder") else 32


def build_model(config: PQConfig, num_classes: int, margin: float, device):
    net = resnet20_pq(20, config.feature_dim, 512, config.size).to(device)
    head = OrthoPQ(config.feature_dim, config.num_books, config.num_words, num_classes,
                   scale=config.scale, margin=margin).to(device)
    return net, head


def metric_kwargs(args):
    return dict(topk=args.topk, curve_positions=args.curve, map_at=args.map_at,
                skip_no_relevant=args.skip_no_relevant)


def evaluate_model(net, mlp, data, device, args, progress=True):
    """Encode database and queries, index the database, rank by the asymmetric score."""
    db_features, db_labels = encode(net, data.db_loader, device, "encoding database", progress)
    q_features, q_labels = encode(net, data.query_loader, device, "encoding queries", progress)
    result = evaluate_pq(q_features, db_features, q_labels, db_labels, mlp.cpu(), **metric_kwargs(args))
    return result, (db_features, q_features, db_labels, q_labels)


def train(args, dist_info: DistInfo, device):
    if not args.save:
        raise UsageError("--save NAME.tar is required, one per model (or -e to evaluate)")
    ckpt_dir = ensure_dir(args.checkpoint_dir, "--checkpoint-dir")
    log_dir = ensure_dir(args.log_dir, "--log-dir")
    if len(args.save) != len(args.len or []):
        raise UsageError(f"--save names {len(args.save)} file(s) for {len(args.len or [])} model(s) "
                         f"(--len); give one name per model")
    if args.resume and args.resume != "auto" and len(args.save) > 1:
        raise UsageError("--resume PATH takes one model; with several use --resume auto")
    paths = [check_writable_file(ckpt_dir / name, "--save") for name in args.save]
    for path in paths:
        check_writable_file(last_path_for(path), "--save")
    configs = model_configs(args, input_size(args))  # bad --len/--num/--words fail before any data
    data = build_run_data(args, device, train=True, dist_info=dist_info)
    configs = model_configs(args, data.img_size)
    large = data.img_size == 112
    epochs = args.epochs or (SYNTHETIC_EPOCHS if args.dataset == "synthetic" else 160 if large else 200)
    schedule = Schedule(epochs, args.lr, 20 if large else 35, 0.5, args.eval_every)
    progress = not args.no_progress and dist_info.is_main
    results = []
    for config, path in zip(configs, paths):
        resume = resume_from(args.resume, path, args.checkpoint_dir)
        seed_everything(args.seed, args.deterministic)
        net, head = build_model(config, data.num_classes, args.margin, device)
        objective = OPQNObjective(net, head, args.miu)
        optimizer = torch.optim.SGD(objective.parameters(), lr=args.lr, momentum=0.9,
                                    weight_decay=5e-4)
        trained = prepare(objective, net, device, dist_info, args.compile, args.channels_last)

        def model_state(net=net, head=head):
            # the official layout, plus the class proxies needed to resume training
            return {**opqn_state(net, head.mlp), "head": head.state_dict()}

        def load_model_state(ckpt, net=net, head=head, config=config, path=path):
            load_opqn(net, ckpt, config.num_books, config.num_words, path)
            head.load_state_dict(ckpt["head"])

        def evaluate(net=net, head=head):
            return evaluate_model(net, head.mlp.detach(), data, device, args, progress)[0]

        log_file = log_path(log_dir, config.bits, args.dataset)
        with (tee_stdout(log_file) if dist_info.is_main else silenced()):
            print(f"[Configuration] dataset {args.dataset} ({data.describe()}), {config.describe()}, "
                  f"scale {config.scale}, margin {args.margin}, miu {args.miu}, batch {args.bs}, "
                  f"lr {args.lr} x0.5 every {schedule.lr_step} epochs, {epochs} epochs, "
                  f"device {device}, {dist_info.world_size} process(es), seed {args.seed}")
            print(f"Arguments: {vars(args)}")
            result = fit(trained, optimizer, data.train_loader, device, schedule, path,
                         model_state=model_state, load_model_state=load_model_state,
                         evaluate=evaluate, resume=resume, dist_info=dist_info, amp=args.amp,
                         channels_last=args.channels_last, progress=progress,
                         desc=f"{config.bits} bits, ",
                         extra_state={"args": vars(args), "config": {
                             "len": config.bits, "num": config.num_books, "words": config.num_words,
                             "feature_dim": config.feature_dim, "size": config.size,
                             "scale": config.scale}})
            if not dist_info.is_main:
                continue
            print(f"Training completed: best loss {result.best_loss:.4f} at epoch "
                  f"{result.best_epoch}; model saved as {path}")
            mlp = load_opqn(net, load_checkpoint(path), config.num_books, config.num_words, path)
            final, _ = evaluate_model(net, mlp, data, device, args, progress)
            final.update(checkpoint=str(path), best_epoch=result.best_epoch,
                         best_loss=result.best_loss, epochs_run=result.epochs_run,
                         num=config.num_books, words=config.num_words)
            print(format_metrics(final, f"{path} (best loss, epoch {result.best_epoch})"))
            print(f"log written to {log_file}")
        results.append(final)
    return results


def evaluate_checkpoints(args, device):
    if not args.load:
        raise UsageError("-e needs --load CHECKPOINT.tar (one per model) or --features FILE.npz")
    if len(args.load) != len(args.len or []):
        raise UsageError(f"--load names {len(args.load)} checkpoint(s) for {len(args.len or [])} "
                         f"model(s) (--len); give one per model")
    if args.save_codes and len(args.save_codes) != len(args.load):
        raise UsageError("--save-codes needs one file per model")
    for out in args.save_codes or []:
        check_writable_file(out, "--save-codes")
    model_configs(args, input_size(args))  # bad --len/--num/--words fail before any data
    paths = [resolve_checkpoint(name, args.checkpoint_dir) for name in args.load]
    if args.dataset == "synthetic":
        inherit_synthetic_size(args, load_checkpoint(paths[0]))
    data = build_run_data(args, device, train=False, cross_dataset=args.cross_dataset)
    configs = model_configs(args, data.img_size)
    results = []
    for i, (path, config) in enumerate(zip(paths, configs)):
        net = resnet20_pq(20, config.feature_dim, 512, config.size)
        mlp = load_opqn(net, load_checkpoint(path), config.num_books, config.num_words, path)
        result, (db_f, q_f, db_l, q_l) = evaluate_model(net.to(device), mlp, data, device, args,
                                                        not args.no_progress)
        result.update(checkpoint=str(path), num=config.num_books, words=config.num_words)
        print(format_metrics(result, f"{path} on {args.dataset}{' (cross-dataset)' if args.cross_dataset else ''}"))
        if args.save_codes:
            save_features(args.save_codes[i], db_f, q_f, db_l, q_l, mlp)
        results.append(result)
    return results


def save_features(path, db_features, query_features, db_labels, query_labels, mlp):
    """The stored-features format (as the fixtures' pqret files): db_index is [M, N]."""
    save_npz(path, db_features=db_features.numpy(), query_features=query_features.numpy(),
             db_labels=db_labels.numpy(), query_labels=query_labels.numpy(), mlp=mlp.numpy(),
             db_index=quantization_index(db_features, mlp).T.numpy())


def evaluate_features(args):
    results = []
    for path in args.features:
        z = load_npz(path, required=("query_features", "query_labels", "db_labels", "mlp"))
        if "db_features" in z:
            db = z["db_features"]
        elif "db_index" in z:
            db = z["db_index"].T  # stored as [M, N], as the official indexing returns it
        else:
            raise UsageError(f"{path} lacks array db_features (or db_index)")
        try:
            result = evaluate_pq(z["query_features"], db, z["query_labels"], z["db_labels"], z["mlp"],
                                 **metric_kwargs(args))
        except ValueError as exc:
            raise UsageError(f"{path}: {exc}") from exc
        print(format_metrics(result, f"features {path}"))
        results.append(result)
    return results


def main(args):
    if args.bs <= 0:
        raise UsageError(f"--bs must be positive, got {args.bs}")
    if args.json:
        check_writable_file(args.json, "--json")
    if args.features:
        if not args.evaluate:
            raise UsageError("--features evaluates stored features: add -e")
        results = evaluate_features(args)
    elif args.evaluate:
        results = evaluate_checkpoints(args, resolve_device(args.device))
    else:
        dist_info, device = init_distributed(resolve_device(args.device))
        try:
            results = train(args, dist_info, device)
        finally:
            cleanup()
        if not dist_info.is_main:
            return results
    if args.json:
        write_json(args.json, results[0] if len(results) == 1 else results)
    return results


if __name__ == "__main__":
    from utils.cli import run_script
    sys.exit(run_script(main, get_args_parser().parse_args(), handled=handled_errors()))
