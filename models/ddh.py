"""DDH: the network of "Discriminative Deep Hashing for Scalable Face Image
Retrieval" (Lin, Li and Tang, IJCAI 2017), published as ``build_DDN_net`` in
xjcvip007/DDH ``DDH.py:121-165`` (Keras 1.2.2 on Theano, channels first).

Layers, for a 3x32x32 input (the published names in brackets):

* ``conv1`` 3x3 (C1) -> ``bn1`` -> ReLU -> max-pool 2 -> ``conv2`` 2x2 (C2) ->
  ``bn2`` -> ReLU -> max-pool 2 -> ``conv3`` 2x2 (C3) -> ``bn3`` -> ReLU ->
  max-pool 2: M3, 60x3x3;
* ``lc4``: a locally connected 2x2 layer (C4, unshared weights per output
  position) on M3 -> ``bn4`` -> ReLU: 80x2x2;
* the flattened M3 (540) and A4 (320) concatenated (860) -> ``fc5``
  (face_feature_layer, bits x split_num) -> ``bn5`` -> ReLU: A5;
* divide and encode (``dae``): code i is a Dense(1) of the i-th slice of
  ``split_num`` values of A5 -> ``bn6`` -> tanh: A6, the code layer;
* ``classifier`` (softmax_layer) on A6.

The state_dict is the layout of the fixtures (keys, order and shapes), with
the Keras weights mapped as follows:

* convolutions: Theano's ``conv2d`` is a true convolution (it flips the
  kernel); ``conv*.weight`` here is the cross-correlation kernel of
  ``nn.Conv2d``, i.e. a Keras kernel ``W`` is stored as ``W[:, :, ::-1, ::-1]``;
* ``lc4.weight`` [4, 240, 80] and ``lc4.bias`` [2, 2, 80] are stored in the
  Keras layout: output position p = 2i + j takes its 2x2x60 patch flattened
  channel-major (c*4 + dr*2 + dc), and the bias is added through Keras'
  ``K.reshape(b, (1, 80, 2, 2))`` (a reshape, not a transpose), so the bias of
  (filter f, row i, column j) is ``b.flatten()[4f + 2i + j]``;
* ``fc5.weight``, ``classifier.weight``: the Keras Dense ``W`` transposed;
  ``dae.weight`` row i is the Keras ``W`` [4, 1] of the i-th Dense(1);
* BatchNorm: epsilon 1e-3, Keras momentum 0.99 (torch momentum 0.01);
  ``running_var`` holds Keras' ``running_std`` (which holds a variance).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .pretrained import from_scratch
from .registry import register_network

BN_EPS = 1e-3  # Keras 1.2.2 BatchNormalization(epsilon=1e-3)
BN_MOMENTUM = 0.01  # Keras momentum 0.99: running = 0.99 * running + 0.01 * batch
LC_FILTERS, LC_SIDE, LC_KERNEL = 80, 2, 2  # LocallyConnected2D(80, 2, 2) on the 60x3x3 map
M3_CHANNELS = 60
MERGED = M3_CHANNELS * 3 * 3 + LC_FILTERS * LC_SIDE * LC_SIDE  # 540 + 320 = 860


class KerasBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm as Keras 1.2.2 trains it (Theano, not the cuDNN path): the
    batch is normalised by its biased variance, and the running variance is
    updated with that same biased variance (torch's own layer stores the
    unbiased one).  Evaluation is torch's: (x - mean) / sqrt(var + eps)."""

    def __init__(self, num_features: int):
        super().__init__(num_features, eps=BN_EPS, momentum=BN_MOMENTUM)

    def _check_input_dim(self, x):
        if x.dim() not in (2, 4):
            raise ValueError(f"expected a 2-D or 4-D input, got {x.dim()}-D")

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        dims = [0] + list(range(2, x.dim()))
        with torch.no_grad():
            values = x.float()
            var, mean = torch.var_mean(values, dim=dims, unbiased=False)
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var, self.momentum)
            self.num_batches_tracked.add_(1)
        # batch statistics only: no running statistics passed, so none updated here
        return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)


class LocallyConnected2x2(nn.Module):
    """Keras' LocallyConnected2D(80, 2, 2) on a 60x3x3 map, in the Keras
    weight layout: ``weight`` [positions, 240, filters], ``bias`` [2, 2, filters]."""

    def __init__(self, in_channels: int = M3_CHANNELS, filters: int = LC_FILTERS):
        super().__init__()
        positions = LC_SIDE * LC_SIDE
        self.weight = nn.Parameter(torch.empty(positions, in_channels * LC_KERNEL ** 2, filters))
        self.bias = nn.Parameter(torch.zeros(LC_SIDE, LC_SIDE, filters))

    def forward(self, x):
        # [positions, B, 60*4]: each 2x2 patch flattened channel-major, positions row-major
        patches = torch.stack([x[:, :, i:i + LC_KERNEL, j:j + LC_KERNEL].flatten(1)
                               for i in range(LC_SIDE) for j in range(LC_SIDE)])
        out = torch.bmm(patches, self.weight)  # [positions, B, filters]
        out = out.permute(1, 2, 0).reshape(x.shape[0], -1, LC_SIDE, LC_SIDE)
        # Keras adds K.reshape(b, (1, filters, 2, 2)): a reshape of the (2, 2, filters) array
        return out + self.bias.reshape(1, -1, LC_SIDE, LC_SIDE)


class DivideAndEncode(nn.Module):
    """``bits`` Dense(1) layers, the i-th on A5[:, split*i : split*(i+1)]:
    ``weight`` [bits, split] (row i = the i-th Dense's W), ``bias`` [bits]."""

    def __init__(self, bits: int, split_num: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(bits, split_num))
        self.bias = nn.Parameter(torch.zeros(bits))

    def forward(self, x):
        slices = x.reshape(x.shape[0], *self.weight.shape)
        return (slices * self.weight).sum(-1) + self.bias


class DDH(nn.Module):
    """[B, 3, 32, 32] -> (A6 [B, bits] in (-1, 1), logits [B, num_classes]).

    A6 is the code layer (the published evaluation takes its sign); the
    softmax of the logits is the published ``softmax_layer`` output."""

    def __init__(self, hash_bits: int, num_classes: int, split_num: int = 4):
        super().__init__()
        self.hash_bits, self.split_num = hash_bits, split_num
        self.conv1 = nn.Conv2d(3, 20, 3)
        self.bn1 = KerasBatchNorm(20)
        self.conv2 = nn.Conv2d(20, 40, 2)
        self.bn2 = KerasBatchNorm(40)
        self.conv3 = nn.Conv2d(40, 60, 2)
        self.bn3 = KerasBatchNorm(60)
        self.lc4 = LocallyConnected2x2()
        self.bn4 = KerasBatchNorm(LC_FILTERS)
        self.fc5 = nn.Linear(MERGED, hash_bits * split_num)
        self.bn5 = KerasBatchNorm(hash_bits * split_num)
        self.dae = DivideAndEncode(hash_bits, split_num)
        self.bn6 = KerasBatchNorm(hash_bits)
        self.classifier = nn.Linear(hash_bits, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Keras 1.2.2 initialisation: he_uniform kernels (conv fan_in =
        in * k * k; the 3-D locally connected kernel falls in Keras' "no
        assumption" branch, fan_in = sqrt(prod(shape))), glorot_uniform Dense
        kernels, zero biases, BatchNorm gamma 1 and beta 0."""
        for conv in (self.conv1, self.conv2, self.conv3):
            fan_in = conv.weight[0].numel()
            nn.init.uniform_(conv.weight, -math.sqrt(6 / fan_in), math.sqrt(6 / fan_in))
            nn.init.zeros_(conv.bias)
        fan_lc = math.sqrt(self.lc4.weight.numel())
        nn.init.uniform_(self.lc4.weight, -math.sqrt(6 / fan_lc), math.sqrt(6 / fan_lc))
        nn.init.zeros_(self.lc4.bias)
        for dense in (self.fc5, self.classifier):
            nn.init.xavier_uniform_(dense.weight)
            nn.init.zeros_(dense.bias)
        # each Dense(1) of the module: fan_in split_num, fan_out 1
        bound = math.sqrt(6 / (self.split_num + 1))
        nn.init.uniform_(self.dae.weight, -bound, bound)
        nn.init.zeros_(self.dae.bias)

    def regularised_kernels(self) -> list:
        """The weights under the published l2(1e-4) (C1-C3, C4, the face
        feature layer, the bits Dense(1) and the softmax layer; no bias, no BN)."""
        return [self.conv1.weight, self.conv2.weight, self.conv3.weight, self.lc4.weight,
                self.fc5.weight, self.dae.weight, self.classifier.weight]

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        m3 = F.max_pool2d(F.relu(self.bn3(self.conv3(x))), 2)
        a4 = F.relu(self.bn4(self.lc4(m3)))
        merged = torch.cat([m3.flatten(1), a4.flatten(1)], dim=1)
        a5 = F.relu(self.bn5(self.fc5(merged)))
        a6 = torch.tanh(self.bn6(self.dae(a5)))
        return a6, self.classifier(a6)


def is_ddh_state(state_dict) -> bool:
    """A state_dict of this layout (the locally connected and divide-and-encode layers)."""
    lc = state_dict.get("lc4.weight") if isinstance(state_dict, dict) else None
    return getattr(lc, "ndim", 0) == 3 and getattr(state_dict.get("dae.weight"), "ndim", 0) == 2


@register_network("ddh", family="ddh", input_sizes=(32,), recognise=is_ddh_state,
                  code_length_key="dae.weight")
def ddh(hash_bits, num_classes, split_num=4, pretrained=None):
    if not from_scratch(pretrained):
        raise ValueError("DDH is trained from scratch (published); no pretrained weights")
    return DDH(hash_bits, num_classes, split_num)
