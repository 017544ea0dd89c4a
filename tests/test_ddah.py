"""DDAH (deephashface/DDAH, PyTorch) against the baseline fixtures
(tests/fixtures/baselines/ddah, copied from the shared fixtures; README
section 1, produced by running the published code): the network layout and
forward under the weight fill rule (eval and train mode), ``criteria_softmax``,
two training steps of the modern ("pregrad") two-optimizer step run through
the method's own forward / backward / optimizer, the published evaluation,
the data normalisation, the checkpoint layout, and learning on the built-in faces."""

import json
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

import evaluation
import train as train_script
from data.registry import DataFacts
from methods import Method, from_checkpoint, method_class
from models import DDAH, criteria_softmax
from models.losses.ddah import attention_loss
from script_runner import run
from utils.engine.checkpoint import CheckpointError
from utils.retrieval.codes_io import save_codes
from utils.retrieval.published import ddah as published
from weight_fill import fill_values

FIXTURES = Path(__file__).parent / "fixtures" / "baselines" / "ddah"
LEARN = ["--dataset", "synthetic", "--synthetic-ids", 8, "--synthetic-train", 16,
         "--synthetic-test", 4, "--no-progress", "--len", 16]


def load(name):
    with np.load(FIXTURES / f"{name}.npz") as z:
        out = {k: z[k] for k in z.files}
    if "meta_json" in out:
        out["meta"] = json.loads(str(out.pop("meta_json")))
    return out


GOLDEN = load("golden_ddah48_c530")


def filled_state(phase=0) -> OrderedDict:
    spec = json.loads(str(GOLDEN["fill_spec_json"]))
    return OrderedDict((entry, torch.from_numpy(fill_values(kind, shape, k, phase))
                        .to(getattr(torch, dtype))) for k, entry, shape, dtype, kind in spec)


def ddah_method(bits=48, classes=530, **config):
    cls = method_class("ddah")
    return cls(cls.Config(bits=bits, **config), DataFacts(classes, 32))


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- network

def test_state_dict_matches_manifest():
    manifest = json.loads((FIXTURES / "ddah_48_530.json").read_text())
    net = DDAH(48, 530)
    state = net.state_dict()
    assert list(state) == manifest["top_level_keys"]
    assert {k: [list(v.shape), str(v.dtype)[6:]] for k, v in state.items()} == \
        manifest["state_dict"]
    assert [k for k, _ in net.named_buffers()] == manifest["buffers"]
    counts = manifest["parameters_vs_buffers"]
    params = list(net.parameters())
    assert (len(params), sum(p.numel() for p in params)) == \
        (counts["n_parameters"], counts["n_parameter_elements"])


def test_golden_forward_eval_mode():
    net = DDAH(48, 530)
    net.load_state_dict(filled_state())
    net.eval()
    x = torch.from_numpy(GOLDEN["input"])
    with torch.no_grad():
        outputs = net(x)
        raw = net.attention_raw(x)
    for name, value in zip(("hash_a", "cls_a", "hash_b", "cls_b"), outputs):
        np.testing.assert_allclose(value.numpy(), GOLDEN[f"{name}_float64"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(raw.numpy(), GOLDEN["attention_raw_float64"], atol=1e-5, rtol=0)
    method = ddah_method()
    method.net.load_state_dict(filled_state())
    codes = method.encode([(x, torch.zeros(4, dtype=torch.long))], "cpu", progress=False)
    assert (codes.values.numpy() == GOLDEN["codes"]).all()  # sign(hash_a), the net in eval mode


def test_golden_forward_train_mode():
    """Batch statistics (what the published evaluation computes, never
    calling eval()): within 5e-5 of float64 (float32 differs by <= 1.5e-5)."""
    net = DDAH(48, 530)
    net.load_state_dict(filled_state())
    net.train()
    with torch.no_grad():
        outputs = net(torch.from_numpy(GOLDEN["input"]))
    for name, value in zip(("hash_a", "cls_a", "hash_b", "cls_b"), outputs):
        np.testing.assert_allclose(value.numpy(), GOLDEN[f"trainmode_{name}_float64"], atol=5e-5,
                                   rtol=0)
    assert (torch.sign(outputs[0]).numpy() == GOLDEN["trainmode_codes"]).all()
    # every BatchNorm of the shared trunk ran twice, the attention branch's once
    assert net.features[1].num_batches_tracked.item() == 2 and \
        net.spatial_features_1[1].num_batches_tracked.item() == 1


# ---------------------------------------------------------------- loss

@pytest.mark.parametrize("name", ["criteria_48bit_c530_beta0.001",
                                  "criteria_kinks_12bit_c10_beta0.5",
                                  "criteria_unnormalised_out_16bit"])
def test_criteria_softmax(name):
    z = load(name)
    hash_bits = torch.from_numpy(z["hash_bits"]).requires_grad_()
    out = torch.from_numpy(z["out"]).requires_grad_()
    loss = criteria_softmax(hash_bits, out, torch.from_numpy(z["target"]), float(z["meta"]["beta"]))
    loss.backward()
    assert loss.item() == pytest.approx(float(z["loss_float64"]), abs=1e-5)
    np.testing.assert_allclose(hash_bits.grad.numpy(), z["grad_hash_float64"], atol=1e-7)
    np.testing.assert_allclose(out.grad.numpy(), z["grad_out_float64"], atol=1e-7)


# ---------------------------------------------------------------- the training step

def run_published_steps(backward=None):
    """The two steps of train_steps.npz from the fill-rule start, through the
    method's forward, backward and optimizer (as the training loop calls them)."""
    z = load("train_steps")
    method = ddah_method()
    method.net.load_state_dict(filled_state())
    optimizer, _ = method.configure_optimizers(method.make_recipe("facescrub", None,
                                                                  method.config, {}))
    method.train()
    losses, states = [], []
    for step in (1, 2):
        loss = method(torch.from_numpy(z[f"step{step}_imgs"]),
                      torch.from_numpy(z[f"step{step}_labels"]))
        loss_a, loss_b = method._losses
        losses.append([loss_a.item(), loss_b.item(), loss.item(),
                       attention_loss(loss_a, loss_b).item()])
        optimizer.zero_grad(set_to_none=True)
        (backward or method.backward)(loss)
        optimizer.step()
        states.append({k: v.clone() for k, v in method.net.state_dict().items()})
    return z, losses, states


def checked_entries(z, step):
    """The stored parameters of the pregrad run, except the biases in front of
    a BatchNorm (their true gradient is 0: rounding noise moves them by ~lr)."""
    skip = set(z["meta"]["bn_preceded_biases"])
    return [e for e in z["meta"]["full_tensors"]
            if f"step{step}_pregrad_after__{e}_float64" in z and e not in skip]


def test_two_training_steps():
    """Losses within 1e-5 of the published run (loss_s inactive at step 1,
    active at step 2), parameters within 5e-5 of float64 (README's suggested
    check), BatchNorm buffers after step 1 (the same in both semantics) and
    bn1 / bn2 never trained."""
    z, losses, states = run_published_steps()
    np.testing.assert_allclose(losses[0], z["step1_losses_float64"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(losses[1], z["step2_pregrad_losses"], atol=1e-5, rtol=0)
    assert losses[0][3] == 0 and losses[1][3] > 0.04
    for step in (1, 2):
        for entry in checked_entries(z, step):
            np.testing.assert_allclose(states[step - 1][entry].numpy(),
                                       z[f"step{step}_pregrad_after__{entry}_float64"],
                                       atol=5e-5, rtol=0, err_msg=f"step {step} {entry}")
    buffers = [k for k, _ in DDAH(48, 530).named_buffers()]
    for entry, (total, absolute, square, first) in z["meta"]["checksums_after"][0].items():
        if entry in buffers:
            value = states[0][entry].double()
            assert [value.sum().item(), value.abs().sum().item(), value.pow(2).sum().item()] == \
                pytest.approx([total, absolute, square], rel=1e-4, abs=1e-6), entry
    initial = filled_state()
    for entry in ("bn1.weight", "bn1.bias", "bn2.weight", "bn2.bias", "bn3.weight"):
        assert torch.equal(states[1][entry], initial[entry]), entry


def test_the_attention_gradient_counts():
    """Without loss_s's gradient the attention weights miss the fixture by
    more than the tolerance: the check above sees the second term."""
    z, _, states = run_published_steps(backward=lambda loss: Method.backward(None, loss))
    entry = "spatial_features_1.0.weight"
    expected = z[f"step2_pregrad_after__{entry}_float64"]
    assert np.abs(states[1][entry].numpy() - expected).max() > 1e-4


@pytest.mark.parametrize("margin", [0.0, 50.0])
def test_backward_adds_the_loss_s_gradient(margin):
    """The attention parameters get grad loss_c + grad loss_s (taken with
    autograd.grad), the others grad loss_c; m = 50 makes loss_s active."""
    torch.manual_seed(0)
    method = ddah_method(bits=8, classes=3, margin=margin).train()
    x, labels = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2])
    state = {k: v.clone() for k, v in method.state_dict().items()}
    loss = method(x, labels)
    method.backward(loss)
    got = {n: p.grad.clone() for n, p in method.named_parameters() if p.grad is not None}

    method.load_state_dict(state)
    method.zero_grad(set_to_none=True)
    hash_a, cls_a, hash_b, cls_b = method.net(x)
    loss_a = criteria_softmax(hash_a, cls_a, labels, 0.001)
    loss_b = criteria_softmax(hash_b, cls_b, labels, 0.001)
    attention = method.attention_parameters()
    extra = torch.autograd.grad(attention_loss(loss_a, loss_b, margin), attention,
                                retain_graph=True, allow_unused=True)
    (loss_a + loss_b).backward()
    names = {id(p): n for n, p in method.named_parameters()}
    for p, g in zip(attention, extra):
        expected = p.grad + (g if g is not None else 0)
        torch.testing.assert_close(got[names[id(p)]], expected, rtol=1e-5, atol=1e-7)
    for p in method.trunk_parameters():
        torch.testing.assert_close(got[names[id(p)]], p.grad)
    assert all(p.grad is None for bn in (method.net.bn1, method.net.bn2, method.net.bn3)
               for p in bn.parameters())
    assert (attention_loss(loss_a, loss_b, margin).item() > 0) == (margin > 0)


def test_backward_with_a_grad_scaler():
    """fp16 training: the scaled loss_c carries both terms (m = 50: loss_s active)."""
    grads = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=1024.0)):
        torch.manual_seed(0)
        method = ddah_method(bits=8, classes=3, margin=50.0).train()
        loss = method(torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2]))
        method.backward(loss, scaler)
        grads.append(method.net.spatial_features_1[0].weight.grad.clone())
    torch.testing.assert_close(grads[1], 1024 * grads[0])


def test_optimizer_is_the_published_pair():
    method = ddah_method()
    recipe = method.make_recipe("facescrub", None, method.config, {})
    assert (recipe.epochs, recipe.batch, recipe.lr, recipe.weight_decay, recipe.lr_step,
            recipe.lr_gamma, method.config.beta) == (1000, 256, 1e-3, 1e-4, 100, 0.5, 0.001)
    optimizer, scheduler = method.configure_optimizers(recipe)
    groups = [set(map(id, g["params"])) for g in optimizer.param_groups]
    assert groups == [set(map(id, method.attention_parameters())),
                      set(map(id, method.trunk_parameters()))]
    trained = groups[0] | groups[1]
    untrained = {n for n, p in method.net.named_parameters() if id(p) not in trained}
    assert untrained == {f"bn{i}.{w}" for i in (1, 2, 3) for w in ("weight", "bias")}
    lrs = []
    for _ in range(250):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert (lrs[99], lrs[100], lrs[200]) == (1e-3, 5e-4, 2.5e-4)  # 0.001 * 0.5 ** (epoch // 100)


# ---------------------------------------------------------------- published evaluation

@pytest.mark.parametrize("name", ["map_ties_8bit_c6", "map_zero_codes_16bit_c5", "map_norel_8bit"])
def test_published_map(name):
    """Distance = differing entries (0 codes included), ties by database
    index, NaN for a query without a relevant item."""
    z = load(name)
    args = (z["db_codes"], z["query_codes"], z["db_labels"][:, None], z["query_labels"][:, None])
    aps = published.average_precisions(*args)
    np.testing.assert_allclose(aps.numpy(), z["ap_per_query"], atol=1e-7, equal_nan=True)
    np.testing.assert_allclose(published.compute_mAP(*args), z["mAP"], atol=1e-7, equal_nan=True)


def test_published_map_between_the_steps():
    z = load("train_steps")
    assert published.compute_mAP(z["eval_epoch0_trn_binary"], z["eval_epoch0_tst_binary"],
                                 z["eval_epoch0_trn_label"], z["eval_epoch0_tst_label"]) == \
        float(z["eval_epoch0_mAP"]) == 1.0


def test_published_entry_reads_stored_codes(tmp_path, capsys):
    z = load("map_ties_8bit_c6")
    codes = tmp_path / "codes.npz"
    save_codes(codes, z["db_codes"], z["query_codes"], z["db_labels"], z["query_labels"])
    assert run(published, codes) == 0
    assert capsys.readouterr().out == f"mAP {float(z['mAP']):.5f}\n"


def test_data_normalisation_is_published(tmp_path):
    """DDH pickles read as DDAH's get_data does: whole-split mean and std,
    x 0.1, clipped (data/ddh.py), float32 of the float64 result."""
    from data.ddh import DDHFaces

    z = load("data_norm")
    for split in ("train", "test"):
        (tmp_path / split).mkdir()
        with open(tmp_path / split / "batch_0", "wb") as f:
            pickle.dump((z["raw"], z["labels"]), f)
    faces = DDHFaces(str(tmp_path), "train")
    assert torch.equal(faces.images.reshape(8, -1),
                       torch.from_numpy(z["normalised"].astype(np.float32)))
    assert torch.equal(faces[0][0], torch.from_numpy(z["dataset_item0"]))


# ---------------------------------------------------------------- files and learning

def test_learns_and_its_files(tmp_path, capsys):
    """Trained mAP far above untrained (measured: 0.820, 0.877, 0.834 over
    seeds 0-2; untrained 0.20-0.27); the run writes one file (the last
    epoch's, as published); the published file (a bare state_dict, no
    extension) evaluates alike; another code length is refused in one line."""
    out = tmp_path / "m.json"
    assert run(train_script, "--method", "ddah", *LEARN, "--epochs", 6, "--bs", 32,
               "--checkpoint-dir", tmp_path / "ck", "--log-dir", tmp_path, "--json", out) == 0
    result = json.loads(out.read_text())
    assert [p.name for p in (tmp_path / "ck").iterdir()] == ["ddah_synthetic_16bits.pth"]
    saved = torch.load(result["checkpoint"], weights_only=True)

    torch.manual_seed(0)
    torch.save(DDAH(16, 8).state_dict(), tmp_path / "untrained")
    assert run(evaluation, "--load", tmp_path / "untrained", *LEARN[:-2],
               "--json", tmp_path / "u.json") == 0
    untrained = json.loads((tmp_path / "u.json").read_text())["mAP"]
    assert result["mAP"] > 0.65 and result["mAP"] > untrained + 0.3, (result["mAP"], untrained)

    published_file = tmp_path / "facescrub-16"
    torch.save(saved["model"], published_file)
    assert run(evaluation, "--load", published_file, *LEARN[:-2],
               "--json", tmp_path / "p.json") == 0
    assert json.loads((tmp_path / "p.json").read_text())["mAP"] == result["mAP"]
    capsys.readouterr()
    assert run(evaluation, "--load", published_file, "--len", 48, *LEARN[:-2]) == 2
    assert capsys.readouterr().err == f"error: {published_file} holds 16-bit codes; pass --len 16\n"

    with pytest.raises(CheckpointError) as bits:
        ddah_method(bits=48, classes=8).load_file(saved, "m.pth")
    assert str(bits.value) == "m.pth holds 16-bit codes; pass --len 16"
    with pytest.raises(CheckpointError) as classes:
        ddah_method(bits=16, classes=5).load_file(saved, "m.pth")
    assert str(classes.value) == "m.pth holds a classifier of 8 classes, the data has 5; " \
                                 "check --dataset"
    # evaluation (heads=False) needs no classifier
    ddah_method(bits=16, classes=5).load_file(saved, "m.pth", heads=False)
    ddh = method_class("ddh")(method_class("ddh").Config(bits=16), DataFacts(8, 32))
    with pytest.raises(CheckpointError) as other:
        ddah_method(bits=16, classes=8).load_file({"model": ddh.official_state()}, "ddh.pth")
    assert str(other.value) == ("ddh.pth is not a DDAH checkpoint: no spatial_features_* / "
                                "global_avgpooling_* state_dict (keys: conv1.weight, conv1.bias, "
                                "bn1.weight, bn1.bias)")
    torch.save(ddh.official_state(), tmp_path / "ddh.pth")
    with pytest.raises(CheckpointError) as whose:
        from_checkpoint(tmp_path / "ddh.pth", method="ddah")
    assert str(whose.value) == f"{tmp_path / 'ddh.pth'} holds a ddh model (its published " \
                               f"layout), not ddah"
