"""torchvision ResNet-18/34/50 with a hashing head in place of the classifier.

The head is Linear -> BatchNorm1d to hash_bits, the same as DFHNet's hashing
layer, so the output is real-valued and its sign is the binary code. The
state_dict is torchvision's (`conv1.weight`, `layer1.0...`) except for `fc`,
which becomes `fc.0.*` (Linear) and `fc.1.*` (BatchNorm1d). torchvision's
adaptive average pool makes any input size of at least 32x32 work.

``pretrained``: ``imagenet`` (torchvision's weights, from the torch hub
cache or downloaded once), a local torchvision state_dict file, or None
(models/pretrained.py).
"""

import torch.nn as nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from .pretrained import load_into, pretrained_state
from .registry import register_network

ARCHS = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
}


class ResNetHashing(ResNet):
    """A torchvision ResNet whose `fc` is a hashing head: images -> [B, hash_bits].

    pretrained: ``imagenet``, a path to a torchvision-layout state_dict, or
    None (models/pretrained.py); its `fc.*` entries are ignored because the
    head is new.
    """

    def __init__(self, arch, hash_bits, pretrained=None):
        if arch not in ARCHS:
            raise ValueError(f"unknown ResNet arch {arch!r}; choose one of {sorted(ARCHS)}")
        block, layers = ARCHS[arch]
        super().__init__(block, layers)
        self.arch = arch
        self.hash_bits = hash_bits
        feat_dim = self.fc.in_features  # 512 for resnet18/34, 2048 for resnet50
        self.fc = nn.Sequential(nn.Linear(feat_dim, hash_bits), nn.BatchNorm1d(hash_bits))
        if pretrained is not None:
            self.load_backbone(pretrained)

    def load_backbone(self, spec):
        """Copy every non-`fc` weight of the ImageNet start ``spec`` names."""
        state = pretrained_state(spec, self.arch)
        if state is not None:
            load_into(self, state, self.arch, skip=("fc.",))
        return self


def _resnet_variant(state_dict: dict):
    """resnet18/34/50 for a ResNetHashing state_dict, else None."""
    if "conv1.weight" not in state_dict or "fc.1.weight" not in state_dict:
        return None
    if "layer1.0.conv3.weight" in state_dict:
        return "resnet50"
    blocks = {int(k.split(".")[1]) for k in state_dict if k.startswith("layer3.")}
    return "resnet34" if len(blocks) == 6 else "resnet18"


def _register_resnet(arch):
    @register_network(arch, family="hashing", recognise=lambda sd: _resnet_variant(sd) == arch,
                      code_length_key="fc.1.weight")
    def build(hash_bits, pretrained=None):
        return ResNetHashing(arch, hash_bits, pretrained=pretrained)
    return build


resnet18_hashing, resnet34_hashing, resnet50_hashing = (_register_resnet(a) for a in ARCHS)
