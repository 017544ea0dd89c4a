"""DCDH's learning objective: the dual constraint on learnable class centers
and the code-regression (quantization) step.

Per batch with relaxed codes H [n, L] and labels y:

* dual constraint (``DualClasswiseLoss``): a normalised Gaussian likelihood
  of each code under its class center, -log softmax_c(-sigma/2 * ||h - c||^2)
  at the true class, plus ``inner_param`` times the mean over center pairs of
  log(1 + exp(L/2 * cos(c_i, c_j))), which pushes centers apart;
* regression (``regression_targets``): W = (YᵀY + lamda I)⁻¹ Yᵀ sign(H) and
  B = sign(Y W + eta H), then the quantization term eta * ||H - B||² / n.

The published ``dcdh_train.py`` (HEAD, df19abb) computes W with
``torch.pinverse(YᵀY) Yᵀ sign(H)`` (``lamda`` 0 here, the default); an older
published version had ``torch.inverse(YᵀY + lamda I)`` with ``--lamda 1``.
For one-hot Y, YᵀY is diagonal (class counts), so row c of W is the sum of
sign(H) over the batch items of class c divided by (count + lamda), zero for
classes absent from the batch; we use that closed form, which costs O(n L)
instead of a C x C inversion; ``lamda`` 0 is the pseudo-inverse form, the
per-class mean.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

# Added inside the likelihood and its log, as the official loss does, so that
# a far-away code gives a large finite loss instead of log(0).
_EPS = 1e-6


class DualClasswiseLoss(nn.Module):
    """Center loss of DCDH.  ``centers`` [num_classes, feat_dim] is learnable and
    saved as the official ``{'centers': tensor}`` state_dict."""

    def __init__(self, num_classes, feat_dim, inner_param=0.1, sigma=0.25):
        super().__init__()
        self.num_classes = num_classes
        self.feat_dim = feat_dim
        self.inner_param = inner_param
        self.sigma = sigma
        self.centers = nn.Parameter(torch.randn(num_classes, feat_dim))

    def likelihood_loss(self, codes, labels):
        """Mean over the batch of -log p(true class | code)."""
        # squared distances [n, C] expanded as the official code does (no sqrt,
        # so the gradient is defined at distance 0)
        dist = (codes.pow(2).sum(1, keepdim=True) + self.centers.pow(2).sum(1)
                - 2 * codes @ self.centers.T)
        weights = torch.exp(-0.5 * self.sigma * dist)
        prob = weights / (weights.sum(dim=1, keepdim=True) + _EPS)
        true_prob = prob.gather(1, labels.view(-1, 1))
        return -torch.log(true_prob + _EPS).sum() / codes.shape[0]

    def separation_loss(self):
        """Mean over ordered center pairs i != j of softplus(L/2 * cos(c_i, c_j)).

        As in the official code the masked diagonal enters as softplus(0) = log 2
        in the sum, divided by C(C-1): a constant, kept so loss values compare."""
        unit = F.normalize(self.centers, dim=1)
        theta = 0.5 * self.feat_dim * (unit @ unit.T)
        theta = theta.masked_fill(torch.eye(self.num_classes, dtype=torch.bool,
                                            device=theta.device), 0.0)
        c = self.num_classes
        return F.softplus(theta).sum() / (c * (c - 1))

    def forward(self, codes, labels):
        labels = labels.view(-1).long()
        return self.likelihood_loss(codes, labels) + self.inner_param * self.separation_loss()


def regression_weights(sign_codes, labels, num_classes, lamda=0.0):
    """W [num_classes, L]: per-class sum of sign(H) over the batch / (count + lamda),
    0 for absent classes.

    Equals (YᵀY + lamda I)⁻¹ Yᵀ sign(H) for the one-hot label matrix Y, and
    pinv(YᵀY) Yᵀ sign(H) (the per-class mean) for lamda = 0."""
    labels = labels.view(-1).long()
    sums = torch.zeros(num_classes, sign_codes.shape[1], dtype=sign_codes.dtype,
                       device=sign_codes.device).index_add_(0, labels, sign_codes)
    # index_add_, not bincount: bincount's output size waits for the GPU
    counts = torch.zeros(num_classes, dtype=sign_codes.dtype, device=sign_codes.device).index_add_(
        0, labels, torch.ones_like(labels, dtype=sign_codes.dtype))
    denominator = counts + lamda if lamda > 0 else counts.clamp(min=1)
    return sums / denominator.unsqueeze(1)


def regression_targets(codes, labels, num_classes, eta, lamda=0.0):
    """Binary targets B = sign(Y W + eta H) of the regression step (no gradient)."""
    with torch.no_grad():
        codes = codes.float()  # the regression stays in float32 under autocast
        w = regression_weights(torch.sign(codes), labels, num_classes, lamda)
        return torch.sign(w[labels.view(-1).long()] + eta * codes)


def dcdh_loss(codes, labels, criterion, eta, lamda=0.0):
    """The full DCDH training loss of one batch: dual constraint + eta * quantization."""
    targets = regression_targets(codes, labels, criterion.num_classes, eta, lamda)
    quantization = (codes.float() - targets).pow(2).sum() / codes.shape[0]
    return criterion(codes.float(), labels) + eta * quantization
