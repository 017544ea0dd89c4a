"""evaluation.py --codes: the stored-codes command line, its JSON and its errors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import evaluation
from script_runner import run

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures" / "metrics"
ARRAYS = ("db_codes", "query_codes", "db_labels", "query_labels")


def codes_file(tmp_path, name="small_24bit_c10.npz", **override):
    z = np.load(FIXTURES / name)
    arrays = {k: z[k] for k in ARRAYS}
    arrays.update(override)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    path = tmp_path / "codes.npz"
    np.savez(path, **arrays)
    return path


def cli(*argv):
    return run(evaluation, *argv)


def test_json_schema_and_values(tmp_path, capsys):
    path = codes_file(tmp_path)
    out = tmp_path / "m.json"
    assert cli("--codes", path, "--json", out, "--map-at", 100, 600) == 0
    r = json.loads(out.read_text())
    z = np.load(FIXTURES / "small_24bit_c10.npz")
    assert set(r) >= {"bits", "num_queries", "num_database", "mAP", "mAP_tie_aware",
                      "precision_at_k", "map_at_k", "radius", "precision_within_radius",
                      "recall_within_radius", "curve", "queries_without_relevant"}
    assert (r["bits"], r["num_queries"], r["num_database"], r["radius"]) == (24, 60, 600, 2)
    assert abs(r["mAP"] - float(z["mAP"])) < 1e-6
    assert list(r["precision_at_k"]) == ["1", "5", "10"]
    assert np.allclose(list(r["precision_at_k"].values()), z["topk_precision"][:3], atol=1e-6)
    assert np.allclose(list(r["map_at_k"].values()), z["deephash_map"], atol=1e-6)
    assert r["curve"]["positions"] == list(z["curve_positions"])
    assert np.allclose(r["curve"]["precision"], z["curve_precision"], atol=1e-6)
    assert abs(r["precision_within_radius"] - float(z["precision_radius2"])) < 1e-6
    assert r["queries_without_relevant"] == 0
    table = capsys.readouterr().out
    assert f"mAP                              {float(z['mAP']):.4f}" in table


def test_options_change_the_numbers(tmp_path):
    path = codes_file(tmp_path, "absent_class_24bit.npz")
    out = tmp_path / "m.json"
    assert cli("--codes", path, "--json", out, "--radius", 0, "--topk", 3, "--curve", 7, 400,
               "--skip-no-relevant") == 0
    r = json.loads(out.read_text())
    assert r["radius"] == 0 and list(r["precision_at_k"]) == ["3"]
    assert r["curve"]["positions"] == [7, 400]
    assert r["queries_without_relevant"] == 3 and abs(r["mAP"] - 0.6599) < 5e-5


@pytest.mark.parametrize("override, message", [
    ({"db_labels": None}, "lacks array(s) db_labels (needs db_codes, query_codes, db_labels, query_labels)"),
    ({"query_codes": np.full((60, 24), 3, np.int8)},
     "query codes must hold only -1/+1 or 0/1 values, found [3]"),
    ({"db_labels": np.zeros(599, np.int64)}, "599 database labels for 600 database codes"),
    ({"query_codes": np.ones((60, 12), np.int8)},
     "query codes have 12 bits but database codes have 24"),
])
def test_bad_arrays(tmp_path, capsys, override, message):
    path = codes_file(tmp_path, **override)
    out = tmp_path / "m.json"
    out.write_text("previous result")
    assert cli("--codes", path, "--json", out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
    assert out.read_text() == "previous result"  # an existing result is never destroyed


def test_missing_and_corrupt_files(tmp_path, capsys):
    assert cli("--codes", tmp_path / "nope.npz") == 2
    assert capsys.readouterr().err == f"error: no such file: {tmp_path / 'nope.npz'}\n"
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    assert cli("--codes", bad) == 2
    assert capsys.readouterr().err.startswith(f"error: cannot read {bad} as an .npz file:")
    assert cli("--codes", codes_file(tmp_path), "--json", tmp_path / "no" / "m.json") == 2
    assert "folder" in capsys.readouterr().err
    assert cli() == 2
    assert capsys.readouterr().err == "error: give either --codes FILE.npz or --load CHECKPOINT.tar\n"


def test_unavailable_device(tmp_path, capsys):
    assert cli("--codes", codes_file(tmp_path), "--device", "cuda:99") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --device cuda:99 requested but ") and err.count("\n") == 1
    assert cli("--codes", codes_file(tmp_path), "--device", "tpu") == 2
    assert capsys.readouterr().err.startswith("error: unknown --device 'tpu'")


@pytest.mark.subprocess
def test_command_line_process(tmp_path):
    """The real process: exit status 2 and a single line, no traceback."""
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"\x00" * 10)
    proc = subprocess.run([sys.executable, "evaluation.py", "--codes", str(bad)], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: cannot read") and proc.stderr.count("\n") == 1
    good = subprocess.run([sys.executable, "evaluation.py", "--codes", str(codes_file(tmp_path))],
                          cwd=ROOT, capture_output=True, text=True)
    assert good.returncode == 0 and "mAP (tie-aware)" in good.stdout
