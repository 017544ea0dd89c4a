"""OPQN: resnet20_pq, the orthonormal codebooks, the OrthoPQ head and its loss.

Fixtures (copied from the shared fixtures; see the READMEs beside them):
tests/fixtures/checkpoints/opqn_*.json list every backbone entry of the
official checkpoints ('module.'-prefixed: the official net is wrapped in
nn.DataParallel); golden_opqn_*.npz hold the outputs of the official network
filled with the weights of weight_fill.py, the filled `mlp` and the official
quantization indices; tests/fixtures/opqn/codebooks_*.npz hold the codebooks
built by the official code.
"""

import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from models import OrthoPQ, ResNet20PQ, build_codebooks, opqn_loss, resnet20_pq
from utils.retrieval.pq import quantization_index, soft_assignments
from models.losses.opqn import assignment_entropy, dct_matrix, split_features
from weight_fill import fill_spec, fill_state_dict, fill_tensor, sine_input

FIXTURES = Path(__file__).parent / "fixtures"
CHECKPOINTS = FIXTURES / "checkpoints"
MANIFESTS = sorted(p.name for p in CHECKPOINTS.glob("opqn_resnet20pq_*.json"))
CODEBOOKS = sorted(p.name for p in (FIXTURES / "opqn").glob("codebooks_*.npz"))
BACKBONE_ENTRIES = 156  # resnet20_pq state_dict entries; the mlp fill comes next (k=156)


def load_npz(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def wrapped_state_dict(net):
    """The backbone as the official checkpoints hold it: nn.DataParallel's names."""
    return nn.DataParallel(net).state_dict()


def test_fixtures_present():
    assert len(MANIFESTS) == 8 and len(CODEBOOKS) == 7


# ---------------------------------------------------------------- layouts


@pytest.mark.parametrize("name", MANIFESTS)
def test_backbone_matches_manifest(name):
    manifest = json.loads((CHECKPOINTS / name).read_text())
    size = {32: 4, 112: 7}[manifest["input_chw"][1]]
    with torch.device("meta"):  # shapes only: no memory, no init time
        net = resnet20_pq(20, manifest["feature_dim"], channel_max=512, size=size)
        head = OrthoPQ(manifest["feature_dim"], manifest["num_books"], manifest["num_words"], num_classes=10)
    expected = manifest["state_dicts"]["backbone"]
    sd = wrapped_state_dict(net)
    assert list(sd) == list(expected)  # same keys, same order
    for key, tensor in sd.items():
        shape, dtype = expected[key]
        assert list(tensor.shape) == shape, key
        assert str(tensor.dtype) == f"torch.{dtype}", key
    buffers = {key for key, _ in nn.DataParallel(net).named_buffers()}
    assert buffers == set(manifest["buffers"]["backbone"])
    counts = manifest["parameters_vs_buffers"]["backbone"]
    assert len(list(net.parameters())) == counts["n_parameters"]
    assert len(buffers) == counts["n_buffers"]
    assert sum(p.numel() for p in net.parameters()) == counts["n_parameter_elements"]
    shape, dtype, kind = manifest["tensors"]["mlp"]
    assert list(head.mlp.shape) == shape and str(head.mlp.dtype) == f"torch.{dtype}"
    assert isinstance(head.mlp, nn.Parameter) and kind == "torch.nn.Parameter"


def test_backbone_variants():
    with torch.device("meta"):
        assert isinstance(resnet20_pq(), ResNet20PQ)
        deep = resnet20_pq(64, 512, size=4)
        narrow = resnet20_pq(20, 256, channel_max=128, size=4)
        large = resnet20_pq(20, 64)  # official default: size 7, 112x112 inputs
    assert [len(getattr(deep, f"layer{i}")) - 3 for i in range(1, 5)] == [3, 8, 16, 3]
    assert deep.layer1[0].stride == (1, 1) and deep.layer2[0].stride == (2, 2)
    assert large.layer1[0].stride == (2, 2) and large.bn.num_features == 512 * 7 * 7
    assert narrow.layer4[0].out_channels == 128 and narrow.fc.weight.shape == (256, 128 * 16)
    with pytest.raises(ValueError):
        resnet20_pq(num_layers=36)
    with pytest.raises(ValueError):
        resnet20_pq(channel_max=256)
    torch.manual_seed(0)
    net = resnet20_pq(20, 96, channel_max=128, size=4)
    out = net(torch.randn(2, 3, 32, 32))  # train mode: BN batch statistics, dropout on
    assert out.shape == (2, 96)
    out.pow(2).sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_head_state_dict_has_no_codebooks():
    head = OrthoPQ(64, 4, 8, num_classes=5)
    assert list(head.state_dict()) == ["weight", "mlp"]
    assert [n for n, _ in head.named_parameters()] == ["weight", "mlp"]
    assert head.weight.shape == (4, 5, 16) and head.mlp.shape == (4, 16, 8)
    assert "codebooks" in dict(head.named_buffers())
    assert torch.equal(head.codebooks, build_codebooks(64, 4, 8))
    # the buffer follows dtype/device moves
    assert head.to(torch.float64).codebooks.dtype == torch.float64
    # a checkpoint-style state_dict loads back strictly
    OrthoPQ(64, 4, 8, num_classes=5).load_state_dict(head.state_dict())


def test_head_init_matches_official_order():
    """weight then mlp, each Xavier-uniform over its 3-d shape, from one seed."""
    torch.manual_seed(7)
    head = OrthoPQ(48, 3, 8, num_classes=6)
    torch.manual_seed(7)
    weight = nn.init.xavier_uniform_(torch.empty(3, 6, 16))
    mlp = nn.init.xavier_uniform_(torch.empty(3, 16, 8))
    assert torch.equal(head.weight.data, weight) and torch.equal(head.mlp.data, mlp)


# ---------------------------------------------------------------- golden outputs


GOLDEN = {"s4_D512": ("golden_opqn_resnet20pq_s4_D512.npz", 512, 4),
          "s7_D2048": ("golden_opqn_resnet20pq_s7_D2048.npz", 2048, 7)}


def empty_net(feature_dim, size):
    """resnet20_pq with uninitialised storage: every entry is overwritten by a fill."""
    with torch.device("meta"):
        net = resnet20_pq(20, feature_dim, channel_max=512, size=size)
    return net.to_empty(device="cpu")


@functools.cache
def golden_run(key):
    """(golden arrays, DataParallel-wrapped filled net in eval(), filled backbone, output)."""
    fixture, feature_dim, size = GOLDEN[key]
    golden = load_npz(CHECKPOINTS / fixture)
    wrapper = nn.DataParallel(empty_net(feature_dim, size))  # on CPU a pass-through with 'module.' names
    backbone = fill_state_dict(wrapper, phase=int(golden["fill_phase"]))
    wrapper.load_state_dict(backbone, assign=True)  # share the filled tensors: no second copy
    wrapper.eval()
    with torch.no_grad():
        out = wrapper(torch.from_numpy(golden["input"]))
    return golden, wrapper, backbone, out


@pytest.mark.parametrize("key", GOLDEN)
def test_golden_fill_spec(key):
    golden, wrapper, _, _ = golden_run(key)
    expected = [tuple(entry) for entry in json.loads(str(golden["fill_spec_json"]))]
    ours = [(k, name, list(shape), str(dtype).replace("torch.", ""), kind)
            for k, name, shape, dtype, kind in fill_spec(wrapper)]
    assert ours == expected


@pytest.mark.parametrize("key", GOLDEN)
def test_golden_forward(key):
    golden, _, _, out = golden_run(key)
    assert torch.equal(torch.from_numpy(golden["input"]), sine_input(golden["input"].shape))
    ref = golden["output_float64"]
    assert out.shape == ref.shape
    assert np.abs(out.numpy() - ref).max() <= 1e-4 * np.abs(ref).max()


@pytest.mark.parametrize("key", GOLDEN)
def test_golden_quant_index(key):
    golden, _, backbone, out = golden_run(key)
    assert len(backbone) == BACKBONE_ENTRIES
    mlp = fill_tensor("mlp", golden["mlp"].shape, k=len(backbone))
    np.testing.assert_array_equal(mlp.numpy(), golden["mlp"])
    index = quantization_index(out, mlp)  # [N, M], compact dtype
    np.testing.assert_array_equal(index.T.long().numpy(), golden["quant_index"])
    # the argmax of the soft assignments is the same codeword
    np.testing.assert_array_equal(soft_assignments(out, mlp).argmax(dim=2).T.numpy(),
                                  golden["quant_index"])


def test_opqn_method_writes_the_published_layout(tmp_path):
    """The OPQN method's file: {'backbone': 'module.'-prefixed state_dict, 'mlp':
    Parameter}, loadable the published way (DataParallel(net).load_state_dict),
    giving the golden outputs and quantization indices."""
    from builders import opqn
    from utils.engine.checkpoint import save_checkpoint

    golden, _, backbone, _ = golden_run("s4_D512")
    method = opqn(24, 4, 64, 512, 4, num_classes=3)
    method.load_official_state({"backbone": backbone, "mlp": torch.from_numpy(golden["mlp"])})
    path = tmp_path / "opqn.tar"
    save_checkpoint(method.official_state(), path)
    ck = torch.load(path, map_location="cpu")
    assert list(ck) == ["backbone", "mlp"] and isinstance(ck["mlp"], nn.Parameter)
    assert list(ck["backbone"]) == list(backbone)
    wrapper = nn.DataParallel(empty_net(512, 4))
    wrapper.load_state_dict(ck["backbone"])
    with torch.no_grad():
        out = wrapper.eval()(torch.from_numpy(golden["input"]))
    # float32 convolutions: the kernel a CPU picks moves the last bits (3e-5 on
    # outputs of magnitude 40 seen between two x86 machines), not the codes below
    np.testing.assert_allclose(out.numpy(), golden["output"], rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(quantization_index(out, ck["mlp"].detach()).T.long().numpy(),
                                  golden["quant_index"])


# ---------------------------------------------------------------- codebooks


@pytest.mark.parametrize("name", CODEBOOKS)
def test_codebooks_match_official(name):
    z = load_npz(FIXTURES / "opqn" / name)
    D, M, K = int(z["feature_dim"]), int(z["num_books"]), int(z["num_words"])
    books = build_codebooks(D, M, K)
    assert books.dtype == torch.float32 and books.shape == (M, D // M, K) == z["codebooks"].shape
    # book m is a chain of m float32 products of d x d matrices: the BLAS kernel a
    # machine picks (AVX2 / AVX-512, summation order) moves the last bits of the
    # deeper books (1.3e-6 seen at d = 256, book 7), so 2e-6, not bit equality
    np.testing.assert_allclose(books.numpy(), z["codebooks"], rtol=0, atol=2e-6)
    np.testing.assert_allclose(dct_matrix(D // M).numpy(), z["dct_matrix"], rtol=0, atol=1e-6)
    gram = books.double().transpose(1, 2) @ books.double()
    assert (gram - torch.eye(K, dtype=torch.float64)).abs().max() < 1e-5  # orthonormal columns


def test_codebooks_closed_form():
    """Book m = first K columns of C^(m+1), C[j, k] = cos((j+1/2) k pi / d) * norm."""
    d, K, M = 6, 4, 3
    c = np.array([[math.cos((j + 0.5) * k * math.pi / d) for k in range(d)] for j in range(d)])
    c[:, 0] /= math.sqrt(2)
    c /= math.sqrt(d / 2)
    books = build_codebooks(d * M, M, K).double().numpy()
    for m in range(M):
        np.testing.assert_allclose(books[m], np.linalg.matrix_power(c, m + 1)[:, :K], atol=1e-6)


def test_codebooks_errors():
    with pytest.raises(ValueError, match="num_words 128 > codeword length d"):
        build_codebooks(512, 8, 128)  # d = 64
    with pytest.raises(ValueError, match="divisible"):
        build_codebooks(512, 6, 64)
    with pytest.raises(ValueError):
        OrthoPQ(256, 4, 128, num_classes=3)
    build_codebooks(256, 4, 64)  # K = d is allowed: full orthogonal books


# ---------------------------------------------------------------- head and loss


def test_entropy_matches_categorical():
    probs = torch.softmax(torch.randn(3, 7, 5, generator=torch.Generator().manual_seed(0)), dim=2)
    expected = torch.distributions.Categorical(probs=probs).entropy()
    torch.testing.assert_close(assignment_entropy(probs), expected)
    # a one-hot distribution has zero entropy, not NaN
    assert abs(assignment_entropy(torch.tensor([[1.0, 0.0, 0.0]])).item()) < 1e-6


def test_loss_by_hand():
    """One book, one sample, two classes: CE of logits (0, 0) is ln 2, of (0, -3)
    with label 0 is ln(1 + e^-3); a uniform assignment over 2 words has entropy ln 2."""
    logits_x = torch.tensor([[[0.0, 0.0]]])
    logits_s = torch.tensor([[[0.0, -3.0]]])
    probs = torch.tensor([[[0.5, 0.5]]])
    loss = opqn_loss(logits_x, logits_s, probs, torch.tensor([0]), miu=0.1)
    expected = 0.5 * (math.log(2) + math.log1p(math.exp(-3))) + 0.1 * math.log(2)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def reference_forward_and_loss(features, labels, weight, mlp, codebooks, scale, margin, miu):
    """The head and loss written out with plain Python loops (float64)."""
    num_books, num_classes, d = len(weight), len(weight[0]), len(weight[0][0])
    num_words = len(mlp[0][0])

    def norm(v):
        length = math.sqrt(sum(x * x for x in v))
        return [x / length for x in v]

    def cross_entropy(logits, label):
        top = max(logits)
        return math.log(sum(math.exp(z - top) for z in logits)) + top - logits[label]

    ce_x = ce_s = entropy = 0.0
    for m in range(num_books):
        proxies = [norm(weight[m][c]) for c in range(num_classes)]
        for i, feat in enumerate(features):
            sub = feat[m * d:(m + 1) * d]
            scores = [sum(sub[j] * mlp[m][j][k] for j in range(d)) for k in range(num_words)]
            top = max(scores)
            exps = [math.exp(s - top) for s in scores]
            p = [e / sum(exps) for e in exps]
            quantized = [sum(p[k] * codebooks[m][j][k] for k in range(num_words)) for j in range(d)]
            logits = []
            for vec in (norm(sub), norm(quantized)):
                cos = [sum(a * b for a, b in zip(vec, proxies[c])) for c in range(num_classes)]
                logits.append([scale * (cos[c] - (margin if c == labels[i] else 0.0))
                               for c in range(num_classes)])
            ce_x += cross_entropy(logits[0], labels[i])
            ce_s += cross_entropy(logits[1], labels[i])
            entropy -= sum(q * math.log(q) for q in p if q > 0)
    n = len(features)
    return 0.5 * (ce_x + ce_s) / (num_books * n) + miu * entropy / (num_books * n)


def test_head_and_loss_against_loops():
    torch.manual_seed(3)
    D, M, K, C, n = 12, 3, 4, 5, 6
    head = OrthoPQ(D, M, K, num_classes=C, scale=20.0, margin=0.5).double()
    features = torch.randn(n, D, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3, 4, 1])
    logits_x, logits_s, probs = head(features, labels)
    assert logits_x.shape == logits_s.shape == (M, n, C) and probs.shape == (M, n, K)
    # the training head scores codewords with the raw (unnormalised) sub-feature
    torch.testing.assert_close(probs, torch.softmax(split_features(features, M) @ head.mlp, dim=2))
    loss = opqn_loss(logits_x, logits_s, probs, labels, miu=0.1)
    expected = reference_forward_and_loss(
        features.tolist(), labels.tolist(), head.weight.tolist(), head.mlp.tolist(),
        head.codebooks.tolist(), scale=20.0, margin=0.5, miu=0.1)
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    # without labels: plain scaled cosines, margin-free
    plain_x, _, _ = head(features)
    diff = (plain_x - logits_x) / 20.0
    torch.testing.assert_close(diff, 0.5 * F.one_hot(labels, C).double().expand(M, n, C))


def test_sgd_lowers_loss():
    torch.manual_seed(0)
    n, C, D, M, K = 48, 4, 16, 2, 8
    centers = torch.randn(C, 10) * 2
    labels = torch.arange(n) % C
    inputs = centers[labels] + 0.5 * torch.randn(n, 10)
    net = nn.Sequential(nn.Linear(10, D), nn.BatchNorm1d(D))
    head = OrthoPQ(D, M, K, num_classes=C, scale=20.0, margin=0.5)
    params = list(net.parameters()) + list(head.parameters())
    optimizer = torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)
    losses = []
    for _ in range(40):
        loss = opqn_loss(*head(net(inputs), labels), labels, miu=0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert head.mlp.grad is not None and head.weight.grad is not None
    assert not head.codebooks.requires_grad
    assert losses[-1] < 0.5 * losses[0], losses
