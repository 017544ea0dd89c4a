"""OPQN's quantization head and loss (Zhang, Zhe & Yan, Pattern Recognition 2023).

The network is models/resnet20_pq.py; its D-dim feature is cut into M
sub-vectors of length d = D/M.  Two pieces, read top to bottom:

1. `build_codebooks`: fixed, never-learned codewords. Book m holds K
   orthonormal columns of length d taken from powers of the DCT-II matrix.
2. `OrthoPQ` + `opqn_loss`: per subspace, a learnable `mlp` [d, K] turns the
   sub-feature into a softmax over the K codewords (the soft assignment);
   the soft-quantized vector is that convex mix of codewords. Both the raw
   sub-feature and its soft quantization are classified with a CosFace-style
   additive-margin softmax against per-subspace class proxies, and the
   entropy of the soft assignments is pushed down so that they become hard.

Retrieval needs only the backbone and `mlp` (the checkpoint layout
`{'backbone': DataParallel state_dict, 'mlp': Parameter [M, d, K]}`):
indexing and asymmetric search live in utils/retrieval/pq.py. Layout convention here:
book first, [M, n, ...].
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------- codebooks


def dct_matrix(d):
    """Orthonormal DCT-II basis as float32 [d, d], columns orthonormal.

    C[j, k] = cos((j + 1/2) k pi / d); column 0 / sqrt(2); all / sqrt(d/2).
    The cosines are evaluated in float64 and rounded to float32, the two
    scalings are float32 in-place divisions: the official code does exactly
    this, and following it keeps the result bit-identical to its codebooks.
    """
    j = torch.arange(d, dtype=torch.float64).unsqueeze(1)
    k = torch.arange(d, dtype=torch.float64).unsqueeze(0)
    c = torch.cos((j + 0.5) * k * math.pi / d).to(torch.float32)
    c[:, 0] /= math.sqrt(2)
    c /= math.sqrt(d / 2)
    return c


def build_codebooks(feature_dim, num_books, num_words):
    """Fixed orthonormal codebooks, float32 [M, d, K] with d = D / M.

    Book 0 is the first K columns of the DCT matrix C and book m = C @ book
    m-1 = the first K columns of C^(m+1): every book is a set of K orthonormal
    codewords (columns), and different books use different rotations.
    """
    if feature_dim % num_books:
        raise ValueError(f"feature_dim {feature_dim} is not divisible by num_books {num_books}")
    d = feature_dim // num_books
    if num_words > d:
        raise ValueError(
            f"num_words {num_words} > codeword length d = feature_dim/num_books = {d}: "
            f"at most d orthonormal codewords exist; use fewer words or a larger feature_dim")
    c = dct_matrix(d)
    books = torch.empty(num_books, d, num_words)
    books[0] = c[:, :num_words]
    for m in range(1, num_books):
        books[m] = c @ books[m - 1]  # float32 chain, as officially
    return books


# ----------------------------------------------------------------------------- assignments


def split_features(features, num_books):
    """[n, D] -> [M, n, d]: consecutive sub-vectors, book first."""
    n, dim = features.shape
    if dim % num_books:
        raise ValueError(f"feature dim {dim} is not divisible by num_books {num_books}")
    return features.reshape(n, num_books, dim // num_books).transpose(0, 1)


# ----------------------------------------------------------------------------- head and loss


class OrthoPQ(nn.Module):
    """Soft product quantization onto fixed orthonormal codebooks, with
    additive-margin cosine classifiers on both the feature and its quantization.

    Parameters: `weight` [M, C, d] (a class proxy per book and class) and
    `mlp` [M, d, K] (the codeword scorer, saved in checkpoints), both Xavier
    uniform as officially. `codebooks` [M, d, K] is a non-persistent buffer:
    it follows .to(device) but is neither learned nor saved.
    """

    def __init__(self, feature_dim, num_books, num_words, num_classes, scale=30.0, margin=0.5):
        super().__init__()
        codebooks = build_codebooks(feature_dim, num_books, num_words)  # validates the shapes
        self.feature_dim = feature_dim
        self.num_books = num_books
        self.num_words = num_words
        self.num_classes = num_classes
        self.len_word = feature_dim // num_books
        self.scale = scale
        self.margin = margin
        # created and initialised in the official order, so a seed gives the same values
        self.weight = nn.Parameter(torch.empty(num_books, num_classes, self.len_word))
        self.mlp = nn.Parameter(torch.empty(num_books, self.len_word, num_words))
        nn.init.xavier_uniform_(self.weight)
        nn.init.xavier_uniform_(self.mlp)
        self.register_buffer("codebooks", codebooks, persistent=False)

    def forward(self, features, labels=None):
        """features [n, D], labels [n] (int) ->
        (logits_x [M, n, C], logits_s [M, n, C], probs [M, n, K]).

        logits_x: scale * cos(sub-feature, proxy); logits_s: the same for the
        soft-quantized sub-feature; the margin is subtracted from the target
        class cosine when labels are given (none without labels).
        """
        sub = split_features(features, self.num_books)                  # [M, n, d]
        proxies = F.normalize(self.weight, dim=2)                       # [M, C, d]
        cos_x = torch.matmul(F.normalize(sub, dim=2), proxies.transpose(1, 2))
        # the training head scores codewords with the *raw* sub-feature
        probs = torch.matmul(sub, self.mlp).softmax(dim=2)              # [M, n, K]
        quantized = torch.matmul(probs, self.codebooks.transpose(1, 2))  # [M, n, d], convex mix of codewords
        cos_s = torch.matmul(F.normalize(quantized, dim=2), proxies.transpose(1, 2))
        # clamp guards against |cos| creeping over 1 by rounding
        cos_x, cos_s = cos_x.clamp(-1, 1), cos_s.clamp(-1, 1)
        if labels is not None:
            # [n, C], broadcast over books; scatter_, not one_hot (which checks the
            # labels' range on the host, a wait for the GPU every step)
            target = torch.zeros(labels.shape[0], self.num_classes, dtype=cos_x.dtype,
                                 device=cos_x.device).scatter_(1, labels.long().view(-1, 1), 1.0)
            cos_x = cos_x - self.margin * target
            cos_s = cos_s - self.margin * target
        return self.scale * cos_x, self.scale * cos_s, probs


def assignment_entropy(probs):
    """Natural-log entropy of each distribution along the last dim.

    Written as torch.distributions.Categorical(probs=p).entropy() computes it
    (the official code calls that): -sum p * log(clamp(p, eps, 1 - eps)) with
    eps the dtype's machine epsilon, so p = 0 contributes 0, not NaN.
    Categorical also rescales p to sum 1; softmax outputs already do (up to
    rounding, and the softmax Jacobian removes that direction from the gradient).
    """
    eps = torch.finfo(probs.dtype).eps
    return -(probs * probs.clamp(eps, 1 - eps).log()).sum(dim=-1)


def opqn_loss(logits_x, logits_s, probs, labels, miu=0.1):
    """OPQN training loss (a scalar), for the outputs of OrthoPQ.

    0.5 * (mean over books of CE(logits_x[m], y) + mean over books of
    CE(logits_s[m], y)) + miu * mean over books and samples of the entropy of
    probs[m, i]. CE is the usual batch-mean cross-entropy.
    """
    num_books = logits_x.shape[0]
    ce_x = sum(F.cross_entropy(logits_x[m], labels) for m in range(num_books)) / num_books
    ce_s = sum(F.cross_entropy(logits_s[m], labels) for m in range(num_books)) / num_books
    return 0.5 * (ce_x + ce_s) + miu * assignment_entropy(probs).mean()
