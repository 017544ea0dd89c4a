"""Speed of the shared retrieval metrics against the naive official loop.

For each problem size (Q queries x N database items) the script generates
synthetic stored codes and times, on the same codes:

* the **baseline**: the official DCDH ``compute_mAP`` algorithm written
  plainly (one query at a time: Hamming distances to the whole database by
  an inner product, a full stable sort, AP from the sorted relevance).  It
  computes mAP only.  At large sizes it runs on a subset of the queries and
  its time is extrapolated linearly to all queries (said so in the output);
* **ours**: ``utils.retrieval.metrics.evaluate_codes`` computing every metric (mAP,
  tie-aware mAP, precision@k, radius-2 precision/recall, precision/recall
  curve) with the numba back end, and the torch back end at the small size;
* the **end-to-end** CLI on the largest size: ``python evaluation.py --codes
  FILE.npz --json OUT`` in a subprocess, wall time and peak RSS.

It also checks that the baseline's mAP on its query subset equals the mean of
the library's per-query AP on the same subset (to 1e-6).

Usage, from the repository root::

    python3 -m bench.eval_speed
    python3 -m bench.eval_speed --sizes 1000x10000 --skip-e2e --json /tmp/speed.json

Timings depend on the machine and on what else runs on it.  On a small
machine the OpenMP thread pools of torch and of numba spin-wait for each other
between the library's torch steps and its numba kernel; like evaluation.py,
this script sets ``OMP_WAIT_POLICY=passive`` unless the environment sets it.
The header line shows the setting in use.
"""

import argparse
import glob
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

# run from the repository root as `python3 -m bench.eval_speed`
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# as evaluation.py does: passive OpenMP waits, set before torch is imported
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.timing import write_json  # noqa: E402
from utils.cli import (ArgumentParser, code_length, fraction,  # noqa: E402
                       non_negative_int, positive_float, positive_int, seed_int)
from utils.retrieval import metrics  # noqa: E402

# Subsets of at most this many query x database pairs run the baseline on
# every query by default; larger problems time it on DEFAULT_BASELINE_SUBSET.
FULL_BASELINE_MAX_PAIRS = 50_000_000
DEFAULT_BASELINE_SUBSET = 200
# the published algorithm is slower still: timed on fewer queries at large sizes
PUBLISHED_SUBSET = 50
# The torch back end (a full sort per query) is timed only up to this size.
TORCH_MAX_PAIRS = 50_000_000
# Targets for the end-to-end CLI run on the largest size (2-core CPU machine).
TARGET_E2E_SECONDS = 3.0
TARGET_E2E_RSS_MB = 1024.0


def get_args_parser():
    parser = ArgumentParser(
        description="Time utils.retrieval.metrics.evaluate_codes against the published and the "
                    "naive mAP loops.")
    parser.add_argument("--bits", type=code_length, default=48, help="code length (default 48)")
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=["1000x10000", "10000x200000"],
                        help="problem sizes QxN (queries x database items)")
    parser.add_argument("--classes", type=positive_int, default=530, help="number of classes (default 530)")
    parser.add_argument("--flip-range", type=fraction, nargs=2, default=(0.05, 0.35),
                        metavar=("LOW", "HIGH"),
                        help="per-item bit-flip probability range around the class prototype")
    parser.add_argument("--baseline-queries", type=non_negative_int, default=None,
                        help="queries the naive baseline runs on, its time extrapolated to all "
                             "queries (default: all when Q*N <= %d, else %d; 0 = all)"
                             % (FULL_BASELINE_MAX_PAIRS, DEFAULT_BASELINE_SUBSET))
    parser.add_argument("--repeat", type=positive_int, default=3,
                        help="timed runs of evaluate_codes per size and back end; the best is "
                             "reported, all are in the JSON (default 3)")
    parser.add_argument("--torch-all-sizes", action="store_true",
                        help="also time the torch back end above %d query x database pairs "
                             "(slow: minutes at 10000x200000)" % TORCH_MAX_PAIRS)
    parser.add_argument("--seed", type=seed_int, default=0, help="random seed of the synthetic codes")
    parser.add_argument("--skip-e2e", action="store_true",
                        help="skip the end-to-end `evaluation.py --codes` subprocess run")
    parser.add_argument("--eval-script", default="evaluation.py",
                        help="the CLI run end to end, relative to the repository root")
    parser.add_argument("--e2e-timeout", type=positive_float, default=600.0,
                        help="seconds before the end-to-end run is killed (default 600)")
    parser.add_argument("--json", default=None, metavar="OUT", help="write every figure to this JSON file")
    return parser


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------

def parse_size(text):
    try:
        q, n = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 1000x10000, got {text!r}")
    if q < 1 or n < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return q, n


def synthetic_codes(num_queries, num_db, bits, classes, seed, flip_range=(0.05, 0.35)):
    """Stored-code-like data: ±1 int8 codes and int64 labels.

    Each class has a random prototype code; each item copies its class
    prototype and flips every bit with its own probability drawn uniformly
    from ``flip_range`` (so per-query AP spreads over a realistic range).
    """
    rng = np.random.default_rng(seed)
    prototypes = rng.random((classes, bits)) < 0.5

    def draw(count):
        labels = rng.integers(0, classes, size=count, dtype=np.int64)
        flip_p = rng.uniform(flip_range[0], flip_range[1], size=(count, 1))
        flips = rng.random((count, bits)) < flip_p
        bits_set = prototypes[labels] ^ flips
        codes = np.where(bits_set, 1, -1).astype(np.int8)
        return codes, labels

    db_codes, db_labels = draw(num_db)
    query_codes, query_labels = draw(num_queries)
    return {"query_codes": query_codes, "db_codes": db_codes,
            "query_labels": query_labels, "db_labels": db_labels}


# ---------------------------------------------------------------------------
# Baseline: the official DCDH compute_mAP loop, written plainly
# ---------------------------------------------------------------------------

def naive_map(query_codes, db_codes, query_labels, db_labels):
    """Per-query AP [Q] by the official algorithm (NaN where a query has no relevant item).

    One query at a time: Hamming distance 0.5 * (L - q . B^T) to every
    database item, a full stable sort (ties by database index, like the
    fixtures), then AP = (1/R) * sum over relevant items of
    (relevant items so far / position).
    """
    num_bits = db_codes.shape[1]
    db_f = db_codes.astype(np.float32)
    positions = np.arange(1, db_codes.shape[0] + 1, dtype=np.float64)
    ap = np.empty(query_codes.shape[0])
    for i in range(query_codes.shape[0]):
        dist = 0.5 * (num_bits - db_f @ query_codes[i].astype(np.float32))
        order = np.argsort(dist, kind="stable")
        correct = (db_labels[order] == query_labels[i]).astype(np.float64)
        precision = np.cumsum(correct) / positions
        num_rel = correct.sum()
        ap[i] = (precision * correct).sum() / num_rel if num_rel > 0 else np.nan
    return ap


def published_map(query_codes, db_codes, query_labels, db_labels):
    """Per-query AP [Q] by the published DCDH ``compute_mAP`` as written: torch,
    one query at a time, the distance as the count of differing entries, a full
    sort, AP from the positions of the relevant items (``correct.nonzero()``).
    The one change: ``sort(stable=True)``, so ties follow the database index
    and the result can be checked against the library's."""
    trn = torch.from_numpy(db_codes).float()
    tst = torch.from_numpy(query_codes).float()
    trn_label = torch.from_numpy(db_labels).view(-1, 1)  # labels of shape (x, 1), as published
    tst_label = torch.from_numpy(query_labels).view(-1, 1)
    ap = []
    for i in range(tst.size(0)):
        query_label, query_binary = tst_label[i], tst[i]
        _, query_result = torch.sum((query_binary != trn).long(), dim=1).sort(stable=True)
        correct = (query_label == trn_label[query_result]).float()
        n = torch.sum(correct)
        ns = torch.arange(1, n + 1).float()
        index = (correct.nonzero() + 1)[:, 0:1].squeeze(dim=1).float()
        ap.append(torch.mean(ns / index))
    return torch.stack(ap).numpy().astype(np.float64)


# ---------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------

def peak_rss_mb(who=resource.RUSAGE_SELF):
    # ru_maxrss is in KiB on Linux (bytes on macOS)
    scale = 1.0 / (1024 * 1024) if sys.platform == "darwin" else 1.0 / 1024
    return resource.getrusage(who).ru_maxrss * scale


def numba_cache_present():
    pattern = os.path.join(REPO_ROOT, "utils", "retrieval", "__pycache__", "_hamming_kernel.ranking_stats*.nbi")
    return bool(glob.glob(pattern))


def time_call(fn, repeat):
    """Wall and CPU (all threads) seconds of each of ``repeat`` calls."""
    times, cpu, result = [], [], None
    for _ in range(max(1, repeat)):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return result, times, cpu


def warm_up_numba():
    """First call of the numba back end on a tiny problem: JIT compile or cache load."""
    cached = numba_cache_present()
    data = synthetic_codes(4, 32, 16, 3, seed=0)
    start = time.perf_counter()
    metrics.evaluate_codes(data["query_codes"], data["db_codes"], data["query_labels"],
                           data["db_labels"], backend="numba")
    return {"seconds": time.perf_counter() - start, "cache_present_before": cached}


def run_baseline(data, num_queries, fn=None):
    fn = fn or naive_map
    q = slice(0, num_queries)
    ap, [seconds], [cpu] = time_call(
        lambda: fn(data["query_codes"][q], data["db_codes"], data["query_labels"][q],
                   data["db_labels"]), 1)
    scale = data["query_codes"].shape[0] / num_queries
    return ap, {"queries_timed": num_queries, "seconds_timed": seconds,
                "seconds": seconds * scale, "cpu_seconds": cpu * scale,
                "extrapolated": scale > 1, "peak_rss_mb_process": peak_rss_mb()}


def check_agreement(data, num_queries, baseline_ap):
    """Baseline mAP on the subset vs the mean of the library's per-query AP on it."""
    q = slice(0, num_queries)
    stats = metrics.hamming_ranking_stats(data["query_codes"][q], data["db_codes"],
                                          data["query_labels"][q], data["db_labels"],
                                          backend="numba")
    lib_ap = np.asarray(stats.ap)
    has_rel = np.asarray(stats.num_relevant) > 0
    if not np.array_equal(has_rel, ~np.isnan(baseline_ap)):
        raise AssertionError("baseline and library disagree on which queries have relevant items")
    base_map = float(baseline_ap[has_rel].mean()) if has_rel.any() else float("nan")
    lib_map = float(lib_ap[has_rel].mean()) if has_rel.any() else float("nan")
    max_diff = float(np.abs(baseline_ap[has_rel] - lib_ap[has_rel]).max()) if has_rel.any() else 0.0
    diff = abs(base_map - lib_map)
    if not diff <= 1e-6:
        raise AssertionError(f"baseline mAP {base_map!r} != library mAP {lib_map!r} on the "
                             f"first {num_queries} queries (|diff| {diff:.3g})")
    return {"queries": num_queries, "queries_without_relevant": int((~has_rel).sum()),
            "baseline_mAP": base_map, "library_mAP": lib_map, "abs_diff": diff,
            "max_abs_diff_per_query": max_diff}


def run_ours(data, backend, repeat):
    def call():
        return metrics.evaluate_codes(data["query_codes"], data["db_codes"],
                                      data["query_labels"], data["db_labels"],
                                      radius=2, backend=backend)

    result, times, cpu = time_call(call, repeat)
    best = int(np.argmin(times))
    return result, {"backend": backend, "seconds": times[best], "cpu_seconds": cpu[best],
                    "runs": times, "peak_rss_mb_process": peak_rss_mb()}


# Runs the CLI and reports its resource usage.  The CLI is started from this
# small launcher, not from the benchmark process itself: on Linux a child's
# ru_maxrss starts from the RSS of the process it was forked from (the peak is
# carried across exec), so forking straight from this process, which holds
# torch and the data, would report our own size instead of the CLI's.
_LAUNCHER = r"""
import json, resource, subprocess, sys, time
start = time.perf_counter()
rc = subprocess.call(sys.argv[2:])
seconds = time.perf_counter() - start
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as f:
    json.dump({"returncode": rc, "seconds": seconds, "maxrss": ru.ru_maxrss,
               "cpu_seconds": ru.ru_utime + ru.ru_stime}, f)
"""


def run_e2e(data, script, timeout):
    """`python SCRIPT --codes FILE.npz --json OUT` from the repository root.

    Returns its wall time and its own peak RSS, or why it was skipped.
    """
    script_path = os.path.join(REPO_ROOT, script)
    if not os.path.isfile(script_path):
        return {"status": "skipped", "reason": f"{script} does not exist (yet)"}
    with tempfile.TemporaryDirectory(prefix="eval_speed_") as tmp:
        codes_file = os.path.join(tmp, "codes.npz")
        out_file = os.path.join(tmp, "metrics.json")
        usage_file = os.path.join(tmp, "usage.json")
        np.savez(codes_file, **data)
        cmd = [sys.executable, "-c", _LAUNCHER, usage_file,
               sys.executable, script, "--codes", codes_file, "--json", out_file]
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            log, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)  # the launcher's own session: it and the CLI
            proc.communicate()
            return {"status": "skipped", "reason": f"killed after {timeout:.0f} s"}
        tail = log[-2000:].decode("utf-8", "replace")
        try:
            with open(usage_file) as f:
                usage = json.load(f)
        except (OSError, ValueError) as exc:
            return {"status": "skipped", "reason": f"launcher failed ({exc})", "log_tail": tail}
        info = {"command": f"python {script} --codes FILE.npz --json OUT",
                "seconds": usage["seconds"], "cpu_seconds": usage["cpu_seconds"],
                "returncode": usage["returncode"],
                "peak_rss_mb": usage["maxrss"] / (1024 * 1024 if sys.platform == "darwin" else 1024)}
        if usage["returncode"] != 0:
            info.update(status="skipped", reason=f"exit status {usage['returncode']}", log_tail=tail)
            return info
        try:
            with open(out_file) as f:
                out = json.load(f)
        except (OSError, ValueError) as exc:
            info.update(status="skipped", reason=f"no readable JSON output ({exc})", log_tail=tail)
            return info
        info["status"] = "ok"
        if isinstance(out, dict) and isinstance(out.get("mAP"), (int, float)):
            info["mAP"] = float(out["mAP"])
        return info


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

def _fmt_s(seconds):
    return f"{seconds:8.3f} s" if seconds < 100 else f"{seconds:8.1f} s"


def _row(label, value, note=""):
    print(f"  {label:<34} {value:>14}  {note}".rstrip())


def print_size(r):
    q, n = r["num_queries"], r["num_database"]
    print(f"\n== Q={q} queries x N={n} database items, {r['bits']} bits, {r['classes']} classes ==")
    b = r["baseline"]

    def how(x):
        if x["extrapolated"]:
            return (f"EXTRAPOLATED linearly from {x['queries_timed']} queries "
                    f"({x['seconds_timed']:.2f} s measured)")
        return f"measured on all {x['queries_timed']} queries"

    _row("published compute_mAP (mAP only)", _fmt_s(r["published"]["seconds"]), how(r["published"]))
    _row("baseline naive loop (mAP only)", _fmt_s(b["seconds"]), how(b))
    for o in r["ours"]:
        runs = ", ".join(f"{t:.3f}" for t in o["runs"])
        _row(f"ours {o['backend']} (all metrics)", _fmt_s(o["seconds"]), f"best of [{runs}] s")
    _row("CPU time (all threads)", "", f"baseline {b['cpu_seconds']:.2f} s"
         + "".join(f", {o['backend']} {o['cpu_seconds']:.2f} s" for o in r["ours"]))
    for o in r["ours"]:
        _row(f"speed-up published / {o['backend']}", f"{r['published']['seconds'] / o['seconds']:9.1f} x")
        _row(f"speed-up naive loop / {o['backend']}", f"{b['seconds'] / o['seconds']:9.1f} x")
    a = r["agreement"]
    _row("mAP baseline vs library", f"{a['abs_diff']:.1e}",
         f"|diff| on the first {a['queries']} queries: {a['baseline_mAP']:.6f} vs "
         f"{a['library_mAP']:.6f} (max per-query {a['max_abs_diff_per_query']:.1e})")
    m = r["metrics"]
    _row("mAP / tie-aware mAP (ours)", f"{m['mAP']:.4f}", f"/ {m['mAP_tie_aware']:.4f}, "
         f"P@10 {m['precision_at_k']['10']:.4f}, P(r<=2) {m['precision_within_radius']:.4f}")
    _row("peak RSS of this process so far", f"{r['peak_rss_mb_process']:8.0f} MB",
         f"(after the baseline {b['peak_rss_mb_process']:.0f} MB"
         + "".join(f", after {o['backend']} {o['peak_rss_mb_process']:.0f} MB" for o in r["ours"])
         + ")")


def print_e2e(e):
    print("\n== end to end: python evaluation.py --codes FILE.npz --json OUT ==")
    if e.get("status") != "ok":
        print(f"  SKIPPED: {e.get('reason', 'not run')}")
        if e.get("log_tail"):
            print("  last output:\n    " + e["log_tail"].strip().replace("\n", "\n    "))
        return
    size = f"Q={e['num_queries']} x N={e['num_database']}"
    ok = lambda flag: "ok" if flag else "MISSED"  # noqa: E731
    _row(f"wall time ({size})", _fmt_s(e["seconds"]),
         f"target < {TARGET_E2E_SECONDS:g} s: {ok(e['seconds'] < TARGET_E2E_SECONDS)}")
    _row("CPU time of the subprocess", _fmt_s(e["cpu_seconds"]), "(all threads)")
    _row("peak RSS of the subprocess", f"{e['peak_rss_mb']:8.0f} MB",
         f"target < {TARGET_E2E_RSS_MB:g} MB: {ok(e['peak_rss_mb'] < TARGET_E2E_RSS_MB)}")
    extra = " (baselines extrapolated)" if e["baseline_extrapolated"] else ""
    _row("whole process vs published mAP", f"{e['speedup_vs_published']:9.1f} x", extra)
    _row("whole process vs naive loop mAP", f"{e['speedup_vs_baseline']:9.1f} x", extra)
    if "mAP" in e:
        _row("CLI mAP vs in-process mAP", f"{e['mAP']:.6f}", f"vs {e['mAP_in_process']:.6f}")


# ---------------------------------------------------------------------------

def main(args):
    sizes = [s if isinstance(s, tuple) else parse_size(s) for s in args.sizes]
    import numba
    env = {"python": platform.python_version(), "torch": torch.__version__,
           "numpy": np.__version__, "numba": numba.__version__, "cpu_count": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "numba_threads": numba.get_num_threads(),
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
           "loadavg_start": list(os.getloadavg())}
    print(f"eval_speed: python {env['python']}, torch {env['torch']}, numpy {env['numpy']}, "
          f"numba {env['numba']}; {env['cpu_count']} CPUs, threads torch {env['torch_threads']} / "
          f"numba {env['numba_threads']}, OMP_WAIT_POLICY={env['omp_wait_policy'] or '(unset)'}; "
          f"load average {env['loadavg_start'][0]:.2f}")

    warm = warm_up_numba()
    print(f"numba first call (tiny problem): {warm['seconds']:.2f} s "
          f"({'numba cache files were present: cache load' if warm['cache_present_before'] else 'JIT compile'}); "
          f"not counted below")

    results = {"args": vars(args), "environment": env, "numba_first_call": warm, "sizes": []}
    # the end-to-end run uses the largest size
    e2e_index = max(range(len(sizes)), key=lambda i: sizes[i][0] * sizes[i][1])
    for index, (num_queries, num_db) in enumerate(sizes):
        data = synthetic_codes(num_queries, num_db, args.bits, args.classes, args.seed,
                               tuple(args.flip_range))
        if args.baseline_queries is None:
            nb = num_queries if num_queries * num_db <= FULL_BASELINE_MAX_PAIRS else DEFAULT_BASELINE_SUBSET
        else:
            nb = args.baseline_queries or num_queries
        nb = min(nb, num_queries)

        print(f"\n[{num_queries}x{num_db}] published baseline on {min(nb, PUBLISHED_SUBSET)} "
              f"queries, naive baseline on {nb} ...", flush=True)
        npub = min(nb, PUBLISHED_SUBSET) if num_queries * num_db > FULL_BASELINE_MAX_PAIRS else nb
        published_ap, published = run_baseline(data, npub, published_map)
        check_agreement(data, npub, published_ap)
        baseline_ap, baseline = run_baseline(data, nb)
        agreement = check_agreement(data, nb, baseline_ap)

        backends = ["numba"]
        if num_queries * num_db <= TORCH_MAX_PAIRS or args.torch_all_sizes:
            backends.append("torch")
        ours, summary = [], None
        for backend in backends:
            print(f"[{num_queries}x{num_db}] evaluate_codes backend={backend} x{args.repeat} ...",
                  flush=True)
            out, timing = run_ours(data, backend, args.repeat)
            ours.append(timing)
            if summary is None:
                summary = out
            elif abs(out["mAP"] - summary["mAP"]) > 1e-9:
                raise AssertionError(f"{backend} mAP {out['mAP']} != numba mAP {summary['mAP']}")

        r = {"num_queries": num_queries, "num_database": num_db, "bits": args.bits,
             "classes": args.classes, "published": published, "baseline": baseline,
             "agreement": agreement, "ours": ours,
             "speedup": {o["backend"]: baseline["seconds"] / o["seconds"] for o in ours},
             "speedup_vs_published": {o["backend"]: published["seconds"] / o["seconds"] for o in ours},
             "metrics": {k: summary[k] for k in ("mAP", "mAP_tie_aware", "precision_at_k",
                                                 "precision_within_radius", "recall_within_radius")},
             "peak_rss_mb_process": peak_rss_mb()}
        results["sizes"].append(r)
        print_size(r)

        if index == e2e_index:
            if args.skip_e2e:
                e2e = {"status": "skipped", "reason": "--skip-e2e"}
            else:
                print(f"\n[{num_queries}x{num_db}] end to end {args.eval_script} ...", flush=True)
                e2e = run_e2e(data, args.eval_script, args.e2e_timeout)
                if e2e.get("status") == "ok":
                    e2e.update(num_queries=num_queries, num_database=num_db,
                               speedup_vs_baseline=baseline["seconds"] / e2e["seconds"],
                               speedup_vs_published=published["seconds"] / e2e["seconds"],
                               baseline_extrapolated=baseline["extrapolated"],
                               mAP_in_process=summary["mAP"])
            results["end_to_end"] = e2e
            print_e2e(e2e)
        del data

    results["environment"]["loadavg_end"] = list(os.getloadavg())
    print(f"\nload average at the end: {results['environment']['loadavg_end'][0]:.2f} "
          f"(other jobs on the machine make timings noisy)")
    write_json(args.json, results)
    return results


if __name__ == "__main__":
    main(get_args_parser().parse_args())
