"""Serve stored codes through an index.

  python3 index.py build --codes codes.npz --out db.faiss [--type flat|hash|ivf] [--nlist N]
  python3 index.py search --index db.faiss --codes codes.npz --topk 10 [--json OUT] [--radius R]
  python3 index.py search --index db.faiss --checkpoint m.tar --dataset facescrub   (any method)

build indexes the file's database codes (a faiss binary index), or OPQN's
stored features (type pq: the codeword index and mlp, ranked by the PQ
score), and writes the index file and a sidecar INDEX.json (code length,
index type, item count, the codes file, and each item's dataset index and
image path when the codes file holds them).  search ranks the index against
the file's queries (or a checkpoint's encoding of a dataset's test split or
of image files) in the project's order: Hamming distance ascending (PQ:
score descending), ties by database index ascending."""

import os
import sys

# faiss's OpenMP threads otherwise spin between calls (as in evaluation.py)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402

import utils.cli.interrupts  # noqa: E402,F401  (first: Ctrl-C while torch loads)
from pipeline.cli import add_synthetic_args, data_options  # noqa: E402
from utils.cli import (ArgumentParser, UsageError, code_length,  # noqa: E402
                       image_side, non_negative_int, positive_int, run_script, thread_count,
                       write_json)
from utils.engine.files import Output, claim_outputs  # noqa: E402
from utils.retrieval import faiss_index as fi  # noqa: E402
from utils.retrieval import serving  # noqa: E402

QUERIES_SHOWN = 5


def _threads_arg(parser, default):
    parser.add_argument("--threads", type=thread_count, default=default,
                        help="faiss (OpenMP) threads (default: every core)")


def get_args_parser():
    p = ArgumentParser(description=__doc__)
    _threads_arg(p, None)
    sub = p.add_subparsers(dest="command", required=True, metavar="{build,search}")
    b = sub.add_parser("build", help="index the database of a stored-codes file",
                       description="Index the database of a stored-codes (or -features) file.")
    b.add_argument("--codes", required=True, metavar="FILE.npz",
                   help="stored codes (or OPQN's stored features)")
    b.add_argument("--out", required=True, metavar="INDEX",
                   help="index file to write (and INDEX.json beside it)")
    b.add_argument("--type", choices=[*fi.KINDS, "pq"],
                   help="flat: exact; hash: multi-index hashing; ivf: inverted lists; pq: OPQN's "
                        "features by PQ score (default: flat for codes, pq for features)")
    b.add_argument("--nlist", type=positive_int,
                   help="ivf: number of lists (default about sqrt(N))")
    b.add_argument("--nprobe", type=positive_int,
                   help="ivf: lists visited per query, stored in the index (default nlist/16)")
    b.add_argument("--hash-bits", type=positive_int,
                   help="hash: bits per hashed substring (default: substrings of <= 16 bits "
                        "covering the code's whole bytes)")
    b.add_argument("--nflip", type=non_negative_int, default=1,
                   help="hash: bit flips probed per substring, stored in the index")
    _threads_arg(b, argparse.SUPPRESS)
    s = sub.add_parser("search", help="search an index with queries",
                       description="Search an index with the queries of a stored-codes file or "
                                   "of a checkpoint.")
    s.add_argument("--index", required=True, metavar="INDEX", help="file written by index.py build")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--codes", metavar="FILE.npz", help="stored codes; its queries are searched")
    src.add_argument("--checkpoint", metavar="FILE",
                     help="encode queries through this checkpoint (any method): the --dataset's "
                          "test split, or the image files of --images")
    s.add_argument("--method", help="with --checkpoint: refuse a file of another method")
    s.add_argument("--dataset", default="synthetic", help="with --checkpoint: the dataset")
    s.add_argument("--images", metavar="DIR", help="with --checkpoint: a folder of query images")
    s.add_argument("--bits", type=code_length,
                   help="with --checkpoint: the code length, checked against the file")
    s.add_argument("--data-root", help="with --checkpoint: the dataset folder")
    s.add_argument("--img-size", type=image_side, help="with --checkpoint: input size")
    add_synthetic_args(s)
    s.add_argument("--topk", type=positive_int,
                   help=f"results per query (default {serving.DEFAULT_TOPK}; with --radius: "
                        f"at most this many)")
    s.add_argument("--radius", type=non_negative_int,
                   help="every item within this Hamming distance (inclusive) instead of the top k")
    s.add_argument("--json", metavar="OUT",
                   help='write {"indices": [[...] per query], "distances" (PQ: "scores"): [[...]]}')
    s.add_argument("--all", action="store_true",
                   help=f"print every query (default: the first {QUERIES_SHOWN})")
    s.add_argument("--nprobe", type=positive_int, help="ivf: lists visited per query")
    s.add_argument("--nflip", type=non_negative_int, help="hash: bit flips probed per substring")
    _threads_arg(s, argparse.SUPPRESS)
    return p


def build(args):
    claim_outputs([Output(args.out, "--out"), Output(serving.sidecar_path(args.out),
                                                     "--out (its sidecar)")],
                  inputs=[(args.codes, "--codes")])
    meta = serving.build(args.codes, args.out, args.type, args.nlist, args.hash_bits, args.nprobe,
                         args.nflip)
    size, n = os.path.getsize(args.out), meta["num_items"]
    print(f"{args.out}: {meta['type']} index of {n} items, {meta['num_bits']} bits, "
          f"{meta['bytes_per_item']} bytes per item (codes), file {size} bytes"
          + (f" ({size / n:.1f} per item)" if n else ""))
    return meta


def search(args):
    import numpy as np

    if args.json:
        claim_outputs([Output(args.json, "--json")],
                      inputs=[(args.index, "--index"), (serving.sidecar_path(args.index), "--index"),
                              (args.codes, "--codes"), (args.checkpoint, "--checkpoint")])
    index, meta, indices, paths = serving.load_served_index(args.index)
    pq = meta["type"] == "pq"
    if args.checkpoint:
        from pipeline.evaluate import encode_queries

        _, values, source = encode_queries(args.checkpoint, data_options(args), args.images,
                                           args.method, bits=args.bits)
        binary = values.dtype.is_floating_point is False
        if binary == pq:
            what = "binary codes" if binary else "PQ features"
            raise UsageError(f"{args.checkpoint} gives {what}; {args.index} is a {meta['type']} "
                             f"index: build one from this method's stored codes")
        queries, num_bits = (np.packbits(values.numpy() > 0, axis=1), values.shape[1]) \
            if binary else (values, None)
    elif pq:
        from utils.retrieval.codes_io import load_npz

        queries, source = load_npz(args.codes, required=("query_features",))["query_features"], \
            f"the query features of {args.codes}"
    else:
        _, queries, num_bits = serving.packed(args.codes, "query")
        source = f"the query codes of {args.codes}"
    if pq:
        result = serving.search_features(index, meta, queries, args.topk, args.radius, source)
    else:
        try:
            fi.set_search_params(index, nprobe=args.nprobe, nflip=args.nflip)
        except ValueError as exc:
            raise UsageError(f"{args.index}: {exc}") from None
        result = serving.search_codes(index, meta, queries, num_bits, args.topk, args.radius,
                                      source)
    print_results(result, meta, indices, paths, args.all, args.topk, args.radius)
    if args.json:
        write_json(args.json, result)
    return result


def print_results(result: dict, meta: dict, indices, paths, show_all: bool, topk, radius) -> None:
    values = result.get("distances", result.get("scores"))
    what = "distance" if "distances" in result else "PQ score"
    num_queries = len(result["indices"])
    shown = num_queries if show_all else min(num_queries, QUERIES_SHOWN)
    ranked = (f"within Hamming distance {radius} (inclusive)" if radius is not None
              else f"top {topk or serving.DEFAULT_TOPK}")
    print(f"{num_queries} queries, {ranked}, {meta['type']} index {meta['index_file']} "
          f"({meta['num_items']} items, {meta['num_bits']} bits)"
          + (f"; the first {shown} shown (--all: every query)" if shown < num_queries else ""))
    for q in range(shown):
        print(f"query {q}: {len(result['indices'][q])} result(s)")
        for rank, (row, value) in enumerate(zip(result["indices"][q], values[q]), 1):
            line = f"  {rank:>4}. item {row:>8}  {what} {value:>3}"
            if indices is not None:
                line += f"  dataset index {int(indices[row])}"
            if paths is not None:
                line += f"  {paths[row]}"
            print(line)


def main(args):
    if getattr(args, "threads", None):
        fi.require_faiss().omp_set_num_threads(args.threads)
    return {"build": build, "search": search}[args.command](args)


if __name__ == "__main__":
    sys.exit(run_script(main, get_args_parser().parse_args()))
