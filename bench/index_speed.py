"""Serving speed and memory of faiss binary indexes against the project's
exact ranking, on the same synthetic codes.

For N database codes of L bits (class prototypes with random bit flips, as
bench/eval_speed.py makes them) and Q queries, it measures:

* the **baseline**: the project's exact top-k, ``utils.retrieval.metrics.
  hamming_distance`` on a chunk of queries, then ``torch.topk`` on the key
  distance * N + index (integer distances make that key unique, so the top k
  follow the project's tie rule exactly); ``hamming_ranking_stats`` is not
  used: it computes every metric, not a top-k;
* ``IndexBinaryFlat`` (exact), ``IndexBinaryMultiHash`` (multi-index
  hashing, for several ``nflip``) and ``IndexBinaryIVF`` (for several
  ``nprobe``): bytes per item of the written index, build time, queries per
  second of faiss's own search and of ``search_exact`` (the project's tie
  order, what ``index.py search`` runs), and recall@k against the baseline.

recall@k is the share of the baseline's top k found in the index's top k;
distance recall@k the share of the index's top k whose distance is at most
the baseline's k-th distance (an item that merely ties with the k-th is not
counted as missed).  Every ratio is against the baseline measured in the
same run.  Usage, from the repository root::

    python3 -m bench.index_speed                       # 1M x 48 bits, 1000 queries
    python3 -m bench.index_speed --db 100000 --queries 200 --json /tmp/index_speed.json
"""

import math
import os
import platform
import time

# as evaluation.py does: passive OpenMP waits, set before torch is imported
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.eval_speed import synthetic_codes  # noqa: E402
from bench.timing import write_json  # noqa: E402
from utils.cli import (ArgumentParser, code_length, fraction, non_negative_int, positive_int,  # noqa: E402
                       seed_int, thread_count)
from utils.retrieval import faiss_index as fi  # noqa: E402
from utils.retrieval.metrics import hamming_distance  # noqa: E402


def get_args_parser():
    p = ArgumentParser(description="Time faiss binary indexes against the project's "
                                            "exact Hamming top-k on the same codes.")
    p.add_argument("--db", type=positive_int, default=1_000_000, help="database codes (default 1M)")
    p.add_argument("--queries", type=positive_int, default=1000, help="queries (default 1000)")
    p.add_argument("--bits", type=code_length, default=48, help="code length (default 48)")
    p.add_argument("--classes", type=positive_int, default=530, help="classes (default 530)")
    p.add_argument("--flip-range", type=fraction, nargs=2, default=(0.05, 0.35),
                   metavar=("LOW", "HIGH"), help="per-item bit-flip probability range")
    p.add_argument("--topk", type=positive_int, default=10, help="k of the searches (default 10)")
    p.add_argument("--nlist", type=positive_int, help="IVF lists (default about sqrt(N))")
    p.add_argument("--nprobe", type=positive_int, nargs="+", default=[1, 8, 32],
                   help="IVF lists visited per query, one row each (default 1 8 32)")
    p.add_argument("--nflip", type=non_negative_int, nargs="+", default=[1, 2],
                   help="hash bit flips per substring, one row each (default 1 2)")
    p.add_argument("--chunk", type=positive_int, default=64,
                   help="queries per hamming_distance call of the baseline (default 64)")
    p.add_argument("--repeat", type=positive_int, default=1,
                   help="timed runs of each search; the best is reported (default 1)")
    p.add_argument("--threads", type=thread_count,
                   help="threads of torch and faiss (default: every core)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the synthetic codes")
    p.add_argument("--json", metavar="OUT", help="write every figure to this JSON file")
    return p


# ---------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------

def best_time(fn, repeat):
    """(result of the last call, best wall seconds over ``repeat`` calls)."""
    best, result = math.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return result, best


def project_topk(query_bits, db_bits, k, chunk):
    """The project's exact top k: (distances int64 [Q, k], indices int64 [Q, k])."""
    n = db_bits.shape[0]
    k = min(k, n)
    offsets = torch.arange(n, dtype=torch.int64)
    out_d, out_i = [], []
    for s in range(0, query_bits.shape[0], chunk):
        key = hamming_distance(query_bits[s:s + chunk], db_bits).long() * n + offsets
        values, idx = torch.topk(key, k, dim=1, largest=False, sorted=True)
        out_d.append(values // n)
        out_i.append(idx)
    return torch.cat(out_d).numpy(), torch.cat(out_i).numpy()


def recalls(ref_d, ref_i, got_d, got_i):
    """(recall@k by ids, distance recall@k) against the exact top k."""
    k = ref_i.shape[1]
    by_id = np.mean([len(np.intersect1d(r, g[g >= 0])) / k for r, g in zip(ref_i, got_i)])
    kth = ref_d[:, -1:]
    by_distance = float(((got_i >= 0) & (got_d <= kth)).sum(1).mean() / k)
    return float(by_id), by_distance


def run_index(name, params, index, build_s, packed_q, k, ref, repeat, n):
    (raw_d, raw_i), raw_s = best_time(lambda: fi.search(index, packed_q, k), repeat)
    (d, i), served_s = best_time(lambda: fi.search_exact(index, packed_q, k), repeat)
    rec, drec = recalls(ref[0], ref[1], d, i)
    q = len(packed_q)
    return {"index": name, "params": params, "bytes_per_item": fi.index_bytes(index) / n,
            "build_seconds": build_s, "qps_faiss": q / raw_s, "qps_served": q / served_s,
            "recall": rec, "distance_recall": drec,
            "served_equals_exact": bool(np.array_equal(i, ref[1]) and np.array_equal(d, ref[0])),
            "faiss_order_equals_exact": bool(np.array_equal(raw_i, ref[1]))}


def environment():
    import faiss

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"platform": platform.platform(), "machine": platform.machine(),
            "processor": platform.processor() or "unknown", "cpu_count": os.cpu_count(),
            "cores_usable": cores, "python": platform.python_version(),
            "torch": torch.__version__, "numpy": np.__version__, "faiss": faiss.__version__,
            "torch_threads": torch.get_num_threads(), "faiss_threads": faiss.omp_get_max_threads(),
            "loadavg_start": list(os.getloadavg())}


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

def print_table(rows, baseline, k):
    head = (f"  {'index':<22} {'params':<22} {'bytes/item':>10} {'build s':>8} "
            f"{'QPS faiss':>10} {'QPS served':>10} {f'recall@{k}':>10} {f'd-rec@{k}':>9} "
            f"{'QPS ratio':>9} {'memory ratio':>12}")
    print(head)
    print("  " + "-" * (len(head) - 2))
    for r in [baseline] + rows:
        faiss_qps = f"{r['qps_faiss']:10.0f}" if r.get("qps_faiss") else f"{'-':>10}"
        build = f"{r['build_seconds']:8.2f}" if r.get("build_seconds") is not None else f"{'-':>8}"
        print(f"  {r['index']:<22} {r['params']:<22} {r['bytes_per_item']:10.1f} {build} "
              f"{faiss_qps} {r['qps_served']:10.0f} {r['recall']:10.4f} "
              f"{r['distance_recall']:9.4f} {r['qps_served'] / baseline['qps_served']:8.1f}x "
              f"{baseline['bytes_per_item'] / r['bytes_per_item']:11.1f}x")


def main(args):
    fi.require_faiss()
    import faiss

    if args.threads:
        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    env = environment()
    print(f"index_speed: {env['platform']} ({env['machine']}, {env['processor']}), "
          f"{env['cores_usable']} usable of {env['cpu_count']} CPUs; python {env['python']}, "
          f"torch {env['torch']}, numpy {env['numpy']}, faiss {env['faiss']}; threads torch "
          f"{env['torch_threads']} / faiss {env['faiss_threads']}; load average "
          f"{env['loadavg_start'][0]:.2f}")
    n, nq, bits, k = args.db, args.queries, args.bits, min(args.topk, args.db)
    print(f"N={n} database codes x {bits} bits, Q={nq} queries, {args.classes} classes, top {k}",
          flush=True)

    data = synthetic_codes(nq, n, bits, args.classes, args.seed, tuple(args.flip_range))
    db_bits, q_bits = data["db_codes"] > 0, data["query_codes"] > 0
    del data
    packed_db, packed_q = np.packbits(db_bits, axis=1), np.packbits(q_bits, axis=1)
    db_t, q_t = torch.from_numpy(db_bits), torch.from_numpy(q_bits)

    print("baseline: project exact top-k (hamming_distance + topk on distance*N+index) ...",
          flush=True)
    ref, base_s = best_time(lambda: project_topk(q_t, db_t, k, args.chunk), args.repeat)
    baseline = {"index": "project exact (torch)", "params": f"chunk {args.chunk}",
                "bytes_per_item": float(bits),  # the bool [N, L] tensor it keeps
                "transient_bytes_per_item": 4.0 * bits,  # the float32 ±1 copy of each call
                "build_seconds": None, "qps_faiss": None, "qps_served": nq / base_s,
                "recall": 1.0, "distance_recall": 1.0, "seconds": base_s}

    rows = []
    print("IndexBinaryFlat ...", flush=True)
    start = time.perf_counter()
    flat = fi.build_binary_index(packed_db, bits, "flat")
    rows.append(run_index("IndexBinaryFlat", "exact", flat, time.perf_counter() - start,
                          packed_q, k, ref, args.repeat, n))
    del flat

    if bits >= 8:
        start = time.perf_counter()
        hashed = fi.build_binary_index(packed_db, bits, "hash")
        build_s = time.perf_counter() - start
        nhash, b = fi.hash_layout(bits)
        for nflip in args.nflip:
            print(f"{type(hashed).__name__} {nhash}x{b} bits, nflip {nflip} ...", flush=True)
            fi.set_search_params(hashed, nflip=nflip)
            rows.append(run_index(type(hashed).__name__, f"{nhash}x{b} bits, nflip {nflip}",
                                  hashed, build_s, packed_q, k, ref, args.repeat, n))
        del hashed

    nlist = args.nlist or fi.default_nlist(n)
    print(f"IndexBinaryIVF nlist {nlist}: training ...", flush=True)
    start = time.perf_counter()
    ivf = fi.build_binary_index(packed_db, bits, "ivf", nlist=nlist)
    build_s = time.perf_counter() - start
    for nprobe in args.nprobe:
        print(f"IndexBinaryIVF nlist {nlist}, nprobe {nprobe} ...", flush=True)
        fi.set_search_params(ivf, nprobe=nprobe)
        rows.append(run_index("IndexBinaryIVF", f"nlist {nlist}, nprobe {min(nprobe, nlist)}",
                              ivf, build_s, packed_q, k, ref, args.repeat, n))
    del ivf

    print(f"\n== N={n} x {bits} bits, Q={nq}, top {k}; ratios against the project's exact "
          f"top-k measured above ({base_s:.2f} s) ==")
    print_table(rows, baseline, k)
    flat_row = rows[0]
    print(f"  IndexBinaryFlat served (search_exact) equals the project's exact top-k: "
          f"{'yes' if flat_row['served_equals_exact'] else 'NO'}; faiss's own order equals it: "
          f"{'yes' if flat_row['faiss_order_equals_exact'] else 'no'}")
    print(f"  bytes/item: the written index file / N (codes, ids, lists, header); the baseline "
          f"keeps bool bits ({bits} bytes) and builds a float32 copy per call "
          f"({4 * bits} bytes)")
    env["loadavg_end"] = list(os.getloadavg())
    print(f"  load average at the end: {env['loadavg_end'][0]:.2f} (other jobs make timings noisy)")
    results = {"args": vars(args), "environment": env, "num_database": n, "num_queries": nq,
               "bits": bits, "topk": k, "baseline": baseline, "indexes": rows}
    write_json(args.json, results)
    return results


if __name__ == "__main__":
    main(get_args_parser().parse_args())
