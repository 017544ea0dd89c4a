"""Serve stored codes through a faiss binary index.

  python3 index.py build --codes codes.npz --out db.faiss [--type flat|hash|ivf] [--nlist N]
  python3 index.py search --index db.faiss --codes codes.npz --topk 10 [--json OUT] [--radius R]

build indexes the file's database codes and writes the faiss file and a
sidecar db.faiss.json (code length, index type, item count, the codes file,
and each item's dataset index and image path when the codes file holds them).
search ranks the index against the file's query codes in the project's
order: Hamming distance ascending, ties by database index ascending."""

import os
import sys

# faiss's OpenMP threads otherwise spin between calls (as in evaluation.py)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from utils.cli import (ArgumentParser, UsageError, check_writable_file,  # noqa: E402
                       non_negative_int, positive_int, run_script, write_json)
from utils.retrieval import faiss_index as fi  # noqa: E402
from utils.retrieval.codes_io import db_metadata, load_npz, packed_codes, save_npz  # noqa: E402

DEFAULT_TOPK = 10
QUERIES_SHOWN = 5
# up to this many items, dataset indices and paths go into the JSON sidecar;
# beyond, into an .npz beside it
INLINE_MAX_ITEMS = 10_000


def _threads_arg(parser, default):
    parser.add_argument("--threads", type=positive_int, default=default,
                        help="faiss (OpenMP) threads (default: every core)")


def get_args_parser():
    p = ArgumentParser(description=__doc__)
    _threads_arg(p, None)
    sub = p.add_subparsers(dest="command", required=True, metavar="{build,search}")

    b = sub.add_parser("build", help="index the database codes of a stored-codes file",
                       description="Index the database codes of a stored-codes file.")
    b.add_argument("--codes", required=True, metavar="FILE.npz", help="stored codes")
    b.add_argument("--out", required=True, metavar="INDEX",
                   help="faiss index file to write (and INDEX.json beside it)")
    b.add_argument("--type", default="flat", choices=fi.KINDS,
                   help="flat: exact; hash: multi-index hashing; ivf: inverted lists (default flat)")
    b.add_argument("--nlist", type=positive_int,
                   help="ivf: number of lists (default about sqrt(N))")
    b.add_argument("--nprobe", type=positive_int,
                   help="ivf: lists visited per query, stored in the index (default nlist/16)")
    b.add_argument("--hash-bits", type=positive_int,
                   help="hash: bits per hashed substring (default: substrings of <= 16 bits "
                        "covering the code's whole bytes)")
    b.add_argument("--nflip", type=non_negative_int, default=1,
                   help="hash: bit flips probed per substring, stored in the index (default 1)")
    _threads_arg(b, argparse.SUPPRESS)

    s = sub.add_parser("search", help="search an index with the query codes of a stored-codes file",
                       description="Search an index with the query codes of a stored-codes file.")
    s.add_argument("--index", required=True, metavar="INDEX", help="file written by index.py build")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--codes", metavar="FILE.npz", help="stored codes; its query_codes are the queries")
    src.add_argument("--checkpoint", metavar="FILE",
                     help="encode queries through this checkpoint (--method): the --dataset's "
                          "test split, or the image files of --images")
    s.add_argument("--method", choices=["dcdh", "triplet"], default="dcdh",
                   help="with --checkpoint: the method it was trained with")
    s.add_argument("--dataset", default="synthetic", help="with --checkpoint: the dataset")
    s.add_argument("--images", metavar="DIR", help="with --checkpoint: a folder of query images")
    s.add_argument("--bits", type=positive_int, help="with --checkpoint: the code length "
                                                     "(default: read from the checkpoint)")
    s.add_argument("--data-root", help="with --checkpoint: the dataset folder")
    s.add_argument("--img-size", type=positive_int, help="with --checkpoint: input size")
    s.add_argument("--topk", type=positive_int,
                   help=f"results per query (default {DEFAULT_TOPK}; with --radius: at most this many)")
    s.add_argument("--radius", type=non_negative_int,
                   help="every item within this Hamming distance (inclusive) instead of the top k")
    s.add_argument("--json", metavar="OUT",
                   help='write {"indices": [[...] per query], "distances": [[...] per query]}')
    s.add_argument("--all", action="store_true",
                   help=f"print every query (default: the first {QUERIES_SHOWN})")
    s.add_argument("--nprobe", type=positive_int, help="ivf: lists visited per query")
    s.add_argument("--nflip", type=non_negative_int, help="hash: bit flips probed per substring")
    _threads_arg(s, argparse.SUPPRESS)
    return p


# ---------------------------------------------------------------------------
# The sidecar: what the faiss file does not say
# ---------------------------------------------------------------------------

def sidecar_path(index_path) -> Path:
    return Path(str(index_path) + ".json")


def ids_path(index_path) -> Path:
    return Path(str(index_path) + ".ids.npz")


def write_sidecar(index_path, meta: dict, indices, paths) -> None:
    """INDEX.json, with the items' dataset indices (left out when they are the
    row numbers) and paths inline for small databases, else in INDEX.ids.npz."""
    meta = dict(meta)
    if indices is not None and np.array_equal(indices, np.arange(len(indices))):
        indices = None
    if indices is not None or paths is not None:
        if meta["num_items"] <= INLINE_MAX_ITEMS:
            if indices is not None:
                meta["db_indices"] = [int(i) for i in indices]
            if paths is not None:
                meta["db_paths"] = [str(p) for p in paths]
        else:
            arrays = {"db_indices": indices, "db_paths": paths}
            save_npz(ids_path(index_path), **{k: v for k, v in arrays.items() if v is not None})
            meta["ids_file"] = ids_path(index_path).name
    write_json(sidecar_path(index_path), meta)


def read_sidecar(index_path):
    """(meta, dataset indices or None, paths or None) of an index, or UsageError."""
    path = sidecar_path(index_path)
    if not path.is_file():
        raise UsageError(f"no sidecar {path} beside {index_path}; index.py build writes both")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"cannot read {path} as JSON: {exc}") from None
    missing = [key for key in ("num_bits", "type", "num_items")
               if not isinstance(meta, dict) or key not in meta]
    if missing:
        raise UsageError(f"{path} lacks {', '.join(missing)}; rebuild with index.py build")
    indices, paths = meta.pop("db_indices", None), meta.pop("db_paths", None)
    if "ids_file" in meta:
        z = load_npz(path.parent / meta["ids_file"], required=())
        indices, paths = z.get("db_indices"), z.get("db_paths")
    for name, values in (("db_indices", indices), ("db_paths", paths)):
        if values is not None and len(values) != meta["num_items"]:
            raise UsageError(f"{path}: {len(values)} {name} for {meta['num_items']} items; "
                             f"rebuild with index.py build")
    return meta, indices, paths


def load_served_index(index_path):
    """(faiss index, meta, dataset indices or None, paths or None), checked
    against each other."""
    index = fi.load_index(index_path)
    meta, indices, paths = read_sidecar(index_path)
    kind = fi.index_kind(index)
    if (meta["num_items"] != index.ntotal or meta["type"] != kind
            or 8 * fi.code_size(meta["num_bits"]) != index.d):
        raise UsageError(f"{sidecar_path(index_path)} does not describe {index_path} "
                         f"(it says {meta['num_items']} items, {meta['type']}, "
                         f"{meta['num_bits']} bits; the index holds {index.ntotal} items, "
                         f"{kind}, d={index.d}); rebuild with index.py build")
    meta["index_file"] = str(index_path)
    return index, meta, indices, paths


# ---------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------

def _packed(codes_path, which):
    z = load_npz(codes_path, required=())
    try:
        packed, num_bits = packed_codes(z, which)
    except ValueError as exc:
        raise UsageError(f"{codes_path}: {exc}") from None
    return z, packed, num_bits


def build(args):
    check_writable_file(args.out, "--out")
    check_writable_file(sidecar_path(args.out), "--out (its sidecar)")
    z, packed, num_bits = _packed(args.codes, "db")
    indices, paths = db_metadata(z)
    for name, values in (("db_indices", indices), ("db_paths", paths)):
        if values is not None and len(values) != len(packed):
            raise UsageError(f"{args.codes}: {len(values)} {name} for {len(packed)} database codes")
    try:
        index = fi.build_binary_index(packed, num_bits, kind=args.type, nlist=args.nlist,
                                      hash_bits=args.hash_bits, nprobe=args.nprobe,
                                      nflip=args.nflip)
    except ValueError as exc:
        raise UsageError(f"--type {args.type}: {exc}") from None
    fi.save_index(index, args.out)
    meta = {"num_bits": num_bits, "type": args.type, "faiss_class": type(index).__name__,
            "num_items": int(index.ntotal), "bytes_per_item": fi.code_size(num_bits),
            "codes_file": os.path.abspath(args.codes)}
    if args.type == "ivf":
        meta.update(nlist=int(index.nlist), nprobe=int(index.nprobe))
    elif args.type == "hash":
        nhash, b = fi.hash_layout(num_bits, args.hash_bits)
        meta.update(nhash=nhash, hash_bits=b, nflip=int(index.nflip))
    write_sidecar(args.out, meta, indices, paths)
    size = os.path.getsize(args.out)
    n = meta["num_items"]
    print(f"{args.out}: {args.type} index of {n} items, {num_bits} bits, "
          f"{meta['bytes_per_item']} bytes per item (codes), file {size} bytes"
          + (f" ({size / n:.1f} per item)" if n else ""))
    return meta


# ---------------------------------------------------------------------------
# search
# ---------------------------------------------------------------------------

def search_codes(index, meta: dict, packed_queries, num_bits: int, topk=None, radius=None,
                 source: str = "the queries") -> dict:
    """{"indices": [[...] per query], "distances": [[...] per query]} of packed
    query codes: the top ``topk`` in the project order, or with ``radius``
    every item within that distance (at most ``topk`` of them when given).
    Indices are database rows (faiss ids); entries the index cannot fill are
    left out.  Whatever produces the query codes (a file, a network) ends here."""
    if num_bits != meta["num_bits"]:
        raise UsageError(f"{source} are {num_bits}-bit codes but {meta['index_file']} holds "
                         f"{meta['num_bits']}-bit codes; use codes of the same length")
    if radius is None:
        dist, idx = fi.search_exact(index, packed_queries, topk or DEFAULT_TOPK)
        keep = idx >= 0
        indices = [row[m].tolist() for row, m in zip(idx, keep)]
        distances = [row[m].tolist() for row, m in zip(dist, keep)]
    else:
        dists, idxs = fi.range_search(index, packed_queries, radius)
        indices = [row[:topk].tolist() for row in idxs]
        distances = [row[:topk].tolist() for row in dists]
    return {"indices": indices, "distances": distances}


def print_results(result: dict, meta: dict, indices, paths, show_all: bool, topk, radius) -> None:
    num_queries = len(result["indices"])
    shown = num_queries if show_all else min(num_queries, QUERIES_SHOWN)
    what = (f"within Hamming distance {radius} (inclusive)" if radius is not None
            else f"top {topk or DEFAULT_TOPK}")
    print(f"{num_queries} queries, {what}, {meta['type']} index {meta['index_file']} "
          f"({meta['num_items']} items, {meta['num_bits']} bits)"
          + (f"; the first {shown} shown (--all: every query)" if shown < num_queries else ""))
    for q in range(shown):
        rows, dists = result["indices"][q], result["distances"][q]
        print(f"query {q}: {len(rows)} result(s)")
        for rank, (row, dist) in enumerate(zip(rows, dists), 1):
            line = f"  {rank:>4}. item {row:>8}  distance {dist:>3}"
            if indices is not None:
                line += f"  dataset index {int(indices[row])}"
            if paths is not None:
                line += f"  {paths[row]}"
            print(line)


def search(args):
    if args.json:
        check_writable_file(args.json, "--json")
    index, meta, indices, paths = load_served_index(args.index)
    if args.checkpoint:
        packed, num_bits, source = queries_through_checkpoint(args)
    else:
        _, packed, num_bits = _packed(args.codes, "query")
        source = f"the query codes of {args.codes}"
    try:
        fi.set_search_params(index, nprobe=args.nprobe, nflip=args.nflip)
    except ValueError as exc:
        raise UsageError(f"{args.index}: {exc}") from None
    result = search_codes(index, meta, packed, num_bits, args.topk, args.radius, source=source)
    print_results(result, meta, indices, paths, args.all, args.topk, args.radius)
    if args.json:
        write_json(args.json, result)
    return result


def queries_through_checkpoint(args):
    """(packed codes, bits, description) of query images encoded by a checkpoint."""
    import numpy as np
    import torch

    from data import DataRequest, build_splits
    from utils.cli.device import resolve_device
    from utils.engine.checkpoint import load_checkpoint

    device = resolve_device("auto")
    state = load_checkpoint(args.checkpoint)
    if args.method == "dcdh":
        from methods.dcdh import DCDH, recognise_backbone

        arch, bits = recognise_backbone(state)
        if arch is None:
            raise UsageError(f"{args.checkpoint} is not a DCDH checkpoint (no known backbone)")
        bits = args.bits or bits
        method = DCDH(arch, bits, 1)
        method.load_backbone(state, args.checkpoint)
        preset = "dcdh"
    else:
        from methods.triplet import TripletHashing, snapshot_facts

        state = state.get("model", state)
        arch, bits, head = snapshot_facts(state)
        if arch is None:
            raise UsageError(f"{args.checkpoint} is not a HashModel snapshot")
        bits = args.bits or bits
        method = TripletHashing(bits, arch=arch, head=head)
        method.load_official_state(state, args.checkpoint)
        preset = "triplet"
    method = method.to(device).eval()
    if args.images:
        from PIL import Image

        from data.transforms import folder_transform

        files = sorted(p for p in Path(args.images).iterdir()
                       if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".webp"))
        if not files:
            raise UsageError(f"--images {args.images}: no image files")
        size = args.img_size or (224 if args.method == "triplet" else 112)
        transform = folder_transform(preset, size, train=False)
        batch = torch.stack([transform(Image.open(f).convert("RGB")) for f in files])
        with torch.inference_mode():
            codes = method.codes(method.embed(batch.to(device)).float())
        source = f"{len(files)} images of {args.images} through {args.checkpoint}"
    else:
        from data import make_loaders

        from utils.cli import synthetic_options

        options = synthetic_options(args, state) if args.dataset == "synthetic" else {}
        splits = build_splits(args.dataset, DataRequest(root=args.data_root, img_size=args.img_size,
                                                        preset=preset, augment=False,
                                                        options=options))
        loaders = make_loaders(splits, 256, device, train=False)
        codes = method.encode(loaders.queries, device, progress=False).values
        source = f"the {args.dataset} test split through {args.checkpoint}"
    bits_array = (codes.cpu().numpy() > 0)
    return np.packbits(bits_array, axis=1), int(codes.shape[1]), source


COMMANDS = {"build": build, "search": search}


def main(args):
    if getattr(args, "threads", None):
        fi.require_faiss().omp_set_num_threads(args.threads)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(run_script(main, get_args_parser().parse_args()))
