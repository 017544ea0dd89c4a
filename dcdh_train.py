"""Train DCDH (deep center-based dual-constrained hashing).

Official form:  python dcdh_train.py --dataset facescrub --save m.tar --len 48
Built-in data:  python dcdh_train.py --dataset synthetic --save demo.tar --len 48
"""

import argparse
import sys
import time

import torch
from tqdm import tqdm

from models import HASHING_ARCHS, build_hashing_net
from models.dcdh import DualClasswiseLoss, dcdh_loss
from utils.checkpoint import load_checkpoint, save_checkpoint
from utils.cli import (UsageError, add_data_args, check_writable_file, format_metrics,
                       resolve_device, write_json)
from utils.engine import (AverageMeter, ensure_dir, log_path, seed_everything, set_lr, step_lr,
                          tee_stdout)
from utils.run_setup import build_hashing_data, handled_errors, recipe_for
from utils.retrieval import evaluate_hashing


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # the official flags and defaults
    p.add_argument("--lr", type=float, default=0.005, help="learning rate (network and centers)")
    p.add_argument("--save", help="checkpoint file name, written under --checkpoint-dir")
    p.add_argument("--bs", type=int, default=256, help="batch size")
    p.add_argument("--len", type=int, default=48, help="code length in bits")
    p.add_argument("--sigma", type=float, default=0.25, help="Gaussian width of the center likelihood")
    p.add_argument("--inner_param", type=float, default=0.1, help="weight of the center separation term")
    p.add_argument("--eta", type=float, default=0.01, help="weight of the quantization (regression) term")
    # added here
    add_data_args(p)
    p.add_argument("--epochs", type=int, help="epochs (default by recipe: 600 Adam, 150 SGD; synthetic 15)")
    p.add_argument("--arch", choices=HASHING_ARCHS, help="network (default by dataset and image size)")
    p.add_argument("--pretrained", help="local ImageNet state_dict for the resnet archs")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=10, help="evaluate mAP every N epochs (0: never)")
    p.add_argument("--checkpoint-dir", default="checkpoint")
    p.add_argument("--log-dir", default="log")
    p.add_argument("--json", metavar="OUT", help="write the final metrics (best checkpoint) as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def train_one_epoch(net, criterion, loader, optimizer, device, eta, progress=True, desc="train"):
    """One pass over ``loader``; returns the sample-weighted mean loss."""
    net.train()
    meter = AverageMeter()
    for images, labels in tqdm(loader, desc=desc, leave=False, disable=not progress, file=sys.stderr):
        images = images.to(device, non_blocking=True)
        labels = torch.as_tensor(labels).view(-1).to(device)
        loss = dcdh_loss(net(images), labels, criterion, eta)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        meter.update(loss.item(), len(images))
    return meter.avg


def build_optimizer(recipe, net, criterion, lr):
    groups = [{"params": net.parameters()}, {"params": criterion.parameters()}]
    if recipe.optimizer == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=recipe.weight_decay, amsgrad=True)
    return torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=recipe.weight_decay)


def check_args(args):
    if not args.save:
        raise UsageError("--save NAME.tar is required: the checkpoint is written to "
                         "--checkpoint-dir/NAME.tar")
    if args.len <= 0:
        raise UsageError(f"--len must be a positive number of bits, got {args.len}")
    for flag in ("bs", "epochs"):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            raise UsageError(f"--{flag} must be positive, got {value}")


def main(args):
    check_args(args)
    device = resolve_device(args.device)
    # every folder and file the run will write is checked before any training
    ckpt_dir = ensure_dir(args.checkpoint_dir, "--checkpoint-dir")
    ckpt_path = check_writable_file(ckpt_dir / args.save, "--save")
    log_dir = ensure_dir(args.log_dir, "--log-dir")
    if args.json:
        check_writable_file(args.json, "--json")
    seed_everything(args.seed)

    data = build_hashing_data(args, device)
    recipe = recipe_for(args.dataset, data.arch)
    epochs = args.epochs or recipe.epochs
    net = build_hashing_net(data.arch, args.len, pretrained=args.pretrained).to(device)
    criterion = DualClasswiseLoss(data.num_classes, args.len, args.inner_param, args.sigma).to(device)
    optimizer = build_optimizer(recipe, net, criterion, args.lr)
    progress = not args.no_progress

    with tee_stdout(log_path(log_dir, args.len, args.dataset)) as log_file:
        print(f"[Configuration] dataset {args.dataset} ({data.describe()}), arch {data.arch}, "
              f"{args.len} bits, batch {args.bs}, lr {args.lr}, {epochs} epochs, "
              f"{recipe.describe()}, device {device}, seed {args.seed}")
        print(f"HyperParams: sigma {args.sigma}  inner_param {args.inner_param}  eta {args.eta}")
        best_loss, best_epoch, last_metrics = float("inf"), -1, None
        since = time.time()
        epoch = -1
        for epoch in range(epochs):
            set_lr(optimizer, step_lr(args.lr, epoch, recipe.lr_step, recipe.lr_gamma))
            loss = train_one_epoch(net, criterion, data.train_loader, optimizer, device, args.eta,
                                   progress, desc=f"epoch {epoch + 1}/{epochs}")
            line = f"[epoch: {epoch + 1}]\t[hashing loss: {loss:.3f}]"
            if args.eval_every and ((epoch + 1) % args.eval_every == 0 or epoch + 1 == epochs):
                last_metrics, _ = evaluate_hashing(net, data.db_loader, data.query_loader, device,
                                                   progress=progress)
                line += f"\t[mAP: {100 * last_metrics['mAP']:.2f}%]"
            print(line)
            if loss < best_loss:
                best_loss, best_epoch = loss, epoch
                save_checkpoint({
                    "backbone": net.state_dict(),
                    "centers": criterion.state_dict(),
                    "arch": data.arch, "num_classes": data.num_classes, "epoch": epoch + 1,
                    "loss": loss, "optimizer": optimizer.state_dict(), "args": vars(args),
                    "metrics": last_metrics,
                }, ckpt_path)
            if epoch - best_epoch > epochs // 4:
                print(f"Training terminated at epoch {epoch + 1}: no lower loss for {epochs // 4} epochs")
                break
        elapsed = time.time() - since
        print(f"Training completed in {elapsed // 60:.0f}min {elapsed % 60:.0f}s, "
              f"best loss {best_loss:.4f} at epoch {best_epoch + 1}; model saved as {ckpt_path}")

        # the reported numbers are those of the file a user will evaluate
        net.load_state_dict(load_checkpoint(ckpt_path)["backbone"])
        result, _ = evaluate_hashing(net, data.db_loader, data.query_loader, device, progress=progress)
        result.update(best_epoch=best_epoch + 1, best_loss=best_loss, epochs_run=epoch + 1,
                      checkpoint=str(ckpt_path), train_seconds=round(elapsed, 1))
        print(format_metrics(result, f"best checkpoint (epoch {best_epoch + 1})"))
        print(f"log written to {log_file}")
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    from utils.cli import run_script
    sys.exit(run_script(main, get_args_parser().parse_args(), handled=handled_errors()))
