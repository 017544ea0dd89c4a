"""resnet20_pq: OPQN's feature network (Zhang, Zhe & Yan, Pattern Recognition 2023).

The SphereFace-style residual body of models/sphere.py with OPQN's feature
head (BN on the flattened maps, dropout, fc, BN).  It maps a face to a D-dim
feature that the OPQN head (models/losses/opqn.py) cuts into M sub-vectors
of length d = D/M.
"""

import torch.nn as nn

from .registry import register_network
from .sphere import STAGE_UNITS, STAGE_WIDTHS, make_stage

# stage widths when channel_max=128 (the official "small" variant)
NARROW_WIDTHS = [16, 32, 64, 128]


class ResNet20PQ(nn.Module):
    """SphereFace-20/64 body + OPQN feature head: [B, 3, H, W] -> [B, feature_dim].

    `size` is the side of the last feature map: 7 for 3x112x112 inputs (all
    four stages downsample), anything else (4 for 3x32x32) makes the first
    stage keep the resolution, so H = W = 8 * size. channel_max=128 selects
    the narrow widths 16..128 (always stride 1 first). The attribute names
    (`layer1`..`layer4`, `bn`, `fc`, `last_bn`) and their registration order
    are the checkpoint's key names and order; keep them.
    """

    def __init__(self, num_layers=20, feature_dim=512, channel_max=512, size=7):
        super().__init__()
        if num_layers not in STAGE_UNITS:
            raise ValueError(f"resnet20_pq supports num_layers 20 or 64, got {num_layers}")
        if channel_max == 512:
            widths = STAGE_WIDTHS
            first_stride = 2 if size == 7 else 1
        elif channel_max == 128:
            widths, first_stride = NARROW_WIDTHS, 1
        else:
            raise ValueError(f"resnet20_pq supports channel_max 512 or 128, got {channel_max}")
        units = STAGE_UNITS[num_layers]
        self.feature_dim = feature_dim
        self.size = size
        self.layer1 = make_stage(3, widths[0], units[0], stride=first_stride)
        self.layer2 = make_stage(widths[0], widths[1], units[1])
        self.layer3 = make_stage(widths[1], widths[2], units[2])
        self.layer4 = make_stage(widths[2], widths[3], units[3])
        flat = channel_max * size * size
        self.bn = nn.BatchNorm1d(flat)  # normalises the flattened maps, before dropout and fc
        self.fc = nn.Linear(flat, feature_dim)
        self.last_bn = nn.BatchNorm1d(feature_dim)
        self.drop = nn.Dropout(p=0.5)

    def forward(self, x):
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.drop(self.bn(x.flatten(1)))
        return self.last_bn(self.fc(x))


@register_network("resnet20_pq", family="pq", input_sizes=(32, 112))
def resnet20_pq(num_layers=20, feature_dim=512, channel_max=512, size=7):
    """The official constructor name and defaults (size 7: 112x112 faces)."""
    return ResNet20PQ(num_layers=num_layers, feature_dim=feature_dim, channel_max=channel_max, size=size)
