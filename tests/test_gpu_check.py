"""bench/gpu_check.sh, the one prepared GPU check, in its dry mode (the CPU,
tiny sizes): every step runs the command it runs on a GPU, so that the check
cannot rot where there is no GPU.  One dry run for the module; its JSON,
summary and the bad-input lines are checked."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import gpu_check

ROOT = Path(__file__).resolve().parent.parent

# the only skips a dry run may make, each with its reason: what this machine lacks
ALLOWED_SKIPS = {"faiss": "faiss not installed", "loader": "bench.loader_speed missing"}


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "out"
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run", "--out",
                           str(out)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    return out, proc


@pytest.mark.subprocess
def test_dry_run_covers_every_step_and_every_method(dry_run):
    from methods import method_names

    out, proc = dry_run
    doc = json.loads((out / "gpu_check.json").read_text())
    steps = {s["name"]: s for s in doc["steps"]}
    assert list(steps) == list(gpu_check.STEPS)
    assert doc["mode"] == "dry" and doc["device"] == "cpu"
    assert doc["machine"]["torch"] and doc["machine"]["cuda_available"] in (True, False)
    # every registered method, each in float32, bf16 and fp16, trained and evaluated
    runs = {(r["method"], r["precision"]): r for r in steps["train"]["runs"]}
    assert set(runs) == {(m, p) for m in method_names() for p in ("fp32", "bf16", "fp16")}
    for (method, precision), r in runs.items():
        assert r["status"] == "ok", (method, precision, r.get("error") or r.get("reason"))
        assert r["loss_finite"] and 0 <= r["mAP"] <= 1
        assert r["command"].startswith(f"python3 train.py --method {method} --dataset synthetic")
        assert r["grad_scaler"] == (precision == "fp16")  # fp16 runs with the grad scaler
        assert r["amp"] == (None if precision == "fp32" else precision)
    # each step ok, or skipped for a reason this machine gives (none silently)
    for name, s in steps.items():
        if s["status"] == "skipped" and name in ALLOWED_SKIPS:
            assert s["reason"] == ALLOWED_SKIPS[name]
        else:
            assert s["status"] == "ok", (name, s.get("error") or s.get("reason"))
        assert s["command"] and s["seconds"] >= 0
    torchrun = steps["torchrun"]["figures"]
    assert torchrun["identical"] and torchrun["deterministic"] and torchrun["epochs"] == [2, 2]
    assert steps["nccl"]["figures"]["backend"] == "gloo"
    assert steps["metrics"]["figures"]["agree"]
    assert {r["name"] for r in steps["speed"]["figures"]["settings"]} == \
        set(doc["machine"]["speed_settings"])
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.subprocess
def test_dry_run_writes_a_short_summary(dry_run):
    out, proc = dry_run
    text = (out / "summary.txt").read_text()
    lines = text.splitlines()
    assert 5 <= len(lines) <= 40
    for name in gpu_check.STEPS:
        assert any(line.startswith(f"[ok] {name}:") or line.startswith(f"[skipped] {name}:")
                   for line in lines), name
    assert text.strip() in proc.stdout  # printed too


@pytest.mark.subprocess
def test_an_existing_result_is_never_replaced(dry_run):
    out, _ = dry_run
    before = (out / "gpu_check.json").read_bytes()
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run", "--out",
                           str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == (f"error: --out {out}: {out / 'gpu_check.json'} exists (an earlier "
                           f"check's result); pass --overwrite to replace it, or another --out\n")
    assert (out / "gpu_check.json").read_bytes() == before


@pytest.mark.parametrize("argv, message", [
    (["--bogus"], "error: unrecognized arguments: --bogus"),
    (["--skip", "warp"], "error: argument --skip: invalid choice: 'warp' (choose from "
                         + ", ".join(f"'{s}'" for s in gpu_check.STEPS) + ")"),
    (["--budget", "-5"], "error: argument --budget: expected a positive number, got -5"),
    (["--device", "tpu"], "error: --device tpu: use cpu, cuda or cuda:N"),
])
def test_bad_input_is_one_line(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        sys.exit(gpu_check.main([*argv, "--out", str(tmp_path / "o")]))
    assert exc.value.code == 2
    assert capsys.readouterr().err == message + "\n"
    assert not (tmp_path / "o").exists()


def test_out_that_is_a_file_is_refused(capsys, tmp_path):
    target = tmp_path / "taken"
    target.write_text("a result")
    assert gpu_check.main(["--dry-run", "--out", str(target)]) == 2
    assert capsys.readouterr().err == f"error: --out {target}: {target} is a file, not a folder\n"
    assert target.read_text() == "a result"


@pytest.mark.subprocess
def test_the_shell_wrapper_reports_bad_input_in_one_line(tmp_path):
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run", "--skip"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == "error: argument --skip: expected at least one argument\n"
    assert list(tmp_path.iterdir()) == []  # nothing written where it was called
