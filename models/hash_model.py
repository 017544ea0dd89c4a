"""HashModel: the network of triplet-ranking deep hashing (Lai et al., CVPR 2015,
in the published ResNet-18 re-implementation zhongzhh8/Image-Retrieval).

Read top to bottom:

1. ``feature_extractor``: a torchvision ResNet without its classifier,
   ``nn.Sequential(*list(resnet.children())[:-1])`` as published, so the
   state_dict keys are ``feature_extractor.0.weight`` (conv1),
   ``feature_extractor.1.*`` (bn1), ``feature_extractor.4`` - ``.7``
   (layer1 - layer4); the output [B, F, 1, 1] is flattened to [B, F]
   (F = 512 for ResNet-18/34, 2048 for ResNet-50).
2. ``hashcoder``: ``Linear(F, L) + Tanh`` (the published head, keys
   ``hashcoder.0.*``), or the paper's divide-and-encode module (``--head
   dae``): the feature is cut into L slices, each slice is encoded to one
   value by its own linear unit, then Tanh.

Codes are the sign of the embedding.  Nothing is downloaded: ImageNet
weights come from a local torchvision state_dict file (``pretrained``).
"""

from __future__ import annotations


import torch
import torch.nn as nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from .pretrained import load_into, pretrained_state
from .registry import register_network

BACKBONES = {"resnet18": (BasicBlock, [2, 2, 2, 2]), "resnet34": (BasicBlock, [3, 4, 6, 3]),
             "resnet50": (Bottleneck, [3, 4, 6, 3])}
# torchvision's top-level names -> positions in feature_extractor
_CHILD_INDEX = {"conv1": 0, "bn1": 1, "layer1": 4, "layer2": 5, "layer3": 6, "layer4": 7}


class DivideAndEncode(nn.Module):
    """The paper's divide-and-encode module: slice i of the feature (F / L
    values) is mapped to bit i by its own linear unit, then Tanh."""

    def __init__(self, in_features: int, hash_length: int):
        super().__init__()
        if in_features % hash_length:
            raise ValueError(f"the divide-and-encode head needs the feature width {in_features} "
                             f"to be divisible by the code length {hash_length}")
        self.slice = in_features // hash_length
        self.weight = nn.Parameter(torch.empty(hash_length, self.slice))
        self.bias = nn.Parameter(torch.zeros(hash_length))
        nn.init.uniform_(self.weight, -self.slice ** -0.5, self.slice ** -0.5)

    def forward(self, features):
        sliced = features.view(features.shape[0], -1, self.slice)  # [B, L, F/L]
        return torch.tanh((sliced * self.weight).sum(-1) + self.bias)


class HashModel(nn.Module):
    """``HashModel(hash_length)``: images [B, 3, H, W] (H, W >= 32) -> embeddings
    in (-1, 1)^L.  The published constructor takes only ``hash_length``."""

    def __init__(self, hash_length, arch: str = "resnet18", head: str = "fc", pretrained=None):
        super().__init__()
        if arch not in BACKBONES:
            raise ValueError(f"unknown backbone {arch!r}; choose one of {', '.join(BACKBONES)}")
        block, layers = BACKBONES[arch]
        resnet = ResNet(block, layers)
        self.arch, self.head, self.hash_length = arch, head, int(hash_length)
        self.feature_extractor = nn.Sequential(*list(resnet.children())[:-1])
        width = resnet.fc.in_features
        if head == "fc":
            self.hashcoder = nn.Sequential(nn.Linear(width, self.hash_length), nn.Tanh())
        elif head == "dae":
            self.hashcoder = nn.Sequential(DivideAndEncode(width, self.hash_length))
        else:
            raise ValueError(f"unknown head {head!r}; choose fc or dae")
        if pretrained is not None:
            self.load_backbone(pretrained)

    def features(self, x):
        return self.feature_extractor(x).flatten(1)

    def forward(self, x):
        return self.hashcoder(self.features(x))

    # the published methods
    def save(self, path):
        torch.save(self.state_dict(), path)

    def load(self, path):
        # map_location: files saved from a GPU load on any machine
        self.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))

    def load_backbone(self, spec):
        """Copy the ImageNet start ``spec`` names (``imagenet``, a local
        torchvision ResNet state_dict file; models/pretrained.py) into
        ``feature_extractor``; its ``fc.*`` entries are ignored."""
        state = pretrained_state(spec, self.arch)
        if state is None:
            return self
        mapped = {}
        for key, value in state.items():
            top, _, rest = key.partition(".")
            if top in _CHILD_INDEX:
                mapped[f"{_CHILD_INDEX[top]}.{rest}"] = value
        load_into(self.feature_extractor, mapped, self.arch, skip=())
        return self


def hash_model_arch(state_dict: dict):
    """resnet18/34/50 for a HashModel state_dict, else None."""
    if "feature_extractor.0.weight" not in state_dict:
        return None
    if "feature_extractor.4.0.conv3.weight" in state_dict:
        return "resnet50"
    blocks = {k.split(".")[2] for k in state_dict if k.startswith("feature_extractor.6.")}
    return "resnet34" if len(blocks) == 6 else "resnet18"


def _register(arch):
    @register_network(f"hash_{arch}", family="triplet",
                      recognise=lambda sd: hash_model_arch(sd) == arch)
    def build(hash_length, head="fc", pretrained=None):
        return HashModel(hash_length, arch=arch, head=head, pretrained=pretrained)
    return build


hash_resnet18, hash_resnet34, hash_resnet50 = (_register(a) for a in BACKBONES)
