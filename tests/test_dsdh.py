"""DSDH (liqi-casia/DSDH-HashingCode, MATLAB): the batch step (classifier,
discrete codes, output derivative) against the MATLAB code run in Octave,
the gradient the network trains on, the update rule and the lr schedule,
the published calcMAP, learning on the built-in faces, resume and the file
errors.  Expected values: tests/fixtures/baselines/dsdh (README section 3 of
the shared baselines fixtures)."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import evaluation
import train as train_script
from data.registry import DataFacts
from methods import from_checkpoint, method_class, method_names
from models import DFHNet
from models.losses.dsdh import dsdh_batch_step, log_exp_trick, rrc
from builders import trained_and_untrained_map
from script_runner import run
from utils.engine.checkpoint import CheckpointError, load_checkpoint
from utils.retrieval.codes_io import save_codes
from utils.retrieval.metrics import evaluate_codes
from utils.retrieval.published import dsdh as published

FIXTURES = Path(__file__).parent / "fixtures" / "baselines" / "dsdh"
BATCH_CASES = ["batch_8bit_n100_bs40", "batch_12bit_n200_bs128", "batch_16bit_n60_bs20",
               "batch_48bit_n100_bs16_signU0"]
TINY = ["--dataset", "synthetic", "--synthetic-ids", 4, "--synthetic-train", 8,
        "--synthetic-test", 2, "--no-progress", "--len", 16]


def fixture(name):
    z = np.load(FIXTURES / f"{name}.npz")
    return {k: z[k] for k in z.files}, json.loads(str(z["meta_json"]))


def prepared(labels, bits, **config):
    """A DSDH method with its tables over ``labels`` (the training split)."""
    cls = method_class("dsdh")
    facts = DataFacts(int(max(labels)) + 1, 32)
    method = cls(cls.make_config("synthetic", facts, {"bits": bits, **config}), facts)
    method.prepare(SimpleNamespace(train=SimpleNamespace(labels=torch.as_tensor(labels))), None, 0)
    return method


# -- the batch step ----------------------------------------------------------------------------

@pytest.mark.parametrize("case", BATCH_CASES)
@pytest.mark.parametrize("precision", ["", "_float64"])
def test_batch_step_equals_the_matlab_code(case, precision):
    """train.m lines 9-50 (single: U0 as the GPU gives it; _float64: U0 as double)."""
    z, meta = fixture(case)
    dtype = torch.float64 if precision else torch.float32
    U = torch.tensor(z["U_before"])  # double, as MATLAB's zeros
    table = torch.zeros_like(U)
    index = torch.tensor(z["ix"]) - 1  # MATLAB's ix is 1-based
    step = dsdh_batch_step(U, torch.tensor(z["U0"], dtype=dtype), torch.tensor(z["L1"]), index,
                           meta["eta"], B_table=table)
    ours = {k: step[k].numpy() for k in ("W", "Q", "dJdU")}
    expected = {k: z[f"{m}{precision}" if f"{m}{precision}" in z else m]
                for k, m in (("W", "Wg"), ("Q", "Q"), ("dJdU", "dJdU"))}
    assert ours["W"].shape == (meta["codelens"], meta["classes"])  # [bits, classes]
    atol = {"W": 1e-12, "Q": 1e-12, "dJdU": 1e-12} if precision else \
        {"W": 1e-5, "Q": 1e-5, "dJdU": 1e-5}  # single: Octave's and torch's solvers round apart
    for name in ours:
        np.testing.assert_allclose(ours[name], expected[name], rtol=0, atol=atol[name],
                                   err_msg=name)
    assert np.array_equal(step["B"].numpy().astype(np.int8), z["batchB" + precision])
    assert step["sweeps"] == meta["sweeps"]  # the early stop after the same sweep
    assert np.array_equal(step["S"].numpy().astype(np.int8), z["S"])
    assert np.array_equal(U.numpy(), z["U_after"])
    assert np.array_equal(table[index].numpy(), z["B_after"][index.numpy()])


def test_rrc_and_log_exp_trick():
    z, meta = fixture("rrc")
    W, labels, E = rrc(torch.tensor(z["tr_dat"]), torch.tensor(z["tr_labels"]) - 1,
                       meta["lambda_"])
    np.testing.assert_allclose(W.numpy(), z["W"], rtol=0, atol=1e-6)
    assert np.array_equal(labels.numpy() + 1, z["labels"])
    assert float(E) == pytest.approx(float(z["E"]), rel=1e-6)
    z, _ = fixture("logexptrick")
    np.testing.assert_allclose(log_exp_trick(torch.tensor(z["X"])).numpy(), z["Y"], rtol=1e-15)
    # single overflows at 99.9 (inf), as MATLAB's single does
    np.testing.assert_allclose(log_exp_trick(torch.tensor(z["X"], dtype=torch.float32)).numpy(),
                               z["Y_single"], rtol=1e-6)


@pytest.mark.parametrize("case", ["batch_8bit_n100_bs40", "batch_16bit_n60_bs20"])
def test_the_network_gets_the_published_output_gradient(case):
    """Through the method: the batch's output gradient is -dJdU / (128 N) (the
    published update.m divisor, whatever the batch's size), the logged loss
    the objective that gradient descends, J / (128 N)."""
    z, meta = fixture(case)
    method = prepared(z["L1"], meta["codelens"])
    method.U.copy_(torch.from_numpy(z["U_before"]))
    method.net = torch.nn.Identity()  # the outputs are the fixture's U0
    outputs = torch.tensor(z["U0"], requires_grad=True)
    index = torch.tensor(z["ix"]) - 1
    loss = method(outputs, torch.stack([index, torch.tensor(z["L1"])[index]], 1))
    loss.backward()
    scale = 128 * len(z["L1"])
    np.testing.assert_allclose(outputs.grad.numpy(), -z["dJdU"] / scale, rtol=0, atol=1e-9)
    T, U0 = z["T"].astype(np.float64), z["U0"].astype(np.float64)
    J = 2 * (np.logaddexp(0, T) - z["S"] * T).sum() + \
        meta["eta"] * ((z["batchB"] - U0) ** 2).sum()
    assert loss.item() == pytest.approx(J / scale, rel=1e-5)


def test_the_update_rule_and_the_lr_schedule():
    """update.m: w <- w + lr (dzdw / (128 N) - 5e-4 w), at the lr of epoch 4 of
    logspace(-2, -6, 150), through the method's optimizer and scheduler."""
    z, meta = fixture("update")
    method = prepared([0, 1], 12)
    names = ("W20", "b20", "W17", "b17")
    method.net = torch.nn.ParameterList([torch.nn.Parameter(torch.from_numpy(z[n]))
                                         for n in names])
    recipe = method_class("dsdh").make_recipe("facescrub", None, method.config, {})
    assert (recipe.epochs, recipe.batch, recipe.lr, recipe.lr_final, recipe.momentum,
            recipe.weight_decay) == (150, 128, 1e-2, 1e-6, 0.0, 5e-4)
    optimizer, scheduler = method.configure_optimizers(recipe)
    lrs = []
    for _ in range(recipe.epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # no gradients yet: nothing moves
        scheduler.step()
    np.testing.assert_allclose(lrs, np.logspace(-2, -6, 150), rtol=1e-12)
    optimizer.param_groups[0]["lr"] = lrs[3]
    assert lrs[3] == pytest.approx(meta["lr"], rel=1e-12)
    for p, n in zip(method.net, names):  # what the surrogate's backward gives
        p.grad = -torch.from_numpy(z["g" + n]) / (128 * meta["N"])
    optimizer.step()
    for p, n in zip(method.net, names):
        np.testing.assert_allclose(p.detach().numpy(), z[n + "_after"], rtol=1e-6, atol=1e-9)


# -- the published evaluation ------------------------------------------------------------------

@pytest.mark.parametrize("case", ["map_12bit_c5", "map_8bit_c4_ties"])
def test_calcmap_and_the_toolkit_metric(case):
    z, meta = fixture(case)
    S = published.compute_s(z["dataset_L"], z["test_L"])
    assert np.array_equal(S, z["S"].astype(bool))
    dist, order = published.calc_hamming_rank(z["B_dataset"], z["B_test"])
    assert np.array_equal(dist, z["distH"]) and np.array_equal(order + 1, z["orderH"])
    value, rate = published.calc_map(order, S.T)
    assert value == pytest.approx(float(z["map"]), rel=1e-12)
    assert rate == pytest.approx(float(z["succRate"]), rel=1e-12)
    assert published.return_map(z["B_dataset"], z["B_test"], S) == pytest.approx(float(z["map"]))
    # the toolkit's metric with DSDH's default (queries without a relevant item left out)
    skip = method_class("dsdh").metric_defaults["skip_no_relevant"]
    ours = evaluate_codes(z["B_test"], z["B_dataset"], z["test_L"], z["dataset_L"],
                          skip_no_relevant=skip)["mAP"]
    assert ours == pytest.approx(float(z["map"]), rel=1e-12)


def test_the_published_map_of_a_stored_codes_file(tmp_path, capsys):
    z, _ = fixture("map_12bit_c5")
    path = tmp_path / "codes.npz"
    pm = lambda b: torch.from_numpy(b.astype(np.int8) * 2 - 1)  # noqa: E731 - stored as +-1
    save_codes(path, pm(z["B_dataset"]), pm(z["B_test"]), torch.from_numpy(z["dataset_L"]),
               torch.from_numpy(z["test_L"]))
    assert published.main([str(path)]) == 0
    assert capsys.readouterr().out == ("DSDH calcMAP (ties by database index, over the 93.3% of "
                                       f"queries with a relevant item): {float(z['map']):.5f}\n")


# -- the method on the built-in faces --------------------------------------------------------

def test_learns_on_the_built_in_faces(tmp_path):
    """Trained mAP far above the untrained network's (the bar measured over
    three seeds: see the docs)."""
    trained, before = trained_and_untrained_map("dsdh", tmp_path, epochs=8, bs=32)
    # measured (seeds 0, 1, 2): trained 0.56, 0.56, 0.50; untrained 0.26 (0.24, 0.31)
    assert trained > 0.4 and trained > before + 0.15, (trained, before)


def test_resume_continues_the_tables_exactly(tmp_path, monkeypatch):
    """A two-epoch run equals the same run interrupted (Ctrl-C) in its second
    epoch and continued with --resume auto: network, U and B tables, losses.
    (The lr schedule spans --epochs, so the runs are alike in --epochs.)"""
    common = ["--method", "dsdh", *TINY, "--bs", 8, "--epochs", 2, "--log-dir", tmp_path / "log"]
    assert run(train_script, *common, "--checkpoint-dir", tmp_path / "a") == 0
    cls, steps = method_class("dsdh"), []
    batch_loss = cls.batch_loss

    def interrupted(self, *args):
        steps.append(1)
        if len(steps) == 5:  # the first step of epoch 2 (32 items, batches of 8)
            raise KeyboardInterrupt
        return batch_loss(self, *args)

    monkeypatch.setattr(cls, "batch_loss", interrupted)
    assert run(train_script, *common, "--checkpoint-dir", tmp_path / "b") == 130
    monkeypatch.setattr(cls, "batch_loss", batch_loss)
    assert run(train_script, *common, "--checkpoint-dir", tmp_path / "b", "--resume", "auto") == 0
    a, b = (load_checkpoint(tmp_path / d / "dsdh_synthetic_16bits_last.tar") for d in "ab")
    assert a["U"].shape == (32, 16) and a["U"].abs().min() > 0  # every item's row written
    assert torch.equal(a["U"], b["U"]) and torch.equal(a["B"], b["B"])
    assert all(torch.equal(v, b["dsdh"]["net"][k]) for k, v in a["dsdh"]["net"].items())
    assert a["train_state"]["history"] == b["train_state"]["history"]


def test_files_of_another_length_or_method_are_refused_in_one_line(tmp_path, capsys):
    torch.manual_seed(0)
    path = tmp_path / "d.tar"
    torch.save({"dsdh": {"net": DFHNet(16).state_dict()}}, path)
    loaded = from_checkpoint(path)
    assert loaded.cls.name == "dsdh" and loaded.config == {"arch": "dfhnet", "bits": 16}
    assert run(evaluation, "--load", path, *TINY[:-2], "--len", 12) == 2
    assert capsys.readouterr().err == f"error: {path} holds 16-bit codes; pass --len 16\n"
    other = tmp_path / "p.tar"
    torch.save({"dpsh": {"net": DFHNet(16).state_dict()}}, other)
    with pytest.raises(CheckpointError) as err:
        from_checkpoint(other, "dsdh")
    assert str(err.value) == f"{other} holds a dpsh model (its published layout), not dsdh"
    with pytest.raises(CheckpointError) as err:
        prepared([0, 1], 16).load_official_state(load_checkpoint(other), other)
    assert str(err.value) == (f"{other} is not a DSDH checkpoint: no 'dsdh' entry with the "
                              f"network's state_dict (top-level keys: dpsh)")
    ours = {"dsdh": {"net": DFHNet(16).state_dict()}}
    assert [n for n in method_names() if method_class(n).recognise(ours, path)] == ["dsdh"]
