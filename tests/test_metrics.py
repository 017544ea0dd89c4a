"""utils.retrieval.metrics against the values the official implementations compute
(tests/fixtures/metrics, see its README), on both back ends."""

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from utils.retrieval import metrics
from utils.retrieval.metrics import (evaluate_codes, evaluate_scores, hamming_distance,
                           hamming_ranking_stats, tie_aware_ap, to_bits)

FIXTURES = Path(__file__).parent / "fixtures" / "metrics"
SINGLE_LABEL = sorted(p.name for p in FIXTURES.glob("*.npz") if p.name != "multilabel_32bit.npz")
BACKENDS = ["numba", "torch"]
ATOL = 1e-6


def load(name):
    return dict(np.load(FIXTURES / name))


def close(a, b):
    return np.allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64),
                       rtol=0, atol=ATOL, equal_nan=True)


def run(z, backend, **kw):
    return evaluate_codes(z["query_codes"], z["db_codes"], z["query_labels"], z["db_labels"],
                          topk=list(z["topk_list"]), curve_positions=list(z["curve_positions"]),
                          map_at=list(z["deephash_topk"]), backend=backend, **kw)


def test_fixture_set_is_complete():
    assert len(SINGLE_LABEL) == 8


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", SINGLE_LABEL)
def test_single_label_fixture(name, backend):
    z = load(name)
    r = run(z, backend)
    stats = hamming_ranking_stats(z["query_codes"], z["db_codes"], z["query_labels"],
                                  z["db_labels"], positions=list(z["topk_list"]), backend=backend)
    orphans = np.asarray(stats.num_relevant) == 0
    # per-query AP: official NaN for queries without relevant items, ours 0
    assert close(np.where(orphans, np.nan, np.asarray(stats.ap)), z["ap_per_query"])
    assert close(np.asarray(stats.ap)[orphans], 0.0)
    assert close(list(r["precision_at_k"].values()), z["topk_precision"])
    per_query_topk = np.asarray(stats.hits_at) / z["topk_list"][None, :]
    assert close(per_query_topk, z["topk_precision_per_query"])
    assert close(r["precision_within_radius"], z["precision_radius2"])
    assert close(r["recall_within_radius"], z["recall_radius2"])
    assert r["curve"]["positions"] == list(z["curve_positions"])
    assert close(r["curve"]["precision"], z["curve_precision"])
    assert close(list(r["map_at_k"].values()), z["deephash_map"])
    assert r["num_queries"] == len(z["query_codes"]) and r["num_database"] == len(z["db_codes"])
    assert r["bits"] == z["db_codes"].shape[1]
    if orphans.any():
        # The one documented difference: official mAP and curve recall are NaN.
        assert math.isnan(float(z["mAP"]))
        assert r["queries_without_relevant"] == int(orphans.sum()) == 3
        # ours counts the orphans with AP 0 (DeepHash's convention) ...
        assert close(r["mAP"], z["deephash_map"][1])
        # ... or leaves them out: the fixture README's mean over the other queries
        skipped = run(z, backend, skip_no_relevant=True)
        assert close(skipped["mAP"], np.nanmean(z["ap_per_query"]))
        assert abs(skipped["mAP"] - 0.6599) < 5e-5
    else:
        assert close(r["mAP"], z["mAP"])
        assert close(r["curve"]["recall"], z["curve_recall"])
        assert r["queries_without_relevant"] == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_radius_per_query(backend):
    z = load("radius_empty_48bit.npz")
    stats = hamming_ranking_stats(z["query_codes"], z["db_codes"], z["query_labels"],
                                  z["db_labels"], backend=backend)
    within = stats.hist_all[:, :3].sum(1).astype(np.float64)
    within_rel = stats.hist_rel[:, :3].sum(1).astype(np.float64)
    precision = np.where(within > 0, within_rel / np.maximum(within, 1), 0.0)
    recall = within_rel / stats.num_relevant
    assert close(precision, z["precision_radius2_per_query"])
    assert close(recall, z["recall_radius2_per_query"])
    assert int((within == 0).sum()) == 32  # README: 32 queries retrieve nothing


@pytest.mark.parametrize("backend", BACKENDS)
def test_multilabel_fixture(backend):
    z = load("multilabel_32bit.npz")
    args = (z["query_codes"], z["db_codes"], z["query_labels"], z["db_labels"])
    r = evaluate_codes(*args, map_at=list(z["deephash_topk"]), backend=backend)
    assert close(list(r["map_at_k"].values()), z["deephash_map"])
    assert r["queries_without_relevant"] == 3
    # DCHN skips queries without relevant items
    dchn = evaluate_codes(*args, skip_no_relevant=True, backend=backend)
    assert close(dchn["mAP"], z["dchn_map"])


def test_backends_agree_on_random_ties():
    gen = torch.Generator().manual_seed(3)
    q = torch.randint(0, 2, (37, 10), generator=gen) * 2 - 1
    d = torch.randint(0, 2, (301, 10), generator=gen) * 2 - 1
    ql, dl = torch.randint(0, 6, (37,), generator=gen), torch.randint(0, 6, (301,), generator=gen)
    kw = dict(topk=(1, 3, 7, 500), curve_positions=[2, 9, 301], map_at=(4, 50, 400))
    a = evaluate_codes(q, d, ql, dl, backend="numba", **kw)
    b = evaluate_codes(q, d, ql, dl, backend="torch", **kw)
    assert a.keys() == b.keys()
    for key in a:
        assert np.allclose(np.asarray(_flat(a[key])), np.asarray(_flat(b[key])), atol=1e-12), key


def _flat(v):
    if isinstance(v, dict):
        return [x for k in sorted(v) for x in _flat(v[k])]
    if isinstance(v, (list, tuple)):
        return [float(x) for x in v]
    return [float(v)] if v is not None else [0.0]


# --- tie-aware AP -----------------------------------------------------------

def brute_force_expected_ap(keys, rel):
    """Mean AP over every ordering that keeps keys ascending (ties permuted)."""
    keys, rel = np.asarray(keys), np.asarray(rel, dtype=bool)
    groups = [np.flatnonzero(keys == k) for k in np.unique(keys)]
    aps = []
    for perms in itertools.product(*(itertools.permutations(g) for g in groups)):
        order = np.concatenate(perms)
        r = rel[order]
        found = np.cumsum(r)
        aps.append(float((found / np.arange(1, len(r) + 1))[r].sum() / r.sum()))
    return float(np.mean(aps))


@pytest.mark.parametrize("seed", range(6))
def test_tie_aware_ap_matches_permutations(seed):
    rng = np.random.default_rng(seed)
    n_db, bits = 8, 3
    q = rng.integers(0, 2, (3, bits))
    d = rng.integers(0, 2, (n_db, bits))
    ql = rng.integers(0, 2, 3)
    dl = rng.integers(0, 2, n_db)
    dl[0], dl[1] = 0, 1  # every query has a relevant item
    dist = hamming_distance(q, d).numpy()
    expected = [brute_force_expected_ap(dist[i], dl == ql[i]) for i in range(3)]
    for backend in BACKENDS:
        st = hamming_ranking_stats(q, d, ql, dl, backend=backend)
        assert np.allclose(np.asarray(st.ap_tie_aware), expected, atol=1e-12)
    # the score path groups equal scores the same way
    r = evaluate_scores(-torch.as_tensor(dist, dtype=torch.float64), ql, dl)
    assert abs(r["mAP_tie_aware"] - np.mean(expected)) < 1e-12


def test_tie_aware_equals_ap_without_ties():
    hist_all = torch.tensor([[1, 1, 1, 1, 0]])
    hist_rel = torch.tensor([[1, 0, 1, 0, 0]])
    assert np.allclose(tie_aware_ap(hist_all, hist_rel), [(1 + 2 / 3) / 2], rtol=0, atol=1e-15)


def test_tie_aware_on_one_big_tie_is_prevalence():
    # all items tied: expected AP = E[precision] (for R relevant of n) has a closed form;
    # with 1 relevant among n it is mean(1/i) = H(n)/n
    n = 50
    st = tie_aware_ap(torch.tensor([[n]]), torch.tensor([[1]]))
    assert abs(float(st[0]) - sum(1 / i for i in range(1, n + 1)) / n) < 1e-12


# --- the score path ---------------------------------------------------------

@pytest.mark.parametrize("name", ["ties_12bit_pool.npz", "moderate_48bit_c530.npz"])
def test_score_path_equals_hamming_path(name):
    z = load(name)
    dist = hamming_distance(z["query_codes"], z["db_codes"]).double()
    kw = dict(topk=list(z["topk_list"]), curve_positions=list(z["curve_positions"]),
              map_at=list(z["deephash_topk"]))
    by_score = evaluate_scores(-dist, z["query_labels"], z["db_labels"], **kw)
    by_code = evaluate_codes(z["query_codes"], z["db_codes"], z["query_labels"], z["db_labels"],
                             **kw)
    assert close(by_score["mAP"], z["mAP"])
    for key in ("mAP", "mAP_tie_aware", "precision_at_k", "map_at_k", "curve"):
        assert np.allclose(_flat(by_score[key]), _flat(by_code[key]), atol=1e-12), key
    assert "precision_within_radius" not in by_score


def test_score_chunks_callable_matches_matrix():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(30, 200, generator=gen).round(decimals=1)  # plenty of ties
    ql, dl = torch.randint(0, 5, (30,), generator=gen), torch.randint(0, 5, (200,), generator=gen)
    whole = evaluate_scores(scores, ql, dl)
    calls = []

    def chunks(s, e):
        calls.append((s, e))
        return scores[s:e]

    stats = metrics.score_ranking_stats(chunks, 30, ql, dl, positions=[1, 5, 10, 200],
                                        chunk_size=7)
    assert calls[0] == (0, 7) and calls[-1] == (28, 30)
    assert abs(float(stats.ap.mean()) - whole["mAP"]) < 1e-12


# --- inputs -----------------------------------------------------------------

def test_code_formats_are_equivalent():
    z = load("tiny_12bit.npz")
    ref = evaluate_codes(z["query_codes"], z["db_codes"], z["query_labels"], z["db_labels"])
    zero_one = evaluate_codes((z["query_codes"] > 0).astype(np.uint8), (z["db_codes"] > 0),
                              torch.as_tensor(z["query_labels"])[:, None], z["db_labels"])
    assert zero_one["mAP"] == ref["mAP"]
    packed_q = np.packbits(z["query_codes"] > 0, axis=1)
    assert np.array_equal(to_bits(packed_q, num_bits=12), z["query_codes"] > 0)
    floats = evaluate_codes(torch.as_tensor(z["query_codes"]).float(),
                            torch.as_tensor(z["db_codes"]).double(), z["query_labels"],
                            z["db_labels"], backend="torch")
    assert floats["mAP"] == pytest.approx(ref["mAP"], abs=1e-12)


def test_hamming_distance_values():
    q = np.array([[1, -1, 1, 1], [-1, -1, -1, -1]])
    d = np.array([[1, -1, 1, 1], [1, 1, 1, 1], [-1, 1, -1, -1]])
    assert hamming_distance(q, d).tolist() == [[0, 1, 4], [3, 4, 1]]


@pytest.mark.parametrize("codes, message", [
    (np.array([[0.5, 1.0]]), "query codes must hold only -1/+1 or 0/1 values, found non-integer values"),
    (np.array([[2, 1]]), "query codes must hold only -1/+1 or 0/1 values, found [1, 2]"),
    (np.array([1, -1]), "query codes must be a 2-D array [n, bits], got shape (2,)"),
])
def test_bad_codes(codes, message):
    with pytest.raises(ValueError) as err:
        evaluate_codes(codes, np.ones((3, 2)), [0] * len(codes), [0, 1, 0])
    assert str(err.value) == message


def test_mismatched_shapes():
    q, d = np.ones((2, 8)), np.ones((3, 12))
    with pytest.raises(ValueError, match="query codes have 8 bits but database codes have 12"):
        evaluate_codes(q, d, [0, 1], [0, 1, 2])
    with pytest.raises(ValueError, match="3 query labels for 2 query codes"):
        evaluate_codes(q, np.ones((3, 8)), [0, 1, 2], [0, 1, 2])


def test_topk_beyond_database_divides_by_k():
    z = load("tiny_12bit.npz")  # README: k = 50, 100 > N = 40
    r = run(z, "numba")
    assert close([r["precision_at_k"]["50"], r["precision_at_k"]["100"]], z["topk_precision"][3:])


def test_the_numba_kernel_keeps_torchs_thread_count():
    """numba's OpenMP layer sets the shared runtime's thread count when its
    kernel starts; torch's count (--threads, a test's one thread) is restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        codes = np.where(np.random.default_rng(0).random((40, 16)) > 0.5, 1, -1)
        labels = np.arange(40) % 4
        evaluate_codes(codes[:8], codes, labels[:8], labels, backend="numba")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
