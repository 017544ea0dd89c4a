"""SphereFace-style residual network with a hashing head, for 3x112x112 faces.

The body follows "SphereFace: Deep Hypersphere Embedding for Face Recognition"
(Liu et al.): four stages, each a stride-2 3x3 conv (with bias) + BatchNorm +
PReLU followed by residual units of two 3x3 convs (no bias) with BatchNorm and
PReLU. DCDH puts a 512-d feature and a hash_bits-wide BatchNorm'd hashing
layer on top. The attribute names (`layer1`..`layer4`, `fc`, `bn`, `logits`,
`bn_last`) are the ones in DCDH checkpoints; keep them.
"""

import torch.nn as nn

from .pretrained import from_scratch
from .registry import register_network

# residual units per stage
STAGE_UNITS = {20: [1, 2, 4, 1], 64: [3, 8, 16, 3]}
STAGE_WIDTHS = [64, 128, 256, 512]


class ResidualUnit(nn.Module):
    """x + PReLU(BN(conv(PReLU(BN(conv(x)))))), channel count and size unchanged.

    Note the second PReLU sits *before* the addition, unlike a torchvision
    BasicBlock, which activates after it.
    """

    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.prelu1 = nn.PReLU(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.prelu2 = nn.PReLU(channels)

    def forward(self, x):
        y = self.prelu1(self.bn1(self.conv1(x)))
        y = self.prelu2(self.bn2(self.conv2(y)))
        return x + y


def make_stage(in_ch, out_ch, num_units, stride=2):
    """Downsampling conv (index 0, has bias), BN (1), PReLU (2), then residual
    units at indices 3, 4, ... -- the indices are checkpoint key names.
    OPQN's 32x32 nets use stride 1 in their first stage."""
    layers = [nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1), nn.BatchNorm2d(out_ch), nn.PReLU(out_ch)]
    layers += [ResidualUnit(out_ch) for _ in range(num_units)]
    return nn.Sequential(*layers)


class SphereNetHashing(nn.Module):
    """SphereFace-20/64 body + hashing head: [B, 3, 112, 112] -> [B, hashing_bits].

    Four stride-2 stages take 112 px to 7 px, so the flattened feature is
    512*7*7; other input sizes do not fit `fc`.
    """

    def __init__(self, num_layers=64, hashing_bits=48):
        super().__init__()
        if num_layers not in STAGE_UNITS:
            raise ValueError(f"SphereNet supports num_layers 20 or 64, got {num_layers}")
        units = STAGE_UNITS[num_layers]
        self.hashing_bits = hashing_bits
        widths = [3] + STAGE_WIDTHS
        self.layer1 = make_stage(widths[0], widths[1], units[0])
        self.layer2 = make_stage(widths[1], widths[2], units[1])
        self.layer3 = make_stage(widths[2], widths[3], units[2])
        self.layer4 = make_stage(widths[3], widths[4], units[3])
        self.fc = nn.Linear(512 * 7 * 7, 512)
        self.bn = nn.BatchNorm1d(512)  # no activation between the feature and the hashing layer
        self.logits = nn.Linear(512, hashing_bits)
        self.bn_last = nn.BatchNorm1d(hashing_bits)
        self.drop = nn.Dropout(p=0.5)  # on the flattened conv features, before fc; identity in eval()

    def forward(self, x):
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.drop(x.flatten(1))
        x = self.bn(self.fc(x))
        return self.bn_last(self.logits(x))


# the official class name, so code written against DCDH's model.py imports unchanged
SphereNet_hashing = SphereNetHashing


def _sphere_depth(state_dict: dict):
    """20 or 64 for a SphereNet hashing state_dict, else None."""
    if "bn_last.weight" not in state_dict or "layer1.0.weight" not in state_dict:
        return None
    units = 1 + max(int(k.split(".")[1]) for k in state_dict if k.startswith("layer3."))
    return 64 if units - 3 == STAGE_UNITS[64][2] else 20


def _register_sphere(depth):
    @register_network(f"sphere{depth}", family="hashing", input_sizes=(112,),
                      recognise=lambda sd: _sphere_depth(sd) == depth,
                      code_length_key="bn_last.weight")
    def build(hash_bits, pretrained=None):
        if not from_scratch(pretrained):
            raise ValueError(f"pretrained weights are only supported for the resnet archs, "
                             f"not sphere{depth}")
        return SphereNetHashing(num_layers=depth, hashing_bits=hash_bits)
    return build


sphere20 = _register_sphere(20)
sphere64 = _register_sphere(64)
