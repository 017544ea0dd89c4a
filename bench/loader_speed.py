"""What the input pipeline costs against what the network costs, per preset.

For each transform preset, on the same JPEG files (written here: smooth
colour fields with noise, 500x375 like the CUB and Dogs photos, at
--quality), in one run:

1. **uncached**: the published path, one image at a time in this process
   (decode, RGB, the preset's PIL or tensor pipeline), on one thread: images
   per second per core;
2. **cached**: the decoded cache (data/cache.py): the head ran once (its time
   reported as ``decode_once_s``), then batches replay the crop, flip and
   normalisation, on one thread: images per second per core;
3. **bare network**: the preset's network, a training step (forward, a plain
   loss, backward, SGD) on a batch already in memory, with every thread
   (denormal numbers flushed to zero on the CPU for this and the next timing:
   a fresh network's backward produces them, and they cost a CPU far more
   than the arithmetic);
4. **cached epoch**: the same training steps fed by the cached batches:
   ``cached_epoch_over_bare`` is its time over the bare network's (1.0: the
   input pipeline costs nothing).

Each figure is the fastest of --repeat timings taken in turn.  How many cores
keep a network fed uncached: ``bare_network_images_per_s /
uncached_images_per_s``.

Run from the repository root:
  python3 -m bench.loader_speed [--presets dcdh triplet ...] [--images 64] [--device cuda]
                                [--json OUT] [--tiny]
"""

from __future__ import annotations

import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.timing import write_json
from utils.cli import ArgumentParser, int_between, positive_int


@dataclass(frozen=True)
class Preset:
    """A preset at the image side its published network reads, and that network."""
    name: str  # the row's name
    preset: str  # data/transforms.py preset
    img_size: int
    network: str  # models registry name
    bits: int = 48


PRESETS = {
    "dcdh": Preset("dcdh", "dcdh", 112, "sphere20"),  # DCDH on VGGFace2
    "opqn": Preset("opqn", "opqn", 112, "resnet20_pq"),  # OPQN on VGGFace2
    "opqn_small": Preset("opqn_small", "opqn_small", 32, "resnet20_pq"),  # OPQN 32-px folders
    "triplet": Preset("triplet", "triplet", 224, "hash_resnet18", 64),  # CUB, Stanford Dogs
}


def write_images(folder: Path, n: int, size=(500, 375), quality: int = 90) -> list:
    """``n`` JPEG files: smooth colour fields with a little noise (a photo's
    decoding cost, unlike pure noise)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    w, h = size
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    items = []
    for i in range(n):
        a, b, c = rng.uniform(0, 6, 3)
        field = np.stack([np.sin(a * x + b * y + c * k) for k in range(3)], -1) * 90 + 128
        image = np.clip(field + rng.normal(0, 6, field.shape), 0, 255).astype(np.uint8)
        name = f"img{i:04d}.jpg"
        Image.fromarray(image).save(folder / name, quality=quality)
        items.append((name, i % 8))
    return items


def network(p: Preset, device):
    from models import create_network

    if p.network == "linear":  # --tiny: the code path, not a measurement
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(
            3 * p.img_size * p.img_size, p.bits)).to(device).train()
    if p.network == "hash_resnet18":
        net = create_network(p.network, p.bits)
    elif p.network == "resnet20_pq":  # the last feature map is 7x7 at 112 px, 4x4 at 32
        net = create_network(p.network, 20, 512, 512, 7 if p.img_size == 112 else 4)
    else:
        net = create_network(p.network, p.bits)
    return net.to(device).train()


def fastest_of(fn, repeat: int, device) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def one_thread(fn):
    """Run ``fn`` on one torch thread (a loader worker's share: one core)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(threads)


def measure(p: Preset, folder: Path, items: list, batch: int, repeat: int, device) -> dict:
    from data.cache import CachedSplit, build_store, split_preset
    from data.fine_grained import ListedImages
    from data.transforms import folder_transform

    transform = folder_transform(p.preset, p.img_size, train=True)
    dataset = ListedImages(str(folder), items, transform)
    n = len(items)
    torch.manual_seed(0)

    def uncached():
        for i in range(n):
            dataset[i]

    head, tail = split_preset(transform)
    start = time.perf_counter()
    store, labels = one_thread(lambda: build_store(dataset, head, "memory", workers=0,
                                                   progress=False))
    decode_once = time.perf_counter() - start
    cached = CachedSplit(store, labels, tail)
    batches = [list(range(s, min(s + batch, n))) for s in range(0, n, batch)]

    def replay():
        for index in batches:
            cached.batch(index, device)

    uncached_s = one_thread(lambda: fastest_of(uncached, repeat, torch.device("cpu")))
    cached_s = one_thread(lambda: fastest_of(replay, repeat, device))

    net = network(p, device)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-4)
    x = cached.batch(batches[0], device)
    signs = None

    def step(inputs):
        nonlocal signs
        optimizer.zero_grad(set_to_none=True)
        out = net(inputs)
        out = out[-1] if isinstance(out, (list, tuple)) else out
        if signs is None or signs.shape != out.shape:  # a plain sum vanishes behind a BatchNorm
            signs = torch.randint(0, 2, out.shape, generator=torch.Generator().manual_seed(1)
                                  ).to(device, out.dtype) * 2 - 1
        (out * signs).sum().backward()
        optimizer.step()

    full = [b for b in batches if len(b) == batch] or batches[:1]

    def bare():
        for _ in full:
            step(x)

    def epoch():
        for index in full:
            step(cached.batch(index, device))

    # denormal numbers in a fresh network's backward slow a CPU ten-fold and more;
    # flushed here for both timings alike (what is compared is the input pipeline)
    flushed = torch.set_flush_denormal(True)
    try:
        bare_s = fastest_of(bare, repeat, device)
        epoch_s = fastest_of(epoch, repeat, device)
    finally:
        if flushed:
            torch.set_flush_denormal(False)
    images = sum(len(b) for b in full)
    return {"preset": p.name, "img_size": p.img_size, "network": p.network, "device": str(device),
            "images": n, "batch": batch,
            "uncached_images_per_s": n / uncached_s, "cached_images_per_s": n / cached_s,
            "cached_over_uncached": uncached_s / cached_s, "decode_once_s": decode_once,
            "bare_network_images_per_s": images / bare_s,
            "cached_epoch_images_per_s": images / epoch_s, "cached_epoch_over_bare": epoch_s / bare_s,
            "cores_to_feed_uncached": (images / bare_s) / (n / uncached_s)}


def get_args_parser():
    p = ArgumentParser(description=__doc__)
    p.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS),
                   help="which presets (each with its published network)")
    p.add_argument("--images", type=int_between(1, 100_000, "images"), default=64,
                   help="JPEG files per preset")
    p.add_argument("--batch", type=positive_int, default=32, help="batch of the replay and the network")
    p.add_argument("--quality", type=int_between(1, 100, "quality"), default=90,
                   help="JPEG quality of the written files")
    p.add_argument("--repeat", type=positive_int, default=3,
                   help="timings of each measurement, the fastest kept")
    p.add_argument("--device", default="cpu", help="where the cached batches and the network go")
    p.add_argument("--tiny", action="store_true",
                   help="8 small images at 32 px, a one-layer network (for the tests; not a measurement)")
    p.add_argument("--json", metavar="OUT", help='write {"presets": [{"preset", ...}]}')
    return p


def main(args):
    from dataclasses import replace

    device = torch.device(args.device)
    rows = []
    n, size, batch = (8, (48, 40), 4) if args.tiny else (args.images, (500, 375), args.batch)
    print(f"{platform.platform()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"{n} JPEGs of {size[0]}x{size[1]} per preset, batch {batch}, fastest of {args.repeat}; "
          f"images/s per core (one thread) uncached and cached, the network with every thread")
    print(f"{'preset':<11} {'uncached/core':>13} {'cached/core':>12} {'ratio':>7} "
          f"{'bare net':>9} {'cached epoch/bare':>17}")
    with tempfile.TemporaryDirectory() as tmp:
        items = write_images(Path(tmp), n, size, args.quality)
        for name in args.presets:
            p = PRESETS[name]
            if args.tiny:  # the same code paths at 32 px, a one-layer network
                p = replace(p, img_size=32, network="linear")
            row = measure(p, Path(tmp), items, batch, args.repeat, device)
            rows.append(row)
            print(f"{row['preset']:<11} {row['uncached_images_per_s']:>13.1f} "
                  f"{row['cached_images_per_s']:>12.1f} {row['cached_over_uncached']:>7.1f} "
                  f"{row['bare_network_images_per_s']:>9.1f} "
                  f"{row['cached_epoch_over_bare']:>17.3f}", flush=True)
    write_json(args.json, {"presets": rows})
    return rows


if __name__ == "__main__":
    main(get_args_parser().parse_args())
