"""Deterministic weights and inputs for the golden forward fixtures.

Implements section 2 of tests/fixtures/checkpoints README (shared fixtures):
walk a state_dict in order with index k = start, start+1, ...; entry values
depend only on (kind, shape, k, phase p), with t = 0..n-1:

    zero         *.num_batches_tracked                 0
    running_var  *.running_var                         1 + 0.1*|cos(t + k + p)|
    small        *.running_mean, every *.bias          0.05*sin(0.37*t + k + p)
    bn_weight    1-d weight of a norm layer            1 + 0.1*sin(0.37*t + k + p)
    prelu        PReLU weight                          0.25 + 0.05*sin(0.37*t + k + p)
    matrix       any weight with >= 2 dims             u*sqrt(6/prod(shape[1:])),
                 u = 2*h/P - 1, P = 1000003,
                 h = ((t*t mod P)*7919 + t*104729 + (k+1+100p)*15485863) mod P  (exact int64)

Values are computed in float64, cast to the entry's dtype and reshaped C-order.
The extra tensors of the checkpoints (DCDH `centers`, OPQN `mlp`) use the
matrix rule with k = number of backbone entries: `fill_tensor("centers",
(530, 48), k=121)`.
"""

from collections import OrderedDict

import numpy as np
import torch

P = 1000003
KINDS = ("zero", "running_var", "small", "bn_weight", "prelu", "matrix")


def infer_kind(name, shape, prelu=None):
    """The fill rule of one state_dict entry, from its name and shape.

    A 1-d `weight` is either a norm-layer weight or a PReLU weight, which a
    name alone cannot always tell ('layer1.2.weight' is a PReLU inside an
    nn.Sequential). `prelu` says which; when None, the module name decides
    ('prelu' in it, e.g. 'layer1.3.prelu1.weight').
    """
    module, _, leaf = name.rpartition(".")
    if leaf == "num_batches_tracked":
        return "zero"
    if leaf == "running_var":
        return "running_var"
    if leaf == "running_mean":
        return "small"
    if len(shape) >= 2:
        return "matrix"
    if leaf == "bias":
        return "small"
    if leaf == "weight" and len(shape) == 1:
        if prelu is None:
            prelu = "prelu" in module.rpartition(".")[2].lower()
        return "prelu" if prelu else "bn_weight"
    raise ValueError(f"no fill rule for {name!r} with shape {tuple(shape)}")


def fill_values(kind, shape, k, phase=0):
    """float64 numpy array of the given shape, following rule `kind`."""
    shape = tuple(int(s) for s in shape)
    n = int(np.prod(shape, dtype=np.int64))
    if kind == "zero":
        return np.zeros(shape, dtype=np.float64)
    if kind == "matrix":
        if len(shape) < 2:
            raise ValueError(f"matrix rule needs >= 2 dims, got shape {shape}")
        t = np.arange(n, dtype=np.int64)
        h = ((t * t % P) * 7919 + t * 104729 + (k + 1 + 100 * phase) * 15485863) % P
        u = 2.0 * h.astype(np.float64) / P - 1.0
        fan = int(np.prod(shape[1:], dtype=np.int64))
        return (u * np.sqrt(6.0 / fan)).reshape(shape)
    t = np.arange(n, dtype=np.float64)
    if kind == "running_var":
        v = 1.0 + 0.1 * np.abs(np.cos(t + k + phase))
    elif kind == "small":
        v = 0.05 * np.sin(0.37 * t + k + phase)
    elif kind == "bn_weight":
        v = 1.0 + 0.1 * np.sin(0.37 * t + k + phase)
    elif kind == "prelu":
        v = 0.25 + 0.05 * np.sin(0.37 * t + k + phase)
    else:
        raise ValueError(f"unknown fill kind {kind!r}; one of {KINDS}")
    return v.reshape(shape)


def fill_tensor(name, shape, k, phase=0, kind=None, dtype=None):
    """One filled tensor. `kind` overrides the name-based rule; pass
    kind='prelu' for a PReLU inside an nn.Sequential (e.g. 'layer1.2.weight'),
    which a bare name cannot reveal -- or use fill_state_dict, which can.
    dtype defaults to int64 for num_batches_tracked, float32 otherwise."""
    if kind is None:
        kind = infer_kind(name, shape)
    values = fill_values(kind, shape, k, phase)
    if dtype is None:
        dtype = torch.int64 if name.endswith("num_batches_tracked") else torch.float32
    return torch.from_numpy(values).to(dtype)


def _prelu_modules(source, entries):
    """Names of the modules whose weight follows the PReLU rule."""
    if isinstance(source, torch.nn.Module):
        return {name for name, m in source.named_modules() if isinstance(m, torch.nn.PReLU)}
    # Bare names: a module holding a single 1-d `weight` and nothing else is a
    # PReLU (norm layers always add a bias and running statistics). This needs
    # whole modules in the list, not a slice that cuts one in half.
    leaves = {}
    for name, tensor in entries:
        module, _, leaf = name.rpartition(".")
        leaves.setdefault(module, []).append((leaf, tensor.dim()))
    return {module for module, found in leaves.items() if found == [("weight", 1)]}


def fill_spec(source, k=0):
    """[(index, name, shape, dtype, kind)] for every entry, in order.

    source: an nn.Module (its state_dict(); PReLUs found by module type), a
    state_dict, or a list of (name, tensor) pairs.
    """
    if isinstance(source, torch.nn.Module):
        entries = list(source.state_dict().items())
    elif hasattr(source, "items"):
        entries = list(source.items())
    else:
        entries = list(source)
    prelus = _prelu_modules(source, entries)
    spec = []
    for i, (name, tensor) in enumerate(entries):
        kind = infer_kind(name, tensor.shape, prelu=name.rpartition(".")[0] in prelus)
        spec.append((k + i, name, tuple(tensor.shape), tensor.dtype, kind))
    return spec


def fill_state_dict(source, k=0, phase=0):
    """Filled OrderedDict for a model, a state_dict, or a list of (name, tensor).

    Entry i gets index k + i and keeps its original dtype (int64 for
    num_batches_tracked). Load it with model.load_state_dict(...).
    """
    out = OrderedDict()
    for index, name, shape, dtype, kind in fill_spec(source, k):
        out[name] = torch.from_numpy(fill_values(kind, shape, index, phase)).to(dtype)
    return out


def sine_input(shape):
    """The golden input: sin(0.01*arange(n)) in float64, reshaped C-order, as float32."""
    n = int(np.prod(shape))
    x = np.sin(0.01 * np.arange(n, dtype=np.float64)).reshape(shape)
    return torch.from_numpy(x.astype(np.float32))
