"""DPSH (jiangqy/DPSH-pytorch): the loss lines against the published run's
values, the AlexNet manifest, the whole published training run replayed from
its stored features through our loss, optimizer and schedule, the published
CalcMap, learning on the built-in faces, resume and the file errors.
Expected values: tests/fixtures/baselines/dpsh (README section 2 of the
shared baselines fixtures)."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import evaluation
import train as train_script
from data.registry import DataFacts
from methods import from_checkpoint, method_class, method_names
from models import DFHNet, create_network, network_spec, recognise_network
from models.losses.dpsh import dpsh_loss
from builders import trained_and_untrained_map
from script_runner import run
from utils.engine.checkpoint import CheckpointError, load_checkpoint
from utils.retrieval.codes_io import save_codes
from utils.retrieval.metrics import evaluate_codes
from utils.retrieval.published import dpsh as published

FIXTURES = Path(__file__).parent / "fixtures" / "baselines" / "dpsh"
LOSS_CASES = ["loss_first_iter_12bit", "loss_mid_epoch_48bit", "loss_overflow_48bit",
              "loss_ties_sign0_8bit"]
TINY = ["--dataset", "synthetic", "--synthetic-ids", 4, "--synthetic-train", 8,
        "--synthetic-test", 2, "--no-progress", "--len", 16]


def fixture(name):
    z = np.load(FIXTURES / f"{name}.npz")
    return {k: z[k] for k in z.files}, json.loads(str(z["meta_json"]))


def one_hot(labels, classes):
    return torch.nn.functional.one_hot(torch.as_tensor(labels), classes)


def prepared(labels, bits=12, **config):
    """A DPSH method with its tables over ``labels`` (the training split)."""
    cls = method_class("dpsh")
    facts = DataFacts(int(max(labels)) + 1, 32)
    method = cls(cls.make_config("synthetic", facts, {"bits": bits, **config}), facts)
    method.prepare(SimpleNamespace(train=SimpleNamespace(labels=torch.as_tensor(labels))), None, 0)
    return method


# -- the loss lines ----------------------------------------------------------------------

@pytest.mark.parametrize("case", LOSS_CASES)
@pytest.mark.parametrize("precision", ["", "_float64"])
@pytest.mark.parametrize("labels", ["ids", "one-hot"])
def test_loss_equals_the_published_lines(case, precision, labels):
    z, meta = fixture(case)
    dtype = torch.float64 if precision else torch.float32
    outputs = torch.tensor(z["outputs"], dtype=dtype, requires_grad=True)
    U, B = (torch.tensor(z[k], dtype=dtype) for k in ("U_before", "B_before"))
    batch, train = torch.tensor(z["batch_labels"]), torch.tensor(z["train_labels"])
    if labels == "one-hot":  # the published CalcSim of one-hot rows
        classes = int(train.max()) + 1
        batch, train = one_hot(batch, classes), one_hot(train, classes)
    loss, logloss, regterm = dpsh_loss(outputs, U, B, torch.tensor(z["batch_ind"]), batch, train,
                                       meta["lamda"])
    loss.backward()
    rtol = 1e-12 if precision else 1e-6
    for name, value in (("loss", loss), ("logloss", logloss), ("regterm", regterm)):
        assert float(value.detach()) == pytest.approx(float(z[name + precision]), rel=rtol), name
    # the gradient through the left factor of theta only (U is a constant), 0.5 at theta = 0
    np.testing.assert_allclose(outputs.grad.numpy(), z["grad" + precision], rtol=0,
                               atol=1e-15 if precision else 1e-8)
    assert np.array_equal(U.numpy(), z["U_after" + precision])
    assert np.array_equal(B.numpy(), z["B_after" + precision])  # sign(0) = 0 stays


def test_similarity_of_the_fixture_is_label_equality():
    from models.losses.dpsh import similarity

    z, _ = fixture("loss_mid_epoch_48bit")
    S = similarity(torch.tensor(z["batch_labels"]), torch.tensor(z["train_labels"]))
    assert np.array_equal(S.numpy().astype(np.int8), z["S"])


# -- the network ---------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [12, 48])
def test_alexnet_hash_has_the_published_state_dict(bits):
    manifest = json.loads((FIXTURES / f"dpsh_alexnet_{bits}.json").read_text())
    net = create_network("alexnet_hash", bits)
    state = net.state_dict()
    assert [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in state.items()] == \
        [[k, shape, dtype] for k, (shape, dtype) in manifest["state_dict"].items()]
    assert sum(p.numel() for p in net.parameters()) == \
        manifest["parameters_vs_buffers"]["n_parameter_elements"]
    assert recognise_network(state, family="alexnet") == "alexnet_hash"
    assert network_spec("alexnet_hash").code_length(state) == bits
    assert network_spec("alexnet_hash").input_sizes == (224,)
    with torch.no_grad():
        assert net.eval()(torch.zeros(1, 3, 224, 224)).shape == (1, bits)
        with pytest.raises(RuntimeError):  # no avgpool, as published: 32x32 faces do not fit
            net(torch.zeros(1, 3, 32, 32))


def test_alexnet_hash_starts_from_the_imagenet_weights(tmp_path):
    from conftest import imagenet_file

    _, imagenet = imagenet_file("alexnet")
    net = create_network("alexnet_hash", 12, pretrained="imagenet")
    state = net.state_dict()
    assert all(torch.equal(state[k], v) for k, v in imagenet.items() if k in state
               and not k.startswith("classifier.6."))
    assert state["classifier.6.weight"].shape == (12, 4096)
    # a 224-pixel dataset selects it, with the published ImageNet start
    cls = method_class("dpsh")
    config = cls.make_config("folder", DataFacts(10, 224), {"bits": 12})
    assert (config.arch, config.pretrained) == ("alexnet_hash", "imagenet")
    assert cls.make_config("facescrub", DataFacts(530, 32), {}).arch == "dfhnet"
    assert cls.make_config("vggface2", DataFacts(500, 112), {}).arch == "sphere20"


# -- the published run, replayed ------------------------------------------------------------

def test_the_published_run_replays_through_our_loss_optimizer_and_schedule():
    """DPSH_algo(12, lambda 10) for 150 epochs: the stand-in network Linear(48, 12)
    on the stored features, the stored batch order, our method's loss, its
    configure_optimizers and the published recipe's schedule (one epoch late)."""
    z, meta = fixture("dpsh_algo_run")
    torch.set_num_threads(1)
    method = prepared(z["labels_train"], bits=12)
    linear = torch.nn.Linear(48, 12)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(z["W0"]))
        linear.bias.copy_(torch.from_numpy(z["b0"]))
    method.net = linear
    cls = method_class("dpsh")
    recipe = cls.make_recipe("cifar10-1", None, method.config, {})
    assert (recipe.epochs, recipe.batch, recipe.lr, recipe.momentum, recipe.weight_decay) == \
        (150, 128, 0.05, 0.0, 1e-5) and method.config.lam == 10
    optimizer, scheduler = method.configure_optimizers(recipe)
    features, labels = torch.from_numpy(z["features_train"]), torch.from_numpy(z["labels_train"])
    test = torch.from_numpy(z["features_test"])
    losses, lrs, maps = [], [], []
    for it, rows in enumerate(z["iter_batch_ind"]):
        index = torch.from_numpy(rows[rows >= 0])
        lrs.append(optimizer.param_groups[0]["lr"])
        loss = method(features[index], torch.stack([index, labels[index]], 1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if it + 1 == len(z["iter_epoch"]) or z["iter_epoch"][it + 1] != z["iter_epoch"][it]:
            scheduler.step()
            with torch.no_grad():  # the per-epoch "MAP(retrieval train)": test codes vs sign(B)
                maps.append(evaluate_codes(torch.sign(linear(test)), method.B, z["labels_test"],
                                           z["labels_train"], backend="torch")["mAP"])
    np.testing.assert_allclose(lrs, z["iter_lr"], rtol=1e-12)
    np.testing.assert_allclose(losses, z["iter_loss"], rtol=1e-6)  # measured: 1.3e-7
    np.testing.assert_allclose(maps, z["epoch_map_train_stable"], rtol=1e-12)
    # measured: W 9e-8, b 1.5e-8, U 4.8e-7 from the published float32 run
    np.testing.assert_allclose(linear.weight.detach().numpy(), z["final_W"], rtol=0, atol=5e-7)
    np.testing.assert_allclose(linear.bias.detach().numpy(), z["final_b"], rtol=0, atol=5e-7)
    np.testing.assert_allclose(method.U.numpy(), z["final_U"], rtol=0, atol=2e-6)
    assert np.array_equal(method.B.numpy().astype(np.int8), z["final_B"])
    with torch.no_grad():
        query = method.codes(linear(test))
        database = method.codes(linear(torch.from_numpy(z["features_database"])))
    assert np.array_equal(query.numpy(), z["final_qB"]) and \
        np.array_equal(database.numpy(), z["final_dB"])
    final = evaluate_codes(query, database, z["labels_test"], z["labels_database"])["mAP"]
    assert final == pytest.approx(float(z["final_map"]), rel=1e-12)


def test_the_schedule_decays_one_epoch_late_unless_asked():
    recipe = method_class("dpsh").make_recipe("facescrub", None, None, {})
    late = [recipe.lr * recipe.lr_factor(e) for e in (0, 50, 51, 100, 101, 149)]
    assert late == pytest.approx([0.05, 0.05, 0.005, 0.005, 5e-4, 5e-4])
    on_time = method_class("dpsh").make_recipe("facescrub", None, None, {"on_time_decay": True})
    assert [on_time.lr_factor(e) for e in (49, 50, 100)] == pytest.approx([1, 0.1, 0.01])


# -- the published evaluation ----------------------------------------------------------------

@pytest.mark.parametrize("case", ["calcmap_12bit_c6_norel", "calcmap_32bit_c10"])
def test_calcmap_and_calctopmap(case):
    z, meta = fixture(case)
    args = (z["qB"], z["rB"], z["queryL"], z["retrievalL"])
    assert published.calc_map(*args) == pytest.approx(float(z["map"]), rel=1e-12)
    assert published.calc_top_map(*args, meta["topk"]) == pytest.approx(float(z["topmap"]),
                                                                         rel=1e-12)
    np.testing.assert_allclose(published.ap_per_query(*args), z["ap_per_query"], rtol=1e-12)
    # np.argsort's own tie order, as the published code ranked
    assert published.calc_map(*args, stable=False) == \
        pytest.approx(float(z["map_unpatched"]), rel=1e-12)
    assert published.calc_top_map(*args, meta["topk"], stable=False) == \
        pytest.approx(float(z["topmap_unpatched"]), rel=1e-12)
    # a query without a relevant item counts 0, as the toolkit's mAP does by default
    ids = (z["queryL"].argmax(1), z["retrievalL"].argmax(1))
    assert evaluate_codes(z["qB"], z["rB"], *ids)["mAP"] == pytest.approx(float(z["map"]),
                                                                           rel=1e-12)


def test_the_published_map_of_a_stored_codes_file(tmp_path, capsys):
    z, _ = fixture("calcmap_12bit_c6_norel")
    path = tmp_path / "codes.npz"
    save_codes(path, torch.from_numpy(z["rB"]), torch.from_numpy(z["qB"]),
               torch.from_numpy(z["retrievalL"]), torch.from_numpy(z["queryL"]))
    assert published.main([str(path)]) == 0
    assert capsys.readouterr().out == ("DPSH CalcMap (ties by database index, queries without a "
                                       f"relevant item counted as 0): {float(z['map']):.5f}\n")
    assert published.main([str(path), "--topk", "40", "--unstable"]) == 0
    assert capsys.readouterr().out.endswith(f": {float(z['topmap_unpatched']):.5f}\n")
    assert published.main([str(tmp_path / "none.npz")]) == 2
    assert capsys.readouterr().err == f"error: no such file: {tmp_path / 'none.npz'}\n"


# -- the method on the built-in faces -------------------------------------------------------

def test_learns_on_the_built_in_faces(tmp_path):
    """Trained mAP far above the untrained network's (the bar measured over
    three seeds: see the docs)."""
    trained, before = trained_and_untrained_map("dpsh", tmp_path, epochs=8, bs=32)
    # measured (seeds 0, 1, 2): trained 0.72, 0.54, 0.75; untrained 0.26 (0.24, 0.31)
    assert trained > 0.45 and trained > before + 0.2, (trained, before)


def test_resume_continues_the_tables_exactly(tmp_path):
    """Two epochs in one run equal one epoch and --resume auto for the second:
    network, U and B tables, losses."""
    common = ["--method", "dpsh", *TINY, "--bs", 8, "--log-dir", tmp_path / "log"]
    assert run(train_script, *common, "--epochs", 2, "--checkpoint-dir", tmp_path / "a") == 0
    assert run(train_script, *common, "--epochs", 1, "--checkpoint-dir", tmp_path / "b") == 0
    assert run(train_script, *common, "--epochs", 2, "--checkpoint-dir", tmp_path / "b",
               "--resume", "auto") == 0
    a, b = (load_checkpoint(tmp_path / d / "dpsh_synthetic_16bits_last.tar") for d in "ab")
    assert a["U"].shape == (32, 16) and a["U"].abs().min() > 0  # every item's row written
    assert torch.equal(a["U"], b["U"]) and torch.equal(a["B"], b["B"])
    assert all(torch.equal(v, b["dpsh"]["net"][k]) for k, v in a["dpsh"]["net"].items())
    assert a["train_state"]["history"] == b["train_state"]["history"]


@pytest.mark.subprocess
def test_torchrun_processes_hold_every_row(tmp_path):
    """Two processes, each on its shard (27 items: batches of 8 and 6 against
    8 and 5): the batch outputs are all-gathered, so after one epoch the first
    process's U has every item's row."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", 2,
           "train.py", "--method", "dpsh", *TINY, "--synthetic-ids", 3, "--synthetic-train", 9,
           "--epochs", 1, "--bs", 8, "--device", "cpu", "--checkpoint-dir", tmp_path,
           "--log-dir", tmp_path / "log"]
    proc = subprocess.run(list(map(str, cmd)), cwd=Path(__file__).resolve().parent.parent,
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    U = load_checkpoint(tmp_path / "dpsh_synthetic_16bits_last.tar")["U"]
    assert U.shape == (27, 16) and bool((U.abs().sum(1) > 0).all())


def test_files_of_another_length_arch_or_method_are_refused_in_one_line(tmp_path, capsys):
    torch.manual_seed(0)
    path = tmp_path / "d.tar"
    torch.save({"dpsh": {"net": DFHNet(16).state_dict()}}, path)
    loaded = from_checkpoint(path)
    assert loaded.cls.name == "dpsh" and loaded.config == {"arch": "dfhnet", "bits": 16}
    assert run(evaluation, "--load", path, *TINY[:-2], "--len", 32) == 2
    assert capsys.readouterr().err == f"error: {path} holds 16-bit codes; pass --len 16\n"
    method = prepared([0, 1, 1, 0], bits=16, arch="resnet18")
    with pytest.raises(CheckpointError, match=r"^\S+ holds a dfhnet network, not resnet18; "
                                              r"pass --arch dfhnet$"):
        method.load_official_state(load_checkpoint(path), path)
    dcdh = tmp_path / "c.tar"
    torch.save({"backbone": DFHNet(16).state_dict()}, dcdh)
    with pytest.raises(CheckpointError) as err:
        from_checkpoint(dcdh, "dpsh")
    assert str(err.value) == f"{dcdh} holds a dcdh model (its published layout), not dpsh"
    with pytest.raises(CheckpointError) as err:
        prepared([0, 1], bits=16).load_official_state({"backbone": {}}, dcdh)
    assert str(err.value) == (f"{dcdh} is not a DPSH checkpoint: no 'dpsh' entry with the "
                              f"network's state_dict (top-level keys: backbone)")
    # our file is nobody else's
    ours = {"dpsh": {"net": DFHNet(16).state_dict()}}
    assert [n for n in method_names() if method_class(n).recognise(ours, path)] == ["dpsh"]
