"""Every number carries how it was made, and numbers over seeds: the
provenance in checkpoints and JSON results, reproduce.py's refusal to reuse a
cell trained otherwise than asked, and the statistics over seeds (checked
against numbers computed here by hand and by scipy on the same pairs)."""

import json
import math
import statistics

import pytest
from scipy import stats

import evaluation
import reproduce
from script_runner import run

TINY = ["--synthetic-ids", 4, "--synthetic-train", 6, "--synthetic-test", 2, "--no-progress"]


def table(tmp_path, *extra, methods=("dcdh",), bits=(12,)):
    argv = ["--methods", *methods, "--dataset", "synthetic", "--bits", *bits, *TINY,
            "--checkpoints", tmp_path / "cells", "--json", tmp_path / "t.json", *extra]
    return run(reproduce, *argv)


def rows(tmp_path):
    return json.loads((tmp_path / "t.json").read_text())


@pytest.fixture(scope="module")
def two_epoch_cell(tmp_path_factory):
    root = tmp_path_factory.mktemp("cells")
    assert table(root, "--train-missing", "--epochs", 2, "--batch", 8) == 0
    return root


def test_a_cell_trained_otherwise_is_never_reused_silently(two_epoch_cell, tmp_path, capsys):
    root = two_epoch_cell
    cell = root / "cells" / "dcdh_synthetic_12bits.tar"
    before = cell.read_bytes()
    # the same command without --epochs asks for the recipe's 15 epochs: refused, one line
    assert table(root, "--batch", 8) == 2
    assert capsys.readouterr().err == (
        f"error: dcdh, 12 bits, seed 0: {cell} was trained with epochs 2, asked 15; pass "
        f"--train-missing to train it as asked, or --accept-mismatch to use it as it is "
        f"(marked in the table)\n")
    # another seed, another batch: both named
    assert table(root, "--epochs", 2, "--batch", 4) == 2
    assert "batch 8, asked 4" in capsys.readouterr().err
    # accepted explicitly: used, marked in the table and the JSON
    assert table(root, "--batch", 8, "--accept-mismatch") == 0
    out = capsys.readouterr().out
    assert " ‡ |" in out and "‡: trained otherwise than this command asks" in out
    row = rows(root)["rows"][0]
    assert row["provenance_mismatch"] == ["epochs 2, asked 15"] and not row["trained_here"]
    assert cell.read_bytes() == before
    # the matching command reuses it without a mark
    assert table(root, "--epochs", 2, "--batch", 8) == 0
    row = rows(root)["rows"][0]
    assert row["provenance_mismatch"] == [] and not row["trained_here"]
    assert " ‡" not in capsys.readouterr().out


def test_every_cell_records_how_it_was_made(two_epoch_cell):
    row = rows(two_epoch_cell)["rows"][0]
    made = row["provenance"]
    assert made["known"] and made["method"] == "dcdh" and made["seed"] == 0
    assert made["recipe"]["epochs"] == 2 and made["recipe"]["batch"] == 8
    assert made["epochs_run"] == 2 and made["finished"]
    assert made["config"]["bits"] == 12 and made["config"]["arch"] == "dfhnet"
    assert made["data"] == {"dataset": "synthetic", "img_size": None,
                            "options": {"num_identities": 4, "train_per_identity": 6,
                                        "test_per_identity": 2}}
    assert made["precision"] == "float32" and made["device"].startswith("cpu (")
    assert len(made["code"]["commit"]) == 40 and made["code"]["torch"].startswith("2.")
    assert made["date"].endswith("+00:00")


def test_an_evaluation_json_carries_the_files_provenance(two_epoch_cell, tmp_path):
    cell = two_epoch_cell / "cells" / "dcdh_synthetic_12bits.tar"
    assert run(evaluation, "--load", cell, "--dataset", "synthetic", "--no-progress",
               "--json", tmp_path / "e.json") == 0
    made = json.loads((tmp_path / "e.json").read_text())["provenance"]
    assert made["file"] == str(cell) and made["recipe"]["epochs"] == 2 and made["seed"] == 0


def test_a_published_file_has_no_provenance_and_is_not_used_silently(tmp_path, capsys):
    import torch

    from models import DFHNet

    (tmp_path / "cells").mkdir()
    torch.save({"backbone": DFHNet(12).state_dict()},
               tmp_path / "cells" / "dcdh_synthetic_12bits.tar")
    assert table(tmp_path) == 2
    assert "was trained with no record of how it was trained (not written by this toolkit)" in \
        capsys.readouterr().err


def test_retraining_a_mismatched_cell_as_asked(two_epoch_cell, tmp_path):
    import shutil

    shutil.copytree(two_epoch_cell / "cells", tmp_path / "cells")
    assert table(tmp_path, "--train-missing", "--epochs", 1, "--batch", 8) == 0
    row = rows(tmp_path)["rows"][0]
    assert row["trained_here"] and row["provenance"]["recipe"]["epochs"] == 1
    assert row["provenance_mismatch"] == []


def test_seeds_give_mean_std_min_max_and_a_paired_test(tmp_path, capsys):
    assert table(tmp_path, "--seeds", 2, "--train-missing", "--epochs", 1, "--batch", 8,
                 methods=("dcdh", "opqn")) == 0
    out = capsys.readouterr().out
    result = rows(tmp_path)
    assert result["seeds"] == [0, 1]
    by_method = {r["method"]: r for r in result["rows"]}
    for r in by_method.values():
        x = r["mAP_per_seed"]
        assert r["seeds"] == [0, 1] and len(x) == 2 and len(set(x)) > 1  # seeds matter
        assert r["mAP_mean"] == pytest.approx(sum(x) / 2, abs=1e-12) == r["mAP"]
        assert r["mAP_std"] == pytest.approx(statistics.stdev(x), abs=1e-12)
        assert (r["mAP_min"], r["mAP_max"]) == (min(x), max(x))
        assert f"{r['mAP_mean']:.4f} ± {r['mAP_std']:.4f}" in out
    # each seed's cell is a file of its own (seed 0: the single-seed table's)
    assert (tmp_path / "cells" / "dcdh_synthetic_12bits.tar").is_file()
    assert (tmp_path / "cells" / "seed1" / "opqn_synthetic_12bits.tar").is_file()
    [test] = result["paired_tests"]
    a, b = by_method[test["a"]]["mAP_per_seed"], by_method[test["b"]]["mAP_per_seed"]
    assert test["p_value"] == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-12)
    assert test["mean_difference"] == pytest.approx(sum(a) / 2 - sum(b) / 2, abs=1e-12)
    assert test["within_noise"] == (test["p_value"] >= 0.05)
    assert "cells: mAP (mean ± std over seeds)" in out.splitlines()
    # a rerun trains nothing (resumable per seed) and gives the same numbers
    assert table(tmp_path, "--seeds", 2, "--train-missing", "--epochs", 1, "--batch", 8,
                 methods=("dcdh", "opqn")) == 0
    again = rows(tmp_path)
    assert not any(r["trained_here"] for r in again["rows"])
    assert [r["mAP_per_seed"] for r in again["rows"]] == [r["mAP_per_seed"] for r in result["rows"]]


def test_seed_statistics_against_hand_computed_numbers():
    from pipeline.tables import mark_within_noise, over_seeds, paired_tests

    def row(method, seed, value):
        return {"method": method, "bits": 16, "dataset": "d", "mAP": value, "seed": seed,
                "checkpoint": f"{method}{seed}", "trained_here": False, "published_mAP":
                0.5 if method == "a" else None, "published_source": None}

    a, b, c = [0.50, 0.54, 0.52], [0.40, 0.43, 0.45], [0.51, 0.52, 0.53]
    per_seed = [row(m, s, v) for m, values in (("a", a), ("b", b), ("c", c))
                for s, v in enumerate(values)]
    table = over_seeds(per_seed, ["mAP"])
    first = table[0]
    assert first["mAP_mean"] == pytest.approx(0.52)
    assert first["mAP_std"] == pytest.approx(math.sqrt(((-0.02) ** 2 + 0.02 ** 2 + 0) / 2))
    assert first["published_difference"] == pytest.approx(0.02)
    assert first["published_inside_range"] is True  # 0.50 <= 0.5 <= 0.54
    tests = paired_tests(table)
    ab = next(t for t in tests if (t["a"], t["b"]) == ("a", "b"))
    # by hand: differences 0.10, 0.11, 0.07; t = mean / (sd / sqrt(3))
    d = [0.10, 0.11, 0.07]
    t_value = statistics.mean(d) / (statistics.stdev(d) / math.sqrt(3))
    assert ab["p_value"] == pytest.approx(2 * stats.t.sf(t_value, 2), rel=1e-9)
    assert ab["p_value"] < 0.05 and not ab["within_noise"]
    mark_within_noise(table, tests)
    marks = {r["method"]: r["within_noise_of_best"] for r in table}
    assert marks == {"a": True, "b": False, "c": True}  # c: differences -0.01, 0.02, -0.01


def test_a_band_over_seeds_is_drawn_around_the_mean(tmp_path):
    pytest.importorskip("matplotlib")
    from utils.report.plots import colours_of, plot_curves

    def metrics(p):
        return {"curve": {"positions": [1, 2, 3], "precision": p, "recall": [0.1, 0.2, 0.3]},
                "pr_curve_radius": {"radius": [0, 1, 2], "precision": p, "recall": [0.1, 0.2, 0.3]}}

    runs = [("dcdh 16 bits", metrics([1.0, 0.8, 0.6])), ("dcdh 16 bits", metrics([0.8, 0.6, 0.4])),
            ("dcdh 32 bits", metrics([0.9, 0.9, 0.9])), ("opqn 16 bits", metrics([0.5, 0.5, 0.5]))]
    drawn = plot_curves(runs, tmp_path)
    mean = drawn["precision_at_positions"]["series"]["dcdh 16 bits"]
    assert mean == pytest.approx([(1, 0.9), (2, 0.7), (3, 0.5)])
    colours = colours_of(label for label, _ in runs)
    assert set(colours) == {"dcdh", "opqn"} and colours["dcdh"] != colours["opqn"]


def test_reports_show_each_cells_provenance_and_the_protocol(two_epoch_cell, tmp_path):
    pytest.importorskip("matplotlib")
    root = two_epoch_cell
    assert table(root, "--epochs", 2, "--batch", 8, "--report", tmp_path / "t.html",
                 "--columns", "mAP", "tie") == 0
    page = (tmp_path / "t.html").read_text()
    assert "<h2>provenance of each cell</h2>" in page
    assert "2 of 2 epochs, batch 8, lr 0.005, seed 0, float32, cpu (" in page
    assert "<th>mAP</th><th>tie-aware mAP</th>" in page  # every asked column, labelled
    assert "<h2>Protocol</h2>" in page and "database index ascending" in page
    cell = root / "cells" / "dcdh_synthetic_12bits.tar"
    assert run(evaluation, "--load", cell, "--dataset", "synthetic", "--no-progress",
               "--report", tmp_path / "e.html") == 0
    page = (tmp_path / "e.html").read_text()
    assert "<h2>provenance</h2>" in page and "2 of 2 epochs" in page
    assert "<td>protocol</td><td>synthetic</td>" in page
