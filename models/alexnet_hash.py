"""DPSH's network for 224x224 images (jiangqy/DPSH-pytorch ``CNN_model.py``):
torchvision's AlexNet with its last classifier layer replaced by
``Linear(4096, bits)``; the output is real-valued, its sign the code.

The published ``cnn_model`` builds the same layers and state_dict keys
(``features.*``, ``classifier.{1,4,6}.*``, 16 entries, no buffers) and,
like this module, runs ``features`` straight into the classifier without
torchvision's adaptive average pool: only a 6x6 feature map (224-pixel input)
fits the 9216-wide first Linear.  DSDH uses it as the stand-in for the
MatConvNet VGG-F it was published with (VGG-F is not in torchvision).

``pretrained``: ``imagenet`` (torchvision's ``IMAGENET1K_V1`` weights, what
the published ``pretrained=True`` loaded), a local torchvision AlexNet
state_dict, or None / ``none`` (models/pretrained.py); the replaced layer
``classifier.6`` always starts from PyTorch's default Linear init.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from .pretrained import load_into, pretrained_state
from .registry import register_network

FEATURE_SIDE = 6  # AlexNet's last feature map at 224 px: 256 x 6 x 6 = 9216 values
INPUT_SIDE = 224


class AlexNetHash(nn.Module):
    """[B, 3, 224, 224] images -> [B, hash_bits] real-valued outputs."""

    def __init__(self, hash_bits: int, pretrained: Optional[str] = None):
        super().__init__()
        import torchvision.models as tvm

        base = tvm.alexnet(weights=None)
        self.features = base.features
        self.classifier = base.classifier  # Dropout, Linear, ReLU, Dropout, Linear, ReLU, Linear
        self.classifier[6] = nn.Linear(4096, hash_bits)
        self.hash_bits = hash_bits
        state = pretrained_state(pretrained, "alexnet")
        if state is not None:
            load_into(self, state, "alexnet", skip=("classifier.6.",))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # no avgpool, as published: a face of another size fails here, not silently
        return self.classifier(self.features(x).flatten(1))


def _is_alexnet_hash(state_dict: dict) -> bool:
    first = state_dict.get("classifier.1.weight")
    return ("features.0.weight" in state_dict and "classifier.6.weight" in state_dict
            and getattr(first, "shape", None) == (4096, 256 * FEATURE_SIDE * FEATURE_SIDE)
            and "features.1.weight" not in state_dict)  # not a VGG with BatchNorm


@register_network("alexnet_hash", family="alexnet", input_sizes=(INPUT_SIDE,),
                  recognise=_is_alexnet_hash, code_length_key="classifier.6.weight")
def alexnet_hash(hash_bits: int, pretrained: Optional[str] = None) -> AlexNetHash:
    return AlexNetHash(hash_bits, pretrained=pretrained)
