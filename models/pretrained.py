"""ImageNet starts, as the published code takes them (torchvision's
``pretrained=True``) and as torchvision users expect them:

* ``imagenet``: torchvision's ImageNet weights through its weights API (the
  ``IMAGENET1K_V1`` weights that ``pretrained=True`` meant), read from the
  torch hub cache (``$TORCH_HOME/hub/checkpoints``), where torchvision
  downloads them once when the machine is online;
* a path: a local torchvision state_dict file;
* ``none``: from scratch.

Every problem is a ``PretrainedError`` with one line saying where the file
is expected, how to get it, and how to start from scratch instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch

IMAGENET = "imagenet"
# network -> the torchvision weights enum of its ImageNet start
WEIGHTS = {"resnet18": "ResNet18_Weights", "resnet34": "ResNet34_Weights",
           "resnet50": "ResNet50_Weights", "vgg19_bn": "VGG19_BN_Weights",
           "alexnet": "AlexNet_Weights"}


class PretrainedError(ValueError):
    """A pretrained start that cannot be had; the message is one line."""


def from_scratch(spec) -> bool:
    return spec is None or str(spec).lower() == "none"


def imagenet_weights(arch: str):
    import torchvision.models as tvm

    return getattr(tvm, WEIGHTS[arch]).IMAGENET1K_V1


def cache_path(arch: str) -> Path:
    """Where torchvision keeps (and looks for) the ImageNet weights of ``arch``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(imagenet_weights(arch).url)


def _read(path, what: str) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - garbage bytes fail in many ways inside unpickling
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise PretrainedError(f"{what} {path} is not a readable state_dict ({reason})") from None
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise PretrainedError(f"{what} {path} is not a state_dict of named tensors")
    return state


def pretrained_state(spec, arch: str) -> Optional[dict]:
    """The state_dict ``spec`` names for network ``arch`` (None: from scratch)."""
    if from_scratch(spec):
        return None
    hint = (f"pass --pretrained PATH (a local torchvision {arch} state_dict), or train from "
            f"scratch with --pretrained none")
    if str(spec).lower() == IMAGENET:
        if arch not in WEIGHTS:
            raise PretrainedError(f"{arch} has no ImageNet start; pass --pretrained none")
        cached = cache_path(arch)
        if cached.is_file():
            return _read(cached, "the torch hub cache file")
        weights = imagenet_weights(arch)
        try:
            return weights.get_state_dict(progress=True, check_hash=True)
        except Exception as exc:  # noqa: BLE001 - offline: URLError, socket errors, ...
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
            raise PretrainedError(
                f"the ImageNet weights of {arch} are not in the torch hub cache ({cached}) and "
                f"cannot be downloaded ({reason}); download {weights.url} to that path on a "
                f"machine that is online, or {hint}") from None
    path = os.fspath(spec)
    if not os.path.isfile(path):
        raise PretrainedError(f"pretrained weights for {arch} not found: {path!r} (give a local "
                              f"torchvision {arch} state_dict file, imagenet, or none)")
    return _read(path, "--pretrained")


def load_into(module: torch.nn.Module, state: dict, arch: str, skip=("fc.",)) -> None:
    """Copy a torchvision ``arch`` state_dict into ``module`` (its keys, less
    those starting with ``skip``: the replaced classifier), or say in one line
    why it does not fit."""
    wanted = {k: v for k, v in state.items() if not k.startswith(tuple(skip))}
    expected = module.state_dict()
    missing = [k for k in expected if k not in wanted and not k.startswith(tuple(skip))]
    unexpected = [k for k in wanted if k not in expected]
    wrong = [k for k in wanted if k in expected and wanted[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        example = (missing or unexpected or wrong)[0]
        raise PretrainedError(f"not a torchvision {arch} state_dict: {len(missing)} missing, "
                              f"{len(unexpected)} unexpected, {len(wrong)} mis-shaped entries "
                              f"(e.g. {example})")
    module.load_state_dict(wanted, strict=False)
