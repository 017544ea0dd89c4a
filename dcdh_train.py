"""Train DCDH (deep center-based dual-constrained hashing).

Official form:  python dcdh_train.py --dataset facescrub --save m.tar --len 48
Built-in data:  python dcdh_train.py --dataset synthetic --save demo.tar --len 48
Several GPUs:   torchrun --nproc_per_node 4 dcdh_train.py --dataset vggface2 --save v.tar --len 48
"""

import argparse
import sys

import torch

from models import build_hashing_net
from models.dcdh import DCDHObjective, DualClasswiseLoss
from utils.checkpoint import load_checkpoint
from utils.cli import (UsageError, add_data_args, add_engine_args, check_writable_file,
                       format_metrics, resolve_device, write_json)
from utils.distributed import DistInfo, cleanup, init_distributed
from utils.engine import ensure_dir, log_path, seed_everything, silenced, tee_stdout
from utils.names import HASHING_ARCHS
from utils.retrieval import evaluate_hashing
from utils.run_setup import build_hashing_data, handled_errors, recipe_for
from utils.trainer import Schedule, fit, last_path_for, prepare, resume_from


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # the official flags and defaults
    p.add_argument("--lr", type=float, default=0.005, help="learning rate (network and centers)")
    p.add_argument("--save", help="checkpoint file name, written under --checkpoint-dir")
    p.add_argument("--bs", type=int, default=256, help="batch size (per process under torchrun)")
    p.add_argument("--len", type=int, default=48, help="code length in bits")
    p.add_argument("--sigma", type=float, default=0.25, help="Gaussian width of the center likelihood")
    p.add_argument("--inner_param", type=float, default=0.1, help="weight of the center separation term")
    p.add_argument("--eta", type=float, default=0.01, help="weight of the quantization (regression) term")
    # added here
    p.add_argument("--arch", choices=HASHING_ARCHS, help="network (default by dataset and image size)")
    p.add_argument("--pretrained", help="local ImageNet state_dict for the resnet archs")
    add_data_args(p)
    add_engine_args(p, eval_every=10)
    return p


def build_optimizer(recipe, objective, lr):
    groups = [{"params": objective.net.parameters()}, {"params": objective.criterion.parameters()}]
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
    dist_info, device = init_distributed(resolve_device(args.device))
    try:
        return train(args, dist_info, device)
    finally:
        cleanup()


def train(args, dist_info: DistInfo, device):
    # every folder and file the run will write is checked before any training
    ckpt_dir = ensure_dir(args.checkpoint_dir, "--checkpoint-dir")
    ckpt_path = check_writable_file(ckpt_dir / args.save, "--save")
    check_writable_file(last_path_for(ckpt_path), "--save")
    log_dir = ensure_dir(args.log_dir, "--log-dir")
    if args.json:
        check_writable_file(args.json, "--json")
    resume = resume_from(args.resume, ckpt_path, args.checkpoint_dir)
    seed_everything(args.seed, args.deterministic)

    data = build_hashing_data(args, device, dist_info=dist_info)
    recipe = recipe_for(args.dataset, data.arch)
    epochs = args.epochs or recipe.epochs
    try:
        net = build_hashing_net(data.arch, args.len, pretrained=args.pretrained)
    except (OSError, ValueError, RuntimeError) as exc:  # a missing or foreign --pretrained file
        raise UsageError(f"--pretrained: {str(exc).splitlines()[0]}") from None
    criterion = DualClasswiseLoss(data.num_classes, args.len, args.inner_param, args.sigma)
    objective = DCDHObjective(net, criterion, args.eta).to(device)
    optimizer = build_optimizer(recipe, objective, args.lr)
    trained = prepare(objective, net, device, dist_info, args.compile, args.channels_last)
    progress = not args.no_progress and dist_info.is_main

    def model_state():
        return {"backbone": net.state_dict(), "centers": criterion.state_dict()}

    def load_model_state(ckpt):
        net.load_state_dict(ckpt["backbone"])
        criterion.load_state_dict(ckpt["centers"])

    def evaluate():
        metrics, _ = evaluate_hashing(net, data.db_loader, data.query_loader, device, progress=progress)
        return metrics

    log_file = log_path(log_dir, args.len, args.dataset)
    with (tee_stdout(log_file) if dist_info.is_main else silenced()):
        print(f"[Configuration] dataset {args.dataset} ({data.describe()}), arch {data.arch}, "
              f"{args.len} bits, batch {args.bs}, lr {args.lr}, {epochs} epochs, "
              f"{recipe.describe()}, device {device}, {dist_info.world_size} process(es), "
              f"seed {args.seed}")
        print(f"HyperParams: sigma {args.sigma}  inner_param {args.inner_param}  eta {args.eta}")
        print(f"Arguments: {vars(args)}")
        schedule = Schedule(epochs, args.lr, recipe.lr_step, recipe.lr_gamma, args.eval_every,
                            patience=epochs // 4)
        result = fit(trained, optimizer, data.train_loader, device, schedule, ckpt_path,
                     model_state=model_state, load_model_state=load_model_state,
                     evaluate=evaluate, resume=resume, dist_info=dist_info, amp=args.amp,
                     channels_last=args.channels_last, progress=progress,
                     extra_state={"arch": data.arch, "num_classes": data.num_classes,
                                  "args": vars(args)})
        if not dist_info.is_main:
            return None
        print(f"Training completed: best loss {result.best_loss:.4f} at epoch {result.best_epoch}; "
              f"model saved as {ckpt_path}")
        # the reported numbers are those of the file a user will evaluate
        net.load_state_dict(load_checkpoint(ckpt_path)["backbone"])
        final, _ = evaluate_hashing(net, data.db_loader, data.query_loader, device, progress=progress)
        final.update(best_epoch=result.best_epoch, best_loss=result.best_loss,
                     epochs_run=result.epochs_run, checkpoint=str(ckpt_path))
        print(format_metrics(final, f"best checkpoint (epoch {result.best_epoch})"))
        print(f"log written to {log_file}")
    if args.json:
        write_json(args.json, final)
    return final


if __name__ == "__main__":
    from utils.cli import run_script
    sys.exit(run_script(main, get_args_parser().parse_args(), handled=handled_errors()))
