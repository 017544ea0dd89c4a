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
from dataclasses import dataclass

import torch

from bench.timing import write_json
from pipeline.cli import add_speed_args, speed_options
from utils.cli import ArgumentParser, positive_int


@dataclass(frozen=True)
class Setting:
    """One shape of one registered method (``Method.speed_settings``)."""
    name: str
    method: str
    config: dict
    facts: object  # data.DataFacts
    batch: int

    def describe(self) -> str:
        f = self.facts
        shape = f"{f.input_dim}-d features" if f.input_dim else f"3x{f.img_size}x{f.img_size}"
        return f"{self.method} {shape}, batch {self.batch}, {self.config.get('bits')} bits"


def settings() -> dict:
    """Every registered method's benchmark shapes, by name."""
    from methods import method_class, method_names

    out = {}
    for method in method_names():
        for name, config, facts, batch in method_class(method).speed_settings():
            out[name] = Setting(name, method, config, facts, batch)
    return out


def tiny(s: Setting) -> Setting:
    """A few items of a few classes, for the tests: the same code paths at a
    fraction of the cost (images at 64 px at most)."""
    from dataclasses import replace

    facts = s.facts
    if facts.img_size and facts.img_size > 112:
        facts = replace(facts, img_size=64)
    return replace(s, facts=replace(facts, num_classes=4), batch=8)


def build(s: Setting, device):
    """(method, optimizer) of a setting, as a training run builds them."""
    from methods import method_class

    cls = method_class(s.method)
    config = cls.make_config("synthetic", s.facts, s.config)
    method = cls(config, s.facts)
    recipe = cls.make_recipe("synthetic", s.facts, config, {"batch": s.batch})
    optimizer, _ = method.to(device).configure_optimizers(recipe)
    return method, optimizer, recipe


def data(s: Setting, method, recipe, steps: int, device):
    """A training loader of built-in data of the setting's shape, ``steps``
    batches long, batched as the method trains (its sampler, where it has one)."""
    from data.loaders import TensorBatches

    n = s.batch * steps
    gen = torch.Generator().manual_seed(0)
    if s.facts.input_dim:
        x = torch.randn(n, s.facts.input_dim, generator=gen)
        labels = (torch.rand(n, s.facts.num_classes, generator=gen) < 0.2).float()
        return TensorBatches(x, labels, s.batch, shuffle=True, device=device)
    from data.synthetic import make_synthetic_faces

    classes = min(s.facts.num_classes, n)
    faces = make_synthetic_faces(classes, -(-n // classes), 0, img_size=s.facts.img_size)
    images, labels = faces.train_images[:n], faces.train_labels[:n]
    sampler = method.train_sampler(TensorBatches(images, labels, s.batch), recipe, 0, 0, 1)
    loader = TensorBatches(images, labels, s.batch, shuffle=sampler is None, device=device,
                           batch_sampler=sampler, indexed=method.indexed)
    if method.indexed:  # per-item state over these items (DPSH's and DSDH's code tables)
        from data.registry import Splits

        method.prepare(Splits(loader, loader, loader, classes, s.facts.img_size, in_memory=True),
                       None, 0)
    return loader


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


def code_layer(out):
    """The output the codes come from: a list's last (OPQN's features), a
    tuple's first (DDH's code layer, DDAH's attention-pass hash)."""
    if isinstance(out, tuple):
        return out[0]
    return out[-1] if isinstance(out, list) else out


def measure(s: Setting, args, device) -> dict:
    from utils.engine.distributed import DistInfo
    from utils.engine.files import RunFiles
    from utils.engine.loop import FitConfig, train_one_epoch
    from utils.engine.precision import amp_dtype, autocast, prepare

    torch.manual_seed(0)
    method, optimizer, recipe = build(s, device)
    speed = speed_options(args)
    trained = prepare(method, device, DistInfo(), speed)
    dtype = amp_dtype(device, args.amp)
    loader = data(s, method, recipe, args.steps, device)
    inputs, targets = method.unpack(next(iter(loader)), device)

    with torch.no_grad():
        out = code_layer(method.network(inputs))
    # the outputs summed with fixed random signs: a plain sum has a zero gradient
    # behind the final BatchNorm of DCDH's and OPQN's networks, and the denormal
    # numbers that backward then produces make CPUs far slower than real training
    signs = torch.randint(0, 2, out.shape, generator=torch.Generator().manual_seed(1)).to(
        device, torch.float32) * 2 - 1

    def bare():
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            out = code_layer(method.network(inputs))
        (out.float() * signs).sum().backward()
        optimizer.step()

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            loss = trained(inputs, targets)
        method.backward(loss, None)  # the method's own step (DDAH's extra gradient)
        optimizer.step()

    config = FitConfig(1, device, RunFiles(last="unused"), speed=speed, progress=False)
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
    names = list(settings())
    p.add_argument("--settings", nargs="+", default=names, choices=names,
                   help="which shapes (every registered method's)")
    p.add_argument("--steps", type=positive_int, default=3, help="batches of the timed epoch")
    p.add_argument("--repeat", type=positive_int, default=3,
                   help="timings of each measurement, the fastest kept (default 3)")
    p.add_argument("--device", default=["cpu"], nargs="+",
                   help="cpu, cuda, cuda:N (several: measured on each)")
    add_speed_args(p)
    p.add_argument("--tiny", action="store_true", help="a few items per batch (for tests)")
    p.add_argument("--json", metavar="OUT",
                   help='write {"settings": [{"name", "device", "batch", ...}]}')
    return p


def main(args):
    rows = []
    print(f"{platform.platform()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"epoch of {args.steps} batches, fastest of {args.repeat}; amp {args.amp}, channels-last {args.channels_last}, "
          f"compile {args.compile}")
    print(f"{'setting':<18} {'device':<7} {'batch':>5} {'bare img/s':>11} {'step img/s':>11} "
          f"{'epoch img/s':>12} {'step/bare':>9} {'epoch/bare':>10}")
    known = settings()
    for name in args.settings:
        s = tiny(known[name]) if args.tiny else known[name]
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
