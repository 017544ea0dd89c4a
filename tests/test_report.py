"""Plots, the retrieval grid, the HTML report (rendered in headless Chromium)
and reproduce.py's tables."""

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import dcdh_train
import evaluation
import reproduce
from script_runner import run
from utils.report.grid import COLOURS, FRAME, draw_grid
from utils.report.plots import plot_curves

TINY = ["--dataset", "synthetic", "--synthetic-ids", "4", "--synthetic-train", "6",
        "--synthetic-test", "2", "--no-progress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny DCDH checkpoint on the built-in data."""
    root = tmp_path_factory.mktemp("trained")
    assert run(dcdh_train, *TINY, "--save", "t.tar", "--len", 12, "--epochs", 2, "--bs", 8,
               "--eval-every", 0, "--checkpoint-dir", root, "--log-dir", root / "log") == 0
    return root


def test_plots_are_images_of_the_json_numbers(trained, tmp_path):
    out = tmp_path / "m.json"
    assert run(evaluation, *TINY, "--load", trained / "t.tar", "--len", 12, "--json", out,
               "--plot", tmp_path / "plots") == 0
    metrics = json.loads(out.read_text())
    for name in ("pr_curve", "precision_at_positions", "radius"):
        with Image.open(tmp_path / "plots" / f"{name}.png") as img:
            assert img.size == (640, 480) and img.format == "PNG"
        svg = (tmp_path / "plots" / f"{name}.svg").read_text()
        assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    drawn = plot_curves([("a", metrics), ("b", metrics)], tmp_path / "again")
    radius = metrics["pr_curve_radius"]
    assert drawn["pr_curve"]["series"]["a"] == list(zip(radius["recall"], radius["precision"]))
    assert drawn["precision_at_positions"]["series"]["b"] == \
        list(zip(map(float, metrics["curve"]["positions"]), metrics["curve"]["precision"]))
    assert drawn["radius"]["series"]["a recall"] == \
        list(zip(map(float, radius["radius"]), radius["recall"]))


def test_stored_codes_get_plots_and_a_report(tmp_path):
    codes = tmp_path / "c.npz"
    rng = np.random.default_rng(0)
    np.savez(codes, db_codes=np.where(rng.random((60, 16)) < 0.5, 1, -1).astype(np.int8),
             query_codes=np.where(rng.random((10, 16)) < 0.5, 1, -1).astype(np.int8),
             db_labels=rng.integers(0, 3, 60), query_labels=rng.integers(0, 3, 10))
    assert run(evaluation, "--codes", codes, "--report", tmp_path / "r.html", "--json",
               tmp_path / "m.json") == 0
    page = (tmp_path / "r.html").read_text()
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert f"{metrics['mAP']:.4f}</td>" in page and page.count("data:image/png;base64,") == 3


def test_pq_plots_use_the_ranking_positions(tmp_path):
    metrics = {"curve": {"positions": [1, 5, 10], "precision": [1.0, 0.8, 0.5],
                         "recall": [0.1, 0.4, 0.5]}}
    drawn = plot_curves([("pq", metrics)], tmp_path)
    assert drawn["pr_curve"]["series"]["pq"] == [(0.1, 1.0), (0.4, 0.8), (0.5, 0.5)]
    assert "radius" not in drawn  # no Hamming radius for score ranking


def test_grid_borders_follow_the_ranking(trained, tmp_path):
    from utils.report import outputs

    calls = {}
    real = outputs.write_grid

    def spy(*a, **k):
        calls["inputs"] = a[0]
        calls["grid"] = real(*a, **k)
        return calls["grid"]

    outputs_write = outputs.write_grid
    outputs.write_grid = spy
    try:
        assert run(evaluation, *TINY, "--load", trained / "t.tar", "--len", 12,
                   "--save-codes", tmp_path / "c.npz", "--show-results", tmp_path / "grid",
                   "--seed", 3, "--show-queries", 5) == 0
    finally:
        outputs.write_grid = outputs_write
    grid = calls["grid"]
    z = np.load(tmp_path / "c.npz")
    # the ranking the grid shows is the metrics' ranking: distance, then index
    q, d = z["query_codes"].astype(np.int64), z["db_codes"].astype(np.int64)
    for row, query in enumerate(grid["queries"]):
        dist = (q[query][None, :] != d).sum(1)
        order = np.argsort(dist, kind="stable")[:10]
        assert grid["indices"][row] == order.tolist()
        assert grid["values"][row] == dist[order].tolist()
        assert grid["relevant"][row] == (z["db_labels"][order] == z["query_labels"][query]).tolist()
    image = np.asarray(Image.open(tmp_path / "grid" / "retrieval.png").convert("RGB"))
    layout = grid["layout"]
    assert image.shape[:2] == (layout.size[1], layout.size[0])
    for row, boxes in enumerate(layout.boxes):
        for col, (left, top, right, bottom) in enumerate(boxes):
            frame = tuple(image[top + FRAME // 2, (left + right) // 2])
            if col == 0:
                assert frame == COLOURS["query"]
            else:
                assert frame == COLOURS["right" if grid["relevant"][row][col - 1] else "wrong"]
    # the queries are the --seed's draw: the same seed gives the same queries, another another
    def drawn(seed):
        return outputs.write_grid(grid_inputs, tmp_path / f"again{seed}", seed, 5)["queries"]

    grid_inputs = calls["inputs"]
    assert drawn(3) == grid["queries"] and len(grid["queries"]) == 5
    assert drawn(4) != grid["queries"]


def test_draw_grid_sizes(tmp_path):
    images = [np.full((8, 8, 3), 100, np.uint8)] * 2
    layout = draw_grid(images, [images * 2] * 2, [[True, False, True, False]] * 2,
                       [[0, 1, 2, 3]] * 2, tmp_path / "g.png", cell=16)
    with Image.open(tmp_path / "g.png") as img:
        assert img.size == layout.size == (5 * (16 + 2 * FRAME) + FRAME, 2 * (16 + 2 * FRAME + 14) + FRAME)


def test_outputs_need_images_or_matplotlib(tmp_path, capsys, monkeypatch):
    codes = tmp_path / "c.npz"
    np.savez(codes, db_codes=np.ones((3, 8), np.int8), query_codes=np.ones((2, 8), np.int8),
             db_labels=np.arange(3), query_labels=np.arange(2))
    assert run(evaluation, "--codes", codes, "--show-results", tmp_path / "g") == 2
    assert capsys.readouterr().err.startswith("error: --show-results needs images")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert run(evaluation, "--codes", codes, "--plot", tmp_path / "p") == 2
    assert capsys.readouterr().err == "error: plots need matplotlib: pip install matplotlib\n"


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.mark.chromium
@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed (.ci/run installs "
                                                 "Debian's chromium; this machine could not)")
def test_report_renders_in_chromium(trained, tmp_path):
    out, page = tmp_path / "m.json", tmp_path / "report.html"
    assert run(evaluation, *TINY, "--load", trained / "t.tar", "--len", 12, "--json", out,
               "--report", page, "--show-results", tmp_path / "grid") == 0
    metrics = json.loads(out.read_text())
    text = page.read_text()
    assert "http://" not in text and "https://" not in text  # nothing fetched from anywhere
    assert text.count("data:image/png;base64,") == 4  # three plots and the grid
    profile = tmp_path / "profile"
    common = [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
    shot = tmp_path / "shot.png"
    subprocess.run([*common, "--window-size=1200,4000", f"--screenshot={shot}", page.as_uri()],
                   check=True, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (4000, 1200)
    assert pixels.std() > 10  # not a blank page
    assert (np.abs(pixels.astype(int) - COLOURS["right"]).sum(-1) < 30).sum() > 100 or \
        (np.abs(pixels.astype(int) - COLOURS["wrong"]).sum(-1) < 30).sum() > 100  # the grid shows
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], check=True, capture_output=True,
                         text=True, timeout=120).stdout
    shown = dict(re.findall(r"data-key=\"([^\"]+)\">([0-9.]+|nan)</td>", dom))
    assert abs(float(shown["mAP"]) - metrics["mAP"]) <= 5e-5
    assert abs(float(shown["mAP_tie_aware"]) - metrics["mAP_tie_aware"]) <= 5e-5
    assert abs(float(shown["precision_at_k.5"]) - metrics["precision_at_k"]["5"]) <= 5e-5


def test_reproduce_table_two_methods_two_lengths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["--methods", "dcdh", "opqn", "--dataset", "synthetic", "--bits", 12, 24,
            "--synthetic-ids", 4, "--synthetic-train", 6, "--synthetic-test", 2, "--no-progress",
            "--checkpoints", tmp_path / "cells", "--json", tmp_path / "t.json",
            "--csv", tmp_path / "t.csv", "--columns", "mAP", "tie", "P@5"]
    assert run(reproduce, *argv) == 0  # nothing trained yet: empty cells, never guessed
    rows = json.loads((tmp_path / "t.json").read_text())["rows"]
    assert [(r["method"], r["bits"], r["mAP"]) for r in rows] == \
        [("dcdh", 12, None), ("dcdh", 24, None), ("opqn", 12, None), ("opqn", 24, None)]
    assert run(reproduce, *argv, "--train-missing", "--epochs", 2, "--batch", 8) == 0
    rows = json.loads((tmp_path / "t.json").read_text())["rows"]
    assert all(r["trained_here"] and r["mAP"] > 0.3 for r in rows)  # 4 classes: chance ~0.25
    # each cell equals evaluating its checkpoint alone
    dcdh24 = next(r for r in rows if r["method"] == "dcdh" and r["bits"] == 24)
    assert run(evaluation, "--dataset", "synthetic", "--load", dcdh24["checkpoint"], "--len", 24,
               "--no-progress", "--json", tmp_path / "alone.json") == 0
    alone = json.loads((tmp_path / "alone.json").read_text())
    assert dcdh24["mAP"] == alone["mAP"] and dcdh24["tie"] == alone["mAP_tie_aware"]
    assert dcdh24["P@5"] == alone["precision_at_k"]["5"]
    # resumable: a rerun trains nothing and gives the same table
    before = (tmp_path / "t.json").read_text()
    assert run(reproduce, *argv, "--train-missing", "--epochs", 2, "--batch", 8) == 0
    again = json.loads((tmp_path / "t.json").read_text())["rows"]
    assert not any(r["trained_here"] for r in again)
    assert [r["mAP"] for r in again] == [r["mAP"] for r in json.loads(before)["rows"]]
    header = (tmp_path / "t.csv").read_text().splitlines()[0]
    assert header.startswith("method,bits,dataset,mAP,tie,P@5")


def test_reproduce_prints_published_values_where_known(tmp_path):
    from pipeline.tables import markdown, published

    assert published("triplet", "cub", 64)["mAP"] == 0.7059
    # the entry of the cell's settings: DCHN100 (100 labelled rows, the default) or DCHN0
    assert published("dchn", "mirflickr25k", 16, "Image→Text", {"available_num": 100})["mAP"] == 0.813
    assert published("dchn", "mirflickr25k", 16, "Image→Text", {"available_num": 0})["mAP"] == 0.806
    assert published("dcdh", "facescrub", 48) is None  # unknown stays unknown
    table = markdown([{"method": "triplet", "bits": 64, "mAP": 0.5, "published_mAP": 0.7059}],
                     [16, 64], ["mAP"])
    assert table.splitlines()[0] == "cells: mAP"
    assert table.splitlines()[3] == "| triplet |  | 0.5000 (published 0.7059) |"


def test_reproduce_bad_input(tmp_path, capsys):
    assert run(reproduce, "--methods", "dcdh", "--dataset", "synthetic", "--bits", 12,
               "--columns", "accuracy", "--checkpoints", tmp_path) == 2
    assert "unknown column 'accuracy'" in capsys.readouterr().err
    assert run(reproduce, "--methods", "dcdh", "dchn", "--dataset", "synthetic", "--bits", 12,
               "--checkpoints", tmp_path) == 2
    assert capsys.readouterr().err == ("error: dcdh (faces), dchn (multiview) do not read one "
                                      "kind of data; compare them in separate tables\n")
