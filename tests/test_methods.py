"""Every registered method end to end, from the registry alone (a method
added later is tested here without an edit): train.py --method NAME for two
epochs on the built-in data, evaluation.py --load on the file it wrote, the
file recognised from its contents, and the published layout both ways (our
file stripped to the official entries loads and evaluates alike)."""

import json
from pathlib import Path

import pytest
import torch

import evaluation
import index as index_script
import train as train_script
from methods import from_checkpoint, method_class, method_names
from script_runner import run

# the built-in data of each kind of dataset, tiny
TINY = {"faces": ["--synthetic-ids", 4, "--synthetic-train", 8, "--synthetic-test", 2],
        "multiview": ["--synthetic-rows", 300, "--synthetic-classes", 6]}
TINY["images"] = TINY["faces"]


# evaluation reads the built-in data's size back from the checkpoint
EVALUATE = ["--dataset", "synthetic", "--no-progress"]


def tiny(name):
    return ["--dataset", "synthetic", *TINY[method_class(name).data_kind], "--no-progress"]


@pytest.fixture(scope="module", params=method_names())
def trained(request, tmp_path_factory):
    """(method name, folder, training JSON, the file a user evaluates)."""
    name = request.param
    root = tmp_path_factory.mktemp(name)
    out = root / "train.json"
    assert run(train_script, "--method", name, *tiny(name), "--len", 16, "--epochs", 2,
               "--bs", 8, "--checkpoint-dir", root / "ck", "--log-dir", root / "log",
               "--json", out) == 0
    result = json.loads(out.read_text())
    path = Path(result["checkpoint"] if "checkpoint" in result else
                result["models"][0]["checkpoint"])
    return name, root, result, path


def headline(result: dict):
    """The numbers a table shows: mAP, or DCHN's cross-view matrix."""
    return result["results"] if "results" in result else result["mAP"]


def test_train_then_evaluate_gives_the_same_numbers(trained, tmp_path):
    name, root, result, path = trained
    loaded = from_checkpoint(path)
    assert loaded.cls.name == name and loaded.config["bits"] == 16
    out = tmp_path / "e.json"
    assert run(evaluation, "--load", path, *EVALUATE, "--json", out) == 0
    assert headline(json.loads(out.read_text())) == headline(result)


def test_the_official_layout_alone_loads_and_evaluates_alike(trained, tmp_path):
    """The published layout of the trained model (what the published code
    writes and reads, none of our keys) is recognised and gives the same numbers."""
    name, root, result, path = trained
    runs = sorted(path.parent.glob(path.name.replace("_V0_", "_V*_"))) if name == "dchn" \
        else [path]  # DCHN: every view of the run (its evaluation is cross-view)
    for source in runs:
        loaded = from_checkpoint(source)
        torch.save(loaded.build(_facts(loaded)).official_state(), tmp_path / source.name)
        again = from_checkpoint(tmp_path / source.name)
        assert again.cls.name == name and again.config["bits"] == 16
        assert not {"method", "config", "train_state"} & set(again.obj if isinstance(
            again.obj, dict) else {})
    out = tmp_path / "official.json"
    assert run(evaluation, "--load", tmp_path / path.name, *tiny(name), "--json", out) == 0
    assert headline(json.loads(out.read_text())) == headline(result)


def _facts(loaded):
    from data import build_splits
    from pipeline.evaluate import _data_for
    from pipeline.options import DataOptions

    data = _data_for(loaded, DataOptions("synthetic"))
    return build_splits("synthetic", data.request(loaded.cls, loaded.config, False),
                        kinds=loaded.cls.data_kind).facts()


def test_index_search_through_the_checkpoint_equals_stored_codes(trained, tmp_path):
    """index.py search --checkpoint encodes the queries itself (any method whose
    stored codes a single index serves: Hamming codes, or PQ features)."""
    name, root, result, path = trained
    codes = tmp_path / "c.npz"
    assert run(evaluation, "--load", path, *EVALUATE, "--save-codes", codes) == 0
    if method_class(name).data_kind == "multiview":
        # DCHN stores its published cross-view .mat (a database per view): no single index
        assert run(index_script, "build", "--codes", codes, "--out", tmp_path / "db.idx") == 2
        return
    assert run(index_script, "build", "--codes", codes, "--out", tmp_path / "db.idx") == 0
    common = ["search", "--index", tmp_path / "db.idx", "--topk", 5]
    assert run(index_script, *common, "--codes", codes, "--json", tmp_path / "a.json") == 0
    assert run(index_script, *common, "--checkpoint", path, "--dataset", "synthetic",
               "--json", tmp_path / "b.json") == 0
    a, b = (json.loads((tmp_path / f"{x}.json").read_text()) for x in "ab")
    assert a == b and len(a["indices"]) == 8 and all(len(r) == 5 for r in a["indices"])
