"""Networks and learnable heads, one file per family."""

from .dcdh import DualClasswiseLoss
from .dfhnet import DFHNet
from .opqn import OrthoPQ, ResNet20PQ, build_codebooks, opqn_loss, resnet20_pq
from .resnet import ResNetHashing
from .sphere import SphereNet_hashing, SphereNetHashing

from utils.names import HASHING_ARCHS


def build_hashing_net(arch, hash_bits, pretrained=None):
    """Build a hashing backbone by name; `pretrained` (a local file) is for ResNets only."""
    if arch.startswith("resnet"):
        return ResNetHashing(arch, hash_bits, pretrained=pretrained)
    if pretrained is not None:
        raise ValueError(f"pretrained weights are only supported for resnet archs, not {arch!r}")
    if arch == "dfhnet":
        return DFHNet(hash_bits)
    if arch in ("sphere20", "sphere64"):
        return SphereNet_hashing(num_layers=int(arch[len("sphere"):]), hashing_bits=hash_bits)
    raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(HASHING_ARCHS)}")
