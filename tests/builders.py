"""Methods built the way the pipeline builds them (config + data facts), in
the short forms the tests use."""

from data import DataFacts
from methods import create_method


def dcdh(arch: str, bits: int, num_classes: int, img_size=None, **config):
    return create_method("dcdh", {"arch": arch, "bits": bits, **config},
                         DataFacts(num_classes, img_size))


def opqn(bits: int, num_books: int, num_words: int, feature_dim: int, size: int,
         num_classes: int, scale: float = 20.0, **config):
    return create_method("opqn", {"bits": bits, "num_books": num_books, "num_words": num_words,
                                  "feature_dim": feature_dim, "size": size, "scale": scale,
                                  **config}, DataFacts(num_classes))


def triplet(bits: int, **config):
    return create_method("triplet", {"bits": bits, "margin": config.pop("margin", 20.0),
                                     **config}, DataFacts(10))


def dchn_view(view: int, input_dim: int, bits: int, W=None, num_classes=None, **config):
    method = create_method("dchn", {"view": view, "bits": bits, **config},
                           DataFacts(num_classes or (W.shape[0] if W is not None else 24),
                                     input_dim=input_dim, multi_label=True))
    if W is not None:
        method.set_targets(W)
    return method


def trained_and_untrained_map(method: str, tmp_path, epochs: int, bs: int):
    """(mAP after ``train.py --method`` on small built-in faces, mAP of an
    untrained DFHNet in the method's checkpoint layout) for DPSH and DSDH."""
    import json

    import torch

    import evaluation
    import train as train_script
    from models import DFHNet
    from script_runner import run

    common = ["--dataset", "synthetic", "--synthetic-ids", 8, "--synthetic-train", 16,
              "--synthetic-test", 4, "--no-progress", "--len", 24]
    out = tmp_path / "m.json"
    assert run(train_script, "--method", method, *common, "--epochs", epochs, "--bs", bs,
               "--checkpoint-dir", tmp_path, "--log-dir", tmp_path, "--json", out) == 0
    torch.manual_seed(0)
    untrained = tmp_path / "u.tar"
    torch.save({method: {"net": DFHNet(24).state_dict()}}, untrained)
    assert run(evaluation, "--load", untrained, *common, "--json", tmp_path / "u.json") == 0
    return (json.loads(out.read_text())["mAP"],
            json.loads((tmp_path / "u.json").read_text())["mAP"])
