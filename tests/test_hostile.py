"""Hostile and careless input: no code runs from a data file, no output
replaces an input or another run's file, every failure is one line
(``error: ...``, exit status 2) and leaves every existing file as it was."""

import io
import json
import os
import pickle
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import dcdh_train
import evaluation
import index as index_script
import main_DCHN
import opqn_main
import reproduce
import trainSHAM
import triplet_main
from script_runner import run

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--dataset", "synthetic", "--synthetic-ids", 3, "--synthetic-train", 4,
        "--synthetic-test", 1, "--no-progress"]
SYN = ["--datasets", "synthetic", "--synthetic-rows", 120, "--output_shape", 16,
       "--available_num", 10, "--no-progress"]


def one_line(capsys, code=2) -> str:
    """The error line of a run that ended with ``code``: exactly one line."""
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err[len("error: "):-1]


def snapshot(folder: Path) -> dict:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# ---------------------------------------------------------------- no code from a data file

class Payload:
    """Unpickling this runs a command (the marker file tells)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_ddh_batch_that_runs_code_is_refused_without_running(tmp_path, capsys):
    marker = tmp_path / "pwned"
    for split in ("train", "test"):
        (tmp_path / "faces" / split).mkdir(parents=True)
        with open(tmp_path / "faces" / split / "batch_1", "wb") as f:
            pickle.dump((np.zeros((2, 3072), np.uint8), [0, Payload(marker)]), f, protocol=2)
    with open(tmp_path / "faces" / "train" / "batch_1", "rb") as f:
        assert b"system" in f.read()  # the plain pickle.load of this file would run it
    common = ["--dataset", "facescrub", "--data-root", tmp_path / "faces", "--no-progress"]
    assert run(dcdh_train, *common, "--save", "m.tar", "--checkpoint-dir", tmp_path / "ck") == 2
    assert one_line(capsys).startswith(
        f"refusing to read DDH batch {tmp_path / 'faces' / 'train' / 'batch_1'}: it names "
        f"posix.system, not only the arrays and numbers of a (data, labels) pair")
    assert run(opqn_main, *common, "--layout", "ddh", "--save", "p.tar", "--len", 16, "--num", 2,
               "--checkpoint-dir", tmp_path / "ck") == 2
    assert "refusing to read DDH batch" in one_line(capsys)
    assert not marker.exists()


def test_npz_members_are_checked_before_they_are_read(tmp_path, capsys):
    """A header declaring terabytes, an object array, a member that does not
    decompress, a text file: one line each, nothing allocated or unpickled."""
    bomb = tmp_path / "bomb.npz"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|i1", "fortran_order": False,
                                                  "shape": (10 ** 12, 48)})
    with zipfile.ZipFile(bomb, "w") as zf:
        zf.writestr("db_codes.npy", header.getvalue() + b"\x01" * 96)
    assert run(evaluation, "--codes", bomb) == 2
    held = len(header.getvalue()) + 96
    assert one_line(capsys) == (f"{bomb}: array db_codes declares shape (1000000000000, 48) "
                                f"(48000000000000 bytes) but holds {held} bytes")
    objects = tmp_path / "objects.npz"
    np.savez(objects, db_codes=np.array([Payload(tmp_path / "pwned")], dtype=object))
    assert run(evaluation, "--codes", objects) == 2
    assert "holds Python objects (refused" in one_line(capsys)
    squeezed = tmp_path / "squeezed.npz"
    np.savez_compressed(squeezed, **{k: np.ones((50, 40), np.int8) for k in
                                     ("db_codes", "query_codes", "db_labels", "query_labels")})
    data = bytearray(squeezed.read_bytes())
    data[200:260] = b"\xff" * 60
    squeezed.write_bytes(bytes(data))
    assert run(evaluation, "--codes", squeezed) == 2
    assert one_line(capsys).startswith(f"cannot read {squeezed} as an .npz file: ")
    (tmp_path / "text.npz").write_text("db_codes,query_codes\n1,2\n")
    assert run(evaluation, "--codes", tmp_path / "text.npz") == 2
    assert one_line(capsys).startswith(f"cannot read {tmp_path / 'text.npz'} as an .npz file")
    assert not (tmp_path / "pwned").exists()


def codes(tmp_path, name="c.npz", **override):
    rng = np.random.default_rng(0)
    arrays = {"db_codes": np.where(rng.random((30, 12)) < 0.5, 1, -1).astype(np.int8),
              "query_codes": np.where(rng.random((5, 12)) < 0.5, 1, -1).astype(np.int8),
              "db_labels": np.arange(30) % 3, "query_labels": np.arange(5) % 3, **override}
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("override, message", [
    ({"db_codes": np.full((30, 12), np.inf)},
     "database codes must hold only -1/+1 or 0/1 values, found NaN or inf"),
    ({"query_codes": np.ones((5, 12), np.complex64)},
     "query codes must hold -1/+1 or 0/1 numbers, got dtype complex64"),
    ({"db_codes": np.ones((30, 0), np.int8), "query_codes": np.ones((5, 0), np.int8)},
     "have 0 bits"),
    ({"db_labels": np.full(30, np.inf)}, "database labels hold NaN or inf"),
])
def test_codes_that_cannot_be_ranked_are_one_line(tmp_path, capsys, override, message):
    path = codes(tmp_path, **override)
    assert run(evaluation, "--codes", path) == 2
    assert message in one_line(capsys)


def test_pq_features_with_nan_are_refused(tmp_path, capsys):
    rng = np.random.default_rng(0)
    mlp = rng.normal(size=(2, 8, 4)).astype(np.float32)
    good = dict(query_features=rng.normal(size=(3, 16)).astype(np.float32),
                db_features=rng.normal(size=(9, 16)).astype(np.float32),
                query_labels=np.arange(3), db_labels=np.arange(9) % 3)
    for name, bad in (("mlp", {"mlp": np.where(mlp > 1, np.nan, mlp)}),
                      ("query features", {"query_features": np.full((3, 16), np.inf, np.float32)})):
        np.savez(tmp_path / "f.npz", **{"mlp": mlp, **good, **bad})
        assert run(opqn_main, "-e", "--features", tmp_path / "f.npz") == 2
        assert f"{name} hold" in one_line(capsys)


# ---------------------------------------------------------------- no output replaces an input

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    assert run(dcdh_train, *TINY, "--save", "m.tar", "--len", 12, "--epochs", 1, "--bs", 4,
               "--eval-every", 0, "--checkpoint-dir", root, "--log-dir", root / "log") == 0
    return root


def test_an_output_is_never_an_input(trained, tmp_path, capsys):
    before = snapshot(trained)
    model = trained / "m.tar"
    assert run(evaluation, *TINY, "--load", model, "--json", model) == 2
    assert one_line(capsys) == (f"--json {model} is also the --load file this call reads; "
                                f"write to another file")
    assert run(evaluation, *TINY, "--load", model, "--save-codes", model) == 2
    assert "--save-codes" in one_line(capsys)
    stored = codes(tmp_path)
    assert run(evaluation, "--codes", stored, "--json", stored) == 2
    assert one_line(capsys).startswith(f"--json {stored} is also the --codes file")
    assert run(index_script, "build", "--codes", stored, "--out", stored) == 2
    assert one_line(capsys).startswith(f"--out {stored} is also the --codes file")
    cell = tmp_path / "cells" / "dcdh_synthetic_12bits.tar"
    cell.parent.mkdir()
    cell.write_bytes(model.read_bytes())
    assert run(reproduce, "--methods", "dcdh", "--dataset", "synthetic", "--bits", 12,
               "--checkpoints", tmp_path / "cells", "--json", cell) == 2
    assert one_line(capsys).startswith(f"--json {cell} is also the a cell's checkpoint file")
    assert cell.read_bytes() == model.read_bytes() and snapshot(trained) == before
    assert stored.read_bytes()[:2] == b"PK"


def test_a_run_never_replaces_another_runs_file(trained, tmp_path, capsys, caplog):
    before = snapshot(trained)
    common = [*TINY, "--len", 12, "--epochs", 1, "--checkpoint-dir", trained,
              "--log-dir", tmp_path]
    # resuming another run's file into a name that exists: refused
    other = tmp_path / "other.tar"
    other.write_bytes((trained / "m_last.tar").read_bytes())
    assert run(dcdh_train, *common, "--save", "m.tar", "--resume", other) == 2
    assert one_line(capsys).startswith(f"--save {trained / 'm.tar'} exists; pass --resume auto")
    # one name twice in one call
    assert run(opqn_main, *TINY, "--save", "a.tar", "a.tar", "--len", 12, 12, "--num", 2,
               "--words", 64, "--checkpoint-dir", tmp_path / "ck") == 2
    assert one_line(capsys) == (f"--save and --save both name {tmp_path / 'ck' / 'a.tar'}; give "
                                f"each output its own file")
    # a run that another live process is writing (its lock file names it)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "ck" / ".new.tar.lock").write_text(str(sleeper.pid))
        assert run(dcdh_train, *TINY, "--len", 12, "--save", "new.tar",
                   "--checkpoint-dir", tmp_path / "ck") == 2
        assert one_line(capsys) == (f"--save {tmp_path / 'ck' / 'new.tar'}: another run (process "
                                    f"{sleeper.pid}) is writing it; wait for it to finish, or "
                                    f"use another name")
    finally:
        sleeper.kill()
        sleeper.wait()
    # the lock of a process that is gone is taken over, and its temporary files removed
    leftover = tmp_path / "ck" / ".new.tar.abcd1234.tmp"
    leftover.write_bytes(b"half a checkpoint")
    with caplog.at_level("WARNING", logger="hashing"):
        assert run(dcdh_train, *common, "--save", "new.tar", "--checkpoint-dir",
                   tmp_path / "ck", "--bs", 4, "--eval-every", 0) == 0
    assert caplog.messages[0] == (f"removed 1 temporary file(s) an interrupted run left beside "
                                  f"{tmp_path / 'ck' / 'new.tar'} (.new.tar.abcd1234.tmp)")
    assert not leftover.exists() and not (tmp_path / "ck" / ".new.tar.lock").exists()
    assert snapshot(trained) == before


def test_two_runs_started_together_on_one_new_name(tmp_path):
    """The second of two simultaneous runs stops (the first holds the lock)."""
    argv = [sys.executable, "dcdh_train.py", *map(str, TINY), "--len", "12", "--epochs", "2",
            "--bs", "4", "--eval-every", "0", "--save", "same.tar", "--checkpoint-dir",
            str(tmp_path), "--log-dir", str(tmp_path / "log")]
    procs = [subprocess.Popen(argv, cwd=ROOT, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = sorted((p.wait(timeout=300), p.stderr.read()) for p in procs)
    assert results[0][0] == 0 and results[1][0] == 2, results
    assert "another run (process" in results[1][1] and results[1][1].count("\n") == 1


# ---------------------------------------------------------------- every failure one line

def test_a_full_disk_is_one_line_and_keeps_the_old_files(trained, tmp_path, capsys, monkeypatch):
    import utils.atomic

    out = tmp_path / "m.json"
    out.write_text("the old result")

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(utils.atomic.os, "fsync", full)
    assert run(evaluation, *TINY, "--load", trained / "m.tar", "--json", out) == 2
    assert one_line(capsys) == f"cannot write {out}: No space left on device"
    assert out.read_text() == "the old result" and not list(tmp_path.glob(".m.json.*"))
    before = snapshot(trained)
    assert run(dcdh_train, *TINY, "--len", 12, "--epochs", 1, "--bs", 4, "--save", "m.tar",
               "--checkpoint-dir", trained, "--log-dir", tmp_path, "--overwrite") == 2
    assert one_line(capsys) == f"cannot write {trained / 'm.tar'}: No space left on device"
    assert snapshot(trained) == before


def test_an_index_and_its_sidecar_are_replaced_together(tmp_path, capsys, monkeypatch):
    pytest.importorskip("faiss")
    from utils.retrieval import faiss_index

    stored = codes(tmp_path)
    out = tmp_path / "db.faiss"
    assert run(index_script, "build", "--codes", stored, "--out", out) == 0
    pair = out.read_bytes(), Path(f"{out}.json").read_bytes()
    faiss = faiss_index.require_faiss()

    def full(index, path):
        raise RuntimeError("Error in faiss::FileIOWriter: No space left on device")

    monkeypatch.setattr(faiss, "write_index_binary", full)
    capsys.readouterr()
    assert run(index_script, "build", "--codes", stored, "--out", out, "--type", "hash") == 2
    assert "No space left on device" in one_line(capsys)
    assert (out.read_bytes(), Path(f"{out}.json").read_bytes()) == pair
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz", "db.faiss", "db.faiss.json"]


@pytest.mark.subprocess
def test_ctrl_c_before_any_work_is_one_line():
    """Ctrl-C while the script still imports torch: the hook every script
    installs first turns it into one line and exit status 130."""
    code = "import utils.cli.interrupts\nimport os, signal\nos.kill(os.getpid(), signal.SIGINT)\n" \
           "import time\ntime.sleep(5)\n"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 130 and proc.stderr == "interrupted\n"


def test_data_files_that_are_not_what_they_say(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    features = ["--datasets", "features", "--views", "a", "b", "--no-progress"]
    (tmp_path / "text.npz").write_text("not an npz")
    np.savez(tmp_path / "rank.npz", a=np.ones((10, 4, 2)), b=np.ones((10, 3)), labels=np.ones((10, 2)))
    np.savez(tmp_path / "empty.npz", a=np.ones((0, 4)), b=np.ones((0, 3)), labels=np.ones((0, 2)))
    np.savez(tmp_path / "objects.npz", a=np.array([None] * 10, dtype=object),
             b=np.ones((10, 3)), labels=np.ones((10, 2)))
    for name, message in (("text.npz", "as an .npz file"),
                          ("rank.npz", "a must be a non-empty numeric matrix"),
                          ("empty.npz", "a must be a non-empty numeric matrix"),
                          ("objects.npz", "holds Python objects")):
        assert run(trainSHAM, *features, "--data-root", tmp_path / name) == 2
        assert message in one_line(capsys), name
    # a SHAM file that is not one, of another shape, or not finite
    assert run(trainSHAM, *SYN) == 0
    capsys.readouterr()
    sham = tmp_path / "SHAM" / "SHAM_W_C12_O16_G1_A10.mat"
    for content, message in ((b"garbage", "cannot read"),
                             ({"W": np.ones((3, 3))}, "holds W of shape (3, 3), expected (12, 16)"),
                             ({"W": np.full((12, 16), np.nan)}, "holds a W with NaN or inf")):
        if isinstance(content, bytes):
            sham.write_bytes(content)
        else:
            from scipy.io import savemat
            savemat(sham, content)
        assert run(main_DCHN, "--mode", "train", "--view", 0, "--epochs", 1, *SYN) == 2
        assert message in one_line(capsys)
    assert run(main_DCHN, "--mode", "eval", "--eval-views", 0, 0, *SYN) == 2
    assert one_line(capsys) == "--eval-views lists a view twice: 0 0"
    assert run(main_DCHN, "--mode", "train", "--json", tmp_path / "no" / "t.json", *SYN) == 2
    assert one_line(capsys).startswith(f"cannot write --json {tmp_path / 'no' / 't.json'}")
    assert not list(tmp_path.rglob("*.pth.tar"))  # found before any training


def test_crafted_checkpoints_are_one_line(trained, tmp_path, capsys):
    from models import DFHNet

    state = DFHNet(12).state_dict()
    cases = {
        "int_keys.tar": ({"backbone": {**state, 7: torch.zeros(1)}, "centers": {}},
                         "does not fit dfhnet with --len 12: 1 unexpected keys (e.g. 7)"),
        "loose.tar": ({"backbone": {**state, "fc.0.weight": "not a tensor"}},
                      "entries are not tensors (e.g. 'fc.0.weight')"),
    }
    for name, (obj, message) in cases.items():
        torch.save(obj, tmp_path / name)
        assert run(evaluation, *TINY, "--load", tmp_path / name) == 2
        assert message in one_line(capsys), name
    resume = torch.load(trained / "m_last.tar", weights_only=True)
    del resume["train_state"]["rng"]
    torch.save(resume, tmp_path / "norng.tar")
    assert run(dcdh_train, *TINY, "--len", 12, "--save", "x.tar", "--checkpoint-dir", tmp_path,
               "--resume", tmp_path / "norng.tar") == 2
    assert one_line(capsys) == (
        f"{tmp_path / 'norng.tar'} is not a resume file this toolkit can continue from (missing "
        f"or malformed: train_state 'rng'); start without --resume, or with --overwrite")
    (tmp_path / "random.tar").write_bytes(os.urandom(4096))
    assert run(evaluation, *TINY, "--load", tmp_path / "random.tar") == 2
    err = one_line(capsys)
    assert err.startswith(f"{tmp_path / 'random.tar'} is not a readable checkpoint")
    assert "weights_only" not in err  # never torch's advice to load it unsafely


def test_a_file_of_another_method_is_named_as_such(trained, capsys):
    assert run(opqn_main, *TINY, "-e", "--load", trained / "m.tar", "--len", 12, "--num", 2,
               "--words", 64) == 2
    assert one_line(capsys) == f"{trained / 'm.tar'} holds a dcdh model, not opqn"


def test_query_images_that_cannot_be_read(trained, tmp_path, capsys):
    pytest.importorskip("faiss")
    stored = tmp_path / "c.npz"
    assert run(evaluation, *TINY, "--load", trained / "m.tar", "--save-codes", stored) == 0
    assert run(index_script, "build", "--codes", stored, "--out", tmp_path / "i") == 0
    search = ["search", "--index", tmp_path / "i", "--checkpoint", trained / "m.tar", "--images"]
    capsys.readouterr()
    assert run(index_script, *search, tmp_path / "none") == 2
    assert one_line(capsys).startswith(f"--images {tmp_path / 'none'}: no image files")
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(b"not a png")
    assert run(index_script, *search, tmp_path / "imgs") == 2
    assert one_line(capsys).startswith(f"--images: cannot read {tmp_path / 'imgs' / 'a.png'}")
    sidecar = Path(f"{tmp_path / 'i'}.json")
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**meta, "num_bits": "12", "db_indices": [1.5] * 3}))
    assert run(index_script, "search", "--index", tmp_path / "i", "--codes", stored) == 2
    assert one_line(capsys).startswith(f"{sidecar}: num_bits, db_indices of the wrong type")


def test_careless_values(tmp_path, capsys):
    assert run(triplet_main, *TINY[:-1], "--log_postfix", "a/b", "--outf", tmp_path) == 2
    assert one_line(capsys) == ("--log_postfix 'a/b' would name folders: it is a part of the run "
                                "folder's and log file's names")
    assert run(reproduce, "--methods", "dcdh", "--dataset", "mnist", "--bits", 12,
               "--checkpoints", tmp_path) == 2
    assert one_line(capsys).startswith("unknown dataset 'mnist'; choose one of")
    np.savez(tmp_path / "c.npz", db_codes=np.ones((4, 8), np.int8),
             query_codes=np.ones((2, 8), np.int8), db_labels=np.arange(4),
             query_labels=np.arange(2), db_indices=np.arange(4) + 0.5)
    assert run(index_script, "build", "--codes", tmp_path / "c.npz", "--out", tmp_path / "i") == 2
    assert "db_indices must be integers" in one_line(capsys)
    assert run(dcdh_train, *TINY, "--save", "m.tar", "--synthetic-ids", 100000,
               "--synthetic-train", 100000, "--checkpoint-dir", tmp_path) == 2
    assert one_line(capsys).startswith("the built-in data of 10000100000 images at 32x32 would "
                                       "take")


def test_the_documented_dchn_table_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["--methods", "dchn", "--dataset", "synthetic", "--bits", 16, "--checkpoints",
            tmp_path / "cells", "--no-progress", "--json", tmp_path / "t.json"]
    assert run(reproduce, *argv, "--train-missing", "--epochs", 2) == 0
    rows = json.loads((tmp_path / "t.json").read_text())["rows"]
    assert [r["task"] for r in rows] == ["Image→Text", "Text→Image"]
    assert all(r["trained_here"] and 0 < r["mAP"] <= 1 for r in rows)
