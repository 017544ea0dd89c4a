"""One prepared GPU check: everything only a GPU can show, in one go.

  bash bench/gpu_check.sh [--dry-run] [--out DIR] [--skip NAME ...] [--overwrite]
  python3 -m bench.gpu_check ...            (the same, from the repository root)

Steps (the names --skip takes), each run as its own process with a time limit
(a step that fails or runs out of time is recorded as failed with its last
error line, and the check goes on):

  train     every registered method (the registry, no list by hand) trains one
            epoch on the built-in data with train.py --method NAME, in float32,
            --amp bf16 and --amp fp16 (the grad scaler), and its final
            evaluation runs; loss finiteness, mAP, the grad scaler's scale;
  torchrun  torchrun --nproc_per_node 1 (2 where 2 GPUs are seen): DCDH for 2
            epochs straight, and 1 epoch then --resume auto to 2, with
            --deterministic; the two resume files and results compared;
  nccl      a DistributedDataParallel training epoch of the engine under
            torchrun on a NCCL process group (gloo on the CPU): the engine
            starts no process group for a world of one, so the torchrun step
            alone never reaches NCCL on a one-GPU machine;
  speed     python3 -m bench.train_speed --device cuda --amp --channels-last;
  metrics   every metric of utils.retrieval.metrics.evaluate_codes at
            (10,000 queries x 200,000 items) x 48 bits on the GPU (torch back
            end), timed, and checked against the CPU path (numba);
  loader    python3 -m bench.loader_speed --device cuda (the cached and the
            uncached loader feeding each preset's network);
  faiss     faiss's GPU flat binary index (when the GPU build is present) against
            the CPU index: speed and identical answers;
  compile   bench.train_speed as above with --compile, last, with the time left.

It writes DIR/gpu_check.json (the machine, then per step: name, command,
seconds, status ok/failed/skipped, its figures; written after every step, so
an interrupted check leaves what it measured) and DIR/summary.txt (printed
too); DIR/gpu_check_work holds each step's files and logs.  An existing
DIR/gpu_check.json is never replaced without --overwrite.  Exit status 0 when no step
failed, 1 when one did, 2 for bad input.

--dry-run runs the same commands on the CPU at tiny sizes (torchrun on gloo),
so that the check cannot rot where there is no GPU: only sizes and the device
differ.

Internal sub-commands (run by the check itself): facts, train-runs,
ddp-probe, metrics, faiss.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = "gpu_check_work"  # DIR/WORK: each step's files and logs
MARK = ".made_by_gpu_check"  # in DIR/WORK: only such a folder is ever removed
PRECISIONS = {"fp32": [], "bf16": ["--amp", "bf16"], "fp16": ["--amp", "fp16"]}
STEPS = ("train", "torchrun", "nccl", "speed", "metrics", "loader", "faiss", "compile")
TITLES = {"train": "every method x fp32/bf16/fp16, train.py + evaluation",
          "torchrun": "torchrun, 2 epochs vs 1 + --resume auto",
          "nccl": "DDP epoch of the engine on the process group",
          "speed": "bench.train_speed --amp --channels-last",
          "metrics": "metric suite on the device vs the CPU",
          "loader": "bench.loader_speed, cached and uncached loader",
          "faiss": "faiss GPU flat binary index",
          "compile": "bench.train_speed --amp --channels-last --compile"}

# Per mode: the sizes, and per step (cap seconds, least seconds worth starting).
# The GPU budget is 8 minutes less a margin.  The dry run takes under 3 minutes
# on a 2-core machine; its budget is wider so that a slow CI machine does not
# turn a working step into a failure.
MODES = {
    "gpu": {
        "budget": 465.0, "jobs": 4,
        "faces": ["--synthetic-ids", "16", "--synthetic-train", "16", "--synthetic-test", "4",
                  "--bs", "64"],
        "multiview": ["--synthetic-rows", "1200", "--synthetic-classes", "12", "--bs", "64"],
        # --compile: every registered setting, the GPU targets of docs/performance.md first
        "speed": [], "speed_compile": [], "compile_first": ("dcdh_dfhnet", "opqn_s7",
                                                            "triplet_resnet18"),
        "metrics": ["--size", "10000x200000", "--check-queries", "1000", "--repeat", "3"],
        "loader": [],
        "faiss": ["--db", "1000000", "--queries", "1000", "--repeat", "3"],
        "steps": {"facts": (90, 0), "train": (170, 30), "torchrun": (120, 30), "nccl": (60, 15),
                  "speed": (150, 30), "metrics": (90, 20), "loader": (120, 30),
                  "faiss": (90, 20), "compile": (600, 45)},
    },
    "dry": {
        "budget": 600.0, "jobs": 2,
        "faces": ["--synthetic-ids", "2", "--synthetic-train", "2", "--synthetic-test", "1",
                  "--bs", "2"],
        "multiview": ["--synthetic-rows", "240", "--synthetic-classes", "4", "--bs", "60"],
        "speed": ["--tiny", "--steps", "1", "--repeat", "1"],
        # --compile on a CPU compiles C++ (a minute a network): the cheapest setting only
        "speed_compile": ["--tiny", "--steps", "1", "--repeat", "1"],
        "compile_first": ("dchn_mlp",),
        "compile_only_first": True,
        "metrics": ["--size", "300x6000", "--check-queries", "100", "--repeat", "1"],
        "loader": ["--tiny", "--repeat", "1"],
        "faiss": ["--db", "20000", "--queries", "100", "--repeat", "1"],
        "steps": {"facts": (60, 0), "train": (300, 30), "torchrun": (150, 20), "nccl": (60, 10),
                  "speed": (120, 10), "metrics": (60, 10), "loader": (90, 10),
                  "faiss": (60, 10), "compile": (150, 20)},
    },
}

# the text of an error that leaves a CUDA context unusable for what follows
FATAL_CUDA = re.compile(r"CUDA error|CUBLAS_STATUS|CUDNN_STATUS|cuDNN error|device-side assert|"
                        r"illegal memory access|NCCL error|AcceleratorError", re.I)


# ---------------------------------------------------------------------------
# small helpers (no torch in the check's own process)
# ---------------------------------------------------------------------------

def shown(argv) -> str:
    """A command as a person would type it (python3 for this interpreter)."""
    return shlex.join(["python3" if a == sys.executable else str(a) for a in argv])


EXCEPTION_LINE = re.compile(r"^(\w+\.)*\w*(Error|Exception|Interrupt|Failure)\b.*")


def last_error(text: str) -> str:
    """The line that says what went wrong: the last ``error: ...`` line, else
    the last exception line (torchrun's own ChildFailedError left out), else
    the last line."""
    # torchrun prefixes its children's lines with [rankN]: (or [defaultN]:)
    lines = [re.sub(r"^\[(rank|default)\d+\]:", "", ln).strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if re.search(r"[A-Za-z]", ln)]  # no rules of dashes
    for ln in reversed(lines):
        if ln.startswith("error:"):
            return ln[:400]
    for ln in reversed(lines):
        if EXCEPTION_LINE.match(ln) and "ChildFailedError" not in ln:
            return ln[:400]
    return lines[-1][:400] if lines else "(no output)"


def finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x and \
        abs(x) != float("inf")


def rnd(x, digits=4):
    return round(x, digits) if finite(x) else x


def kill_group(proc: subprocess.Popen) -> None:
    """Stop a process this check started, and the processes it started."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(5)
            return
        except subprocess.TimeoutExpired:
            continue


def start(argv, log_path: Path, env=None) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        return subprocess.Popen([str(a) for a in argv], cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)


def run_process(argv, timeout: float, log_path: Path, env=None) -> dict:
    """Run one command to its end or its time limit: rc, seconds, timed_out, error."""
    began = time.perf_counter()
    proc = start(argv, log_path, env)
    timed_out = False
    try:
        rc = proc.wait(max(1.0, timeout))
    except subprocess.TimeoutExpired:
        timed_out = True
        kill_group(proc)
        rc = proc.returncode
    except BaseException:
        kill_group(proc)
        raise
    seconds = time.perf_counter() - began
    out = {"rc": rc, "seconds": round(seconds, 2), "timed_out": timed_out, "log": str(log_path)}
    if timed_out:
        out["error"] = f"timed out after {timeout:.0f} s (limit of this step)"
    elif rc != 0:
        out["error"] = last_error(log_path.read_text(errors="replace"))
    return out


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json_atomic(path: Path, value) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2, allow_nan=False, default=str) + "\n")
    os.replace(tmp, path)


def clean(value):
    """JSON-ready: NaN and infinities as strings."""
    if isinstance(value, float) and not finite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


# ---------------------------------------------------------------------------
# the check
# ---------------------------------------------------------------------------

def get_args_parser():
    from utils.cli import ArgumentParser, int_between, positive_float

    p = ArgumentParser(prog="bench/gpu_check.sh", description=__doc__)
    p.add_argument("--dry-run", action="store_true",
                   help="the same steps on the CPU at tiny sizes (torchrun on gloo): CI")
    p.add_argument("--out", default=None,
                   help="folder of gpu_check.json, summary.txt and gpu_check_work/ (default: "
                        "gpu_check; gpu_check_dry with --dry-run)")
    p.add_argument("--skip", nargs="+", default=[], choices=STEPS, metavar="NAME",
                   help=f"steps to leave out: {', '.join(STEPS)}")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing DIR/gpu_check.json (and DIR/gpu_check_work)")
    p.add_argument("--budget", type=positive_float,
                   help="seconds for the whole check (default: 465 on the GPU, 600 dry)")
    p.add_argument("--jobs", type=int_between(1, 64, "jobs"),
                   help="train.py processes at a time in the train step (default 4, dry 2)")
    p.add_argument("--device", help="the device of the steps (default: cuda, cpu with --dry-run)")
    return p


class Check:
    def __init__(self, args, out: Path):
        self.args = args
        self.mode = "dry" if args.dry_run else "gpu"
        self.cfg = MODES[self.mode]
        self.device = args.device or ("cpu" if args.dry_run else "cuda")
        self.out, self.work = out, out / WORK
        self.budget = args.budget or self.cfg["budget"]
        self.jobs = args.jobs or self.cfg["jobs"]
        self.began, self.wall_start = time.perf_counter(), time.time()
        self.deadline = self.began + self.budget
        self.facts: dict = {}
        self.steps: list = []
        self.complete = False
        self.env = dict(os.environ)
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        if self.mode == "dry":  # 2 shared cores: one thread each, no spinning thread pools
            self.env.setdefault("OMP_NUM_THREADS", "1")
            # numba's OpenMP layer sets the process's OpenMP threads (torch's too) to
            # NUMBA_NUM_THREADS, all cores by default, at its first parallel kernel
            self.env.setdefault("NUMBA_NUM_THREADS", self.env["OMP_NUM_THREADS"])

    # -- bookkeeping ------------------------------------------------------------------
    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def limit(self, name: str) -> float:
        """This step's time limit: its cap, or what the budget leaves after the
        least time of every later step (compile, the optional last, excepted)."""
        cap, least = self.cfg["steps"][name]
        later = STEPS[STEPS.index(name) + 1:] if name in STEPS else STEPS
        reserve = sum(self.cfg["steps"][s][1] for s in later
                      if s != "compile" and s not in self.args.skip)
        return min(cap, self.left() - reserve)

    def record(self, step: dict) -> None:
        self.steps.append(clean(step))
        self.save()
        mark = {"ok": "ok", "failed": "FAILED", "skipped": "skipped"}[step["status"]]
        why = step.get("error") or step.get("reason") or ""
        tail = f": {why}" if why else ""
        print(f"[{mark}] {step['name']} ({step.get('seconds', 0):.0f} s){tail}", flush=True)

    def document(self) -> dict:
        return {"check": "bench/gpu_check.sh", "complete": self.complete, "mode": self.mode,
                "device": self.device,
                "command": shown([sys.executable, "-m", "bench.gpu_check", *sys.argv[1:]]),
                "budget_s": self.budget, "seconds": round(time.perf_counter() - self.began, 1),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.wall_start)),
                "machine": self.facts, "steps": self.steps}

    def save(self) -> None:
        write_json_atomic(self.out / "gpu_check.json", self.document())

    # -- the run ------------------------------------------------------------------------
    def run(self) -> int:
        for name in STEPS:
            began = time.perf_counter()
            base = {"name": name, "title": TITLES[name]}
            if name in self.args.skip:
                self.record({**base, "status": "skipped", "reason": "--skip", "seconds": 0})
                continue
            limit = self.limit(name)
            if limit < self.cfg["steps"][name][1]:
                self.record({**base, "status": "skipped", "seconds": 0,
                             "reason": f"budget exhausted ({max(0, self.left()):.0f} s of "
                                       f"{self.budget:.0f} s left)"})
                continue
            try:
                step = getattr(self, f"step_{name}")(limit)
            except Exception as exc:  # a bug of the check itself: recorded, the check goes on
                step = {"status": "failed", "error": f"the check's own {type(exc).__name__}: {exc}"}
            step = {**base, **step}
            step["seconds"] = round(time.perf_counter() - began, 1)
            step.setdefault("limit_s", round(limit))
            self.record(step)
        self.complete = True
        self.save()
        text = summary(self.document())
        (self.out / "summary.txt").write_text(text + "\n")
        print(text)
        return 1 if any(s["status"] == "failed" for s in self.steps) else 0

    def gather_facts(self) -> dict:
        """The machine: a process of its own (a broken driver may hang CUDA's start)."""
        path = self.work / "facts.json"
        argv = [sys.executable, "-m", "bench.gpu_check", "facts", "--json", path]
        res = run_process(argv, self.cfg["steps"]["facts"][0], self.work / "facts.log", self.env)
        facts = read_json(path) or {"error": res.get("error", "no facts written")}
        facts.update(nvidia_smi())
        return facts

    # -- step 1 -------------------------------------------------------------------------
    def train_argv(self, method: str, kind: str, precision: str, folder: Path) -> list:
        sizes = self.cfg["multiview" if kind == "multiview" else "faces"]
        return ["train.py", "--method", method, "--dataset", "synthetic", *sizes,
                "--epochs", "1", "--device", self.device,
                *PRECISIONS[precision], "--checkpoint-dir", str(folder / "ck"),
                "--log-dir", str(folder / "log"), "--json", str(folder / "result.json"),
                "--no-progress"]

    def step_train(self, limit: float) -> dict:
        methods = self.facts.get("methods") or {}
        if not methods:
            return {"status": "failed", "error": "no registered method found (facts: "
                                                 f"{self.facts.get('error', 'none')})"}
        folder = self.work / "train"
        plan = []
        for method, kind in methods.items():
            for precision in PRECISIONS:
                run_dir = folder / f"{method}_{precision}"
                argv = self.train_argv(method, kind, precision, run_dir)
                plan.append({"id": f"{method}/{precision}", "method": method,
                             "precision": precision, "dir": str(run_dir), "argv": argv})
        records = run_train_workers(plan, self.jobs, limit, folder, self.env)
        runs = []
        for item in plan:
            rec = records.get(item["id"]) or {"status": "skipped",
                                             "reason": "not reached before the step's time limit"}
            runs.append({"method": item["method"], "precision": item["precision"],
                         "command": shown(["python3", *item["argv"]]), **rec})
        failed = [r for r in runs if r["status"] != "ok"]
        step = {"status": "failed" if failed else "ok",
                "command": shown([sys.executable, "-m", "bench.gpu_check", "train-runs",
                                  "--plan", folder / "plan-N.json"]) +
                "  (runs each train.py command below in-process, as tests/script_runner.py "
                "does; " + f"{self.jobs} such processes at a time)",
                "figures": {"methods": list(methods), "runs_ok": len(runs) - len(failed),
                            "runs": len(runs)},
                "runs": runs}
        if failed:
            first = failed[0]
            step["error"] = (f"{len(failed)} of {len(runs)} runs not ok; first "
                             f"{first['method']}/{first['precision']}: "
                             f"{first.get('error') or first.get('reason')}")
        return step

    # -- step 2 -------------------------------------------------------------------------
    def step_torchrun(self, limit: float) -> dict:
        folder = self.work / "torchrun"
        gpus = int(self.facts.get("cuda_device_count") or 0)
        nproc = 2 if self.device.startswith("cuda") and gpus >= 2 else 1
        stop = time.perf_counter() + limit
        figures = {"processes": nproc, "method": "dcdh",
                   "backend": ("nccl" if self.device.startswith("cuda") else "gloo")
                   if nproc > 1 else "none (a world of 1 starts no process group)"}
        commands, results = [], {}
        for deterministic in (True, False):
            flags = ["--deterministic"] if deterministic else []
            common = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                      "--nproc_per_node", str(nproc), "train.py", "--method", "dcdh",
                      "--dataset", "synthetic", *self.cfg["faces"], "--len", "16",
                      "--device", self.device, "--seed", "0", *flags, "--save", "m.tar",
                      "--no-progress"]
            tag = "det" if deterministic else "nondet"
            plan = [("straight", ["--epochs", "2", "--checkpoint-dir", folder / tag / "straight",
                                  "--log-dir", folder / tag / "log",
                                  "--json", folder / tag / "straight.json"]),
                    ("first_epoch", ["--epochs", "1", "--checkpoint-dir", folder / tag / "split",
                                     "--log-dir", folder / tag / "log"]),
                    ("resumed", ["--epochs", "2", "--checkpoint-dir", folder / tag / "split",
                                 "--log-dir", folder / tag / "log", "--resume", "auto",
                                 "--json", folder / tag / "split.json"])]
            commands, results, failed = [], {}, None
            for label, extra in plan:
                argv = [*common, *extra]
                commands.append(shown(argv))
                res = run_process(argv, stop - time.perf_counter(),
                                  folder / tag / f"{label}.log", self.env)
                results[label] = {k: res[k] for k in ("rc", "seconds")}
                if res["rc"] != 0 or res["timed_out"]:
                    failed = (label, res["error"])
                    break
            if failed and deterministic and "determinis" in failed[1] and \
                    stop - time.perf_counter() > 20:
                figures["deterministic_error"] = f"{failed[0]}: {failed[1]}"
                continue  # an op without a deterministic implementation: again without
            break
        figures["deterministic"] = deterministic
        figures["runs"] = results
        if failed:
            return {"status": "failed", "command": commands, "figures": figures,
                    "error": f"{failed[0]} run: {failed[1]}"}
        cmp = compare_runs(folder / tag)
        figures.update(cmp)
        step = {"status": "ok", "command": commands, "figures": figures}
        notes = []
        if not cmp.get("identical"):
            if deterministic:
                step["status"] = "failed"
                step["error"] = (f"resumed != straight with --deterministic: "
                                 f"{cmp.get('differences', '?')}")
            else:
                notes.append("without --deterministic (an op has no deterministic "
                             "implementation here): float differences can be expected")
        if nproc == 1:
            notes.append("one process: the engine starts no process group for a world of 1, "
                         "so NCCL is exercised by the nccl step")
        if notes:
            step["note"] = "; ".join(notes)
        return step

    # -- step 2b ------------------------------------------------------------------------
    def step_nccl(self, limit: float) -> dict:
        gpus = int(self.facts.get("cuda_device_count") or 0)
        nproc = 2 if self.device.startswith("cuda") and gpus >= 2 else 1
        path = self.work / "nccl" / "probe.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                str(nproc), "--module", "bench.gpu_check", "ddp-probe", "--device", self.device,
                "--json", path, *(["--tiny"] if self.mode == "dry" else [])]
        res = run_process(argv, limit, self.work / "nccl" / "probe.log", self.env)
        figures = read_json(path) or {}
        step = {"command": shown(argv), "figures": figures}
        if res["rc"] != 0 or res["timed_out"]:
            return {**step, "status": "failed", "error": res["error"]}
        if not figures.get("ok"):
            return {**step, "status": "failed",
                    "error": figures.get("error", "the probe wrote no result")}
        return {**step, "status": "ok"}

    # -- step 3 and the last ------------------------------------------------------------
    def speed(self, limit: float, name: str, extra: list) -> dict:
        path = self.work / f"{name}.json"
        argv = [sys.executable, "-m", "bench.train_speed", "--device", self.device, "--amp",
                "--channels-last", *extra, "--json", path]
        res = run_process(argv, limit, self.work / f"{name}.log", self.env)
        data = read_json(path)
        rows = data["settings"] if isinstance(data, dict) and "settings" in data else \
            speed_rows_from_log(Path(res["log"]).read_text(errors="replace"))
        figures = {"settings": [
            {k: rnd(r.get(k), 1 if k.endswith("per_s") else 3) for k in
             ("name", "batch", "bare_images_per_s", "step_images_per_s", "epoch_images_per_s",
              "step_over_bare", "epoch_over_bare") if k in r} for r in rows]}
        step = {"command": shown(argv), "figures": figures}
        if res["rc"] != 0 or res["timed_out"]:
            return {**step, "status": "failed",
                    "error": f"{res['error']} ({len(rows)} settings measured)"}
        return {**step, "status": "ok"}

    def step_speed(self, limit: float) -> dict:
        return self.speed(limit, "train_speed", self.cfg["speed"])

    def step_compile(self, limit: float) -> dict:
        known = list(self.facts.get("speed_settings") or [])
        first = [n for n in self.cfg["compile_first"] if n in known]
        order = first + [n for n in known if n not in first]
        if self.cfg.get("compile_only_first"):
            order = order[:1]
        chosen = ["--settings", *order] if order else []
        return self.speed(limit, "train_speed_compile",
                          [*self.cfg["speed_compile"], *chosen, "--compile"])

    # -- step 4 -------------------------------------------------------------------------
    def step_metrics(self, limit: float) -> dict:
        path = self.work / "metrics.json"
        argv = [sys.executable, "-m", "bench.gpu_check", "metrics", "--device", self.device,
                *self.cfg["metrics"], "--json", path]
        res = run_process(argv, limit, self.work / "metrics.log", self.env)
        figures = read_json(path) or {}
        step = {"command": shown(argv), "figures": figures}
        if res["rc"] != 0 or res["timed_out"]:
            return {**step, "status": "failed", "error": res["error"]}
        if not figures.get("agree"):
            return {**step, "status": "failed",
                    "error": f"the device and the CPU disagree: {figures.get('disagreement')}"}
        return {**step, "status": "ok"}

    # -- step 5 -------------------------------------------------------------------------
    def step_loader(self, limit: float) -> dict:
        path = self.work / "loader_speed.json"
        argv = [sys.executable, "-m", "bench.loader_speed", "--device", self.device,
                *self.cfg["loader"], "--json", path]
        if not (ROOT / "bench" / "loader_speed.py").is_file():
            return {"status": "skipped", "command": shown(argv),
                    "reason": "bench.loader_speed missing"}
        res = run_process(argv, limit, self.work / "loader_speed.log", self.env)
        rows = preset_rows(read_json(path))
        keys = ("preset", "uncached_images_per_s", "cached_images_per_s",
                "bare_network_images_per_s")
        figures = {"presets": [{k: rnd(r.get(k), 1) for k in keys} for r in rows]}
        step = {"command": shown(argv), "figures": figures}
        if res["rc"] != 0 or res["timed_out"]:
            return {**step, "status": "failed", "error": res["error"]}
        if not rows:
            return {**step, "status": "failed", "error": f"no preset rows in {path}"}
        return {**step, "status": "ok"}

    # -- step 6 -------------------------------------------------------------------------
    def step_faiss(self, limit: float) -> dict:
        path = self.work / "faiss.json"
        on_gpu = self.device.startswith("cuda")
        argv = [sys.executable, "-m", "bench.gpu_check", "faiss", *self.cfg["faiss"],
                *(["--gpu"] if on_gpu else []), "--json", path]
        if not self.facts.get("faiss"):
            return {"status": "skipped", "command": shown(argv), "reason": "faiss not installed"}
        if on_gpu and not self.facts.get("faiss_gpus"):
            return {"status": "skipped", "command": shown(argv), "reason": "faiss without GPU"}
        res = run_process(argv, limit, self.work / "faiss.log", self.env)
        figures = read_json(path) or {}
        step = {"command": shown(argv), "figures": figures}
        if not on_gpu:
            step["note"] = "CPU index only (dry run): the GPU index needs faiss's GPU build"
        if res["rc"] != 0 or res["timed_out"]:
            return {**step, "status": "failed", "error": res["error"]}
        if not figures.get("agree"):
            return {**step, "status": "failed", "error": "faiss's answers differ from the "
                                                        "project's exact top-k"}
        return {**step, "status": "ok"}


def nvidia_smi() -> dict:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return {}
    try:
        out = subprocess.run([exe, "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=20)
    except (OSError, subprocess.SubprocessError):
        return {}
    first = out.stdout.strip().splitlines()[:1]
    if out.returncode or not first:
        return {}
    parts = [p.strip() for p in first[0].split(",")]
    return {"driver": parts[1] if len(parts) > 1 else None,
            "nvidia_smi": out.stdout.strip()}


def run_train_workers(plan: list, jobs: int, limit: float, folder: Path, env) -> dict:
    """Run the train.py commands of ``plan`` in ``jobs`` worker processes (each
    runs its share in-process, one after the other) within ``limit`` seconds;
    a worker that dies (or whose CUDA context broke) is replaced for the runs
    it had not started.  Returns {id: record}."""
    folder.mkdir(parents=True, exist_ok=True)
    stop = time.perf_counter() + limit
    shares = [plan[i::jobs] for i in range(jobs)]
    records: dict = {}
    active = []  # (proc, share, records file, restarts)
    counter = 0

    def launch(share, restarts):
        nonlocal counter
        counter += 1
        plan_path = folder / f"plan-{counter}.json"
        rec_path = folder / f"records-{counter}.jsonl"
        plan_path.write_text(json.dumps(share, default=str))
        rec_path.write_text("")
        worker_env = dict(env)
        if "OMP_NUM_THREADS" not in env:  # the cores shared among the workers
            worker_env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
        # else numba's first parallel kernel (the metrics) gives torch every core
        worker_env.setdefault("NUMBA_NUM_THREADS", worker_env["OMP_NUM_THREADS"])
        argv = [sys.executable, "-m", "bench.gpu_check", "train-runs", "--plan", plan_path,
                "--records", rec_path]
        active.append((start(argv, folder / f"worker-{counter}.log", worker_env), share,
                       rec_path, restarts))

    def harvest(share, rec_path, how: str):
        """Records of a worker's runs; the run it was in when it ended: failed."""
        started = None
        for line in rec_path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("event") == "start":
                started = entry["id"]
            else:
                records[entry["id"]] = entry["record"]
                started = None
        if started is not None and started not in records:
            records[started] = {"status": "failed", "error": how}
        return [item for item in share if item["id"] not in records]

    for share in shares:
        if share:
            launch(share, 0)
    try:
        while active:
            time.sleep(0.2)
            for entry in list(active):
                proc, share, rec_path, restarts = entry
                if proc.poll() is None and time.perf_counter() < stop:
                    continue
                if proc.poll() is None:  # out of time
                    kill_group(proc)
                    active.remove(entry)
                    harvest(share, rec_path, f"timed out (the step's limit of {limit:.0f} s)")
                    continue
                active.remove(entry)
                how = f"the worker process ended with status {proc.returncode} during this run"
                pending = harvest(share, rec_path, how)
                if pending and restarts < 3 and stop - time.perf_counter() > 15:
                    launch(pending, restarts + 1)
    finally:
        for proc, *_ in active:
            kill_group(proc)
    return records


def compare_runs(folder: Path) -> dict:
    """Straight vs resumed: every tensor and number of the two resume files
    (the run records and provenance left out), and the two results."""
    import torch

    a = torch.load(folder / "straight" / "m_last.tar", map_location="cpu", weights_only=True)
    b = torch.load(folder / "split" / "m_last.tar", map_location="cpu", weights_only=True)
    diffs, count = [], [0]

    def walk(x, y, where):
        if isinstance(x, dict) and isinstance(y, dict):
            if set(x) != set(y):
                diffs.append((where, "different keys", float("inf")))
            for k in x:
                if k in y and k not in ("run", "provenance", "checkpoint_dir"):
                    walk(x[k], y[k], f"{where}.{k}" if where else str(k))
        elif isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
            if len(x) != len(y):
                diffs.append((where, "different lengths", float("inf")))
            for i, (u, v) in enumerate(zip(x, y)):
                walk(u, v, f"{where}[{i}]")
        elif isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
            count[0] += 1
            if x.shape != y.shape or x.dtype != y.dtype:
                diffs.append((where, "different shape or dtype", float("inf")))
            elif not torch.equal(x, y):
                d = (x.double() - y.double()).abs().max().item() if x.is_floating_point() \
                    else float("nan")
                diffs.append((where, "values", d))
        elif isinstance(x, float) and isinstance(y, float):
            count[0] += 1
            if not (x == y or (x != x and y != y)):
                diffs.append((where, "values", abs(x - y)))
        elif x != y and not callable(x):
            count[0] += 1
            diffs.append((where, "values", float("nan")))

    walk(a, b, "")
    ra, rb = read_json(folder / "straight.json") or {}, read_json(folder / "split.json") or {}
    out = {"compared_entries": count[0], "differing_entries": len(diffs),
           "identical": not diffs and ra.get("mAP") == rb.get("mAP"),
           "epochs": [a.get("epoch"), b.get("epoch")],
           "mAP_straight": ra.get("mAP"), "mAP_resumed": rb.get("mAP"),
           "losses_straight": ra.get("losses"), "losses_resumed": rb.get("losses")}
    if diffs:
        finite_d = [d for _, _, d in diffs if finite(d)]
        out["max_abs_diff"] = max(finite_d) if finite_d else None
        out["differences"] = "; ".join(f"{w}: {what}" + (f" {d:.3g}" if finite(d) else "")
                                       for w, what, d in diffs[:6])
    return out


SPEED_ROW = re.compile(r"^(\S+)\s+(\S+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+"
                       r"([\d.]+)\s*$")


def speed_rows_from_log(text: str) -> list:
    """bench.train_speed's printed rows (what a run cut short had measured)."""
    rows = []
    for line in text.splitlines():
        m = SPEED_ROW.match(line.strip())
        if m:
            rows.append({"name": m[1], "batch": int(m[3]), "bare_images_per_s": float(m[4]),
                         "step_images_per_s": float(m[5]), "epoch_images_per_s": float(m[6]),
                         "step_over_bare": float(m[7]), "epoch_over_bare": float(m[8])})
    return rows


def preset_rows(data) -> list:
    """The first list of rows with a "preset" key anywhere in a JSON document."""
    if isinstance(data, list):
        if data and all(isinstance(r, dict) and "preset" in r for r in data):
            return data
        for v in data:
            found = preset_rows(v)
            if found:
                return found
    if isinstance(data, dict):
        for v in data.values():
            found = preset_rows(v)
            if found:
                return found
    return []


# ---------------------------------------------------------------------------
# the summary
# ---------------------------------------------------------------------------

def _num(x, fmt="{:.0f}"):
    return fmt.format(x) if finite(x) else "-"


def summary(doc: dict) -> str:
    """At most about 40 lines: the machine, then each step with its figures."""
    m = doc["machine"]
    gpu = m.get("cuda_devices") or []
    lines = []
    if gpu:
        g = gpu[0]
        lines.append(f"GPU check on {g.get('name')} ({_num(g.get('memory_gib'), '{:.1f}')} GiB, "
                     f"sm_{g.get('capability', '?')}, {len(gpu)} GPU(s)), driver "
                     f"{m.get('driver') or '?'}")
    else:
        lines.append(f"GPU check, {doc['mode']} run on {doc['device']} (no CUDA device)")
    lines.append(f"torch {m.get('torch')}, CUDA {m.get('torch_cuda')}, cuDNN {m.get('cudnn')}, "
                 f"NCCL {m.get('nccl')}, faiss {m.get('faiss') or '-'} "
                 f"(GPU build: {'yes' if m.get('faiss_gpus') else 'no'}); commit "
                 f"{(m.get('git_commit') or '?')[:10]}")
    lines.append(f"{doc['seconds']:.0f} s of a {doc['budget_s']:.0f} s budget; "
                 f"{doc['command']}")
    for s in doc["steps"]:
        mark = {"ok": "ok", "failed": "FAILED", "skipped": "skipped"}[s["status"]]
        head = f"[{mark}] {s['name']}: {s['title']} ({s.get('seconds', 0):.0f} s)"
        lines.append(head)
        if s["status"] == "skipped":
            lines[-1] += f": {s.get('reason')}"
            continue
        lines += [f"    {x}" for x in step_lines(s)]
        if s.get("error"):
            lines.append(f"    error: {s['error'][:200]}")
    return "\n".join(lines)


def step_lines(s: dict) -> list:
    f = s.get("figures") or {}
    name = s["name"]
    if name == "train":
        out = [f"{f.get('runs_ok')}/{f.get('runs')} runs ok; mAP fp32/bf16/fp16 "
               f"(x = not ok), fp16 loss scale:"]
        by = {}
        for r in s.get("runs", []):
            by.setdefault(r["method"], {})[r["precision"]] = r
        cells = []
        for method, rs in by.items():
            maps = "/".join(_num((rs.get(p) or {}).get("mAP"), "{:.2f}")
                            if (rs.get(p) or {}).get("status") == "ok" else "x"
                            for p in PRECISIONS)
            scale = (rs.get("fp16") or {}).get("scaler_scale")
            cells.append(f"{method} {maps} ({_num(scale, '{:.0f}')})")
        out += ["  ".join(cells[i:i + 3]) for i in range(0, len(cells), 3)]
        bad = [r for r in s.get("runs", []) if r.get("status") != "ok"]
        out += [f"{r['method']}/{r['precision']}: {(r.get('error') or r.get('reason'))[:150]}"
                for r in bad[:4]]
        if len(bad) > 4:
            out.append(f"... and {len(bad) - 4} more runs not ok (gpu_check.json)")
        return out
    if name == "torchrun":
        same = "identical" if f.get("identical") else \
            f"DIFFER ({f.get('differing_entries')} entries, max |diff| {f.get('max_abs_diff')})"
        return [f"{f.get('processes')} process(es), backend {f.get('backend')}, "
                f"deterministic {f.get('deterministic')}: resumed vs straight {same} "
                f"({f.get('compared_entries')} entries); mAP "
                f"{_num(f.get('mAP_resumed'), '{:.4f}')}"]
    if name == "nccl":
        return [f"backend {f.get('backend')} (NCCL {f.get('nccl_version') or '-'}), world "
                f"{f.get('world_size')}, DDP epoch loss {_num(f.get('loss'), '{:.4f}')}, "
                f"all_reduce {'ok' if f.get('all_reduce_ok') else 'WRONG'}, "
                f"{_num(f.get('epoch_seconds'), '{:.2f}')} s"]
    if name in ("speed", "compile"):
        rows = f.get("settings", [])
        cells = [f"{r['name']} {_num(r.get('bare_images_per_s'))}/"
                 f"{_num(r.get('step_images_per_s'))}/{_num(r.get('epoch_images_per_s'))}"
                 for r in rows]
        out = ["img/s bare/step/epoch:"] if cells else []
        return out + ["  ".join(cells[i:i + 3]) for i in range(0, len(cells), 3)]
    if name == "metrics":
        return [f"{f.get('queries')} x {f.get('database')} x {f.get('bits')} bits on "
                f"{f.get('device')}: {_num(f.get('device_seconds'), '{:.3f}')} s "
                f"(CPU {f.get('cpu_backend')}: {_num(f.get('cpu_seconds'), '{:.3f}')} s); mAP "
                f"{_num(f.get('mAP'), '{:.4f}')}; agree with the CPU: {f.get('agree')} "
                f"(max |diff| {f.get('max_abs_diff')})"]
    if name == "loader":
        cells = [f"{r['preset']} {_num(r.get('uncached_images_per_s'))}/"
                 f"{_num(r.get('cached_images_per_s'))}/{_num(r.get('bare_network_images_per_s'))}"
                 for r in f.get("presets", [])]
        out = ["img/s uncached/cached/bare network:"] if cells else []
        return out + ["  ".join(cells[i:i + 3]) for i in range(0, len(cells), 3)]
    if name == "faiss":
        return [f"{f.get('database')} x {f.get('bits')} bits, {f.get('queries')} queries, top "
                f"{f.get('topk')}: QPS {f.get('where')} {_num(f.get('qps_exact'))} (CPU index "
                f"{_num(f.get('cpu_qps_exact'))}); same answers as the project: {f.get('agree')}"]
    return []


# ---------------------------------------------------------------------------
# sub-commands run by the check (each in its own process)
# ---------------------------------------------------------------------------

def cmd_facts(argv) -> int:
    p = argparse.ArgumentParser(prog="bench.gpu_check facts")
    p.add_argument("--json", required=True)
    args = p.parse_args(argv)
    import platform

    facts = {"python": platform.python_version(), "platform": platform.platform(),
             "cpu_count": os.cpu_count()}
    try:
        facts["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, text=True,
                                             capture_output=True, timeout=10).stdout.strip()
        facts["git_dirty"] = bool(subprocess.run(["git", "status", "--porcelain"], cwd=ROOT,
                                                 text=True, capture_output=True,
                                                 timeout=20).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    write_json_atomic(Path(args.json), facts)  # something, should torch hang below
    import torch

    facts.update({"torch": torch.__version__, "torch_cuda": torch.version.cuda,
                  "cuda_available": torch.cuda.is_available()})
    try:
        facts["cudnn"] = torch.backends.cudnn.version()
    except Exception as exc:  # noqa: BLE001 - a fact, not a failure
        facts["cudnn"] = f"unknown ({exc})"
    if torch.cuda.is_available():
        facts["cuda_device_count"] = torch.cuda.device_count()
        devices = []
        for i in range(torch.cuda.device_count()):
            p_ = torch.cuda.get_device_properties(i)
            devices.append({"name": p_.name, "memory_gib": round(p_.total_memory / 2 ** 30, 2),
                            "capability": f"{p_.major}{p_.minor}",
                            "multiprocessors": p_.multi_processor_count})
        facts["cuda_devices"] = devices
        facts["bf16_supported"] = torch.cuda.is_bf16_supported()
        try:
            v = torch.cuda.nccl.version()
            facts["nccl"] = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
        except Exception as exc:  # noqa: BLE001
            facts["nccl"] = f"unknown ({exc})"
    for module in ("torchvision", "numpy", "numba", "triton"):
        try:
            facts[module] = __import__(module).__version__
        except Exception:  # noqa: BLE001 - absent is a fact too
            facts[module] = None
    try:
        import faiss

        facts["faiss"] = faiss.__version__
        facts["faiss_gpus"] = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    except Exception:  # noqa: BLE001
        facts["faiss"], facts["faiss_gpus"] = None, 0
    from methods import method_class, method_names

    facts["methods"] = {n: method_class(n).data_kind for n in method_names()}
    from bench.train_speed import settings

    facts["speed_settings"] = list(settings())
    write_json_atomic(Path(args.json), facts)
    return 0


def cmd_train_runs(argv) -> int:
    """Run train.py command lines in this process, one after the other,
    appending a start line and a record per run to --records."""
    p = argparse.ArgumentParser(prog="bench.gpu_check train-runs")
    p.add_argument("--plan", required=True)
    p.add_argument("--records", required=True)
    args = p.parse_args(argv)
    import contextlib
    import gc
    import traceback

    import torch

    import train as train_script
    from utils.cli import run_script

    plan = json.loads(Path(args.plan).read_text())
    records = open(args.records, "a")

    def note(entry):
        records.write(json.dumps(clean(entry), default=str) + "\n")
        records.flush()

    for item in plan:
        note({"event": "start", "id": item["id"]})
        folder = Path(item["dir"])
        folder.mkdir(parents=True, exist_ok=True)
        os.chdir(folder)  # whatever a method writes to a relative path lands here
        cuda = torch.cuda.is_available() and "cuda" in " ".join(item["argv"])
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        err = Tee(sys.stderr)
        began, began_cpu = time.perf_counter(), time.process_time()
        error = None
        with contextlib.redirect_stderr(err):
            try:
                script_argv = item["argv"][1:]
                parsed = train_script.get_args_parser(script_argv).parse_args(script_argv)
                rc = run_script(train_script.main, parsed)
            except SystemExit as exc:
                rc = int(exc.code or 0) if not isinstance(exc.code, str) else 2
            except BaseException as exc:  # noqa: BLE001 - recorded, the next run goes on
                traceback.print_exc()
                text = str(exc).strip()
                rc, error = 1, f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
        seconds = time.perf_counter() - began
        record = {"rc": rc, "seconds": round(seconds, 2),
                  "cpu_seconds": round(time.process_time() - began_cpu, 2)}
        if cuda:
            try:  # (after a CUDA error these raise it again)
                torch.cuda.synchronize()
                record["peak_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
            except Exception as exc:  # noqa: BLE001
                error = error or f"{type(exc).__name__}: {str(exc).strip()[:300]}"
                rc = rc or 1
                record["rc"] = rc
        if rc != 0:
            record.update(status="failed", error=error or last_error(err.getvalue()))
        else:
            record.update(train_figures(folder, item["precision"]))
        note({"id": item["id"], "record": record})
        gc.collect()
        if cuda:
            try:
                torch.cuda.empty_cache()
            except Exception:  # noqa: BLE001 - a broken context: the check below ends here
                pass
        os.chdir(ROOT)
        if rc != 0 and FATAL_CUDA.search(record.get("error", "") + err.getvalue()[-2000:]):
            return 3  # a fresh process for the runs left: this CUDA context is unusable
    return 0


class Tee(io.TextIOBase):
    """stderr as it is, and a copy to read the error line from."""

    def __init__(self, stream):
        self.stream, self.parts = stream, []

    def write(self, text):
        self.parts.append(text)
        return self.stream.write(text)

    def flush(self):
        self.stream.flush()

    def getvalue(self):
        return "".join(self.parts)


def train_figures(folder: Path, precision: str) -> dict:
    """A finished run's figures: from its --json, and its resume file(s)."""
    result = read_json(folder / "result.json")
    if not isinstance(result, dict):
        return {"status": "failed", "error": "the run wrote no JSON result"}
    models = result.get("models") if isinstance(result.get("models"), list) else [result]
    losses = [x for m in models if isinstance(m, dict) for x in (m.get("losses") or [])]
    mAP = result.get("mAP", result.get("mean"))
    out = {"losses": [rnd(x, 5) for x in losses], "loss_finite": bool(losses) and
           all(finite(x) for x in losses), "mAP": rnd(mAP, 4)}
    if "results" in result:
        out["cross_view_mAP"] = result["results"]
    out.update(resume_file_facts(folder / "ck"))
    # once read, the checkpoints go: 24 runs' files take gigabytes (DCHN's 200 MB each)
    shutil.rmtree(folder / "ck", ignore_errors=True)
    problems = []
    if not out["loss_finite"]:
        problems.append(f"loss not finite: {losses}")
    if not finite(mAP):
        problems.append(f"mAP {mAP}")
    if out.get("files_read") and precision == "fp16" and not out.get("grad_scaler"):
        problems.append("no grad scaler state in the resume file of an fp16 run")
    if out.get("files_read") and precision != "fp16" and out.get("grad_scaler"):
        problems.append(f"a grad scaler in a {precision} run")
    out["status"] = "failed" if problems else "ok"
    if problems:
        out["error"] = "; ".join(problems)
    return out


def resume_file_facts(folder: Path) -> dict:
    """What the run's resume files record: the device, --amp, the grad scaler."""
    from methods import read_checkpoint

    facts = {"files_read": 0}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        try:
            ckpt = read_checkpoint(path)
        except Exception:  # noqa: BLE001 - not a checkpoint (or not one of ours)
            continue
        if not isinstance(ckpt, dict) or "train_state" not in ckpt:
            continue
        facts["files_read"] += 1
        run = ckpt.get("run") if isinstance(ckpt.get("run"), dict) else {}
        facts["device"] = run.get("device")
        facts["amp"] = run.get("amp")
        scaler = ckpt.get("scaler")
        if isinstance(scaler, dict):
            facts["grad_scaler"] = True
            facts["scaler_scale"] = scaler.get("scale")
        else:
            facts.setdefault("grad_scaler", False)
    return facts


def cmd_ddp_probe(argv) -> int:
    """Under torchrun: a process group (NCCL on CUDA, gloo on the CPU), the
    engine's training epoch through DistributedDataParallel as ``prepare``
    builds it, the engine's all_reduce_sum and barrier."""
    p = argparse.ArgumentParser(prog="bench.gpu_check ddp-probe")
    p.add_argument("--device", default="cuda")
    p.add_argument("--json", required=True)
    p.add_argument("--tiny", action="store_true")
    args = p.parse_args(argv)
    import torch
    import torch.distributed as dist

    from bench.train_speed import build, data, settings, tiny
    from utils.engine.distributed import DistInfo, all_reduce_sum, barrier
    from utils.engine.files import RunFiles
    from utils.engine.loop import FitConfig, train_one_epoch

    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    out = {"ok": False, "backend": backend, "world_size": world, "device": str(device)}
    try:
        dist.init_process_group(backend)
        out["backend"] = dist.get_backend()
        if device.type == "cuda":
            v = torch.cuda.nccl.version()
            out["nccl_version"] = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
        torch.manual_seed(0)
        s = settings()["dcdh_dfhnet"]
        s = tiny(s) if args.tiny else s
        method, optimizer, recipe = build(s, device)
        loader = data(s, method, recipe, 4, device)
        # what utils.engine.precision.prepare builds for a world of several
        trained = torch.nn.parallel.DistributedDataParallel(
            method, device_ids=[device.index] if device.type == "cuda" else None)
        config = FitConfig(1, device, RunFiles(last="unused"), progress=False,
                           dist=DistInfo(rank, world, local))
        began = time.perf_counter()
        total, count = train_one_epoch(trained, method, optimizer, None, loader, config, 0, None)
        total, count = all_reduce_sum([total, count], device)
        barrier()
        if device.type == "cuda":
            torch.cuda.synchronize()
        out["epoch_seconds"] = round(time.perf_counter() - began, 3)
        out["loss"] = total / max(count, 1)
        out["items"] = count
        t = torch.full((4,), float(rank + 1), device=device)
        dist.all_reduce(t)
        out["all_reduce_ok"] = bool(torch.all(t == world * (world + 1) / 2).item())
        b = torch.arange(3, device=device) * (rank + 1)
        dist.broadcast(b, 0)
        out["broadcast_ok"] = b.tolist() == [0, 1, 2]
        # the parameters are the same on every process after the DDP steps
        w = next(method.parameters()).detach().double().sum().reshape(1)
        gathered = [torch.zeros_like(w) for _ in range(world)]
        dist.all_gather(gathered, w)
        out["parameters_in_sync"] = all(torch.equal(g, gathered[0]) for g in gathered)
        out["ok"] = finite(out["loss"]) and out["all_reduce_ok"] and out["broadcast_ok"] and \
            out["parameters_in_sync"]
        if not out["ok"]:
            out["error"] = "a collective or the loss is wrong"
    except Exception as exc:  # noqa: BLE001 - written for the check, then raised
        out["error"] = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
        raise
    finally:
        if rank == 0:
            write_json_atomic(Path(args.json), clean(out))
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


def parse_size(text: str):
    q, _, n = text.lower().partition("x")
    try:
        q, n = int(q), int(n)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 10000x200000, got {text!r}") \
            from None
    if not (1 <= q <= 10 ** 7 and 1 <= n <= 10 ** 8):
        raise argparse.ArgumentTypeError(f"size out of range: {text!r}")
    return q, n


def cmd_metrics(argv) -> int:
    """evaluate_codes on the device (torch back end) at one size: timed, and
    checked against the CPU path (numba; torch on the CPU without numba)."""
    p = argparse.ArgumentParser(prog="bench.gpu_check metrics")
    p.add_argument("--device", default="cuda")
    p.add_argument("--size", type=parse_size, default=(10000, 200000))
    p.add_argument("--bits", type=int, default=48)
    p.add_argument("--check-queries", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", required=True)
    args = p.parse_args(argv)
    import numpy as np
    import torch

    from bench.eval_speed import synthetic_codes
    from utils.retrieval import metrics

    (nq, n), device = args.size, torch.device(args.device)
    began = time.perf_counter()
    d = synthetic_codes(nq, n, args.bits, 530, 0)
    codes = (d["query_codes"], d["db_codes"], d["query_labels"], d["db_labels"])
    out = {"queries": nq, "database": n, "bits": args.bits, "device": str(device),
           "data_seconds": round(time.perf_counter() - began, 2)}
    small = synthetic_codes(8, 64, args.bits, 5, 1)
    metrics.evaluate_codes(small["query_codes"], small["db_codes"], small["query_labels"],
                           small["db_labels"], device=device, backend="torch")  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    runs = []
    for _ in range(max(1, args.repeat)):
        t0 = time.perf_counter()
        on_device = metrics.evaluate_codes(*codes, radius=2, device=device, backend="torch")
        if device.type == "cuda":
            torch.cuda.synchronize()
        runs.append(time.perf_counter() - t0)
    out["device_runs"] = [round(t, 4) for t in runs]
    out["device_seconds"] = round(min(runs), 4)
    out["target_s"] = 0.5
    if device.type == "cuda":
        out["peak_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
    out["mAP"] = on_device["mAP"]
    cpu_backend = "numba" if metrics._hamming_kernel is not None else "torch"
    out["cpu_backend"] = cpu_backend
    if cpu_backend == "numba":  # the whole problem (well under a second on a few cores)
        metrics.evaluate_codes(small["query_codes"], small["db_codes"], small["query_labels"],
                               small["db_labels"], backend="numba")  # compile or cache load
        t0 = time.perf_counter()
        on_cpu = metrics.evaluate_codes(*codes, radius=2, backend="numba")
        out["cpu_seconds"] = round(time.perf_counter() - t0, 4)
        out["cpu_scope"] = "all queries"
    else:  # torch on the CPU is slow at this size: the subset only
        k = min(nq, args.check_queries)
        sub = (codes[0][:k], codes[1], codes[2][:k], codes[3])
        on_device = metrics.evaluate_codes(*sub, radius=2, device=device, backend="torch")
        on_cpu = metrics.evaluate_codes(*sub, radius=2, backend="torch")
        out["cpu_scope"] = f"first {k} queries"
    # every reported number, device vs CPU
    flat_d, flat_c = flatten(on_device), flatten(on_cpu)
    diffs = {k: abs(flat_d[k] - flat_c[k]) for k in flat_d
             if k in flat_c and finite(flat_d[k]) and finite(flat_c[k])}
    out["max_abs_diff"] = max(diffs.values()) if diffs else None
    worst = max(diffs, key=diffs.get) if diffs else None
    # the per-query statistics on a subset: AP, tie-aware AP, hits, histograms
    k = min(nq, args.check_queries)
    sub = (codes[0][:k], codes[1], codes[2][:k], codes[3])
    pos = (1, 5, 10, 100, 1000)
    sd = metrics.hamming_ranking_stats(*sub, positions=pos, device=device, backend="torch")
    sc = metrics.hamming_ranking_stats(*sub, positions=pos, backend=cpu_backend)
    per_query = {"ap": float(np.abs(sd.ap - sc.ap).max()),
                 "ap_tie_aware": float(np.abs(sd.ap_tie_aware - sc.ap_tie_aware).max()),
                 "hits_equal": bool(np.array_equal(sd.hits_at, sc.hits_at)),
                 "histograms_equal": bool(np.array_equal(sd.hist_all, sc.hist_all) and
                                          np.array_equal(sd.hist_rel, sc.hist_rel))}
    out["per_query_check"] = {"queries": k, **per_query}
    out["agree"] = bool(set(flat_d) == set(flat_c) and (out["max_abs_diff"] or 0) <= 1e-9 and
                        per_query["ap"] <= 1e-9 and per_query["ap_tie_aware"] <= 1e-9 and
                        per_query["hits_equal"] and per_query["histograms_equal"])
    if not out["agree"]:
        out["disagreement"] = f"largest at {worst}: {diffs.get(worst)}; per query {per_query}"
    write_json_atomic(Path(args.json), clean(out))
    print(json.dumps(clean(out), indent=1))
    return 0


def flatten(value, prefix="") -> dict:
    out = {}
    if isinstance(value, dict):
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}{i}."))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out[prefix.rstrip(".")] = float(value)
    return out


def cmd_faiss(argv) -> int:
    """faiss's flat binary index (on the GPU with --gpu, else the CPU index)
    against the project's exact top-k: QPS, and identical answers."""
    p = argparse.ArgumentParser(prog="bench.gpu_check faiss")
    p.add_argument("--db", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--bits", type=int, default=48)
    p.add_argument("--topk", type=int, default=10)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--gpu", action="store_true")
    p.add_argument("--json", required=True)
    args = p.parse_args(argv)
    import numpy as np
    import torch

    from bench.eval_speed import synthetic_codes
    from bench.index_speed import best_time, project_topk
    from utils.retrieval import faiss_index as fi

    faiss = fi.require_faiss()
    d = synthetic_codes(args.queries, args.db, args.bits, 530, 0)
    db_bits, q_bits = d["db_codes"] > 0, d["query_codes"] > 0
    packed_db, packed_q = np.packbits(db_bits, axis=1), np.packbits(q_bits, axis=1)
    k = min(args.topk, args.db)
    check = min(args.queries, 200)  # the project's exact top-k on these queries
    ref_d, ref_i = project_topk(torch.from_numpy(q_bits[:check]), torch.from_numpy(db_bits), k, 64)
    out = {"database": args.db, "queries": args.queries, "bits": args.bits, "topk": k,
           "faiss": faiss.__version__, "where": "GPU" if args.gpu else "CPU"}
    t0 = time.perf_counter()
    cpu = fi.build_binary_index(packed_db, args.bits, "flat")
    out["cpu_build_seconds"] = round(time.perf_counter() - t0, 3)
    # the CPU index is the reference (timed once where the GPU index is the subject)
    (cd, ci), cs = best_time(lambda: fi.search_exact(cpu, packed_q, k),
                             1 if args.gpu else args.repeat)
    out["cpu_qps_exact"] = args.queries / cs
    index, (ed, ei), es = cpu, (cd, ci), cs
    if args.gpu:
        t0 = time.perf_counter()
        index = fi.build_binary_index(packed_db, args.bits, "flat", gpu=True)
        out["gpu_build_seconds"] = round(time.perf_counter() - t0, 3)
        out["gpu_index"] = type(index).__name__
        fi.search(index, packed_q[:8], k)  # warm-up
        (ed, ei), es = best_time(lambda: fi.search_exact(index, packed_q, k), args.repeat)
    (rd, ri), rs = best_time(lambda: fi.search(index, packed_q, k), args.repeat)
    out["qps_faiss_order"] = args.queries / rs
    out["qps_exact"] = args.queries / es
    out["exact_equals_project"] = bool(np.array_equal(ei[:check], ref_i) and
                                       np.array_equal(ed[:check], ref_d))
    out["exact_equals_cpu_index"] = bool(np.array_equal(ei, ci) and np.array_equal(ed, cd))
    out["faiss_order_distances_equal"] = bool(np.array_equal(rd[:check], ref_d))
    out["faiss_order_ids_equal_project"] = bool(np.array_equal(ri[:check], ref_i))
    out["agree"] = out["exact_equals_project"] and out["exact_equals_cpu_index"] and \
        out["faiss_order_distances_equal"]
    write_json_atomic(Path(args.json), clean(out))
    print(json.dumps(clean(out), indent=1))
    return 0


SUBCOMMANDS = {"facts": cmd_facts, "train-runs": cmd_train_runs, "ddp-probe": cmd_ddp_probe,
               "metrics": cmd_metrics, "faiss": cmd_faiss}


# ---------------------------------------------------------------------------

def resolve_out(args) -> Path:
    base = Path(os.environ.get("GPU_CHECK_CALLER_DIR") or os.getcwd())
    out = Path(args.out or ("gpu_check_dry" if args.dry_run else "gpu_check")).expanduser()
    return out if out.is_absolute() else base / out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SUBCOMMANDS:
        return SUBCOMMANDS[argv[0]](argv[1:]) or 0
    args = get_args_parser().parse_args(argv)
    out = resolve_out(args)

    def usage(message):
        print(f"error: {message}", file=sys.stderr)
        return 2

    if out.exists() and not out.is_dir():
        return usage(f"--out {args.out}: {out} is a file, not a folder")
    if (out / "gpu_check.json").exists() and not args.overwrite:
        return usage(f"--out {args.out or out}: {out / 'gpu_check.json'} exists (an earlier "
                     f"check's result); pass --overwrite to replace it, or another --out")
    device = args.device or ("cpu" if args.dry_run else "cuda")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        return usage(f"--device {device}: use cpu, cuda or cuda:N")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".gpu_check_write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        return usage(f"--out {args.out or out}: cannot write there ({exc.strerror or exc})")
    check = Check(args, out)
    if check.work.exists():
        if not (check.work / MARK).is_file():
            return usage(f"--out {args.out or out}: {check.work} exists and was not made by "
                         f"this check; choose another --out")
        shutil.rmtree(check.work)  # a replaced check's files, or an interrupted one's
    check.work.mkdir(parents=True)
    (check.work / MARK).write_text("bench/gpu_check.sh's working files (removed by --overwrite)\n")
    print(f"gpu_check: {check.mode} run on {device}, budget {check.budget:.0f} s, out {out}",
          flush=True)
    check.facts = check.gather_facts()
    if device.startswith("cuda") and not check.facts.get("cuda_available"):
        shutil.rmtree(check.work, ignore_errors=True)
        return usage(f"--device {device}: CUDA is not available here (torch "
                     f"{check.facts.get('torch')}, built for CUDA "
                     f"{check.facts.get('torch_cuda')}); run with --dry-run for the CPU check")
    check.save()  # from now on the folder holds a result (complete: false until the end)
    try:
        return check.run()
    except KeyboardInterrupt:
        check.save()
        print("interrupted; the steps done so far are in " + str(out / "gpu_check.json"),
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
