"""Product-quantization indexing and asymmetric search (OPQN retrieval).

The learnable head of OPQN is a tensor ``mlp`` of shape [M, d, K]: M books,
each mapping a length-d sub-vector to K codeword logits.  A feature of length
D = M * d is split into M consecutive sub-vectors, each is L2-normalised, and
book m scores sub-vector m against its K codewords:

    logits_m = normalize(x_m) @ mlp[m]          (length K)
    p_m      = softmax(logits_m)                (soft assignment)

* The **database** is stored as the index of the best codeword in every book,
  ``argmax_k logits_m`` (the first maximum on exact ties, as ``torch.argmax``;
  the argmax of the softmax is the same codeword), one small integer per book:
  an [N, M] table of dtype uint8 when K <= 256, int16 when K <= 32768, else
  int32.
* A **query** keeps its soft assignments and scores database item n as
  ``sum_m p_m[index[n, m]]``: a similarity, ranked descending, equal scores in
  database index order (the ranking rule of ``utils.retrieval.metrics``).

Scores are computed in float32 by default (``dtype`` selects float64); both
reproduce the values of the official ``PqDistRet_Ortho`` on the fixtures in
``tests/fixtures/opqn``.  Items with identical index rows always receive
bit-identical scores for a given query, whatever the dtype or chunking, so the
tie rule is applied exactly.

Everything here takes tensors (or numpy arrays) and an optional device and
returns tensors; nothing prints.  Work is split into chunks of rows so that
memory stays bounded for large databases and query sets.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from utils.retrieval.metrics import DEFAULT_TOPK, evaluate_scores
from utils.retrieval.tensors import as_tensor as _as_tensor, rows_per_chunk

__all__ = [
    "check_mlp", "index_dtype", "code_bits", "soft_assignments", "quantization_index",
    "pq_score_chunks", "pq_scores", "evaluate_pq",
]

# ---------------------------------------------------------------------------
# Validation and small helpers
# ---------------------------------------------------------------------------

def check_mlp(mlp, feature_dim: Optional[int] = None) -> tuple:
    """(M, d, K) of an OPQN ``mlp`` tensor [M, d, K], checked against ``feature_dim``.

    Raises ValueError when ``mlp`` is not a 3-D floating tensor with positive
    sizes, or when the feature length D is not M * d.
    """
    t = _as_tensor(mlp, "mlp")
    if t.ndim != 3:
        raise ValueError(
            f"mlp must be a 3-D tensor [num_books M, len_word d, num_words K], "
            f"got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"mlp must hold floating-point values, got dtype {t.dtype}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError("mlp holds NaN or inf")
    num_books, len_word, num_words = (int(s) for s in t.shape)
    if min(num_books, len_word, num_words) < 1:
        raise ValueError(f"mlp has an empty dimension: shape {tuple(t.shape)}")
    if feature_dim is not None:
        if feature_dim % num_books != 0:
            raise ValueError(
                f"feature dimension {feature_dim} is not divisible by the number of books "
                f"M={num_books} of mlp {tuple(t.shape)}")
        if feature_dim != num_books * len_word:
            raise ValueError(
                f"feature dimension {feature_dim} does not match mlp {tuple(t.shape)}: "
                f"expected M * d = {num_books} * {len_word} = {num_books * len_word}")
    return num_books, len_word, num_words


def _check_features(features, mlp, name: str) -> torch.Tensor:
    t = _as_tensor(features, name)
    if t.ndim != 2:
        raise ValueError(f"{name} must be a 2-D tensor [n, D], got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must hold floating-point values, got dtype {t.dtype}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} hold NaN or inf")
    check_mlp(mlp, t.shape[1])
    return t


def index_dtype(num_words: int) -> torch.dtype:
    """The smallest dtype holding codeword ids 0..K-1: uint8, int16 or int32."""
    if num_words <= 256:
        return torch.uint8
    if num_words <= 32768:
        return torch.int16
    return torch.int32


def code_bits(mlp):
    """Code length M * log2(K): an int when K is a power of two, else a float."""
    num_books, _, num_words = check_mlp(mlp)
    if num_words & (num_words - 1) == 0:
        return num_books * (num_words.bit_length() - 1)
    return num_books * math.log2(num_words)


def _resolve_device(device, *tensors) -> torch.device:
    if device is not None:
        return torch.device(device)
    return tensors[0].device


def _compute_dtype(dtype, features: torch.Tensor) -> torch.dtype:
    if dtype is not None:
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
        return dtype
    return torch.float64 if features.dtype == torch.float64 else torch.float32


def _rows_per_chunk(chunk_size: Optional[int], width: int) -> int:
    if chunk_size is not None:
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        return int(chunk_size)
    return rows_per_chunk(width)


# ---------------------------------------------------------------------------
# Soft assignments and the database index
# ---------------------------------------------------------------------------

def _logits(features: torch.Tensor, mlp: torch.Tensor) -> torch.Tensor:
    """Codeword logits [n, M, K] of features [n, D] (same device and dtype as mlp)."""
    num_books, len_word, _ = mlp.shape
    sub = features.reshape(features.shape[0], num_books, len_word)
    sub = F.normalize(sub, dim=2)  # each sub-vector to unit length (zeros stay zero)
    # batched over books: [M, n, d] @ [M, d, K] -> [M, n, K]
    return torch.bmm(sub.transpose(0, 1), mlp).transpose(0, 1)


def soft_assignments(features, mlp, device=None, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Soft codeword assignments ``p`` [n, M, K] of features [n, D].

    ``p[i, m]`` is the softmax over the K codewords of book m of the normalised
    sub-vector m of feature i.  Computed on ``device`` (default: the features'
    device) in ``dtype`` (default float32, or float64 for float64 features).
    This holds the whole [n, M, K] result; ``pq_score_chunks`` calls it one
    query chunk at a time.
    """
    x = _check_features(features, mlp, "features")
    device = _resolve_device(device, x)
    dtype = _compute_dtype(dtype, x)
    w = _as_tensor(mlp, "mlp").to(device=device, dtype=dtype)
    return torch.softmax(_logits(x.to(device=device, dtype=dtype), w), dim=2)


def quantization_index(features, mlp, chunk_size: Optional[int] = None, device=None,
                       dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Codeword index [N, M] of database features [N, D]: the best codeword per book.

    Index = argmax of the logits of each book (first maximum on exact ties),
    which is the argmax of their softmax.  Stored compactly: uint8 when
    K <= 256, int16 when K <= 32768, int32 beyond.  Rows are processed
    ``chunk_size`` at a time (default: about 4M logits per chunk); the result
    lives on ``device`` (default: the features' device).

    Note: the official code stores the transposed table [M, N] (int64).
    """
    x = _check_features(features, mlp, "features")
    num_books, _, num_words = check_mlp(mlp)
    device = _resolve_device(device, x)
    dtype = _compute_dtype(dtype, x)
    w = _as_tensor(mlp, "mlp").to(device=device, dtype=dtype)
    out = torch.empty(x.shape[0], num_books, dtype=index_dtype(num_words), device=device)
    step = _rows_per_chunk(chunk_size, num_books * num_words)
    for s in range(0, x.shape[0], step):
        chunk = x[s:s + step].to(device=device, dtype=dtype)
        out[s:s + step] = _logits(chunk, w).argmax(dim=2).to(out.dtype)
    return out


def _check_index(db_index, mlp) -> torch.Tensor:
    t = _as_tensor(db_index, "db_index")
    num_books, _, num_words = check_mlp(mlp)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"db_index must hold integer codeword ids, got dtype {t.dtype}")
    if t.ndim != 2 or t.shape[1] != num_books:
        hint = ""
        if t.ndim == 2 and t.shape[0] == num_books:
            hint = " (the official code's table is [M, N]: transpose it)"
        raise ValueError(
            f"db_index must be [N, M={num_books}], got shape {tuple(t.shape)}{hint}")
    if t.numel():
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= num_words:
            raise ValueError(
                f"db_index holds codeword ids in [{lo}, {hi}], outside 0..{num_words - 1} "
                f"for K={num_words} words per book")
    return t


# ---------------------------------------------------------------------------
# Asymmetric search
# ---------------------------------------------------------------------------

def pq_score_chunks(query_features, db_index, mlp, device=None,
                    dtype: Optional[torch.dtype] = None) -> Callable[[int, int], torch.Tensor]:
    """``score_chunks(start, stop) -> [stop - start, N]`` for ``utils.retrieval.metrics``.

    Score of database item n for query q: ``sum_m p_q[m, db_index[n, m]]``
    (higher is more similar).  For a chunk of queries, p [Qc, M, K] is formed
    and, book by book, its columns are picked by the database ids
    (``index_select``) and accumulated into [Qc, N]: O(Qc * N * M) work, no
    [Qc, M, N] intermediate.  Computed on ``device`` (default: the query
    features' device) in ``dtype`` (default float32).
    """
    q = _check_features(query_features, mlp, "query features")
    idx = _check_index(db_index, mlp)
    device = _resolve_device(device, q)
    dtype = _compute_dtype(dtype, q)
    w = _as_tensor(mlp, "mlp").to(device=device, dtype=dtype)
    # one id row per book, contiguous, as the int64 index_select wants
    book_ids = idx.to(device).T.contiguous().long()  # [M, N]
    num_db = book_ids.shape[1]

    def score_chunks(start: int, stop: int) -> torch.Tensor:
        x = q[start:stop].to(device=device, dtype=dtype)
        p = torch.softmax(_logits(x, w), dim=2)  # [Qc, M, K]
        scores = torch.zeros(x.shape[0], num_db, dtype=dtype, device=device)
        for m in range(book_ids.shape[0]):
            scores += p[:, m, :].index_select(1, book_ids[m])
        return scores

    return score_chunks


def pq_scores(query_features, db_index, mlp, chunk_size: Optional[int] = None, device=None,
              dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """The full score matrix [Q, N] (see ``pq_score_chunks``), ``chunk_size`` queries at a time.

    For small problems and inspection; the metrics use the chunked callable
    and never hold the whole matrix.
    """
    score_chunks = pq_score_chunks(query_features, db_index, mlp, device=device, dtype=dtype)
    q = _as_tensor(query_features, "query features")
    n_db = _as_tensor(db_index, "db_index").shape[0]
    step = _rows_per_chunk(chunk_size, n_db)
    parts = [score_chunks(s, min(q.shape[0], s + step)) for s in range(0, q.shape[0], step)]
    if not parts:
        dev = _resolve_device(device, q)
        return torch.zeros(0, n_db, dtype=_compute_dtype(dtype, q), device=dev)
    return torch.cat(parts)


def _index_of(db_features_or_index, mlp, device, dtype) -> torch.Tensor:
    t = _as_tensor(db_features_or_index, "database features or index")
    if t.is_floating_point():
        return quantization_index(t, mlp, device=device, dtype=dtype)
    return _check_index(t, mlp)


def evaluate_pq(query_features, db_features_or_index, query_labels, db_labels, mlp,
                topk=DEFAULT_TOPK, curve_positions=None, map_at=(),
                skip_no_relevant: bool = False, device=None,
                dtype: Optional[torch.dtype] = None) -> dict:
    """Every score-ranking metric of PQ asymmetric search, as ``utils.retrieval.metrics.evaluate_scores``.

    ``db_features_or_index``: raw database features [N, D] (floating point;
    indexed here with ``quantization_index``) or a precomputed index [N, M]
    (any integer dtype).  ``bits`` in the result is M * log2(K).
    """
    q = _check_features(query_features, mlp, "query features")
    index = _index_of(db_features_or_index, mlp, device, dtype)
    n_labels = _as_tensor(db_labels, "database labels").shape[0]
    if n_labels != index.shape[0]:
        raise ValueError(f"{n_labels} database labels for {index.shape[0]} database items")
    score_chunks = pq_score_chunks(q, index, mlp, device=device, dtype=dtype)
    return evaluate_scores(score_chunks, query_labels, db_labels, bits=code_bits(mlp),
                           topk=topk, curve_positions=curve_positions, map_at=map_at,
                           skip_no_relevant=skip_no_relevant, device=device)


# ---------------------------------------------------------------------------
# Serving: a flat search over the asymmetric scores
# ---------------------------------------------------------------------------

def _stable_topk_desc(scores, k: int):
    """Top k of each row, score descending, ties by column ascending.

    ``torch.topk`` picks among equal values arbitrarily, so it is asked for
    k' = 2k, 4k, ... until the k'-th value is below the k-th (every item
    equal to the k-th value is then a candidate); the candidates are sorted
    by column, then stably by score."""
    rows, n = scores.shape
    out_v = torch.empty(rows, k, dtype=scores.dtype, device=scores.device)
    out_i = torch.empty(rows, k, dtype=torch.int64, device=scores.device)
    todo = torch.arange(rows, device=scores.device)
    width = min(n, 2 * k)
    while todo.numel():
        values, cols = torch.topk(scores[todo], width, dim=1, largest=True, sorted=True)
        done = values[:, -1] < values[:, k - 1] if width < n else torch.ones_like(todo, dtype=torch.bool)
        sel = done.nonzero().squeeze(1)
        if sel.numel():
            v, c = values[sel], cols[sel]
            by_col = torch.argsort(c, dim=1)
            v, c = v.gather(1, by_col), c.gather(1, by_col)
            by_score = torch.sort(v, dim=1, descending=True, stable=True).indices[:, :k]
            out_v[todo[sel]] = v.gather(1, by_score)
            out_i[todo[sel]] = c.gather(1, by_score)
        todo = todo[~done]
        width = min(n, 2 * width)
    return out_v, out_i


def pq_search(query_features, db_index, mlp, k: int, device=None, chunk_size: Optional[int] = None):
    """The k best database items of each query by OPQN's asymmetric PQ score.

    ``db_index`` is the [N, M] codeword table of ``utils.retrieval.pq``
    (transpose the official [M, N] one).  Scores come from
    ``pq.pq_score_chunks`` (higher is more similar), ``chunk_size`` queries at
    a time (default: the metrics' memory budget); the order is the one
    ``metrics.score_ranking_stats`` ranks by: score descending, ties by
    database index ascending.  Returns (scores [Q, k'], indices int64 [Q, k'])
    on the CPU, k' = min(k, N).
    """

    k = int(k)
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    score_chunks = pq_score_chunks(query_features, db_index, mlp, device=device)
    num_queries = _as_tensor(query_features, "query features").shape[0]
    n = _as_tensor(db_index, "db_index").shape[0]
    kk = min(k, n)
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    step = chunk_size or rows_per_chunk(n)
    values, indices = [], []
    for s in range(0, num_queries, step):
        scores = score_chunks(s, min(num_queries, s + step))
        if kk == 0:
            v = scores[:, :0]
            i = torch.zeros(scores.shape[0], 0, dtype=torch.int64)
        else:
            v, i = _stable_topk_desc(scores, kk)
        values.append(v.cpu())
        indices.append(i.cpu())
    if not values:
        return torch.zeros(0, kk), torch.zeros(0, kk, dtype=torch.int64)
    return torch.cat(values), torch.cat(indices)
