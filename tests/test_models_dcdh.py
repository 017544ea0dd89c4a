"""DCDH networks against the checkpoint manifests and golden forward outputs.

Fixtures (copied from the shared checkpoint fixtures, see
tests/fixtures/checkpoints/README.md): the dcdh_*.json manifests list every
state_dict entry of the official networks; golden_dcdh_*.npz hold the outputs
of the official networks filled with the deterministic weights of
weight_fill.py.
"""

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from models.pretrained import PretrainedError

from models import (DFHNet, ResNetHashing, SphereNet_hashing, create_network, network_names,
                    network_spec, recognise_network)
from weight_fill import fill_spec, fill_state_dict, fill_tensor, sine_input

FIXTURES = Path(__file__).parent / "fixtures" / "checkpoints"
DFHNET_ENTRIES = 121  # backbone state_dict entries of DFHNet; the centers come next (k=121)


def load_manifest(name):
    with open(FIXTURES / name) as f:
        return json.load(f)


def load_golden(name):
    with np.load(FIXTURES / name) as z:
        return {k: z[k] for k in z.files}


def assert_matches_manifest(net, manifest):
    expected = manifest["state_dicts"]["backbone"]
    sd = net.state_dict()
    assert list(sd) == list(expected)  # same keys, same order
    for name, tensor in sd.items():
        shape, dtype = expected[name]
        assert list(tensor.shape) == shape, name
        assert str(tensor.dtype) == f"torch.{dtype}", name
    buffers = {name for name, _ in net.named_buffers()}
    assert buffers == set(manifest["buffers"]["backbone"])
    counts = manifest["parameters_vs_buffers"]["backbone"]
    params = list(net.parameters())
    assert len(params) == counts["n_parameters"]
    assert len(buffers) == counts["n_buffers"]
    assert sum(p.numel() for p in params) == counts["n_parameter_elements"]


# ---------------------------------------------------------------- layouts


@pytest.mark.parametrize("bits", [12, 24, 36, 48])
def test_dfhnet_state_dict_matches_manifest(bits):
    assert_matches_manifest(DFHNet(bits), load_manifest(f"dcdh_dfhnet_{bits}.json"))


def test_spherenet20_state_dict_matches_manifest():
    assert_matches_manifest(SphereNet_hashing(num_layers=20, hashing_bits=48), load_manifest("dcdh_spherenet20_48.json"))


def test_spherenet64_layout():
    net = SphereNet_hashing(num_layers=64, hashing_bits=32)
    # each stage: conv, bn, prelu, then the residual units
    assert [len(getattr(net, f"layer{i}")) - 3 for i in range(1, 5)] == [3, 8, 16, 3]
    sd = net.state_dict()
    assert sd["layer3.18.prelu2.weight"].shape == (256,)
    assert sd["fc.weight"].shape == (512, 512 * 7 * 7)
    assert sd["logits.weight"].shape == (32, 512)
    with pytest.raises(ValueError):
        SphereNet_hashing(num_layers=36)


# ---------------------------------------------------------------- golden outputs


GOLDEN = [
    ("golden_dcdh_dfhnet48.npz", lambda: DFHNet(48)),
    ("golden_dcdh_spherenet20_48.npz", lambda: SphereNet_hashing(num_layers=20, hashing_bits=48)),
]


@pytest.mark.parametrize("fixture,make_net", GOLDEN, ids=["dfhnet48", "sphere20_48"])
def test_fill_rules_match_fixture_spec(fixture, make_net):
    golden = load_golden(fixture)
    expected = [tuple(entry) for entry in json.loads(str(golden["fill_spec_json"]))]
    ours = [(k, name, list(shape), str(dtype).replace("torch.", ""), kind)
            for k, name, shape, dtype, kind in fill_spec(make_net())]
    assert ours == expected


@pytest.mark.parametrize("fixture,make_net", GOLDEN, ids=["dfhnet48", "sphere20_48"])
def test_golden_forward(fixture, make_net):
    golden = load_golden(fixture)
    net = make_net()
    net.load_state_dict(fill_state_dict(net, phase=int(golden["fill_phase"])))
    net.eval()
    x = torch.from_numpy(golden["input"])
    assert torch.equal(x, sine_input(golden["input"].shape))
    with torch.no_grad():
        out = net(x).numpy()
    ref = golden["output_float64"]
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()
    codes = np.where(out > 0, 1, -1).astype(np.int8)
    np.testing.assert_array_equal(codes, golden["codes"])


def test_centers_fill_matches_fixture():
    golden = load_golden("golden_dcdh_dfhnet48.npz")
    centers = fill_tensor("centers", (530, 48), k=DFHNET_ENTRIES)
    assert len(DFHNet(48).state_dict()) == DFHNET_ENTRIES
    assert centers.dtype == torch.float32
    np.testing.assert_array_equal(centers.numpy(), golden["centers"])


def test_fill_tensor_rules():
    sphere_sd = SphereNet_hashing(20, 48).state_dict()
    head = list(sphere_sd.items())[:22]  # layer1.0 .. layer1.3: whole modules only
    # a PReLU inside an nn.Sequential: found from the model, from bare names, or by kind=
    from_model = {name: kind for _, name, _, _, kind in fill_spec(SphereNet_hashing(20, 48))}
    from_names = {name: kind for _, name, _, _, kind in fill_spec(head)}
    assert from_model["layer1.2.weight"] == from_names["layer1.2.weight"] == "prelu"
    assert from_names["layer1.3.prelu1.weight"] == "prelu"
    assert from_names["layer1.1.weight"] == "bn_weight"
    assert torch.equal(fill_state_dict(head)["layer1.2.weight"],
                       fill_tensor("layer1.2.weight", (64,), k=7, kind="prelu"))
    nbt = fill_tensor("bn.num_batches_tracked", (), k=3)
    assert nbt.dtype == torch.int64 and nbt.item() == 0
    # a start index shifts the walk: entry i gets k + i (used for the extra tensors
    # of a checkpoint, and the same for 'module.'-prefixed DataParallel names)
    dfh = [("module." + name, t) for name, t in list(DFHNet(12).state_dict().items())[:7]]
    shifted = fill_state_dict(dfh, k=5)
    assert torch.equal(shifted["module.spatial_features_1.1.weight"],
                       fill_tensor("spatial_features_1.1.weight", (32,), k=7))
    assert torch.equal(shifted["module.spatial_features_1.0.weight"],
                       fill_tensor("x.weight", (32, 3, 2, 2), k=5))


# ---------------------------------------------------------------- checkpoint layout


def test_dcdh_method_writes_the_published_layout(tmp_path):
    """What the DCDH method writes (official_state through our atomic writer)
    loads the way the published evaluation loads it, key for key, and gives
    the golden outputs; and the published file loads back into the method."""
    from builders import dcdh as DCDH
    from utils.engine.checkpoint import load_checkpoint, save_checkpoint

    golden = load_golden("golden_dcdh_dfhnet48.npz")
    manifest = load_manifest("dcdh_dfhnet_48.json")
    backbone = fill_state_dict(DFHNet(48))
    centers = fill_tensor("centers", (530, 48), k=len(backbone))
    method = DCDH("dfhnet", 48, 530)
    method.load_official_state({"backbone": backbone, "centers": OrderedDict(centers=centers)})
    path = tmp_path / "dcdh_facescrub48.tar"
    save_checkpoint(method.official_state(), path)

    ck = torch.load(path, map_location="cpu")  # as the published evaluation.py does
    assert list(ck) == ["backbone", "centers"] and list(ck["centers"]) == ["centers"]
    assert list(ck["backbone"]) == list(manifest["state_dicts"]["backbone"])
    assert list(ck) == manifest["top_level_keys"]
    np.testing.assert_array_equal(ck["centers"]["centers"].numpy(), golden["centers"])
    net = DFHNet(48)
    net.load_state_dict(ck["backbone"])
    with torch.no_grad():
        out = net.eval()(torch.from_numpy(golden["input"])).numpy()
    ref = golden["output_float64"]
    assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()
    again = DCDH("dfhnet", 48, 530)
    again.load_official_state(load_checkpoint(path), path)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(),
                                                  method.state_dict().values()))


def test_dfhnet_trains():
    # in-place ReLUs must not break autograd; the output is the BN'd hash layer
    torch.manual_seed(0)
    net = DFHNet(24)
    out = net(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 24)
    out.pow(2).sum().backward()
    assert all(p.grad is not None for name, p in net.named_parameters() if not name.startswith("bn3."))


# ---------------------------------------------------------------- ResNet


@pytest.mark.parametrize("size", [64, 112])
def test_resnet18_hashing_shapes(size):
    net = ResNetHashing("resnet18", 36).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, size, size))
    assert out.shape == (2, 36)
    sd = net.state_dict()
    assert sd["fc.0.weight"].shape == (36, 512)
    assert sd["fc.1.running_var"].shape == (36,)


def test_resnet18_pretrained_from_local_file(tmp_path):
    torch.manual_seed(0)
    imagenet = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18_imagenet.pth"
    torch.save(imagenet, path)
    net = ResNetHashing("resnet18", 48, pretrained=str(path))
    sd = net.state_dict()
    for name, tensor in imagenet.items():
        if not name.startswith("fc."):
            assert torch.equal(sd[name], tensor), name
    assert sd["fc.0.weight"].shape == (48, 512)


def test_resnet_pretrained_errors(tmp_path):
    with pytest.raises(PretrainedError, match="not found"):
        ResNetHashing("resnet18", 48, pretrained=tmp_path / "missing.pth")
    (tmp_path / "garbage.pth").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(PretrainedError, match="garbage.pth is not a readable state_dict"):
        ResNetHashing("resnet18", 48, pretrained=tmp_path / "garbage.pth")
    # weights of another depth are refused instead of half-loaded
    path = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match="not a torchvision resnet18"):
        ResNetHashing("resnet18", 48, pretrained=path)
    with pytest.raises(ValueError):
        ResNetHashing("resnet101", 48)


def test_network_registry():
    assert network_names("hashing") == ("dfhnet", "resnet18", "resnet34", "resnet50", "sphere20",
                                        "sphere64")
    assert isinstance(create_network("dfhnet", 12), DFHNet)
    sphere = create_network("sphere20", 24)
    assert isinstance(sphere, SphereNet_hashing) and len(sphere.layer3) == 3 + 4
    assert len(create_network("sphere64", 24).layer3) == 3 + 16
    r50 = create_network("resnet50", 16)
    assert isinstance(r50, ResNetHashing) and r50.fc[0].weight.shape == (16, 2048)
    assert create_network("resnet34", 16).fc[0].in_features == 512
    with pytest.raises(ValueError, match="unknown network 'vgg16'"):
        create_network("vgg16", 16)
    with pytest.raises(ValueError, match="only supported for the resnet archs"):
        create_network("dfhnet", 16, pretrained="x.pth")


@pytest.mark.parametrize("name", ["dfhnet", "sphere20", "sphere64", "resnet18", "resnet34",
                                  "resnet50"])
def test_checkpoints_are_recognised_with_their_code_length(name):
    """What a DCDH file holds is read from its keys: the network and the bits."""
    state = create_network(name, 24).state_dict()
    assert recognise_network(state, family="hashing") == name
    assert network_spec(name).code_length(state) == 24
