"""models/losses/dcdh.py: the dual-constrained center loss and the regression step."""

import math

import torch
import torch.nn.functional as F

from models.losses.dcdh import (DualClasswiseLoss, dcdh_loss, regression_targets,
                         regression_weights)


def one_hot(labels, num_classes):
    return F.one_hot(labels, num_classes).double()


def test_closed_form_w_equals_the_published_inverse():
    """W = inverse(YᵀY + lamda I) Yᵀ sign(H) (an older published version,
    lamda 1), and the pseudo-inverse form of the published HEAD for lamda 0."""
    gen = torch.Generator().manual_seed(0)
    for trial in range(5):
        n, c, bits = 40, 9, 12
        labels = torch.randint(0, c - 2, (n,), generator=gen)  # some classes absent
        signs = torch.sign(torch.randn(n, bits, generator=gen, dtype=torch.float64))
        y = one_hot(labels, c)
        published = torch.inverse(y.T @ y + torch.eye(c, dtype=torch.float64)) @ y.T @ signs
        assert torch.allclose(regression_weights(signs, labels, c, lamda=1), published, atol=1e-12)
        ridge = torch.inverse(y.T @ y + 0.3 * torch.eye(c, dtype=torch.float64)) @ y.T @ signs
        assert torch.allclose(regression_weights(signs, labels, c, lamda=0.3), ridge, atol=1e-12)
        pinv = torch.linalg.pinv(y.T @ y) @ y.T @ signs
        assert torch.allclose(regression_weights(signs, labels, c, lamda=0), pinv, atol=1e-12)
        assert torch.equal(regression_weights(signs, labels, c), regression_weights(
            signs, labels, c, lamda=0))  # the default is the published HEAD's pinverse
    # absent classes get zero rows
    assert regression_weights(signs, labels, c)[c - 1].abs().sum() == 0


def test_regression_targets_follow_class_majority():
    codes = torch.tensor([[0.9, -0.2], [0.8, 0.3], [0.7, -0.5], [-0.1, 0.4]])
    labels = torch.tensor([0, 0, 0, 1])
    b = regression_targets(codes, labels, num_classes=2, eta=0.01)
    # class 0: bit 0 all positive -> +1, bit 1 majority negative -> -1 for every member
    assert b[:3].tolist() == [[1.0, -1.0]] * 3
    assert b[3].tolist() == [-1.0, 1.0]


def reference_loss(codes, labels, centers, sigma, inner_param):
    """The official formula written out with explicit loops over pairs."""
    n, c = codes.shape[0], centers.shape[0]
    dist = torch.stack([((codes - centers[k]) ** 2).sum(1) for k in range(c)], 1)
    w = torch.exp(-0.5 * sigma * dist)
    p = w / (w.sum(1, keepdim=True) + 1e-6)
    like = -torch.log(p[torch.arange(n), labels] + 1e-6).sum() / n
    total = 0.0
    for i in range(c):
        for j in range(c):
            cos = 0.0 if i == j else float(F.cosine_similarity(centers[i], centers[j], dim=0))
            total += math.log1p(math.exp(0.5 * centers.shape[1] * cos))
    return like + inner_param * total / (c * (c - 1))


def test_loss_value_matches_formula():
    torch.manual_seed(0)
    crit = DualClasswiseLoss(num_classes=5, feat_dim=8, inner_param=0.1, sigma=0.25).double()
    codes = torch.randn(12, 8, dtype=torch.float64)
    labels = torch.randint(0, 5, (12,))
    expected = reference_loss(codes, labels, crit.centers.detach(), 0.25, 0.1)
    with torch.no_grad():
        value = float(crit(codes, labels[:, None]))
    assert abs(value - float(expected)) < 1e-10


def test_centers_state_dict_is_official_layout():
    crit = DualClasswiseLoss(num_classes=530, feat_dim=48)
    sd = crit.state_dict()
    assert list(sd) == ["centers"] and tuple(sd["centers"].shape) == (530, 48)


def test_training_steps_lower_loss_and_separate_centers():
    """A few Adam steps with the official hyper-parameters on separable codes."""
    torch.manual_seed(1)
    num_classes, bits = 6, 16
    prototypes = torch.randn(num_classes, 32)
    labels = torch.arange(num_classes).repeat_interleave(20)
    inputs = prototypes[labels] + 0.3 * torch.randn(len(labels), 32)
    net = torch.nn.Sequential(torch.nn.Linear(32, bits), torch.nn.BatchNorm1d(bits))
    crit = DualClasswiseLoss(num_classes, bits, inner_param=0.1, sigma=0.25)
    opt = torch.optim.Adam([{"params": net.parameters()}, {"params": crit.parameters()}],
                           lr=0.005, weight_decay=1e-4, amsgrad=True)

    def mean_center_cos():
        unit = F.normalize(crit.centers.detach(), dim=1)
        cos = unit @ unit.T
        return float(cos[~torch.eye(num_classes, dtype=torch.bool)].mean())

    losses, cos_before = [], mean_center_cos()
    for _ in range(150):
        loss = dcdh_loss(net(inputs), labels, crit, eta=0.01)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert mean_center_cos() < cos_before - 0.01
    assert mean_center_cos() < 0  # centers pushed apart: negative mean cosine


def test_dfhnet_on_synthetic_faces_with_official_hyper_parameters():
    """A few Adam steps of DFHNet on the built-in faces: loss falls, centers separate."""
    from data.synthetic import make_synthetic_faces
    from builders import dcdh as DCDH
    from methods.recipes.dcdh import recipe_for

    torch.manual_seed(0)
    faces = make_synthetic_faces(num_identities=6, train_per_identity=8, test_per_identity=1)
    objective = DCDH("dfhnet", 48, 6, sigma=0.25, inner_param=0.1, eta=0.01)
    crit = objective.criterion
    opt, _ = objective.configure_optimizers(recipe_for("facescrub", "dfhnet"))
    unit = F.normalize(crit.centers.detach(), dim=1)
    off_diagonal = ~torch.eye(6, dtype=torch.bool)
    cos_before = float((unit @ unit.T)[off_diagonal].mean())
    losses = []
    for _ in range(12):
        loss = objective(faces.train_images, faces.train_labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    unit = F.normalize(crit.centers.detach(), dim=1)
    assert losses[-1] < 0.7 * losses[0], losses
    # the separation term (weight 0.1) moves the centers slowly: ~0.011 in 12 steps
    assert float((unit @ unit.T)[off_diagonal].mean()) < cos_before - 0.005
