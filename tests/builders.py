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
