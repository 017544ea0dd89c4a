"""DCHN against tests/fixtures/dchn (produced by running the published
penghu-cs/DCHN code): SHAM, the view loss, Dense_Net, the published
checkpoint format (rebuilt by replaying the recorded run), the published
evaluation, every data layout, and the scripts (learning, a new view, bad
input)."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import main_DCHN
import trainSHAM
from data.errors import DatasetError
from data.multiview import load_multiview, training_labels
from builders import dchn_view
from methods.dchn import CHECKPOINT_ALLOW, checkpoint_name, cross_view_map, published_line
from models.dense_net import Dense_Net
from models.losses.dchn import codes_of, dchn_loss
from models.sham import load_sham, save_sham, target_codes, train_sham
from script_runner import run
from utils.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from utils.retrieval.metrics import evaluate_codes
from weight_fill import fill_state_dict, sine_input

FIXTURES = Path(__file__).parent / "fixtures" / "dchn"


def npz(*parts):
    with np.load(FIXTURES.joinpath(*parts)) as z:
        return {k: z[k] for k in z.files}


# ---------------------------------------------------------------- SHAM

STABLE = ["sham_C24_O16_G1_A0", "sham_C24_O64_G1_A100_multilabel",
          "sham_C10_O32_G1_A50_singlelabel", "sham_C21_O16_G0.5_A30_multilabel"]


@pytest.mark.parametrize("name", STABLE)
def test_sham_matrix_and_codes(name):
    """W, its best step and the target codes of the published SHAM.  (With
    OpenBLAS's auto-detected kernel W is bit-identical; machines that force
    OPENBLAS_CORETYPE round the single-precision Sylvester step differently,
    by about 1e-6.)"""
    z = npz("sham", f"{name}.npz")
    r = train_sham(int(z["num_classes"]), int(z["output_shape"]), float(z["gama"]),
                   z["available_labels"])
    assert np.abs(r.W_init - z["W_init"]).max() < 1e-12
    assert np.array_equal(r.shuffle, z["shuffle_inx"]) and np.array_equal(r.labels, z["rand_labels"])
    assert r.best_iter == int(z["best_iter"])
    assert np.abs(r.W - z["W"]).max() < 1e-5 and np.abs(r.losses - z["losses"]).max() < 1e-5
    assert np.array_equal(target_codes(z["code_labels"], r.W), z["codes"])
    assert np.array_equal(target_codes(np.arange(int(z["num_classes"])), r.W), z["codes_class_index"])
    assert np.array_equal(codes_of(torch.from_numpy(z["code_labels"]).float(),
                                   torch.from_numpy(r.W).float()).numpy(), z["codes_torch"])


def test_sham_float_sensitive_case():
    """The README's float-sensitive case: the trajectory follows the published
    one until the alternation amplifies rounding; the final loss stays close."""
    z = npz("sham", "sham_C24_O128_G1_A500_multilabel.npz")
    r = train_sham(24, 128, 1.0, z["available_labels"])
    assert np.abs(r.losses[:12] - z["losses"][:12]).max() < 1e-5
    assert abs(r.losses.min() - z["losses"].min()) < 1e-3 * z["losses"].min()


def test_sham_files_both_ways(tmp_path):
    published = load_sham(FIXTURES / "sham" / "SHAM" / "SHAM_W_C24_O16_G1_A0.mat")
    assert np.array_equal(published, npz("sham", "sham_C24_O16_G1_A0.npz")["W"])
    save_sham(tmp_path / "w.mat", published)
    from scipy.io import loadmat
    assert list(k for k in loadmat(tmp_path / "w.mat") if not k.startswith("__")) == ["W"]
    assert np.array_equal(load_sham(tmp_path / "w.mat"), published)


def test_sham_leaves_numpy_global_state_alone():
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    train_sham(6, 8, 1.0)
    assert np.array_equal(np.random.get_state()[1], before)


# ---------------------------------------------------------------- loss and network

@pytest.mark.parametrize("name", ["loss_multilabel_b64_o16_c24", "loss_singlelabel_b32_o32_c10",
                                  "loss_multilabel_b7_o64_c24_alpha0.5_float64labels",
                                  "loss_randomy_b20_o16_c21_alpha0.3"])
def test_view_loss_and_gradient(name):
    z = npz("loss", f"{name}.npz")
    x = torch.tensor(z["x"], requires_grad=True)
    labels, W, alpha = torch.from_numpy(z["labels"]), torch.from_numpy(z["W"]), float(z["alpha"])
    loss = dchn_loss(x, torch.from_numpy(z["y"]), labels, W, alpha)
    loss.backward()
    assert str(loss.dtype) == f"torch.{z['loss'].dtype}"
    assert abs(loss.item() - float(z["loss"])) <= 1e-6 * max(1.0, abs(float(z["loss"])))
    assert np.abs(x.grad.numpy() - z["grad_x"]).max() <= 1e-6
    for term, a in (("loss1", 1.0), ("loss2", 0.0)):
        value = dchn_loss(x.detach(), torch.from_numpy(z["y"]), labels, W, a).item()
        assert abs(value - float(z[term])) <= 1e-5 * max(1.0, abs(float(z[term])))


@pytest.mark.parametrize("input_dim, bits", [(4096, 64), (4096, 128), (1386, 16), (1000, 32), (32, 16)])
def test_dense_net_layout(input_dim, bits):
    manifest = json.loads((FIXTURES / "network" / f"dense_net_D{input_dim}_O{bits}.json").read_text())
    with torch.device("meta"):
        state = Dense_Net(input_dim, bits).state_dict()
    assert {k: [list(v.shape), str(v.dtype).split(".")[1]] for k, v in state.items()} == \
        manifest["state_dict"]
    assert list(state) == list(manifest["state_dict"])


@pytest.mark.parametrize("input_dim, bits", [(4096, 64), (1386, 16), (32, 16)])
def test_dense_net_golden_outputs(input_dim, bits):
    golden = npz("network", f"golden_dense_net_D{input_dim}_O{bits}.npz")
    net = Dense_Net(input_dim, bits)
    net.load_state_dict(fill_state_dict(net, phase=int(golden["fill_phase"])))
    x = sine_input((4, input_dim))
    assert torch.equal(x, torch.from_numpy(golden["input"]))
    with torch.no_grad():
        out = net.eval()(x)
    assert isinstance(out, list) and len(out) == 1  # the published [out]
    ref = golden["output_float64"]
    assert np.abs(out[0].numpy() - ref).max() <= 1e-4 * np.abs(ref).max()
    assert np.array_equal((out[0].numpy() > 0).astype(np.int64) * 2 - 1, golden["codes"])


# ---------------------------------------------------------------- the published checkpoint

def replay_published_run(tmp_path):
    """The recorded run of tests/fixtures/dchn/checkpoints (the 68 MB file is
    not in this repository): the same fill-rule start, the same batches in
    the recorded order, our loss, the published Adam groups and lr schedule.
    Returns (batch losses, the file written in the published layout)."""
    from dataclasses import asdict, replace

    from methods.recipes.dchn import PUBLISHED
    from utils.engine.loop import Progress

    run_ = npz("checkpoints", "checkpoint_run.npz")
    meta = json.loads(str(run_["meta_json"]))
    opt = meta["opt"]
    method = dchn_view(0, 32, 16, run_["W"], alpha=0.02, available_num=100)
    method.net.load_state_dict(fill_state_dict(method.net, phase=0))
    recipe = replace(PUBLISHED, lr_step=opt["lr_update"], epochs=opt["epochs"]).for_view(0)
    optimizer, scheduler = method.configure_optimizers(recipe)  # Adam groups, StepLR(2, 0.1)
    x, labels = torch.from_numpy(run_["train_x"]), torch.from_numpy(run_["train_labels"])
    losses = []
    for epoch, order in enumerate(run_["epoch_order"]):
        batch_losses = []
        for start in range(0, len(order), 64):
            rows = torch.from_numpy(order[start:start + 64])
            loss = method(x[rows], labels[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            batch_losses.append(loss.item())
        losses.append(batch_losses)
        scheduler.step()
    ours = {"recipe": asdict(recipe), "data": {"dataset": opt["datasets"]},
            "run": {"seed": opt["seed"], "checkpoint_dir": opt["prefix"],
                    "workers": opt["num_workers"]}}
    # published: the epoch loss is the mean over batches
    progress = Progress(len(losses), tuple(float(np.mean(b)) for b in losses), ours)
    path = tmp_path / checkpoint_name("mirflickr25k", 0, 16, 100)
    save_checkpoint(method.official_state(progress), path)
    return np.array(losses), path, run_


def test_published_checkpoint_rebuilt_and_evaluated_to_its_codes(tmp_path):
    losses, path, run_ = replay_published_run(tmp_path)
    assert np.abs(losses - run_["batch_losses"]).max() < 1e-5
    layout = json.loads((FIXTURES / "checkpoints" / "checkpoint_layout.json").read_text())
    # the published loaders' error without the allow-list, and our load with it
    with pytest.raises(pickle.UnpicklingError, match="argparse.Namespace"):
        torch.load(path, weights_only=True)
    ckpt = load_checkpoint(path, allow=CHECKPOINT_ALLOW)
    assert list(ckpt) == layout["top_level_keys"]
    assert {k: type(v).__module__ + "." + type(v).__name__ for k, v in ckpt.items()} == \
        layout["top_level_types"]
    assert ckpt["epoch"] == layout["epoch"] and vars(ckpt["opt"]) == layout["opt"]
    assert ckpt["loss"].dtype == np.float32
    assert np.abs(ckpt["loss"] - run_["epoch_losses"]).max() < 1e-5
    fresh = dchn_view(0, 32, 16, run_["W"])
    fresh.load_official_state(ckpt, path)
    with torch.no_grad():
        out = fresh.eval().embed(torch.from_numpy(run_["eval_x"]))
    assert np.abs(out.numpy() - run_["eval_output"]).max() < 1e-5
    assert np.array_equal(fresh.codes(out).numpy().astype(np.int64), run_["eval_codes"])


def test_a_file_with_code_is_still_refused(tmp_path):
    import os as os_module

    class Payload:
        def __reduce__(self):
            return (os_module.system, ("echo never",))

    torch.save({"model": {}, "opt": Payload()}, tmp_path / "evil.pth.tar")
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(tmp_path / "evil.pth.tar", allow=CHECKPOINT_ALLOW)


# ---------------------------------------------------------------- evaluation

@pytest.mark.parametrize("name", ["map_multilabel_32bit", "map_singlelabel_16bit_c10",
                                  "map_ties_8bit_pool12", "map_norelevant_24bit",
                                  "map_more_queries_than_db_12bit"])
def test_published_map(name):
    z = npz("eval", f"{name}.npz")
    meta = json.loads(str(z["meta_json"]))
    skipped = evaluate_codes(z["query_codes"], z["db_codes"], z["query_labels"], z["db_labels"],
                             skip_no_relevant=True)
    assert abs(skipped["mAP"] - float(z["map"])) < 1e-9
    counted = evaluate_codes(z["query_codes"], z["db_codes"], z["query_labels"], z["db_labels"])
    assert counted["queries_without_relevant"] == int(np.isnan(z["ap_per_query"]).sum())
    if "mean_counting_skipped_as_zero" in meta:
        assert abs(counted["mAP"] - meta["mean_counting_skipped_as_zero"]) < 1e-9


@pytest.mark.parametrize("name, views", [("crossview_2views_16bit_multilabel", 2),
                                         ("crossview_3views_32bit_xmedia_like", 3)])
def test_cross_view_matrix_and_printed_line(name, views):
    z = npz("eval", f"{name}.npz")
    out = cross_view_map([(z[f"query_codes_v{v}"], z[f"query_labels_v{v}"]) for v in range(views)],
                         [(z[f"retrieval_codes_v{v}"], z[f"retrieval_labels_v{v}"])
                          for v in range(views)])
    assert np.abs(out["results"] - z["results"]).max() < 1e-9
    assert abs(out["mean"] - float(z["mean"])) < 1e-9
    assert published_line(out["results"]) == json.loads(str(z["meta_json"]))["printed_stable"]


# ---------------------------------------------------------------- data layouts

@pytest.fixture
def published_cwd(tmp_path, monkeypatch):
    """A working directory beside a ../datasets folder, as the published code runs."""
    (tmp_path / "datasets").symlink_to(FIXTURES / "layouts" / "datasets")
    (tmp_path / "run").mkdir()
    monkeypatch.chdir(tmp_path / "run")
    return tmp_path


def loader_results():
    return json.loads((FIXTURES / "layouts" / "loader_results.json").read_text())["results"]


def split_facts(rows):
    return [len(rows), int(rows[0]), int(rows[-1])]


@pytest.mark.parametrize("name", ["mirflickr25k", "mirflickr25k_raw", "nus_wide_tc21", "IAPR-TC12",
                                  "MSCOCO_doc2vec", "XMedia"])
def test_layouts_read_as_published(published_cwd, name):
    results = loader_results()[name]
    for key, expected in results.items():
        if not key.startswith("load_data"):
            continue
        view = int(key.split("=")[1].rstrip(")"))
        if "error" in expected:
            with pytest.raises(DatasetError, match=f"--view {view} does not exist"):
                load_multiview(name, view=view)
            continue
        data = load_multiview(name, view=view)
        assert len(data.views) == expected["n_views"]
        for got, want in zip(data.views, expected["views"]):
            assert list(got.data.shape) == want["data_shape"]
            assert str(np.dtype(got.data.dtype)) == want["data_dtype"]
            assert list(got.labels.shape) == want["labels_shape"]
            assert str(got.labels.dtype) == want["labels_dtype"]
            assert split_facts(got.train) == want["train"]
            assert split_facts(got.query) == want["query"]
            assert split_facts(got.retrieval) == want["retrieval"]
            first3 = [np.nonzero(got.labels[i])[0].tolist() for i in got.query[:3]]
            assert first3 == want["query_labels_first3_nonzero"]
    if "load_labels" in results and "shape" in results["load_labels"]:
        labels = training_labels(name)
        assert list(labels.shape) == results["load_labels"]["shape"]
        assert float(labels.sum()) == results["load_labels"]["sum"]


def test_generic_features_layout(tmp_path):
    rng = np.random.default_rng(0)
    labels = (rng.random((50, 5)) < 0.3).astype(np.float32)
    np.savez(tmp_path / "f.npz", img=rng.normal(size=(50, 8)).astype(np.float32),
             txt=rng.normal(size=(50, 6)), labels=labels)
    data = load_multiview("features", str(tmp_path / "f.npz"),
                          options={"views": ["img", "txt"], "query": 10, "train": 30})
    assert [v.data.shape for v in data.views] == [(50, 8), (50, 6)]
    assert split_facts(data.views[1].train) == [30, 10, 39] and len(data.views[1].retrieval) == 40
    with pytest.raises(DatasetError, match=r"lacks array\(s\) audio"):
        load_multiview("features", str(tmp_path / "f.npz"), options={"views": ["audio"]})


def test_missing_files_are_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetError) as err:
        load_multiview("mirflickr25k")
    assert str(err.value) == ("MIRFLICKR-25K labels not found: "
                              "../datasets/MIRFLICKR25K/mirflickr25k-lall-rand.mat is missing")


# ---------------------------------------------------------------- the scripts

SYN = ["--datasets", "synthetic", "--synthetic-rows", 360, "--output_shape", 16,
       "--available_num", 20, "--no-progress"]


def test_learns_and_a_new_view_trains_alone(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    common = [*SYN, "--synthetic-views", 3, "--epochs", 8, "--lr", 1e-3]
    assert run(trainSHAM, *common) == 0
    for view in (0, 1):
        assert run(main_DCHN, "--mode", "train", "--view", view, *common) == 0
    files = {v: tmp_path / "checkpoint" / checkpoint_name("synthetic", v, 16, 20) for v in (0, 1)}
    before = {v: p.read_bytes() for v, p in files.items()}
    assert run(main_DCHN, "--mode", "eval", "--eval-views", 0, 1, *common,
               "--json", tmp_path / "two.json") == 0
    two = json.loads((tmp_path / "two.json").read_text())
    # a third view, trained without touching the other two
    assert run(main_DCHN, "--mode", "eval", *common) == 2
    assert "no checkpoint for view(s) 2 (Audio)" in capsys.readouterr().err
    assert run(main_DCHN, "--mode", "train", "--view", 2, *common) == 0
    assert all(files[v].read_bytes() == before[v] for v in files)
    assert run(main_DCHN, "--mode", "eval", *common, "--json", tmp_path / "three.json",
               "--report", tmp_path / "r.html") == 0
    three = json.loads((tmp_path / "three.json").read_text())
    assert np.array(three["results"]).shape == (3, 3)
    assert three["results"][0][1] == two["results"][0][1]  # the first two views unchanged
    page = (tmp_path / "r.html").read_text()
    assert "cross-view mAP" in page and f"{three['results'][0][1]:.4f}" in page
    printed = capsys.readouterr().out
    assert "results:  - mean:" in printed and "Image→Text" in printed
    # far above an untrained network
    torch.manual_seed(0)
    for v in (0, 1):
        target = tmp_path / "untrained" / checkpoint_name("synthetic", v, 16, 20)
        target.parent.mkdir(exist_ok=True)
        save_checkpoint({"epoch": 0, "model": Dense_Net((64, 48)[v], 16).state_dict()}, target)
    assert run(main_DCHN, "--mode", "eval", "--eval-views", 0, 1, *common, "--prefix",
               tmp_path / "untrained", "--json", tmp_path / "u.json") == 0
    chance = json.loads((tmp_path / "u.json").read_text())["mean"]
    assert two["mean"] > 0.7 and two["mean"] > chance + 0.25, (two["mean"], chance)
    from scipy.io import loadmat

    # the published features file: per key the views' arrays stacked [views, rows, ...]
    mat = loadmat(tmp_path / "features" / "synthetic_test_20_16bit_features.mat")
    assert mat["query"].shape == (2, 60, 16) and mat["retrieval"].shape == (2, 300, 16)
    assert mat["query"].dtype == np.int64 and set(np.unique(mat["query"])) == {-1, 1}
    assert mat["query_labels"].shape == (2, 60, 12)  # the last evaluation: two views


def test_bad_input_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # no SHAM file: main_DCHN.py computes it as trainSHAM.py does, and says so
    assert run(main_DCHN, "--mode", "train", "--view", 0, "--epochs", 1, *SYN) == 0
    assert "computed and written to SHAM/SHAM_W_C12_O16_G1_A20.mat" in capsys.readouterr().out
    computed = load_sham(tmp_path / "SHAM" / "SHAM_W_C12_O16_G1_A20.mat")
    assert run(trainSHAM, *SYN, "--overwrite") == 0
    assert np.array_equal(load_sham(tmp_path / "SHAM" / "SHAM_W_C12_O16_G1_A20.mat"), computed)
    assert run(main_DCHN, "--mode", "train", "--view", 5, *SYN) == 2
    assert "synthetic has 2 views (0..1); --view 5 does not exist" in capsys.readouterr().err
    assert run(main_DCHN, "--mode", "train", "--datasets", "mirflickr25k") == 2
    assert capsys.readouterr().err.startswith("error: MIRFLICKR-25K labels not found")
    assert run(main_DCHN, "--lr", "-1") == 2
    assert capsys.readouterr().err == "error: argument --lr: expected a positive number, got -1\n"
    assert run(trainSHAM, *SYN, "--available_num", 100000) == 2
    assert "exceeds the 180 training rows" in capsys.readouterr().err
    # a view checkpoint of another code length names the fix
    assert run(trainSHAM, *SYN) == 0
    (tmp_path / "checkpoint").mkdir(exist_ok=True)
    net = Dense_Net(64, 32)
    save_checkpoint({"epoch": 0, "model": net.state_dict()},
                    tmp_path / "checkpoint" / checkpoint_name("synthetic", 0, 16, 20))
    save_checkpoint({"epoch": 0, "model": Dense_Net(48, 16).state_dict()},
                    tmp_path / "checkpoint" / checkpoint_name("synthetic", 1, 16, 20))
    capsys.readouterr()
    assert run(main_DCHN, "--mode", "eval", *SYN) == 2
    assert "holds 32-bit codes; pass --output_shape 32" in capsys.readouterr().err
    # an existing view checkpoint is never replaced by a fresh run
    before = (tmp_path / "checkpoint" / checkpoint_name("synthetic", 1, 16, 20)).read_bytes()
    assert run(main_DCHN, "--mode", "train", "--view", 1, *SYN) == 2
    assert "exists; pass --resume auto" in capsys.readouterr().err
    assert (tmp_path / "checkpoint" / checkpoint_name("synthetic", 1, 16, 20)).read_bytes() == before


def test_speed_benchmark_runs_at_a_tiny_size(tmp_path):
    from bench import dchn_speed

    out = tmp_path / "speed.json"
    args = dchn_speed.get_args_parser().parse_args(
        ["--input-dim", "32", "--bits", "16", "--classes", "6", "--batch", "8", "--train-rows", "64",
         "--available", "10", "--steps", "1", "--json", str(out)])
    figures = dchn_speed.main(args)
    assert json.loads(out.read_text()) == figures
    # an epoch is 64 / 8 = 8 steps; every ratio is the ratio of its own timings
    assert figures["epoch_s"] == pytest.approx(8 * figures["train_step_s"])
    assert figures["step_over_bare"] == pytest.approx(figures["train_step_s"] / figures["bare_step_s"])
    assert figures["sham_speedup"] == pytest.approx(figures["published_sham_s"] / figures["sham_s"])


@pytest.mark.subprocess
def test_views_train_in_parallel_processes(tmp_path, monkeypatch):
    """--view -1 --multiprocessing: every view in its own process, each writing
    its own checkpoint, as a sequential run would."""
    monkeypatch.chdir(tmp_path)
    common = [*SYN, "--epochs", 1, "--lr", 1e-3]
    assert run(trainSHAM, *common) == 0
    assert run(main_DCHN, "--mode", "train", "--view", -1, "--multiprocessing", *common,
               "--json", tmp_path / "t.json") == 0
    views = json.loads((tmp_path / "t.json").read_text())["models"]
    assert [v["view"] for v in views] == [0, 1] and all(v["epochs_run"] == 1 for v in views)
    for v in (0, 1):
        ckpt = load_checkpoint(tmp_path / "checkpoint" / checkpoint_name("synthetic", v, 16, 20),
                               allow=CHECKPOINT_ALLOW)
        assert ckpt["epoch"] == 0 and ckpt["train_state"]["finished"]
