"""ImageNet starts as the published code takes them (torchvision's
pretrained=True): read from the torch hub cache, downloaded there when
online (never in tests: conftest.py makes every download fail as offline),
a local file with --pretrained PATH, or --pretrained none."""

import pytest
import torch

import triplet_main
from conftest import imagenet_file
from data import DataFacts
from methods import create_method
from models.pretrained import cache_path
from script_runner import run

TINY = ["--dataset_name", "synthetic", "--synthetic-ids", 4, "--synthetic-train", 4,
        "--synthetic-test", 1, "--img-size", 32, "--binary_bits", 16, "--batchSize", 8,
        "--num_epochs", 1, "--no-progress"]


def test_the_published_triplet_command_starts_from_the_cached_imagenet_weights(tmp_path):
    path = cache_path("resnet18")
    assert path.name == "resnet18-f37072fd.pth" and path.is_file()  # torchvision's file name
    cached = torch.load(path, weights_only=True)
    method = create_method("triplet", {"bits": 64}, DataFacts(200, 224))  # the published defaults
    assert method.config.pretrained == "imagenet"
    net = method.net.feature_extractor
    assert torch.equal(net[0].weight, cached["conv1.weight"])  # the first layer is the file's
    assert torch.equal(net[7][1].bn2.running_var, cached["layer4.1.bn2.running_var"])
    local = tmp_path / "r18.pth"
    _, state = imagenet_file("resnet18", seed=7)  # another start, given as a local file
    torch.save(state, local)
    method = create_method("triplet", {"bits": 64, "pretrained": str(local)}, DataFacts(200, 224))
    assert torch.equal(method.net.feature_extractor[0].weight, state["conv1.weight"])
    imagenet_file("resnet18")  # the session's file back in place


def test_offline_without_the_file_is_one_line_and_none_trains(tmp_path, monkeypatch, capsys):
    """The ImageNet start asked for (the default on CUB and Dogs) with an empty
    hub cache and no network: one line saying where the file goes, how to get
    it and how to start from scratch; nothing written."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    out = ["--outf", tmp_path / "runs", "--log-dir", tmp_path / "log"]
    assert run(triplet_main, *TINY, *out, "--pretrained", "imagenet") == 2
    expected = cache_path("resnet18")
    assert capsys.readouterr().err == (
        f"error: --pretrained: the ImageNet weights of resnet18 are not in the torch hub cache "
        f"({expected}) and cannot be downloaded (<urlopen error network unreachable (the tests "
        f"run offline)>); download https://download.pytorch.org/models/resnet18-f37072fd.pth to "
        f"that path on a machine that is online, or pass --pretrained PATH (a local torchvision "
        f"resnet18 state_dict), or train from scratch with --pretrained none\n")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.pth"))
    assert run(triplet_main, *TINY, *out) == 0  # the built-in data: from scratch by default
    assert "the ResNet starts from scratch (--pretrained none" in capsys.readouterr().out


def test_dchn_raw_images_fine_tune_the_imagenet_vgg_at_a_tenth_of_the_lr():
    """mirflickr25k_raw's image view: VGG-19-BN from the cached ImageNet file,
    trained (it receives gradients) with 0.1 x the view's lr, as published."""
    from methods.recipes.dchn import PUBLISHED

    path, state = imagenet_file("vgg19_bn")
    try:
        method = create_method("dchn", {"bits": 16, "view": 0},
                               DataFacts(24, img_size=224, multi_label=True))
        vgg = method.net.vgg19_bn
        assert torch.equal(vgg.features[0].weight, state["features.0.weight"])
        assert torch.equal(vgg.classifier[3].weight, state["classifier.3.weight"])
        labels = torch.zeros(2, 24)
        labels[0, 1] = labels[1, 2] = 1
        method(torch.randn(2, 3, 224, 224), labels).backward()
        assert vgg.features[0].weight.grad.abs().sum() > 0
        optimizer, _ = method.configure_optimizers(PUBLISHED.for_view(0))
        lrs = {id(g["params"][0]): g["lr"] for g in optimizer.param_groups}
        assert lrs[id(vgg.features[0].weight)] == pytest.approx(1e-5)
        assert lrs[id(method.net.hash_layer[0].weight)] == 1e-4
    finally:
        path.unlink()
