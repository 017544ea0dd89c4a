"""What every test shares: the tests never touch the network.

torch's hub cache ($TORCH_HOME) is a fresh folder for the session, holding a
seeded random ResNet-18 under the file name torchvision gives its ImageNet
weights (so the published triplet command's ImageNet start is exercised
offline), and any download fails as it does on an offline machine."""

import os
import urllib.error

import pytest
import torch


def imagenet_file(arch: str, seed: int = 0):
    """A stand-in for torchvision's ImageNet weights of ``arch`` in the hub
    cache (a seeded random torchvision model): (path, state_dict)."""
    import torchvision.models as tvm

    from models.pretrained import cache_path

    torch.manual_seed(seed)
    state = getattr(tvm, arch)(weights=None).state_dict()
    path = cache_path(arch)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path, state


@pytest.fixture(scope="session", autouse=True)
def offline_torch_hub(tmp_path_factory):
    home = tmp_path_factory.mktemp("torch_home")
    previous = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(home)  # the scripts run in subprocesses see it too

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("network unreachable (the tests run offline)")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.hub, "download_url_to_file", offline)
        imagenet_file("resnet18")
        yield home
    if previous is None:
        os.environ.pop("TORCH_HOME", None)
    else:
        os.environ["TORCH_HOME"] = previous


@pytest.fixture
def one_thread():
    """Small networks train fastest on one thread (a shared CPU makes a second
    one wait); the learned numbers of the tests that use this were measured so."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_configure(config):
    """Under pytest-xdist (``-n 2``, the README's command) each worker process
    takes one core: one torch thread, and one OpenMP thread in the processes
    the tests start, so that two workers never oversubscribe two cores."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        os.environ.setdefault("NUMBA_NUM_THREADS", "1")
        torch.set_num_threads(1)
