"""DFHNet: the attention-based hashing backbone of DCDH for 3x32x32 face crops.

Paper: "Deep Center-Based Dual-Constrained Hashing for Discriminative Face
Image Retrieval" (Zhang et al.). The network has four parts, run in this order:

1. attention branch: a small encoder-decoder (32 -> 16 -> 8 -> 4 -> 32 px)
   with two skip connections that ends in a sigmoid, one mask per channel;
2. trunk branch: four stride-1 convs that keep the 32x32 resolution and end
   with 3 channels, so the trunk output has the shape of the mask;
3. fusion: trunk * (1 + mask), then a conv stack whose last two feature maps
   (3x3x128 and 2x2x256) are flattened and concatenated (2176 values);
4. a 1024-d face feature (Linear-BN-ReLU) and the hashing layer (Linear-BN).

The attribute names below are the ones the released checkpoints use
(`spatial_features_1`, `upscales_1`, `bn1`, ...), so `state_dict()` matches
their keys, order and shapes exactly. Do not rename or reorder them.
"""

import torch
import torch.nn as nn

from .pretrained import from_scratch
from .registry import register_network

FACE_FEATURES = 1024  # width of the face feature in front of the hashing layer


def conv_bn_relu(in_ch, out_ch, kernel_size, stride=1, padding=0):
    """Conv2d (with bias) -> BatchNorm2d -> ReLU, as one Sequential (keys .0/.1)."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


def upsample_relu(in_ch, out_ch):
    """ConvTranspose2d that doubles the spatial size, then ReLU (no norm here:
    the decoder normalises *after* adding the skip connection)."""
    return nn.Sequential(
        nn.ConvTranspose2d(in_ch, out_ch, kernel_size=3, stride=2, padding=1, output_padding=1),
        nn.ReLU(inplace=True),
    )


class DFHNet(nn.Module):
    """DCDH backbone: [B, 3, 32, 32] images -> [B, hash_bits] real-valued codes.

    The output is the BatchNorm1d'd hash layer; binary codes are its sign
    (DCDH evaluation uses +1 where output > 0, else -1).
    """

    def __init__(self, hash_bits):
        super().__init__()

        # --- attention branch, encoder: three stride-2 2x2 convs, 32 -> 16 -> 8 -> 4
        self.spatial_features_1 = conv_bn_relu(3, 32, 2, stride=2)
        self.spatial_features_2 = conv_bn_relu(32, 64, 2, stride=2)
        self.spatial_features_3 = conv_bn_relu(64, 128, 2, stride=2)
        self.fc = conv_bn_relu(128, 128, 1)  # a 1x1 conv at the 4x4 bottleneck, despite its name

        # --- attention branch, decoder: 4 -> 8 -> 16 -> 32, skips at 8 and 16
        self.upscales_1 = upsample_relu(128, 64)
        self.bn1 = nn.BatchNorm2d(64)  # applied to (upsampled + encoder 8x8 map)
        self.upscales_2 = upsample_relu(64, 32)
        self.bn2 = nn.BatchNorm2d(32)  # applied to (upsampled + encoder 16x16 map)
        self.upscales_3 = upsample_relu(32, 16)
        # bn3 exists in the official network and in its checkpoints but the
        # official forward never calls it; we keep it for state_dict
        # compatibility and, like the original, do not use it.
        self.bn3 = nn.BatchNorm2d(16)
        # never receives a gradient; frozen so DistributedDataParallel does not
        # wait for one (the optimizer skipped it anyway: its grad is None)
        self.bn3.requires_grad_(False)
        self.upscales_4 = nn.Sequential(nn.Conv2d(16, 3, 1))  # 1x1 conv to 3 mask channels

        # --- trunk branch: padded 3x3 convs keep 32x32; the last one maps to 3 channels
        self.attention_conv1 = conv_bn_relu(3, 32, 3, padding=1)
        self.attention_conv2 = conv_bn_relu(32, 64, 3, padding=1)
        self.attention_conv3 = conv_bn_relu(64, 128, 3, padding=1)
        self.attention_conv4 = conv_bn_relu(128, 3, 1)

        # --- conv stack on the fused 32x32x3 map: 32 -3-> 30 -pool-> 15 -2-> 14
        #     -pool-> 7 -2-> 6 -pool-> 3, then conv4: 3 -2-> 2.
        #     Indices 0/1, 4/5, 8/9 carry weights (the checkpoint keys).
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3), nn.BatchNorm2d(32), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
            nn.Conv2d(32, 64, 2), nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
            nn.Conv2d(64, 128, 2), nn.BatchNorm2d(128), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
        )
        self.conv4 = conv_bn_relu(128, 256, 2)

        # --- heads: 3*3*128 + 2*2*256 = 2176 fused values -> 1024 -> hash_bits
        self.face_features_layer = nn.Sequential(
            nn.Linear(3 * 3 * 128 + 2 * 2 * 256, FACE_FEATURES),
            nn.BatchNorm1d(FACE_FEATURES),
            nn.ReLU(inplace=True),
        )
        self.hash_layer = nn.Sequential(
            nn.Linear(FACE_FEATURES, hash_bits),
            nn.BatchNorm1d(hash_bits),  # no activation: the sign is taken outside
        )

        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module):
        # The official training starts from Xavier-normal weights and zero
        # biases for every conv, transposed conv and linear layer; batch norms
        # keep PyTorch's defaults.
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.xavier_normal_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, x):
        # attention branch: encoder, keeping the 16x16 and 8x8 maps for the skips
        skip16 = self.spatial_features_1(x)
        skip8 = self.spatial_features_2(skip16)
        mask = self.fc(self.spatial_features_3(skip8))

        # decoder: upsample, add the skip, then batch-norm the sum
        mask = self.bn1(self.upscales_1(mask) + skip8)
        mask = self.bn2(self.upscales_2(mask) + skip16)
        mask = self.upscales_4(self.upscales_3(mask))  # (bn3 skipped, as in the original)
        mask = torch.sigmoid(mask)

        # trunk branch
        trunk = self.attention_conv1(x)
        trunk = self.attention_conv2(trunk)
        trunk = self.attention_conv3(trunk)
        trunk = self.attention_conv4(trunk)

        # residual attention: the mask re-weights the trunk, which is also kept as is
        fused = trunk + mask * trunk

        # two feature levels, flattened (channel-major, as .view gives) and concatenated
        f3 = self.features(fused)  # [B, 128, 3, 3]
        f4 = self.conv4(f3)  # [B, 256, 2, 2]
        feats = torch.cat([f3.flatten(1), f4.flatten(1)], dim=1)

        face = self.face_features_layer(feats)
        return self.hash_layer(face)


@register_network("dfhnet", family="hashing", input_sizes=(32,),
                  recognise=lambda sd: "face_features_layer.0.weight" in sd,
                  code_length_key="hash_layer.1.weight")
def dfhnet(hash_bits, pretrained=None):
    if not from_scratch(pretrained):
        raise ValueError("pretrained weights are only supported for the resnet archs, not dfhnet")
    return DFHNet(hash_bits)
