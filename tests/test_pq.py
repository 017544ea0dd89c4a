"""utils.retrieval.pq (OPQN indexing and asymmetric search) against the values of the
official compute_quant_indexing / PqDistRet_Ortho (tests/fixtures/opqn, see
its README)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from utils.retrieval.metrics import score_ranking_stats
from utils.retrieval.pq import (check_mlp, code_bits, evaluate_pq, index_dtype, pq_score_chunks,
                      pq_scores, quantization_index, soft_assignments)

FIXTURES = Path(__file__).parent / "fixtures" / "opqn"
PQRET = sorted(p.stem for p in FIXTURES.glob("pqret_*.npz"))
ATOL = 1e-6


def load(name):
    return dict(np.load(FIXTURES / f"{name}.npz"))


def close(a, b, atol=ATOL):
    return np.allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64),
                       rtol=0, atol=atol)


def stats_of(z, index, dtype=None, chunk_size=None):
    chunks = pq_score_chunks(z["query_features"], index, z["mlp"], dtype=dtype)
    return score_ranking_stats(chunks, len(z["query_labels"]), z["query_labels"], z["db_labels"],
                               positions=list(z["tops"]), chunk_size=chunk_size)


def test_fixture_set_is_complete():
    assert PQRET == ["pqret_D2048_M8_K256", "pqret_D512_M4_K64", "pqret_D512_M4_K64_ties",
                     "pqret_D516_M6_K64"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", PQRET)
def test_pqret_fixture(name, dtype):
    z = load(name)
    num_books, len_word, num_words = check_mlp(z["mlp"], int(z["feature_dim"]))
    assert (num_books, len_word, num_words) == (z["num_books"], z["len_word"], z["num_words"])

    index = quantization_index(z["db_features"], z["mlp"], dtype=dtype)
    assert index.dtype == torch.uint8 and index.shape == (len(z["db_labels"]), num_books)
    np.testing.assert_array_equal(index.long().numpy(), z["db_index"].T)

    stats = stats_of(z, index, dtype=dtype)
    assert close(np.asarray(stats.ap), z["ap_per_query"])
    assert close(np.asarray(stats.hits_at) / z["tops"][None, :], z["topk_precision_per_query"])

    tops = [int(k) for k in z["tops"]]
    result = evaluate_pq(z["query_features"], z["db_features"], z["query_labels"],
                         z["db_labels"], z["mlp"], topk=tops, dtype=dtype)
    assert close(result["mAP"], z["mAP"])
    assert close([result["precision_at_k"][str(k)] for k in tops], z["topk_precision"])
    assert result["bits"] == num_books * int(np.log2(num_words))
    assert result["num_queries"] == len(z["query_labels"])
    assert result["num_database"] == len(z["db_labels"])


@pytest.mark.parametrize("name", ["pqret_D512_M4_K64", "pqret_D2048_M8_K256"])
def test_precomputed_index_and_numpy_or_torch_inputs(name):
    z = load(name)
    tops = [int(k) for k in z["tops"]]
    from_features = evaluate_pq(torch.from_numpy(z["query_features"]),
                                torch.from_numpy(z["db_features"]), z["query_labels"],
                                z["db_labels"], torch.from_numpy(z["mlp"]), topk=tops)
    for index in (z["db_index"].T, z["db_index"].T.astype(np.int32),
                  torch.from_numpy(z["db_index"].T.astype(np.uint8))):
        from_index = evaluate_pq(z["query_features"], index, z["query_labels"], z["db_labels"],
                                 z["mlp"], topk=tops)
        assert from_index == from_features
    assert close(from_features["mAP"], z["mAP"])


def test_ties_fixture_follows_database_index_order():
    z = load("pqret_D512_M4_K64_ties")
    meta = json.loads(str(z["meta_json"]))
    index = quantization_index(z["db_features"], z["mlp"])
    # many database items share an index row with an earlier item ...
    _, first = np.unique(index.numpy(), axis=0, return_index=True)
    assert len(index) - len(first) == meta["n_db_items_sharing_an_index_row_with_an_earlier_item"]
    # ... and such items get bit-identical scores for every query
    scores = pq_scores(z["query_features"], index, z["mlp"])
    rows = index.numpy()
    dup = [(n, int(np.flatnonzero((rows[:n] == rows[n]).all(1))[0]))
           for n in range(len(rows)) if (rows[:n] == rows[n]).all(1).any()]
    assert len(dup) == meta["n_db_items_sharing_an_index_row_with_an_earlier_item"]
    later, earlier = map(list, zip(*dup))
    assert torch.equal(scores[:, later], scores[:, earlier])

    stats = stats_of(z, index)
    assert close(np.asarray(stats.ap), z["ap_per_query"])
    assert close(np.asarray(stats.hits_at) / z["tops"][None, :], z["topk_precision_per_query"])
    # the reverse tie rule (later database items first) gives other values
    n_db = len(z["db_labels"])
    flipped = score_ranking_stats(lambda s, e: scores[s:e].flip(1), len(z["query_labels"]),
                                  z["query_labels"], z["db_labels"][::-1].copy())
    changed = ~np.isclose(np.asarray(flipped.ap), z["ap_per_query"], rtol=0, atol=ATOL)
    assert changed.sum() == meta["n_queries_whose_AP_changes_if_ties_broken_by_descending_index"]
    assert close(flipped.ap.mean(), meta["mAP_if_ties_broken_by_descending_index"])
    assert not close(flipped.ap.mean(), z["mAP"])
    assert n_db == scores.shape[1]


@pytest.mark.parametrize("name", ["pqret_D516_M6_K64", "pqret_D512_M4_K64_ties"])
def test_chunking_does_not_change_results(name):
    z = load(name)
    whole = quantization_index(z["db_features"], z["mlp"])
    for chunk in (1, 7, 10_000):
        assert torch.equal(quantization_index(z["db_features"], z["mlp"], chunk_size=chunk), whole)

    full = pq_scores(z["query_features"], whole, z["mlp"], chunk_size=10_000)
    for chunk in (1, 7):
        # a one-row chunk goes through a matrix-vector kernel, a large one through
        # a matrix product: the softmax's float32 sums differ in the last bit
        assert torch.allclose(pq_scores(z["query_features"], whole, z["mlp"], chunk_size=chunk),
                              full, rtol=0, atol=2e-6)
    reference = stats_of(z, whole)
    for chunk in (1, 7):
        other = stats_of(z, whole, chunk_size=chunk)
        assert np.array_equal(other.ap, reference.ap)
        assert np.array_equal(other.hits_at, reference.hits_at)
    assert close(np.asarray(reference.ap), z["ap_per_query"])


def test_soft_assignments_match_a_plain_reading():
    z = load("pqret_D516_M6_K64")
    x = torch.from_numpy(z["query_features"][:5]).double()
    mlp = torch.from_numpy(z["mlp"]).double()
    p = soft_assignments(x, mlp)
    num_books, len_word, num_words = mlp.shape
    assert p.shape == (5, num_books, num_words) and p.dtype == torch.float64
    for m in range(num_books):
        sub = x[:, m * len_word:(m + 1) * len_word]
        sub = sub / sub.norm(dim=1, keepdim=True)
        assert torch.allclose(p[:, m], torch.softmax(sub @ mlp[m], dim=1), rtol=0, atol=1e-12)
    assert torch.allclose(p.sum(2), torch.ones(5, num_books, dtype=torch.float64))
    assert soft_assignments(x.float(), mlp).dtype == torch.float32
    # score = sum over books of the query's probability of the item's codeword
    index = quantization_index(z["db_features"], z["mlp"])
    scores = pq_scores(x, index, mlp)
    expected = sum(p[:, m, index[:, m].long()] for m in range(num_books))
    assert torch.allclose(scores, expected, rtol=0, atol=1e-12)


def test_index_storage_dtype():
    assert index_dtype(64) == torch.uint8 and index_dtype(256) == torch.uint8
    assert index_dtype(257) == torch.int16 and index_dtype(512) == torch.int16
    assert index_dtype(40000) == torch.int32
    gen = torch.Generator().manual_seed(0)
    mlp = torch.randn(2, 8, 512, generator=gen)
    feats = torch.randn(40, 16, generator=gen)
    index = quantization_index(feats, mlp, chunk_size=9)
    assert index.dtype == torch.int16 and index.shape == (40, 2)
    logits = torch.einsum("nmd,mdk->nmk", torch.nn.functional.normalize(
        feats.double().view(40, 2, 8), dim=2), mlp.double())
    assert torch.equal(index.long(), logits.argmax(2))
    assert index.max() > 255  # ids beyond uint8 survive
    assert code_bits(mlp) == 18 and code_bits(torch.zeros(3, 4, 300)) == pytest.approx(3 * np.log2(300))
    result = evaluate_pq(feats[:10], index, torch.arange(10) % 3, torch.arange(40) % 3, mlp)
    # the stored int16 index ranks exactly as indexing the raw features does
    from_features = evaluate_pq(feats[:10], feats, torch.arange(10) % 3, torch.arange(40) % 3, mlp)
    assert result["bits"] == 18 and result["mAP"] == from_features["mAP"]
    assert result["precision_at_k"] == from_features["precision_at_k"]


def test_exact_logit_ties_take_the_first_codeword():
    mlp = torch.zeros(2, 4, 6)
    mlp[:, 0, 2] = 1.0
    mlp[:, 0, 4] = 1.0  # codewords 2 and 4 tie for a feature along axis 0
    feats = torch.zeros(3, 8)
    feats[:, 0] = feats[:, 4] = 2.5
    assert quantization_index(feats, mlp).tolist() == [[2, 2]] * 3
    # an all-zero mlp ties every codeword: the first one wins
    assert quantization_index(feats, torch.zeros(2, 4, 6)).tolist() == [[0, 0]] * 3


def test_wrong_shapes_raise_clear_errors():
    mlp = torch.zeros(4, 128, 64)
    with pytest.raises(ValueError, match="3-D tensor"):
        quantization_index(torch.zeros(3, 512), torch.zeros(128, 64))
    with pytest.raises(ValueError, match="not divisible by the number of books M=4"):
        quantization_index(torch.zeros(3, 510), mlp)
    with pytest.raises(ValueError, match=r"expected M \* d = 4 \* 128 = 512"):
        soft_assignments(torch.zeros(3, 516), mlp)
    with pytest.raises(ValueError, match=r"2-D tensor \[n, D\]"):
        quantization_index(torch.zeros(512), mlp)
    with pytest.raises(ValueError, match="transpose"):
        pq_score_chunks(torch.zeros(3, 512), torch.zeros(4, 10, dtype=torch.long), mlp)
    with pytest.raises(ValueError, match="outside 0..63"):
        pq_score_chunks(torch.zeros(3, 512), torch.full((10, 4), 64), mlp)
    with pytest.raises(ValueError, match="database labels"):
        evaluate_pq(torch.zeros(3, 512), torch.zeros(10, 4, dtype=torch.uint8),
                    [0, 1, 2], list(range(9)), mlp)
