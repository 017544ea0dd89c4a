"""What an epoch costs against what the network costs, for every method.

For each setting (the methods' default shapes), on the same batches, in one run:

1. **bare**: the network alone: forward, a plain loss (the sum of the
   outputs, each with a fixed random sign: a plain sum has a zero gradient
   behind a final BatchNorm, whose denormal arithmetic slows a CPU down far
   beyond real training), backward, the method's optimizer step;
2. **step**: the full training step: the method's loss (DCDH's center loss
   and regression step, OPQN's head and entropy, triplet mining, DCHN's
   target codes), backward, the same optimizer step, through the engine's
   autocast;
3. **epoch**: ``utils.engine.loop.train_one_epoch`` over the project's data
   pipeline on built-in data of the same shape (--steps batches), i.e. the
   step plus data loading and bookkeeping, per batch;

each the fastest of --repeat timings taken in turn (bare, step, epoch, then
again), so that a slow spell of a shared machine hits all three alike;

printing images (items) per second and the time ratios step/bare and
epoch/bare (>= 1: slower than the bare network).

Run from the repository root:
  python3 -m bench.train_speed [--settings dcdh_dfhnet ...] [--steps 5] [--device cuda] [--amp]
                               [--channels-last] [--compile] [--json OUT] [--tiny]
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, replace

import torch

from bench.timing import write_json
from utils.cli import ArgumentParser, add_speed_args, positive_int

SETTINGS = {}


@dataclass(frozen=True)
class Setting:
    name: str
    method: str
    batch: int
    img: int = 32  # image side (DCHN: the feature width)
    bits: int = 48
    classes: int = 530
    arch: str = ""
    books: int = 0
    words: int = 0

    def describe(self) -> str:
        shape = f"{self.img}-d features" if self.method == "dchn" else f"3x{self.img}x{self.img}"
        return f"{self.method} {self.arch or ''} {shape}, batch {self.batch}, {self.bits} bits".replace("  ", " ")


for s in (Setting("dcdh_dfhnet", "dcdh", 256, 32, 48, 530, "dfhnet"),
          Setting("dcdh_sphere20", "dcdh", 256, 112, 48, 530, "sphere20"),
          Setting("opqn_s4", "opqn", 256, 32, 36, 530, books=6, words=64),
          Setting("opqn_s7", "opqn", 256, 112, 64, 530, books=8, words=256),
          Setting("triplet_resnet18", "triplet", 80, 224, 64, 100, "resnet18"),
          Setting("dchn_mlp", "dchn", 64, 4096, 64, 24)):
    SETTINGS[s.name] = s


def tiny(s: Setting) -> Setting:
    """A few items, for the tests: the same code paths at a fraction of the cost."""
    img = s.img if s.method in ("dcdh", "opqn") else (64 if s.method == "triplet" else s.img)
    return replace(s, batch=8 if s.method == "triplet" else 4, classes=4, img=img)


def build(s: Setting, device):
    """(method, optimizer, one batch (inputs, targets), loaders factory)."""
    if s.method == "dcdh":
        from methods.dcdh import DCDH
        from methods.recipes.dcdh import recipe_for

        method = DCDH(s.arch, s.bits, s.classes)
        optimizer = method.optimizer(recipe_for("synthetic", s.img, s.arch), 0.005)
    elif s.method == "opqn":
        from methods.opqn import OPQN, PQConfig
        from methods.recipes.opqn import recipe_for

        method = OPQN(PQConfig.make(s.bits, s.books, s.words, s.img), s.classes)
        optimizer = method.optimizer(recipe_for("synthetic", s.img), 0.1)
    elif s.method == "triplet":
        from methods.recipes.triplet import PUBLISHED
        from methods.triplet import TripletHashing

        method = TripletHashing(s.bits, 20.0)
        optimizer = method.optimizer(PUBLISHED, 0.001)
    else:
        from methods.dchn import DCHNView
        from models.sham import train_sham

        method = DCHNView(0, s.img, s.bits, train_sham(s.classes, s.bits, 1.0).W)
        optimizer = method.optimizer(1e-4, (0.5, 0.999))
    return method.to(device), optimizer


def data(s: Setting, steps: int, device):
    """A training loader of built-in data of the setting's shape, `steps` batches long."""
    from data.loaders import TensorBatches

    n = s.batch * steps
    if s.method == "dchn":
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(n, s.img, generator=gen)
        labels = (torch.rand(n, s.classes, generator=gen) < 0.2).float()
        return TensorBatches(x, labels, s.batch, shuffle=True, device=device)
    from data.synthetic import make_synthetic_faces

    per_class = max(1, -(-n // s.classes))
    faces = make_synthetic_faces(min(s.classes, n), per_class, 0, img_size=s.img)
    images, labels = faces.train_images[:n], faces.train_labels[:n]
    if s.method == "triplet":
        from data.samplers import ClassBalancedBatchSampler

        per = 8 if s.batch % 8 == 0 and s.batch >= 16 else 2
        sampler = ClassBalancedBatchSampler(labels.tolist(), s.batch // per, per, seed=0)
        return TensorBatches(images, labels, s.batch, device=device, batch_sampler=sampler)
    return TensorBatches(images, labels, s.batch, shuffle=True, device=device)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def interleaved(fns, repeats, device) -> list:
    """The fastest of ``repeats`` timings of each function, timed in turn (one
    of each, then again), after a warm-up call each: a slow spell of a shared
    machine then hits every measurement alike instead of one of them."""
    for fn in fns:
        fn()
    sync(device)
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            sync(device)
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def measure(s: Setting, args, device) -> dict:
    from utils.engine.distributed import DistInfo
    from utils.engine.loop import FitConfig, train_one_epoch
    from utils.engine.precision import amp_dtype, autocast, prepare

    torch.manual_seed(0)
    method, optimizer = build(s, device)
    trained = prepare(method, device, DistInfo(), args.compile, args.channels_last)
    dtype = amp_dtype(device, args.amp)
    loader = data(s, args.steps, device)
    inputs, targets = method.unpack(next(iter(loader)), device)

    with torch.no_grad():
        out = method.network(inputs)
    out = out[-1] if isinstance(out, list) else out
    # the outputs summed with fixed random signs: a plain sum has a zero gradient
    # behind the final BatchNorm of DCDH's and OPQN's networks, and the denormal
    # numbers that backward then produces make CPUs far slower than real training
    signs = torch.randint(0, 2, out.shape, generator=torch.Generator().manual_seed(1)).to(
        device, torch.float32) * 2 - 1

    def bare():
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            out = method.network(inputs)
        out = out[-1] if isinstance(out, list) else out
        (out.float() * signs).sum().backward()
        optimizer.step()

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            loss = trained(inputs, targets)
        loss.backward()
        optimizer.step()

    config = FitConfig(1, device, None, last_path="unused", amp=args.amp, progress=False)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None

    def epoch():
        train_one_epoch(trained, method, optimizer, scaler, loader, config, 0, dtype)

    method.train()
    bare_s, step_s, epoch_total = interleaved([bare, step, epoch], args.repeat, device)
    epoch_s = epoch_total / len(loader)
    return {"name": s.name, "device": str(device), "batch": s.batch, "setting": s.describe(),
            "bare_images_per_s": s.batch / bare_s, "step_images_per_s": s.batch / step_s,
            "epoch_images_per_s": s.batch / epoch_s, "step_over_bare": step_s / bare_s,
            "epoch_over_bare": epoch_s / bare_s, "amp": args.amp,
            "channels_last": args.channels_last, "compile": args.compile}


def get_args_parser():
    p = ArgumentParser(description=__doc__)
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--steps", type=positive_int, default=3, help="batches of the timed epoch")
    p.add_argument("--repeat", type=positive_int, default=3,
                   help="timings of each measurement, the fastest kept (default 3)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (several: measured on each)",
                   nargs="+")
    add_speed_args(p)
    p.add_argument("--tiny", action="store_true", help="a few items per batch (for tests)")
    p.add_argument("--json", help='write {"settings": [{"name", "device", "batch", ...}]}')
    return p


def main(args):
    rows = []
    print(f"{platform.platform()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"epoch of {args.steps} batches, fastest of {args.repeat}; amp {args.amp}, channels-last {args.channels_last}, "
          f"compile {args.compile}")
    print(f"{'setting':<18} {'device':<7} {'batch':>5} {'bare img/s':>11} {'step img/s':>11} "
          f"{'epoch img/s':>12} {'step/bare':>9} {'epoch/bare':>10}")
    for name in args.settings:
        s = tiny(SETTINGS[name]) if args.tiny else SETTINGS[name]
        for device in (args.device if isinstance(args.device, list) else [args.device]):
            row = measure(s, args, torch.device(device))
            rows.append(row)
            print(f"{row['name']:<18} {row['device']:<7} {row['batch']:>5} "
                  f"{row['bare_images_per_s']:>11.1f} {row['step_images_per_s']:>11.1f} "
                  f"{row['epoch_images_per_s']:>12.1f} {row['step_over_bare']:>9.3f} "
                  f"{row['epoch_over_bare']:>10.3f}", flush=True)
    write_json(args.json, {"settings": rows})
    return rows


if __name__ == "__main__":
    main(get_args_parser().parse_args())
