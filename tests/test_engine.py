"""The shared training engine: bit-identical resume, kills, Ctrl-C, NaN,
mixed precision, channels-last, torchrun with two processes, faults."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

import dcdh_train
import evaluation
import opqn_main
from models import DFHNet
from script_runner import run

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--dataset", "synthetic", "--synthetic-ids", "3", "--synthetic-train", "6",
        "--synthetic-test", "2", "--no-progress", "--bs", "8"]
DCDH = [*TINY, "--len", "12", "--eval-every", "2"]
# --num-books: the spelling of --num that torchrun's own parser lets through
OPQN = [*TINY, "--len", "12", "--num-books", "2", "--words", "64", "--eval-every", "2"]


def state_of(path):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return ckpt


def assert_same_tensors(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("module, argv, tensors", [
    (dcdh_train, DCDH, lambda c: {**c["backbone"], **c["centers"]}),
    (opqn_main, OPQN, lambda c: {**c["backbone"], **c["head"]}),
])
def test_resume_is_bit_identical(tmp_path, module, argv, tensors):
    """4 epochs straight == 2 epochs, then --resume auto for the rest."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    common = [*argv, "--save", "m.tar", "--log-dir", tmp_path / "log"]
    assert run(module, *common, "--epochs", 4, "--checkpoint-dir", straight,
               "--json", straight.with_suffix(".json")) == 0
    assert run(module, *common, "--epochs", 2, "--checkpoint-dir", split) == 0
    assert state_of(split / "m_last.tar")["train_state"]["epoch"] == 2
    assert run(module, *common, "--epochs", 4, "--checkpoint-dir", split, "--resume", "auto",
               "--json", split.with_suffix(".json")) == 0
    a, b = state_of(straight / "m_last.tar"), state_of(split / "m_last.tar")
    assert a["epoch"] == b["epoch"] == 4
    assert_same_tensors(tensors(a), tensors(b))
    assert a["loss"] == b["loss"]
    ra, rb = (json.loads(p.with_suffix(".json").read_text()) for p in (straight, split))
    ra = ra[0] if isinstance(ra, list) else ra
    rb = rb[0] if isinstance(rb, list) else rb
    assert ra["mAP"] == rb["mAP"] and ra["curve"] == rb["curve"]
    # the official part of the layout is untouched by the extra keys
    assert list(a)[:2] == (["backbone", "centers"] if module is dcdh_train else ["backbone", "mlp"])


def test_resume_errors(tmp_path, capsys):
    common = [*DCDH, "--save", "m.tar", "--checkpoint-dir", tmp_path, "--log-dir", tmp_path]
    assert run(dcdh_train, *common, "--resume", "auto") == 2
    assert capsys.readouterr().err == (f"error: --resume auto: {tmp_path / 'm_last.tar'} does not "
                                      f"exist (no epoch of this run has finished); start without "
                                      f"--resume\n")
    torch.save({"backbone": DFHNet(12).state_dict()}, tmp_path / "official.tar")
    assert run(dcdh_train, *common, "--resume", tmp_path / "official.tar") == 2
    assert "holds no training state to resume from" in capsys.readouterr().err


def test_nan_loss_stops_and_keeps_the_good_checkpoint(tmp_path, capsys, monkeypatch):
    import methods.dcdh

    good = tmp_path / "m.tar"
    assert run(dcdh_train, *DCDH, "--save", "m.tar", "--epochs", 1, "--checkpoint-dir", tmp_path,
               "--log-dir", tmp_path) == 0
    before, last_before = good.read_bytes(), (tmp_path / "m_last.tar").read_bytes()
    # a flag value that would make the loss NaN is refused before any work
    assert run(dcdh_train, *DCDH, "--save", "m.tar", "--sigma", "nan") == 2
    assert capsys.readouterr().err == "error: argument --sigma: expected a positive number, got nan\n"
    # the loss turns NaN at the second step: named exactly, although it is read
    # from the device only at the end of the epoch
    calls = []
    real = methods.dcdh.dcdh_loss

    def nan_at_second_step(*a, **k):
        calls.append(1)
        loss = real(*a, **k)
        return loss * float("nan") if len(calls) == 2 else loss

    monkeypatch.setattr(methods.dcdh, "dcdh_loss", nan_at_second_step)
    assert run(dcdh_train, *DCDH, "--save", "m.tar", "--epochs", 1, "--checkpoint-dir", tmp_path,
               "--log-dir", tmp_path, "--overwrite") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the loss became nan at epoch 1, step 2; stopped") and err.count("\n") == 1
    assert good.read_bytes() == before and (tmp_path / "m_last.tar").read_bytes() == last_before


def test_amp_and_channels_last_train(tmp_path):
    out = tmp_path / "m.json"
    assert run(dcdh_train, *DCDH, "--save", "m.tar", "--epochs", 1, "--amp", "--channels-last",
               "--checkpoint-dir", tmp_path, "--log-dir", tmp_path, "--json", out) == 0
    ckpt = state_of(tmp_path / "m.tar")
    assert ckpt["backbone"]["hash_layer.0.weight"].dtype == torch.float32
    assert all(torch.isfinite(v).all() for v in ckpt["backbone"].values() if v.is_floating_point())
    # the reported numbers are those of the saved file, evaluated in float32
    evaluated = tmp_path / "e.json"
    assert run(evaluation, *TINY, "--load", tmp_path / "m.tar", "--len", 12,
               "--json", evaluated) == 0
    assert json.loads(out.read_text())["mAP"] == json.loads(evaluated.read_text())["mAP"]
    assert ckpt["train_state"]["epoch"] == 1 and ckpt["loss"] < 10


# fp16 autocast on a CPU without fp16 kernels runs reference convolutions (about
# 100x float32's time): the fp16 case trains on 4 images, 2 per batch
SMALLEST = ["--dataset", "synthetic", "--synthetic-ids", "2", "--synthetic-train", "2",
            "--synthetic-test", "1", "--no-progress", "--bs", "2", "--len", "12"]


@pytest.mark.parametrize("amp, scaled, data", [("fp16", True, SMALLEST), ("bf16", False, DCDH)])
def test_fp16_with_a_grad_scaler_and_bf16_both_train(tmp_path, amp, scaled, data):
    assert run(dcdh_train, *data, "--save", "m.tar", "--epochs", 2, "--amp", amp, "--eval-every", 0,
               "--checkpoint-dir", tmp_path, "--log-dir", tmp_path) == 0
    ckpt = state_of(tmp_path / "m_last.tar")
    assert (ckpt["scaler"] is not None) == scaled and ckpt["run"]["amp"] == amp
    assert all(torch.isfinite(v).all() for v in ckpt["backbone"].values() if v.is_floating_point())
    # and the run continues from its resume file, scaler state included
    assert run(dcdh_train, *data, "--save", "m.tar", "--epochs", 3, "--amp", amp, "--eval-every", 0,
               "--checkpoint-dir", tmp_path, "--log-dir", tmp_path, "--resume", "auto") == 0
    assert state_of(tmp_path / "m_last.tar")["train_state"]["epoch"] == 3


def test_compile_compiles_the_network_in_place(tmp_path, monkeypatch):
    """--compile compiles the network itself (not the method or a wrapper), so
    the checkpoint keeps the published keys.  torch's compiler is stubbed: a
    real compile takes minutes on this CPU; what is tested is what we compile."""
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(self))
    assert run(dcdh_train, *DCDH, "--save", "m.tar", "--epochs", 1, "--compile", "--eval-every", 0,
               "--checkpoint-dir", tmp_path, "--log-dir", tmp_path) == 0
    assert [type(m).__name__ for m in compiled] == ["DFHNet"]
    assert list(state_of(tmp_path / "m.tar")["backbone"]) == list(DFHNet(12).state_dict())


def test_unwritable_log_dir_fails_before_training(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert run(dcdh_train, *DCDH, "--save", "m.tar", "--checkpoint-dir", tmp_path,
               "--log-dir", tmp_path / "file" / "log") == 2
    assert capsys.readouterr().err.startswith(f"error: cannot create --log-dir {tmp_path / 'file' / 'log'}")
    assert not (tmp_path / "m.tar").exists()


def test_corrupt_image_is_named_or_skipped(tmp_path, capsys):
    root = tmp_path / "faces"
    for split in ("train", "test"):
        for ident in range(2):
            for k in range(3):
                path = root / split / f"id{ident}" / f"{k}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (40, 40), (50 * ident, 80, 120 + k)).save(path)
    bad = root / "train" / "id1" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    argv = ["--dataset", "folder", "--data-root", root, "--img-size", 32, "--len", 12,
            "--save", "f.tar", "--epochs", 1, "--bs", 4, "--no-progress",
            "--checkpoint-dir", tmp_path, "--log-dir", tmp_path]
    assert run(dcdh_train, *argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot read image {bad}") and "--skip-bad-images" in err
    assert run(dcdh_train, *argv, "--skip-bad-images") == 0


def _spawn(module_file, argv, tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, module_file, *map(str, argv)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path, proc, timeout=120):
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.02)


@pytest.mark.subprocess
def test_sigkill_mid_epoch_then_resume(tmp_path):
    argv = [*DCDH, "--save", "k.tar", "--epochs", 40, "--checkpoint-dir", tmp_path,
            "--log-dir", tmp_path, "--eval-every", 0]
    proc = _spawn("dcdh_train.py", argv, tmp_path)
    last = tmp_path / "k_last.tar"
    _wait_for(last, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # whatever the moment of the kill, both files are complete checkpoints
    done = state_of(last)["train_state"]["epoch"]
    assert done >= 1 and state_of(tmp_path / "k.tar")["epoch"] >= 1
    assert run(dcdh_train, *argv[:-2], "--epochs", done + 1, "--eval-every", 0,
               "--resume", "auto") == 0
    assert state_of(last)["train_state"]["epoch"] == done + 1


@pytest.mark.subprocess
def test_kill_during_checkpoint_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "m.tar"
    torch.save({"backbone": {"w": torch.ones(3)}}, target)
    before = target.read_bytes()
    code = ("import os, signal, torch\n"
            "from utils.engine.checkpoint import save_checkpoint\n"
            "class Bomb:\n"
            "    def __reduce__(self):\n"
            "        os.kill(os.getpid(), signal.SIGKILL)\n"
            f"save_checkpoint({{'backbone': {{'w': torch.zeros(1000000)}}, 'x': Bomb()}}, {str(target)!r})\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT)
    assert proc.returncode == -signal.SIGKILL
    assert target.read_bytes() == before  # never truncated or replaced by a partial file
    assert torch.load(target, weights_only=True)["backbone"]["w"].tolist() == [1.0, 1.0, 1.0]


@pytest.mark.subprocess
def test_ctrl_c_says_how_to_resume(tmp_path):
    argv = [*DCDH, "--save", "c.tar", "--epochs", 200, "--checkpoint-dir", tmp_path,
            "--log-dir", tmp_path, "--eval-every", 0]
    proc = _spawn("dcdh_train.py", argv, tmp_path)
    _wait_for(tmp_path / "c_last.tar", proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "holds epoch" in err and "run the same command with --resume auto to continue" in err
    assert "Traceback" not in err
    assert state_of(tmp_path / "c_last.tar")["train_state"]["epoch"] >= 1


@pytest.mark.subprocess
@pytest.mark.parametrize("script, argv, prefixed", [
    ("dcdh_train.py", DCDH, False),
    ("opqn_main.py", OPQN, True),
])
def test_torchrun_two_processes_on_cpu(tmp_path, script, argv, prefixed):
    """DistributedDataParallel with gloo: the checkpoint has exactly the single-process layout."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           script, *map(str, argv), "--save", "d.tar", "--epochs", 2, "--device", "cpu",
           "--checkpoint-dir", tmp_path, "--log-dir", tmp_path / "log", "--json", tmp_path / "d.json"]
    proc = subprocess.run(list(map(str, cmd)), cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = state_of(tmp_path / "d.tar")
    assert all(k.startswith("module.") == prefixed for k in ckpt["backbone"])
    assert "2 process(es)" in proc.stdout and proc.stdout.count("[Configuration]") == 1
    result = json.loads((tmp_path / "d.json").read_text())
    result = result[0] if isinstance(result, list) else result
    # rank 0 evaluated the best file: the same numbers as evaluating it alone
    if script == "dcdh_train.py":
        alone = [*TINY, "--load", tmp_path / "d.tar", "--len", 12]
        assert run(evaluation, *alone, "--json", tmp_path / "e.json") == 0
    else:
        alone = [*TINY, "-e", "--load", tmp_path / "d.tar", "--len", 12, "--num", 2, "--words", 64]
        assert run(opqn_main, *alone, "--json", tmp_path / "e.json") == 0
    assert result["mAP"] == json.loads((tmp_path / "e.json").read_text())["mAP"]
    assert result["epochs_run"] == 2 and len(result["losses"]) == 2
    assert len(list((tmp_path / "log").glob("*.txt"))) == 1  # one log, written by rank 0


def test_seed_and_arguments_are_recorded_and_repeatable(tmp_path):
    argv = [*DCDH, "--save", "s.tar", "--epochs", 2, "--deterministic", "--workers", 1,
            "--log-dir", tmp_path / "log"]
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        assert run(dcdh_train, *argv, "--seed", seed, "--checkpoint-dir", tmp_path / name) == 0
    a, b, c = (state_of(tmp_path / n / "s.tar") for n in "abc")
    assert a["run"]["seed"] == 3 and a["run"]["deterministic"] is True
    assert_same_tensors(a["backbone"], b["backbone"])
    assert not torch.equal(a["backbone"]["hash_layer.0.weight"], c["backbone"]["hash_layer.0.weight"])
    logs = sorted((tmp_path / "log").glob("12bits_synthetic_*.txt"))
    assert logs and "'seed': 3" in logs[0].read_text() and "'deterministic': True" in logs[0].read_text()


def test_pretrained_file_problems_are_one_line(tmp_path, capsys):
    argv = [*TINY, "--img-size", 32, "--arch", "resnet18", "--len", 12, "--save", "r.tar",
            "--checkpoint-dir", tmp_path, "--log-dir", tmp_path]
    assert run(dcdh_train, *argv, "--pretrained", tmp_path / "none.pth") == 2
    assert capsys.readouterr().err.startswith("error: --pretrained: pretrained weights for resnet18 not found")


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "facescrub", "--save", "m.tar"], "error: FaceScrub not found"),
    (["--dataset", "cfw", "--save", "m.tar"], "error: CFW-60K not found"),
    ([*TINY, "--save", "m.tar", "--checkpoint-dir", "FILE/sub"], "error: cannot create --checkpoint-dir"),
    ([*TINY, "-e", "--load", "BAD"], "is not a readable checkpoint"),
    (["--dataset", "facescrub", "-e", "-c", "--load", "BAD"],
     "cross-dataset evaluation needs an image-folder dataset with cross_train/ and cross_test/, "
     "not facescrub"),
])
def test_opqn_bad_input(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "FILE").write_text("x")
    (tmp_path / "BAD").write_bytes(b"PK\x03\x04 truncated")
    argv = [str(tmp_path / a) if a in ("FILE/sub", "BAD") else a for a in argv]
    assert run(opqn_main, *argv, "--len", 12, "--num", 2, "--words", 64, "--no-progress") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
