"""DDH (xjcvip007/DDH, Keras 1.2.2) against the baseline fixtures
(tests/fixtures/baselines/ddh, copied from the shared fixtures; README
section 4): the network layout and forward under the weight fill rule and the
loss (DERIVED values: the Keras code cannot run), the published evaluation
(which ran), the protocol (Keras Adam, the held-out 10 %), the checkpoint
layout, and learning on the built-in faces."""

import json
import math
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

import evaluation
import train as train_script
from data.registry import DataFacts
from methods import from_checkpoint, method_class, method_names, read_checkpoint
from methods.ddh import HeldOutBatchSampler, KerasAdam, fitted_items
from models import DDH
from models.losses.ddh import ddh_loss, keras_categorical_crossentropy, loss_01
from script_runner import run
from utils.engine.checkpoint import CheckpointError
from utils.retrieval.codes_io import save_codes
from utils.retrieval.published import ddh as published
from weight_fill import fill_values

FIXTURES = Path(__file__).parent / "fixtures" / "baselines" / "ddh"
GOLDEN = {"golden_ddh48_c530": (48, 530), "golden_ddh12_c1595": (12, 1595)}
LEARN = ["--dataset", "synthetic", "--synthetic-ids", 8, "--synthetic-train", 16,
         "--synthetic-test", 4, "--no-progress", "--len", 16]


def load(name):
    with np.load(FIXTURES / f"{name}.npz") as z:
        out = {k: z[k] for k in z.files}
    out["meta"] = json.loads(str(out.pop("meta_json")))
    return out


def filled_net(name):
    """DDH of the golden file's shape, filled by the fill rule of its own
    spec (``lc4.bias`` [2, 2, 80] takes the 'small' rule, which a name-based
    rule would not give a 3-d tensor)."""
    z = load(name)
    bits, classes = GOLDEN[name]
    net = DDH(bits, classes)
    spec = json.loads(str(z["fill_spec_json"]))
    state = OrderedDict((entry, torch.from_numpy(fill_values(kind, shape, k, int(z["fill_phase"])))
                         .to(getattr(torch, dtype))) for k, entry, shape, dtype, kind in spec)
    net.load_state_dict(state)
    return net.eval(), z


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- network

@pytest.mark.parametrize("name", GOLDEN)
def test_state_dict_is_the_fixture_layout(name):
    z = load(name)
    spec = json.loads(str(z["fill_spec_json"]))
    state = DDH(*GOLDEN[name]).state_dict()
    assert [(k, list(v.shape), str(v.dtype)[6:]) for k, v in state.items()] == \
        [(entry, shape, dtype) for _, entry, shape, dtype, _ in spec]
    params = sum(p.numel() for p in DDH(*GOLDEN[name]).parameters())
    assert params == z["meta"]["n_parameter_elements"]


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_forward(name):
    """A6 and the intermediate maps of the DERIVED Keras forward (eval mode):
    float32 within 1e-5 of the float64 values (they differ by <= 1.4e-6)."""
    net, z = filled_net(name)
    seen = {}
    net.lc4.register_forward_hook(lambda m, inputs, out: seen.update(M3=inputs[0], C4=out))
    with torch.no_grad():
        a6, logits = net(torch.from_numpy(z["input"]))
    m3, c4 = seen["M3"], seen["C4"]
    np.testing.assert_allclose(a6.numpy(), z["output_float64"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(m3.numpy(), z["M3_float64"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(c4.numpy(), z["C4_float64"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(torch.softmax(logits, 1).numpy(), z["softmax_float64"], atol=1e-7)
    assert (torch.sign(a6).numpy().astype(np.int8) == z["codes"]).all()


def test_the_12_bit_codes_are_the_48_bit_prefix():
    """The fill rule is prefix-consistent, so the 12-bit file's codes are the
    48-bit file's first 12 (README section 4)."""
    assert (load("golden_ddh12_c1595")["codes"] == load("golden_ddh48_c530")["codes"][:, :12]).all()


def test_locally_connected_bias_is_a_reshape():
    """The bias of (filter f, row i, column j) is b.flatten()[4f + 2i + j]."""
    net = DDH(12, 3)
    with torch.no_grad():
        net.lc4.weight.zero_()
        net.lc4.bias.copy_(torch.arange(320.0).reshape(2, 2, 80))
    out = net.lc4(torch.zeros(1, 60, 3, 3))
    assert out[0, 5, 1, 0].item() == 4 * 5 + 2 * 1 + 0


@pytest.mark.parametrize("name", GOLDEN)
def test_derived_loss(name):
    """CE + 0.01 * loss_01 + 1e-4 * sum W^2 for the fixture's labels."""
    net, z = filled_net(name)
    derived = z["meta"]["derived_keras_loss"]
    a6, logits = net(torch.from_numpy(z["input"]))
    out = ddh_loss(a6, logits, torch.tensor(z["meta"]["labels_for_loss"]),
                   net.regularised_kernels())
    for ours, theirs in (("loss", "total"), ("ce", "categorical_crossentropy"),
                         ("loss_01", "loss_01"), ("l2", "l2_penalty")):
        assert out[ours].item() == pytest.approx(derived[theirs], rel=1e-6, abs=1e-6)
    np.testing.assert_allclose(loss_01(a6).detach().numpy(), z["loss_01_float64"], atol=1e-6)


def test_keras_crossentropy_clips():
    """Probabilities are clipped to [1e-7, 1 - 1e-7]; a clipped one passes no gradient."""
    probs = torch.tensor([[1e-9, 1 - 1e-9]], dtype=torch.float64, requires_grad=True)
    loss = keras_categorical_crossentropy(probs, torch.tensor([0]))
    assert loss.item() == pytest.approx(-math.log(1e-7))
    loss.backward()
    assert probs.grad.abs().max().item() == 0


def test_keras_initialisation():
    torch.manual_seed(0)
    net = DDH(48, 530)
    bounds = {"conv1.weight": math.sqrt(6 / 27), "conv2.weight": math.sqrt(6 / 80),
              "lc4.weight": math.sqrt(6 / math.sqrt(4 * 240 * 80)),
              "fc5.weight": math.sqrt(6 / (860 + 192)), "dae.weight": math.sqrt(6 / 5),
              "classifier.weight": math.sqrt(6 / (48 + 530))}
    state = net.state_dict()
    for name, bound in bounds.items():
        values = state[name].abs()
        assert values.max() <= bound and values.max() > 0.9 * bound, name
    assert all(state[k].abs().sum() == 0 for k in state if k.endswith(".bias") and "bn" not in k)


def test_batchnorm_is_keras():
    """eps 1e-3, running = 0.99 running + 0.01 batch, the biased variance."""
    net = DDH(12, 3).train()
    x = torch.randn(5, 12 * 4)
    net.bn5(x)
    assert net.bn5.eps == 1e-3
    expected = 0.99 * torch.ones(48) + 0.01 * x.var(0, unbiased=False)
    torch.testing.assert_close(net.bn5.running_var, expected)
    torch.testing.assert_close(net.bn5.running_mean, 0.01 * x.mean(0))


def test_keras_adam_steps():
    """p -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps), eps on sqrt(v)."""
    p = torch.nn.Parameter(torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64))
    grads = [torch.tensor(g, dtype=torch.float64) for g in
             ([1e-9, 0.3, -2.0], [-1e-9, 0.1, 4.0], [2e-9, -0.2, 1.0])]
    optimizer = KerasAdam([p], lr=0.01, eps=1e-8)
    m = v = np.zeros(3)
    expected = p.detach().numpy().copy()
    for t, g in enumerate(grads, start=1):
        p.grad = g.clone()
        optimizer.step()
        m = 0.9 * m + 0.1 * g.numpy()
        v = 0.999 * v + 0.001 * g.numpy() ** 2
        expected -= 0.01 * math.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t) * m / (np.sqrt(v) + 1e-8)
    np.testing.assert_allclose(p.detach().numpy(), expected, rtol=1e-12)


# ---------------------------------------------------------------- protocol

def test_validation_split_holds_out_the_last_tenth():
    """Keras trains on the first int(n * 0.9) items, in new shuffled batches
    every epoch (the last shorter); a last batch of one item is left out."""
    assert fitted_items(67177, 0.1) == 60459 and fitted_items(128, 0.1) == 115
    sampler = HeldOutBatchSampler(115, 32, seed=3)
    epochs = [list(sampler), list(sampler)]
    assert [len(b) for b in epochs[0]] == [32, 32, 32, 19]
    assert sorted(i for b in epochs[0] for i in b) == list(range(115))
    assert epochs[0] != epochs[1]
    assert [len(b) for b in HeldOutBatchSampler(97, 32)] == [32, 32, 32]
    ranks = [list(HeldOutBatchSampler(115, 16, seed=1, rank=r, world_size=2)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 4
    assert not set(sum(ranks[0], [])) & set(sum(ranks[1], []))


def test_recipe_is_published():
    cls = method_class("ddh")
    recipe = cls.make_recipe("youtube", None, cls.Config(), {})
    assert (recipe.epochs, recipe.batch, recipe.lr, recipe.patience(), recipe.validation_split,
            recipe.adam_eps, recipe.monitor) == (200, 256, 1e-3, 50, 0.1, 1e-8, "loss")
    method = cls(cls.Config(bits=48), DataFacts(1595, 32))
    optimizer, scheduler = method.configure_optimizers(recipe)
    assert isinstance(optimizer, KerasAdam)
    for _ in range(300):
        optimizer.step()  # no gradients: nothing moves
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == 1e-3


# ---------------------------------------------------------------- published evaluation

@pytest.mark.parametrize("name", ["eval_48bit_c20", "eval_12bit_c6_zeros"])
def test_published_evaluation(name):
    """compactbit on the +-1 / 0 entries (bit 7 of every byte lost), the
    official distance, Pre/Rec at radius 2, MAP (ties by gallery index) and
    P@K; and with the intended packing the numbers of meta.intended."""
    z = load(name)
    gallery, query = np.sign(z["gallery_x"]), np.sign(z["query_x"])
    gallery_bytes, query_bytes = published.compactbit(gallery), published.compactbit(query)
    assert (gallery_bytes == z["gallery_bytes"]).all() and (query_bytes == z["query_bytes"]).all()
    assert (published.hamming_dist(query_bytes, gallery_bytes).T == z["hammTrainTest"]).all()
    top_k = z["meta"]["TOP_K"]
    out = published.published_metrics(gallery, query, z["gallery_y"], z["query_y"], top_k, chunk=7)
    assert (out["Pre"], out["Rec"], out["MAP"], out["p_topN"]) == pytest.approx(
        (float(z["Pre"]), float(z["Rec"]), float(z["MAP"]), float(z["p_topN"])), abs=1e-12)
    intended = published.published_metrics(gallery, query, z["gallery_y"], z["query_y"], top_k,
                                           packing="intended")
    assert intended == pytest.approx({k: z["meta"]["intended"][k]
                                      for k in ("Pre", "Rec", "MAP", "p_topN")}, abs=1e-12)


def test_compactbit_drops_bit_7():
    z = load("compactbit_rows")
    packed = published.compactbit(z["codes"])
    assert (packed == z["bytes"]).all()
    assert (published.hamming_dist(packed, packed) == z["hamming_official"]).all()
    intended = published.compactbit(z["codes"][:4], packing="intended")
    assert (published.hamming_dist(intended, intended) == z["hamming_true"][:4, :4]).all()
    assert z["hamming_official"][0, 3] == 0 and z["hamming_true"][0, 3] == 1


def test_published_entry_reads_stored_codes(tmp_path, capsys):
    z = load("eval_48bit_c20")
    codes = tmp_path / "codes.npz"
    save_codes(codes, np.sign(z["gallery_x"]), np.sign(z["query_x"]), z["gallery_y"], z["query_y"])
    assert run(published, codes) == 0
    assert capsys.readouterr().out == ("Pre@r2 0.666667  Rec@r2 0.356606  MAP 0.882184  "
                                       "P@50 0.285333\n")
    assert run(published, codes, "--intended", "--top-k", 50) == 0
    assert capsys.readouterr().out == ("Pre@r2 0.566667  Rec@r2 0.310371  MAP 0.922407  "
                                       "P@50 0.291333\n")
    assert run(published, tmp_path / "none.npz") == 2
    assert capsys.readouterr().err == f"error: no such file: {tmp_path / 'none.npz'}\n"


# ---------------------------------------------------------------- files and learning

def test_learns_and_its_files(tmp_path, capsys):
    """Trained mAP far above untrained (measured: 0.836, 0.853, 0.837 over
    seeds 0-2; untrained 0.25-0.27), the bare state_dict is the file a user
    shares, and a file of another code length or method is refused in one line."""
    out = tmp_path / "m.json"
    assert run(train_script, "--method", "ddh", *LEARN, "--epochs", 20, "--bs", 16,
               "--checkpoint-dir", tmp_path, "--log-dir", tmp_path, "--json", out) == 0
    result = json.loads(out.read_text())
    saved = torch.load(result["checkpoint"], weights_only=True)
    assert saved["method"] == "ddh" and set(saved["model"]) == set(DDH(16, 8).state_dict())

    torch.manual_seed(0)
    bare = tmp_path / "untrained.pth"
    torch.save(DDH(16, 8).state_dict(), bare)
    assert run(evaluation, "--load", bare, *LEARN[:-2], "--json", tmp_path / "u.json") == 0
    untrained = json.loads((tmp_path / "u.json").read_text())["mAP"]
    assert result["mAP"] > 0.7 and result["mAP"] > untrained + 0.3, (result["mAP"], untrained)

    torch.save(saved["model"], tmp_path / "bare.pth")  # our layout alone
    loaded = from_checkpoint(tmp_path / "bare.pth")
    assert (loaded.cls.name, loaded.config, loaded.facts) == \
        ("ddh", {"bits": 16, "split_num": 4}, {"img_size": 32, "num_classes": 8})
    capsys.readouterr()
    assert run(evaluation, "--load", tmp_path / "bare.pth", "--len", 48, *LEARN[:-2]) == 2
    assert capsys.readouterr().err == \
        f"error: {tmp_path / 'bare.pth'} holds 16-bit codes; pass --len 16\n"

    method = method_class("ddh")(method_class("ddh").Config(bits=48), DataFacts(8, 32))
    with pytest.raises(CheckpointError) as bits:
        method.load_file(saved, "m.pth")
    assert str(bits.value) == "m.pth holds 16-bit codes; pass --len 16"
    ddah = method_class("ddah")(method_class("ddah").Config(bits=16), DataFacts(8, 32))
    with pytest.raises(CheckpointError) as other:
        method.load_file(ddah.official_state(), "ddah.pth")
    assert str(other.value) == ("ddah.pth is not a DDH checkpoint: no lc4.weight / dae.weight "
                                "state_dict (keys: spatial_features_1.0.weight, "
                                "spatial_features_1.0.bias, spatial_features_1.1.weight, "
                                "spatial_features_1.1.bias)")
    torch.save(ddah.official_state(), tmp_path / "facescrub-16")
    with pytest.raises(CheckpointError) as whose:
        from_checkpoint(tmp_path / "facescrub-16", method="ddh")
    assert str(whose.value) == \
        f"{tmp_path / 'facescrub-16'} holds a ddah model (its published layout), not ddh"


def test_resume_continues_the_same_batches(tmp_path):
    """The held-out sampler's generator is in the resume file: 2 epochs then
    one more give the losses and weights of 3 epochs at once."""
    tiny = ["--method", "ddh", "--dataset", "synthetic", "--synthetic-ids", 4, "--synthetic-train",
            8, "--synthetic-test", 2, "--len", 16, "--bs", 8, "--no-progress",
            "--log-dir", tmp_path]
    for more in (["--epochs", 2, "--checkpoint-dir", tmp_path / "a"],
                 ["--epochs", 3, "--checkpoint-dir", tmp_path / "a", "--resume", "auto", "--json",
                  tmp_path / "a.json"],
                 ["--epochs", 3, "--checkpoint-dir", tmp_path / "b", "--json",
                  tmp_path / "b.json"]):
        # an evaluation may leave OpenMP at its default: the same sums in each run
        torch.set_num_threads(1)
        assert run(train_script, *tiny, *more) == 0
    a, b = (json.loads((tmp_path / f"{x}.json").read_text()) for x in "ab")
    assert a["losses"] == b["losses"] and len(a["losses"]) == 3
    weights = [torch.load(tmp_path / x / "ddh_synthetic_16bits.pth", weights_only=True)["model"]
               for x in "ab"]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def _official_states():
    """Every registered method's published layout, at small shapes."""
    states = {}
    for name in method_names():
        cls = method_class(name)
        label, config, facts, _ = cls.speed_settings()[0]
        facts = DataFacts(4, facts.img_size, facts.input_dim, facts.multi_label)
        torch.manual_seed(0)
        method = cls(cls.make_config("synthetic", facts, config), facts)
        states[name] = method.official_state()
    return states


def test_layouts_are_told_apart(tmp_path):
    """DDH's and DDAH's bare state_dicts are recognised as theirs and by no
    other registered method, and no other method's published layout is
    recognised as DDH's or DDAH's."""
    for name, state in _official_states().items():
        path = tmp_path / f"{name}.pth"
        torch.save(state, path)
        obj = read_checkpoint(path)  # the project's safe reader, as from_checkpoint reads
        for mine in ("ddh", "ddah"):
            assert (method_class(mine).recognise(obj, path) is not None) == (name == mine), \
                (mine, name)
        if name in ("ddh", "ddah"):
            assert [n for n in method_names() if n != name and
                    method_class(n).recognise(obj, path) is not None] == []
            assert from_checkpoint(path).cls.name == name
