"""DDAH: the network of "Discriminative Deep Attention-Aware Hashing for Face
Image Retrieval", published as ``DDAH(hash_bits, CLASS_NUM)`` in
deephashface/DDAH ``model.py`` (PyTorch).  As published, ``__init__`` calls
``super(DAH, self)`` and raises NameError; this is that class with the call
fixed and nothing else changed: the same module names, registration order
(so a seeded initialisation draws the same numbers), layers and outputs.

* A spatial-attention encoder-decoder (``spatial_features_1-3``, ``fc``,
  ``upscales_1-4``, with ``bn1`` / ``bn2`` on the skip sums; ``bn3`` is
  defined but never used) gives one 32x32 map per image, min-max normalised
  per image (no epsilon: a constant map gives NaN) into the mask.
* Pass "a" runs the shared trunk on ``x * mask``, pass "b" on ``x`` itself:
  ``features`` (three conv-BN-ReLU-pool blocks, 128x3x3) and ``conv4``
  (256x2x2); ``global_avgpooling_3`` / ``_4`` are MLPs (not poolings) on the
  flattened maps giving per-channel weights, min-max normalised per image;
  the re-weighted maps, flattened and concatenated (2176), go through
  ``face_features_layer`` (1024) and ``hash_layer`` (Linear + BatchNorm1d).
* ``classifier``: Tanh -> Linear -> LogSoftmax on each pass's hash layer.

``forward`` returns ``(hash_a, cls_a, hash_b, cls_b)``: the pre-tanh hash
layers and the log-probabilities of the two passes.  The published codes
are ``sign(hash_a)``.  In train mode every BatchNorm of the shared trunk
runs twice per forward (pass a, then pass b), as published.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.init as init

from .pretrained import from_scratch
from .registry import register_network

FACE_FEATURES = 1024


def _min_max(values: torch.Tensor) -> torch.Tensor:
    """(v - min) / (max - min) per row of [B, n] (no epsilon, as published)."""
    low = values.min(dim=1, keepdim=True).values
    high = values.max(dim=1, keepdim=True).values
    return (values - low) / (high - low)


def _up(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(in_channels, out_channels, kernel_size=3, stride=2,
                                            padding=1, dilation=1, output_padding=1),
                         nn.ReLU(True))


def _down(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, stride),
                         nn.BatchNorm2d(out_channels), nn.ReLU(True))


def _mlp(in_features: int, out_features: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_features, 512), nn.ReLU(True), nn.Linear(512, out_features))


class DDAH(nn.Module):
    """[B, 3, 32, 32] -> (hash_a [B, bits], cls_a [B, C], hash_b, cls_b)."""

    #: the attention branch: optimizer_a of the published train.py (bn1-bn3 excluded)
    ATTENTION = ("spatial_features_1", "spatial_features_2", "spatial_features_3", "fc",
                 "upscales_1", "upscales_2", "upscales_3", "upscales_4")
    #: the rest: optimizer_b of the published train.py
    TRUNK = ("features", "conv4", "global_avgpooling_3", "global_avgpooling_4",
             "face_features_layer", "hash_layer", "classifier")

    def __init__(self, hash_bits: int, num_classes: int):
        super().__init__()
        self.spatial_features_1 = _down(3, 32, 2, 2)
        self.spatial_features_2 = _down(32, 64, 2, 2)
        self.spatial_features_3 = _down(64, 128, 2, 2)
        self.fc = _down(128, 128, 1)
        self.upscales_1 = _up(128, 64)
        self.bn1 = nn.BatchNorm2d(64)
        self.upscales_2 = _up(64, 32)
        self.bn2 = nn.BatchNorm2d(32)
        self.upscales_3 = _up(32, 16)
        self.bn3 = nn.BatchNorm2d(16)  # defined, never used in forward (as published)
        self.upscales_4 = nn.Sequential(nn.Conv2d(16, 1, 1))
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3), nn.BatchNorm2d(32), nn.ReLU(True), nn.MaxPool2d(2, 2),
            nn.Conv2d(32, 64, 2), nn.BatchNorm2d(64), nn.ReLU(True), nn.MaxPool2d(2, 2),
            nn.Conv2d(64, 128, 2), nn.BatchNorm2d(128), nn.ReLU(True), nn.MaxPool2d(2, 2))
        self.conv4 = _down(128, 256, 2)
        self.global_avgpooling_3 = _mlp(128 * 3 * 3, 128)
        self.global_avgpooling_4 = _mlp(256 * 2 * 2, 256)
        self.face_features_layer = nn.Sequential(nn.Linear(2176, FACE_FEATURES),
                                                 nn.BatchNorm1d(FACE_FEATURES), nn.ReLU(True))
        self.hash_layer = nn.Sequential(nn.Linear(FACE_FEATURES, hash_bits),
                                        nn.BatchNorm1d(hash_bits))
        self.classifier = nn.Sequential(nn.Tanh(), nn.Linear(hash_bits, num_classes),
                                        nn.LogSoftmax(dim=1))
        self.apply(self.weights_init)

    @staticmethod
    def weights_init(module: nn.Module) -> None:
        """The published init: xavier_normal_ weights and zero biases for every
        Conv2d, ConvTranspose2d and Linear; BatchNorm keeps torch's defaults."""
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            init.xavier_normal_(module.weight.data)
            init.constant_(module.bias.data, 0.0)

    def attention_raw(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder output [B, 1, 32, 32] before its min-max normalisation."""
        skip16 = self.spatial_features_1(x)
        skip8 = self.spatial_features_2(skip16)
        mask = self.fc(self.spatial_features_3(skip8))
        mask = self.bn1(self.upscales_1(mask) + skip8)
        mask = self.bn2(self.upscales_2(mask) + skip16)
        return self.upscales_4(self.upscales_3(mask))

    def attention_mask(self, x: torch.Tensor) -> torch.Tensor:
        raw = self.attention_raw(x)
        return _min_max(raw.reshape(x.shape[0], -1)).reshape(raw.shape)

    def hash_pass(self, x: torch.Tensor) -> torch.Tensor:
        """The shared trunk with its channel attention: the hash layer output."""
        f3 = self.features(x)
        f4 = self.conv4(f3)
        c3 = _min_max(self.global_avgpooling_3(f3.flatten(1)))
        c4 = _min_max(self.global_avgpooling_4(f4.flatten(1)))
        merged = torch.cat([(f3 * c3[:, :, None, None]).flatten(1),
                            (f4 * c4[:, :, None, None]).flatten(1)], dim=1)
        return self.hash_layer(self.face_features_layer(merged))

    def hash_a(self, x: torch.Tensor) -> torch.Tensor:
        """The attention pass alone (what the published codes are the sign of)."""
        return self.hash_pass(x * self.attention_mask(x))

    def forward(self, x):
        hash_a = self.hash_a(x)
        cls_a = self.classifier(hash_a)
        hash_b = self.hash_pass(x)
        cls_b = self.classifier(hash_b)
        return hash_a, cls_a, hash_b, cls_b


def is_ddah_state(state_dict) -> bool:
    """A state_dict of this network (DCDH's DFHNet shares the attention names
    but has no channel-attention MLPs)."""
    return isinstance(state_dict, dict) and "global_avgpooling_3.0.weight" in state_dict and \
        "spatial_features_1.0.weight" in state_dict and "classifier.1.weight" in state_dict


@register_network("ddah", family="ddah", input_sizes=(32,), recognise=is_ddah_state,
                  code_length_key="hash_layer.1.weight")
def ddah(hash_bits, num_classes, pretrained=None):
    if not from_scratch(pretrained):
        raise ValueError("DDAH is trained from scratch (published); no pretrained weights")
    return DDAH(hash_bits, num_classes)
