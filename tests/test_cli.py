"""What every script shares: checked numeric flags (one line, exit 2),
strict --deterministic, loader defaults, the DCDH optimizer as published, and
the import direction between the packages."""

import ast
import importlib
import os
from pathlib import Path

import pytest
import torch

from script_runner import run

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(p.stem for p in ROOT.glob("*.py") if "def get_args_parser" in p.read_text())
BENCHMARKS = sorted(f"bench.{p.stem}" for p in (ROOT / "bench").glob("*.py")
                    if "def get_args_parser" in p.read_text())


def test_scripts_are_found():
    assert {"dcdh_train", "evaluation", "opqn_main"} <= set(SCRIPTS)
    assert {"bench.eval_speed", "bench.train_speed", "bench.triplet_speed", "bench.dchn_speed",
            "bench.index_speed", "bench.loader_speed", "bench.gpu_check"} == set(BENCHMARKS)


@pytest.mark.parametrize("script", SCRIPTS + BENCHMARKS)
def test_every_numeric_flag_is_checked(script):
    """No flag takes a bare int or float: each uses a checked type of utils.cli."""
    for name, parser in parsers():
        if name.split(" ")[0] != script:
            continue
        unchecked = [a.option_strings[0] for a in all_actions(parser)
                     if a.type in (int, float) or (a.type is not None and a.option_strings
                                                   and a.type.__name__ in ("int", "float"))]
        assert unchecked == [], name
        numeric = [a for a in all_actions(parser) if getattr(a.type, "checked_number", False)]
        assert numeric, "a script without numeric flags?"
        # a count a user can give has an upper bound (no allocation of 1e20 items)
        unbounded = [a.option_strings[0] for a in numeric if a.type.kind is int and
                     a.type.high is None]
        assert unbounded == [], name


@pytest.mark.parametrize("script, argv, message", [
    ("dcdh_train", ["--lr", "-1"], "error: argument --lr/--lr1: expected a positive number, got -1"),
    ("dcdh_train", ["--bs", "0"], "error: argument --bs: expected a positive integer, got 0"),
    ("dcdh_train", ["--eta", "inf"], "error: argument --eta: expected a number >= 0, got inf"),
    ("dcdh_train", ["--workers", "-2"], "error: argument --workers: expected an integer from 0 to 1024, got -2"),
    ("dcdh_train", ["--epochs", "ten"], "error: argument --epochs: expected a positive integer, got 'ten'"),
    ("evaluation", ["--radius", "-1"], "error: argument --radius: expected an integer >= 0, got -1"),
    ("evaluation", ["--topk", "5", "0"], "error: argument --topk: expected a positive integer, got 0"),
    ("opqn_main", ["--miu", "-0.1"], "error: argument --miu: expected a number >= 0, got -0.1"),
    ("opqn_main", ["--words", "0"], "error: argument --words: expected a positive integer, got 0"),
    ("bench.train_speed", ["--steps", "0"], "error: argument --steps: expected a positive integer, got 0"),
    ("bench.eval_speed", ["--flip-range", "0.1", "2"],
     "error: argument --flip-range: expected a number between 0 and 1, got 2"),
    ("bench.dchn_speed", ["--bits", "-16"], "error: argument --bits: expected an integer from 1 to 4096, got -16"),
    ("evaluation", ["--topk", "100000000000"],
     "error: argument --topk: expected a positive integer up to 1000000000, got 100000000000"),
    ("dcdh_train", ["--synthetic-ids", "1e11"],
     "error: argument --synthetic-ids: expected an integer from 1 to 100000, got '1e11'"),
    ("dcdh_train", ["--synthetic-ids", "200000"],
     "error: argument --synthetic-ids: expected an integer from 1 to 100000, got 200000"),
    ("main_DCHN", ["--output_shape", "100000000000"],
     "error: argument --output_shape: expected an integer from 1 to 4096, got 100000000000"),
    ("index", ["search", "--index", "i", "--codes", "c", "--radius", "100000000000000"],
     "error: argument --radius: expected an integer >= 0 up to 1000000000, got 100000000000000"),
    ("index", ["build", "--codes", "c", "--out", "o", "--threads", "5000"],
     "error: argument --threads: expected an integer from 1 to 1024, got 5000"),
])
def test_bad_numbers_are_one_line(capsys, script, argv, message):
    assert run(importlib.import_module(script), *argv) == 2
    assert capsys.readouterr().err == message + "\n"


def test_deterministic_is_strict(monkeypatch):
    from utils.engine.rng import seed_everything

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        seed_everything(0, deterministic=True)
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.benchmark is False
        seed_everything(0, deterministic=False)
        assert torch.backends.cudnn.benchmark is True
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = False


def test_loader_defaults(tmp_path):
    from PIL import Image

    from data import DataRequest, build_splits, make_loaders

    from data.loaders import TensorBatches

    memory = build_splits("synthetic", DataRequest(options=dict(num_identities=2)))
    loaders = make_loaders(memory, 8, torch.device("cpu"))
    # in memory: whole batches by indexing tensors, no loader processes
    assert all(isinstance(l, TensorBatches) for l in (loaders.train, loaders.database, loaders.queries))
    images, labels = next(iter(loaders.train))
    assert images.shape == (8, 3, 32, 32) and labels.dtype == torch.int64
    assert sum(len(b[1]) for b in loaders.database) == len(memory.database)
    for split in ("train", "test"):
        path = tmp_path / split / "a" / "0.png"
        path.parent.mkdir(parents=True)
        Image.new("RGB", (40, 40)).save(path)
    files = build_splits("folder", DataRequest(root=str(tmp_path)))
    loaders = make_loaders(files, 8, torch.device("cpu"))
    assert loaders.train.num_workers == min(8, os.cpu_count())
    assert loaders.train.persistent_workers and loaders.queries.persistent_workers
    assert not loaders.train.pin_memory  # pinned memory only for CUDA runs
    assert make_loaders(files, 8, torch.device("cpu"), workers=0).train.num_workers == 0


def test_dcdh_optimizer_is_the_published_one():
    """Adam with amsgrad on the network group only (the centers group is plain
    Adam), weight decay 1e-4 on both; SGD for the 112-pixel recipe."""
    from builders import dcdh as DCDH
    from methods.recipes.dcdh import recipe_for

    from dataclasses import replace

    method = DCDH("dfhnet", 12, 3)
    adam, _ = method.configure_optimizers(recipe_for("facescrub", "dfhnet"))
    assert isinstance(adam, torch.optim.Adam)
    net, centers = adam.param_groups
    assert net["amsgrad"] is True and centers["amsgrad"] is False
    assert net["weight_decay"] == centers["weight_decay"] == 1e-4 and net["lr"] == 0.005
    assert centers["params"] == [method.criterion.centers]
    split, _ = method.configure_optimizers(replace(recipe_for("facescrub", "dfhnet"),
                                                   centers_lr=0.01))
    assert [g["lr"] for g in split.param_groups] == [0.005, 0.01]  # --lr1 / --lr2
    sgd, _ = DCDH("sphere20", 12, 3).configure_optimizers(recipe_for("vggface2", "sphere20"))
    assert isinstance(sgd, torch.optim.SGD)
    assert [g["momentum"] for g in sgd.param_groups] == [0.9, 0.9]
    assert [g["weight_decay"] for g in sgd.param_groups] == [5e-4, 5e-4]


# packages and the project packages each may import (utils at the bottom)
ALLOWED = {"utils": {"utils"}, "models": {"models", "utils"}, "data": {"data", "utils"},
           "methods": {"methods", "models", "data", "utils"},
           "pipeline": {"pipeline", "methods", "models", "data", "utils"}}


def imported_names(path: Path) -> list:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_import_only_the_library(script):
    """A script is its parser and a few lines calling the library: it never
    imports another script, and nothing in the library imports a script."""
    assert [n for n in imported_names(ROOT / f"{script}.py") if n.split(".")[0] in SCRIPTS] == []
    for package in ALLOWED:
        for path in (ROOT / package).rglob("*.py"):
            assert [n for n in imported_names(path) if n.split(".")[0] in SCRIPTS] == [], path


def parsers():
    """Every script's parser; train.py once per registered method (its flags)."""
    from methods import method_names

    for script in SCRIPTS + BENCHMARKS:
        module = importlib.import_module(script)
        if script == "train":
            for name in method_names():
                yield f"train --method {name}", module.get_args_parser(["--method", name])
        else:
            yield script, module.get_args_parser()


def all_actions(parser):
    for action in parser._actions:
        yield action
        if isinstance(getattr(action, "choices", None), dict):  # subcommands
            for sub in action.choices.values():
                yield from all_actions(sub)


def test_every_flag_has_help_and_script_sizes():
    """--help is where a user looks first: every flag says what it does; and
    the scripts stay thin (the published eight under 1,300 lines, each under 200)."""
    missing = [f"{name}: {a.option_strings[0]}" for name, parser in parsers()
               for a in all_actions(parser) if a.option_strings and not a.help]
    assert missing == []
    published = ["dcdh_train", "evaluation", "opqn_main", "triplet_main", "trainSHAM", "main_DCHN",
                 "reproduce", "index"]
    sizes = {s: len((ROOT / f"{s}.py").read_text().splitlines()) for s in SCRIPTS}
    assert sum(sizes[s] for s in published) < 1300 and max(sizes.values()) < 200, sizes


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_run_one_way(package):
    offending = []
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in ALLOWED and top not in ALLOWED[package]:
                    offending.append(f"{path.relative_to(ROOT)}: {name}")
    assert offending == []


@pytest.mark.subprocess
def test_pip_install_puts_no_generic_package_into_site_packages(tmp_path):
    """The wheel `pip install .` builds holds no module named data, models,
    methods, pipeline or utils (the toolkit runs from its checkout)."""
    import subprocess
    import sys
    import zipfile

    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("pyproject.toml", "requirements.txt", "README.md", "LICENSE"):
        (tree / name).write_bytes((ROOT / name).read_bytes())
    for package in ALLOWED:
        (tree / package).mkdir()
        (tree / package / "__init__.py").write_text("")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path / "dist"), str(tree)], check=True, timeout=300,
                   capture_output=True)
    wheel, = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.split("/")[0] in ALLOWED or n.endswith(".py")], names
    metadata = next(n for n in names if n.endswith("METADATA"))
    assert "Requires-Dist: torch" in zipfile.ZipFile(wheel).read(metadata).decode()


def test_every_bound_is_documented():
    """docs/errors.md lists each bounded flag with its range (the table row
    that names the flag holds its upper bound)."""
    from utils.cli.parser import MAX_COUNT

    rows = [line for line in (ROOT / "docs" / "errors.md").read_text().splitlines()
            if line.startswith("| `--")]
    for name, parser in parsers():
        for a in all_actions(parser):
            kind = getattr(a.type, "kind", None)
            if kind is not int or a.type.high in (None, MAX_COUNT) or not a.option_strings:
                continue
            flag = a.option_strings[0]
            row = [r for r in rows if f"`{flag}`" in r.split("|")[1]]
            assert row and f"to {a.type.high}" in row[0], (name, flag)
