"""DCHN's view networks (Hu et al., IEEE TCYB 2021, the published model.py).

``Dense_Net(input_dim, out_dim)``: features -> Linear 4096 -> ReLU -> Linear
4096 -> ReLU -> Linear out_dim, then each row divided by its L2 norm.  As
published, ``forward`` returns a one-element list ``[out]`` and the
state_dict keys are ``hash_layer.0/2/4.{weight,bias}``.

``ImgNet(out_dim)``: the raw-image view of ``mirflickr25k_raw``: a
VGG-19-BN (its classifier without the last two layers, 4096-d), then the same
three-layer head and L2 normalisation; ``forward`` returns ``[feat, out]``.
As published (``vgg19_bn(pretrained=True)``, ``forward(x, finetune=True)``)
the VGG starts from ImageNet weights (``pretrained``: ``imagenet``, a local
torchvision state_dict file, or None; models/pretrained.py) and is fine-tuned
(the optimizer gives its parameters 0.1 x lr).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .pretrained import load_into, pretrained_state
from .registry import register_network

HIDDEN = 4096


def _head(input_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(input_dim, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN),
                         nn.ReLU(), nn.Linear(HIDDEN, out_dim))


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    return x / torch.norm(x, dim=1, keepdim=True)


class Dense_Net(nn.Module):  # noqa: N801 - the published class name
    def __init__(self, input_dim=28 * 28, out_dim=20, norm=True):
        super().__init__()
        self.hash_layer = _head(input_dim, out_dim)
        self.norm = norm

    def forward(self, x):
        out = self.hash_layer(x)
        return [_unit_rows(out) if self.norm else out]


class ImgNet(nn.Module):
    def __init__(self, out_dim, norm=True, pretrained=None, finetune=True):
        super().__init__()
        from torchvision.models import vgg19_bn

        self.vgg19_bn = vgg19_bn(weights=None)
        state = pretrained_state(pretrained, "vgg19_bn")
        if state is not None:
            load_into(self.vgg19_bn, state, "vgg19_bn", skip=())
        self.vgg19_bn.classifier = nn.Sequential(*list(self.vgg19_bn.classifier.children())[:-2])
        self.hash_layer = _head(HIDDEN, out_dim)
        self.norm, self.finetune = norm, finetune

    def forward(self, x):
        with torch.set_grad_enabled(self.finetune and torch.is_grad_enabled()):
            feat = self.vgg19_bn.classifier(self.vgg19_bn.features(x).flatten(1))
        feat = self.hash_layer(feat)
        return [feat, _unit_rows(feat) if self.norm else feat]


@register_network("dense_net", family="dchn",
                  recognise=lambda sd: "hash_layer.0.weight" in sd and not any(
                      k.startswith("vgg19_bn.") for k in sd))
def dense_net(input_dim, out_dim):
    return Dense_Net(input_dim, out_dim)


@register_network("imgnet_vgg19_bn", family="dchn", input_sizes=(224,),
                  recognise=lambda sd: any(k.startswith("vgg19_bn.") for k in sd))
def imgnet(out_dim, pretrained=None):
    return ImgNet(out_dim, pretrained=pretrained)
