"""Networks (one file per family) and each method's loss (``models/losses/``).

The official class and function names are importable from here, so code
written against the published repositories imports unchanged:
``DFHNet``, ``SphereNet_hashing``, ``resnet20_pq``, ``OrthoPQ``, ``HashModel``,
``triplet_hashing_loss``, ``DDH``, ``DDAH``, ``criteria_softmax``, ``dpsh_loss``,
``dsdh_batch_step``, ...
Networks are built by name through the registry (``create_network``).
"""

from .alexnet_hash import AlexNetHash, alexnet_hash
from .ddah import DDAH
from .ddh import DDH
from .dense_net import Dense_Net, ImgNet
from .dfhnet import DFHNet
from .hash_model import HashModel
from .losses.dcdh import DualClasswiseLoss
from .losses.ddah import criteria_softmax
from .losses.ddh import ddh_loss
from .losses.dpsh import dpsh_loss
from .losses.dsdh import dsdh_batch_step
from .losses.opqn import OrthoPQ, build_codebooks, opqn_loss
from .losses.triplet import triplet_hashing_loss
from .registry import create_network, network_names, network_spec, recognise_network
from .resnet import ResNetHashing
from .resnet20_pq import ResNet20PQ, resnet20_pq
from .sphere import SphereNet_hashing, SphereNetHashing

__all__ = [
    "AlexNetHash", "DDAH", "DDH", "DFHNet", "Dense_Net", "DualClasswiseLoss", "HashModel",
    "ImgNet", "OrthoPQ", "ResNet20PQ", "ResNetHashing", "SphereNetHashing", "SphereNet_hashing",
    "alexnet_hash", "build_codebooks", "create_network", "criteria_softmax", "ddh_loss",
    "dpsh_loss", "dsdh_batch_step", "network_names", "network_spec", "opqn_loss",
    "recognise_network", "resnet20_pq", "triplet_hashing_loss",
]
