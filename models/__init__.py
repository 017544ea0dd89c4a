"""Networks (one file per family) and each method's loss (``models/losses/``).

The official class and function names are importable from here, so code
written against the published repositories imports unchanged:
``DFHNet``, ``SphereNet_hashing``, ``resnet20_pq``, ``OrthoPQ``, ``HashModel``,
``triplet_hashing_loss``, ...
Networks are built by name through the registry (``create_network``).
"""

from .dense_net import Dense_Net, ImgNet
from .dfhnet import DFHNet
from .hash_model import HashModel
from .losses.dcdh import DualClasswiseLoss
from .losses.opqn import OrthoPQ, build_codebooks, opqn_loss
from .losses.triplet import triplet_hashing_loss
from .registry import create_network, network_names, network_spec, recognise_network
from .resnet import ResNetHashing
from .resnet20_pq import ResNet20PQ, resnet20_pq
from .sphere import SphereNet_hashing, SphereNetHashing

__all__ = [
    "DFHNet", "Dense_Net", "DualClasswiseLoss", "ImgNet", "HashModel", "triplet_hashing_loss", "OrthoPQ", "ResNet20PQ", "ResNetHashing", "SphereNetHashing",
    "SphereNet_hashing", "build_codebooks", "create_network", "network_names", "network_spec",
    "opqn_loss", "recognise_network", "resnet20_pq",
]
