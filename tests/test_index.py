"""Serving stored codes: packed bits in the stored-codes file, faiss binary
indexes that return the project's ranking (utils.retrieval.faiss_index),
pq_search for OPQN, the index.py script and bench/index_speed.py.

Every reference ranking is computed independently of faiss: the metrics
module's hamming_distance and a stable argsort (distance ascending, ties by
database index), or for PQ the stable sort of pq_scores."""

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import index as index_script
from script_runner import run
from utils.errors import UsageError
from utils.retrieval import faiss_index as fi
from utils.retrieval import serving
from utils.retrieval.codes_io import load_npz, packed_codes, save_codes
from utils.retrieval.metrics import hamming_distance, score_ranking_stats, to_bits
from utils.retrieval.pq import pq_score_chunks, pq_scores, pq_search

needs_faiss = pytest.mark.skipif(importlib.util.find_spec("faiss") is None,
                                 reason="faiss is not installed (pip install faiss-cpu)")
FIXTURES = Path(__file__).parent / "fixtures" / "opqn"
INSTALL_HINT = "error: faiss is not installed: pip install faiss-cpu (or faiss-gpu)\n"


def tie_codes(num_bits=12, n=3000, nq=40, pool=8, flip=0.05, seed=0):
    """±1 codes drawn from a small pool with few flips: many exact ties."""
    rng = np.random.default_rng(seed)
    protos = rng.random((pool, num_bits)) < 0.5
    db = protos[rng.integers(0, pool, n)] ^ (rng.random((n, num_bits)) < flip)
    q = protos[rng.integers(0, pool, nq)] ^ (rng.random((nq, num_bits)) < 3 * flip)
    return np.where(db, 1, -1).astype(np.int8), np.where(q, 1, -1).astype(np.int8)


def packed(codes):
    return np.packbits(codes > 0, axis=1)


def reference(q_codes, db_codes):
    """(distances, order) [Q, N] of the project's ranking."""
    dist = hamming_distance(q_codes, db_codes).numpy()
    order = np.argsort(dist, axis=1, kind="stable")
    return np.take_along_axis(dist, order, 1), order


# ---------------------------------------------------------------------------
# Stored codes: packed bits
# ---------------------------------------------------------------------------

def test_packed_codes_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    db = rng.integers(0, 2, (37, 13)) * 2 - 1
    q = torch.from_numpy(rng.integers(0, 2, (5, 13)) * 2 - 1)  # tensors are taken too
    paths = [f"faces/id{i % 4}/{i}.jpg" for i in range(37)]
    save_codes(tmp_path / "c.npz", db, q, np.arange(37) % 4, np.arange(5) % 4,
               db_paths=paths, db_indices=np.arange(37) + 100)
    with np.load(tmp_path / "c.npz", allow_pickle=False) as z:  # no pickled arrays
        assert z["db_packed"].dtype == np.uint8 and z["db_packed"].shape == (37, 2)
        assert z["query_packed"].shape == (5, 2) and int(z["num_bits"]) == 13
        assert np.array_equal(np.unpackbits(z["db_packed"], axis=1, count=13), db > 0)
        assert np.array_equal(np.unpackbits(z["query_packed"], axis=1, count=13), q.numpy() > 0)
        assert not np.unpackbits(z["db_packed"], axis=1)[:, 13:].any()  # padding bits are 0
        assert z["db_paths"].dtype.kind == "U" and z["db_paths"].tolist() == paths
        assert z["db_indices"].dtype == np.int64 and z["db_indices"].tolist() == list(range(100, 137))
        assert z["db_codes"].dtype == np.int8 and np.array_equal(z["db_codes"], db)
    z = load_npz(tmp_path / "c.npz")
    p, num_bits = packed_codes(z, "db")
    assert num_bits == 13 and np.array_equal(p, z["db_packed"])
    # the metrics module reads packed codes as the same bits
    assert np.array_equal(to_bits(p, num_bits=13), to_bits(db))


def test_old_files_still_load_and_pack_on_the_fly(tmp_path):
    rng = np.random.default_rng(2)
    db = (rng.integers(0, 2, (20, 10)) * 2 - 1).astype(np.int8)
    q = rng.integers(0, 2, (3, 10)).astype(np.int8)  # 0/1 codes
    np.savez(tmp_path / "old.npz", db_codes=db, query_codes=q, db_labels=np.zeros(20, int),
             query_labels=np.zeros(3, int))
    z = load_npz(tmp_path / "old.npz")
    assert "db_packed" not in z
    p, num_bits = packed_codes(z, "db")
    assert num_bits == 10 and p.shape == (20, 2)
    assert np.array_equal(np.unpackbits(p, axis=1, count=10), db > 0)
    pq_, _ = packed_codes(z, "query")
    assert np.array_equal(np.unpackbits(pq_, axis=1, count=10), q > 0)
    # written afresh: dataset indices default to the row numbers, no paths
    save_codes(tmp_path / "new.npz", db, q, np.zeros(20, int), np.zeros(3, int))
    new = load_npz(tmp_path / "new.npz")
    assert new["db_indices"].tolist() == list(range(20)) and "db_paths" not in new
    with pytest.raises(ValueError, match="3 db_paths for 20 database codes"):
        save_codes(tmp_path / "bad.npz", db, q, np.zeros(20, int), np.zeros(3, int),
                   db_paths=["a", "b", "c"])
    with pytest.raises(ValueError, match="-1/\\+1 or 0/1"):
        packed_codes({"db_codes": np.full((2, 8), 3)}, "db")


# ---------------------------------------------------------------------------
# faiss indexes and the project's ranking
# ---------------------------------------------------------------------------

@needs_faiss
@pytest.mark.parametrize("k", [1, 7, 100, 2999, 3000, 3005])
def test_flat_topk_equals_the_metrics_ranking_with_ties(k):
    db, q = tie_codes()
    ref_d, ref_i = reference(q, db)
    assert (ref_d[:, :-1] == ref_d[:, 1:]).mean() > 0.9  # ties everywhere
    index = fi.build_binary_index(packed(db), 12, "flat")
    d, i = fi.search_exact(index, packed(q), k)
    kk = min(k, 3000)
    assert d.shape == i.shape == (40, k) and i.dtype == np.int64
    assert np.array_equal(i[:, :kk], ref_i[:, :kk]) and np.array_equal(d[:, :kk], ref_d[:, :kk])
    assert (i[:, kk:] == -1).all() and (d[:, kk:] == fi.MISSING_DISTANCE).all()
    # faiss's own answer holds the same distances (its tie order is its own business)
    raw_d, _ = fi.search(index, packed(q), min(k, 3000))
    assert np.array_equal(raw_d, ref_d[:, :kk])


class WorstTies:
    """An index that breaks ties against the project: highest index first."""

    def __init__(self, db_codes):
        self.db, self.ntotal, self.d = db_codes, len(db_codes), 8 * fi.code_size(db_codes.shape[1])
        self.widths = []

    def search(self, q_packed, k):
        self.widths.append(k)
        q = np.where(np.unpackbits(q_packed, axis=1, count=self.db.shape[1]), 1, -1)
        dist = hamming_distance(q, self.db).numpy()
        order = np.lexsort((-np.arange(self.ntotal)[None].repeat(len(q), 0), dist), axis=-1)
        return np.take_along_axis(dist, order, 1)[:, :k], order[:, :k]


@needs_faiss
def test_search_exact_fixes_any_tie_order():
    db, q = tie_codes(n=3000, nq=10, pool=2)  # hundreds of items tie at every distance
    ref_d, ref_i = reference(q, db)
    fake = WorstTies(db)
    d, i = fi.search_exact(fake, packed(q), 5)
    assert np.array_equal(i, ref_i[:, :5]) and np.array_equal(d, ref_d[:, :5])
    # widened until the ties at the 5th distance were covered
    assert fake.widths[:2] == [fi.first_width(5), fi.WIDEN * fi.first_width(5)]
    assert not np.array_equal(fake.search(packed(q), 5)[1], ref_i[:, :5])


@needs_faiss
def test_sharded_index_gives_the_project_order():
    """Serving many codes: contiguous shards, ids = shard offset + row."""
    import faiss

    db, q = tie_codes()
    ref_d, ref_i = reference(q, db)
    shards = faiss.IndexBinaryShards(16, True, True)  # threaded, successive ids
    parts = [fi.build_binary_index(packed(db[s:s + 1000]), 12) for s in range(0, 3000, 1000)]
    for part in parts:
        shards.add_shard(part)
    d, i = fi.search_exact(shards, packed(q), 30)
    assert shards.ntotal == 3000
    assert np.array_equal(i, ref_i[:, :30]) and np.array_equal(d, ref_d[:, :30])


@needs_faiss
@pytest.mark.parametrize("radius", [0, 1, 3, 12])
def test_range_search_radius_is_inclusive(radius):
    db, q = tie_codes()
    dist = hamming_distance(q, db).numpy()
    for index in (fi.build_binary_index(packed(db), 12, "flat"),
                  fi.build_binary_index(packed(db), 12, "ivf", nlist=20, nprobe=20)):
        got_d, got_i = fi.range_search(index, packed(q), radius)
        for row in range(len(q)):
            want = np.flatnonzero(dist[row] <= radius)  # within r, inclusive
            want = want[np.argsort(dist[row, want], kind="stable")]
            assert np.array_equal(got_i[row], want)
            assert np.array_equal(got_d[row], dist[row, want])
    assert sum(len(x) for x in got_i) > 0


@needs_faiss
def test_ivf_with_every_list_probed_equals_exact():
    db, q = tie_codes()
    ref_d, ref_i = reference(q, db)
    index = fi.build_binary_index(packed(db), 12, "ivf")
    assert index.nlist == fi.default_nlist(3000) == 55 and index.nprobe == 4
    fi.set_search_params(index, nprobe=index.nlist)
    d, i = fi.search_exact(index, packed(q), 50)
    assert np.array_equal(i, ref_i[:, :50]) and np.array_equal(d, ref_d[:, :50])
    # fewer lists: valid answers, true distances, project order among them
    fi.set_search_params(index, nprobe=1)
    d, i = fi.search_exact(index, packed(q), 50)
    check_valid(d, i, q, db)


def check_valid(d, i, q, db):
    dist = hamming_distance(q, db).numpy()
    found = i >= 0
    assert found.any() and (i < len(db)).all()
    rows = np.nonzero(found)[0]
    assert np.array_equal(d[found], dist[rows, i[found]])  # the true distances
    for row in range(len(q)):
        got_d, got_i = d[row][found[row]], i[row][found[row]]
        assert np.array_equal(np.lexsort((got_i, got_d)), np.arange(len(got_i)))
        assert len(set(got_i.tolist())) == len(got_i)


@needs_faiss
def test_hash_index_finds_everything_within_its_pigeonhole_distance():
    db, q = tie_codes(num_bits=48, n=4000, nq=30, pool=20, flip=0.04, seed=3)
    assert fi.hash_layout(48) == (3, 16) and fi.hash_layout(12) == (1, 8)
    assert fi.hash_layout(36) == (2, 16) and fi.hash_layout(64, 8) == (8, 8)
    index = fi.build_binary_index(packed(db), 48, "hash")
    assert type(index).__name__ == "IndexBinaryMultiHash" and index.nflip == 1
    d, i = fi.search_exact(index, packed(q), 20)
    check_valid(d, i, q, db)
    # 3 substrings, 1 flip each: every item within distance 3 * 2 - 1 = 5 is found
    dist = hamming_distance(q, db).numpy()
    got_d, got_i = fi.range_search(index, packed(q), 5)
    for row in range(len(q)):
        want = np.flatnonzero(dist[row] <= 5)
        assert np.array_equal(got_i[row], want[np.argsort(dist[row, want], kind="stable")])
    assert sum(len(x) for x in got_i) > 100
    with pytest.raises(ValueError, match="at least 8 bits"):
        fi.build_binary_index(np.zeros((3, 1), np.uint8), 6, "hash")


@needs_faiss
@pytest.mark.parametrize("kind", fi.KINDS)
def test_save_and_load_keep_results_and_parameters(tmp_path, kind):
    db, q = tie_codes(num_bits=24, n=1000, nq=10, pool=12, seed=4)
    index = fi.build_binary_index(packed(db), 24, kind, nprobe=3 if kind == "ivf" else None,
                                  nflip=2)
    before = fi.search_exact(index, packed(q), 8)
    fi.save_index(index, tmp_path / "x.faiss")
    assert [p.name for p in tmp_path.iterdir()] == ["x.faiss"]  # no temporary left behind
    loaded = fi.load_index(tmp_path / "x.faiss")
    assert fi.index_kind(loaded) == kind and loaded.ntotal == 1000
    after = fi.search_exact(loaded, packed(q), 8)
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    if kind == "ivf":
        assert loaded.nprobe == 3
    if kind == "hash":
        assert loaded.nflip == 2


@needs_faiss
def test_bad_files_and_arguments():
    with pytest.raises(UsageError, match="no such file"):
        fi.load_index("/nonexistent/x.faiss")
    with pytest.raises(ValueError, match=r"uint8 \[n, 2\]"):
        fi.build_binary_index(np.zeros((3, 3), np.uint8), 12)
    with pytest.raises(ValueError, match="unknown index kind 'hnsw'"):
        fi.build_binary_index(np.zeros((3, 2), np.uint8), 12, "hnsw")
    with pytest.raises(ValueError, match="nlist must be between 1 and the 3 database items"):
        fi.build_binary_index(np.zeros((3, 2), np.uint8), 12, "ivf", nlist=4)
    flat = fi.build_binary_index(np.zeros((3, 2), np.uint8), 12)
    with pytest.raises(ValueError, match="nprobe applies to ivf indexes, not to a flat index"):
        fi.set_search_params(flat, nprobe=2)
    with pytest.raises(ValueError, match=r"packed queries must be uint8 \[n, 2\]"):
        fi.search_exact(flat, np.zeros((1, 3), np.uint8), 1)


@needs_faiss
def test_gpu_request_without_a_gpu_build():
    import faiss

    if hasattr(faiss, "index_binary_cpu_to_gpu") and faiss.get_num_gpus() > 0:
        pytest.skip("this faiss has a GPU")
    with pytest.raises(UsageError, match="^faiss's GPU build is not present"):
        fi.build_binary_index(np.zeros((3, 2), np.uint8), 12, gpu=True)


def test_missing_faiss_is_the_install_hint(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError
    with pytest.raises(UsageError) as exc:
        fi.build_binary_index(np.zeros((3, 2), np.uint8), 12)
    assert str(exc.value) == "faiss is not installed: pip install faiss-cpu (or faiss-gpu)"
    db, q = tie_codes(n=50, nq=2)
    save_codes(tmp_path / "c.npz", db, q, np.zeros(50, int), np.zeros(2, int))
    assert run(index_script, "build", "--codes", tmp_path / "c.npz", "--out", tmp_path / "i") == 2
    assert capsys.readouterr().err == INSTALL_HINT
    assert not (tmp_path / "i").exists()


# ---------------------------------------------------------------------------
# OPQN: pq_search
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 5, 10, 50, 100, 600, 1000])
def test_pq_search_equals_the_pq_ranking(k):
    z = dict(np.load(FIXTURES / "pqret_D512_M4_K64_ties.npz"))
    index = z["db_index"].T  # the official table is [M, N]
    scores = pq_scores(z["query_features"], index, z["mlp"])
    ref_v, ref_i = torch.sort(scores, dim=1, descending=True, stable=True)
    kk = min(k, 600)
    for chunk in (None, 7):
        v, i = pq_search(z["query_features"], index, z["mlp"], k, chunk_size=chunk)
        assert i.shape == (60, kk) and i.dtype == torch.int64
        assert torch.equal(i, ref_i[:, :kk])
        assert torch.allclose(v, ref_v[:, :kk], rtol=0, atol=1e-6)
    # ties follow the database index: this fixture's AP depends on it
    tied = (ref_v[:, :kk - 1] == ref_v[:, 1:kk]).sum() if kk > 1 else torch.tensor(0)
    assert kk == 1 or int(tied) > 0
    # the same ranking score_ranking_stats evaluates: relevant items in the first k
    stats = score_ranking_stats(pq_score_chunks(z["query_features"], index, z["mlp"]), 60,
                                z["query_labels"], z["db_labels"], positions=[kk])
    hits = (z["db_labels"][i.numpy()] == z["query_labels"][:, None]).sum(1)
    assert np.array_equal(hits, np.asarray(stats.hits_at[:, 0]))


# ---------------------------------------------------------------------------
# index.py
# ---------------------------------------------------------------------------

def write_codes(path, num_bits=12, n=3000, nq=40, paths=True, **kwargs):
    db, q = tie_codes(num_bits=num_bits, n=n, nq=nq, **kwargs)
    save_codes(path, db, q, np.arange(n) % 7, np.arange(nq) % 7,
               db_paths=[f"img/{i}.jpg" for i in range(n)] if paths else None)
    return db, q


@needs_faiss
@pytest.mark.parametrize("kind", fi.KINDS)
def test_index_script_build_and_search(tmp_path, capsys, kind):
    db, q = write_codes(tmp_path / "c.npz")
    idx, out = tmp_path / "db.faiss", tmp_path / "top.json"
    assert run(index_script, "build", "--codes", tmp_path / "c.npz", "--out", idx,
               "--type", kind) == 0
    line = capsys.readouterr().out
    assert line.startswith(f"{idx}: {kind} index of 3000 items, 12 bits, 2 bytes per item (codes), "
                           f"file {idx.stat().st_size} bytes") and line.count("\n") == 1
    meta = json.loads((tmp_path / "db.faiss.json").read_text())
    assert meta["num_bits"] == 12 and meta["type"] == kind and meta["num_items"] == 3000
    assert meta["db_paths"][:2] == ["img/0.jpg", "img/1.jpg"] and "db_indices" not in meta
    extra = ["--nprobe", "1000"] if kind == "ivf" else []
    assert run(index_script, "search", "--index", idx, "--codes", tmp_path / "c.npz",
               "--topk", 25, "--json", out, *extra) == 0
    printed = capsys.readouterr().out
    assert "the first 5 shown (--all: every query)" in printed and "img/" in printed
    result = json.loads(out.read_text())
    assert set(result) == {"indices", "distances"}
    ref_d, ref_i = reference(q, db)
    if kind == "hash":  # approximate: fewer results for some queries, left out of the lists
        lengths = [len(row) for row in result["indices"]]
        assert min(lengths) < 25 == max(lengths)
        got_i = np.array([row + [-1] * (25 - len(row)) for row in result["indices"]])
        got_d = np.array([row + [0] * (25 - len(row)) for row in result["distances"]])
        check_valid(got_d, got_i, q, db)
    else:
        got_i, got_d = np.array(result["indices"]), np.array(result["distances"])
        assert np.array_equal(got_i, ref_i[:, :25]) and np.array_equal(got_d, ref_d[:, :25])


@needs_faiss
def test_index_script_radius_old_files_and_id_sidecar(tmp_path, capsys, monkeypatch):
    db, q = tie_codes(n=400, nq=6)
    np.savez(tmp_path / "old.npz", db_codes=db, query_codes=q, db_labels=np.zeros(400, int),
             query_labels=np.zeros(6, int))  # a file from before the packed arrays
    assert run(index_script, "build", "--codes", tmp_path / "old.npz", "--out",
               tmp_path / "a.faiss") == 0
    assert run(index_script, "search", "--index", tmp_path / "a.faiss", "--codes",
               tmp_path / "old.npz", "--radius", 1, "--json", tmp_path / "r.json", "--all") == 0
    assert capsys.readouterr().out.count("query ") == 6
    result = json.loads((tmp_path / "r.json").read_text())
    dist = hamming_distance(q, db).numpy()
    for row in range(6):
        want = np.flatnonzero(dist[row] <= 1)
        want = want[np.argsort(dist[row, want], kind="stable")]
        assert result["indices"][row] == want.tolist()
        assert result["distances"][row] == dist[row, want].tolist()
    # large databases keep dataset indices and paths in INDEX.ids.npz
    monkeypatch.setattr(serving, "INLINE_MAX_ITEMS", 10)
    save_codes(tmp_path / "c.npz", db, q, np.zeros(400, int), np.zeros(6, int),
               db_paths=[f"p{i}.png" for i in range(400)], db_indices=np.arange(400) + 5000)
    assert run(index_script, "--threads", 1, "build", "--codes", tmp_path / "c.npz", "--out",
               tmp_path / "b.faiss") == 0
    meta = json.loads((tmp_path / "b.faiss.json").read_text())
    assert meta["ids_file"] == "b.faiss.ids.npz" and "db_paths" not in meta
    capsys.readouterr()
    assert run(index_script, "search", "--index", tmp_path / "b.faiss", "--codes",
               tmp_path / "c.npz", "--topk", 1, "--threads", 1) == 0
    first = reference(q, db)[1][0, 0]
    assert f"item {first:>8}  distance " in capsys.readouterr().out
    meta_, indices, paths = serving.read_sidecar(tmp_path / "b.faiss")
    assert indices.tolist() == list(range(5000, 5400)) and paths[3] == "p3.png"


@needs_faiss
def test_index_script_bad_input_is_one_line(tmp_path, capsys):
    write_codes(tmp_path / "c12.npz", num_bits=12, n=100, nq=3)
    write_codes(tmp_path / "c16.npz", num_bits=16, n=100, nq=3)
    idx = tmp_path / "i.faiss"
    assert run(index_script, "build", "--codes", tmp_path / "c12.npz", "--out", idx) == 0
    capsys.readouterr()

    def error(*argv):
        assert run(index_script, *argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1
        return err

    search = ("search", "--index", idx, "--codes")
    assert error(*search, tmp_path / "nope.npz") == f"error: no such file: {tmp_path / 'nope.npz'}\n"
    assert error(*search, tmp_path / "c16.npz") == (
        f"error: the query codes of {tmp_path / 'c16.npz'} are 16-bit codes but {idx} holds "
        f"12-bit codes; use codes of the same length\n")
    assert error("build", "--codes", tmp_path / "missing.npz", "--out", tmp_path / "j") == (
        f"error: no such file: {tmp_path / 'missing.npz'}\n")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    assert error(*search, tmp_path / "junk.npz").startswith(
        f"error: cannot read {tmp_path / 'junk.npz'} as an .npz file: ")
    (tmp_path / "junk.faiss").write_bytes(b"\0" * 64)
    (tmp_path / "junk.faiss.json").write_text("{}")
    assert error("search", "--index", tmp_path / "junk.faiss", "--codes", tmp_path / "c12.npz"
                 ).startswith(f"error: cannot read {tmp_path / 'junk.faiss'} as a faiss binary index: ")
    assert error("search", "--index", tmp_path / "nope.faiss", "--codes", tmp_path / "c12.npz"
                 ) == f"error: no such file: {tmp_path / 'nope.faiss'}\n"
    (tmp_path / "i.faiss.json").rename(tmp_path / "moved.json")
    assert error(*search, tmp_path / "c12.npz") == (
        f"error: no sidecar {idx}.json beside {idx}; index.py build writes both\n")
    (tmp_path / "moved.json").rename(tmp_path / "i.faiss.json")
    assert error(*search, tmp_path / "c12.npz", "--nprobe", 2) == (
        f"error: {idx}: nprobe applies to ivf indexes, not to a flat index\n")
    assert error(*search, tmp_path / "c12.npz", "--topk", 0) == (
        "error: argument --topk: expected a positive integer, got 0\n")
    assert error("build", "--codes", tmp_path / "c12.npz", "--out", tmp_path / "v",
                 "--type", "ivf", "--nlist", 500) == (
        "error: --type ivf: nlist must be between 1 and the 100 database items, got 500\n")
    assert error("build", "--codes", tmp_path / "c12.npz", "--out", tmp_path / "no" / "x") == (
        f"error: cannot write --out {tmp_path / 'no' / 'x'}: folder {tmp_path / 'no'} "
        f"does not exist\n")
    assert error() == "error: the following arguments are required: {build,search}\n"


def test_every_numeric_flag_of_every_subcommand_is_checked():
    parser = index_script.get_args_parser()
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert sorted(subparsers[0].choices) == ["build", "search"]
    for p in [parser, *subparsers[0].choices.values()]:
        for action in p._actions:
            if action.type is not None:
                assert getattr(action.type, "checked_number", False), action.option_strings
    args = parser.parse_args(["--threads", "2", "search", "--index", "i", "--codes", "c"])
    assert args.threads == 2 and args.topk is None and args.radius is None
    assert parser.parse_args(["build", "--codes", "c", "--out", "o", "--threads", "3"]).threads == 3


# ---------------------------------------------------------------------------
# bench/index_speed.py
# ---------------------------------------------------------------------------

@needs_faiss
def test_index_speed_bench_tiny_run(tmp_path, capsys):
    from bench import index_speed

    out = tmp_path / "bench.json"
    args = index_speed.get_args_parser().parse_args(
        ["--db", "2000", "--queries", "20", "--nprobe", "1", "45", "--json", str(out)])
    index_speed.main(args)
    printed = capsys.readouterr().out
    assert "usable of" in printed and "IndexBinaryFlat" in printed
    result = json.loads(out.read_text())
    assert result["num_database"] == 2000 and result["num_queries"] == 20 and result["bits"] == 48
    names = [r["index"] for r in result["indexes"]]
    assert names == ["IndexBinaryFlat", "IndexBinaryMultiHash", "IndexBinaryMultiHash",
                     "IndexBinaryIVF", "IndexBinaryIVF"]
    flat = result["indexes"][0]
    assert flat["served_equals_exact"] and flat["recall"] == 1.0
    assert 6.0 <= flat["bytes_per_item"] < 6.1  # 48 bits = 6 bytes per code, plus a header
    assert result["indexes"][-1]["params"] == "nlist 45, nprobe 45"  # every list: exact
    assert result["indexes"][-1]["served_equals_exact"]


def test_search_from_images_through_a_checkpoint_equals_stored_codes(tmp_path):
    """index.py search --checkpoint encodes the dataset's queries itself and
    answers exactly what the stored codes of the same checkpoint answer."""
    import dcdh_train
    import evaluation
    import index as index_script

    tiny = ["--dataset", "synthetic", "--synthetic-ids", 3, "--synthetic-train", 6,
            "--synthetic-test", 2, "--no-progress"]
    assert run(dcdh_train, *tiny, "--save", "m.tar", "--len", 16, "--epochs", 1, "--bs", 6,
               "--eval-every", 0, "--checkpoint-dir", tmp_path, "--log-dir", tmp_path) == 0
    assert run(evaluation, *tiny, "--load", tmp_path / "m.tar", "--len", 16,
               "--save-codes", tmp_path / "c.npz") == 0
    assert run(index_script, "build", "--codes", tmp_path / "c.npz", "--out", tmp_path / "db.faiss") == 0
    assert run(index_script, "search", "--index", tmp_path / "db.faiss", "--codes", tmp_path / "c.npz",
               "--topk", 5, "--json", tmp_path / "a.json") == 0
    assert run(index_script, "search", "--index", tmp_path / "db.faiss", "--checkpoint",
               tmp_path / "m.tar", "--dataset", "synthetic", "--topk", 5,
               "--json", tmp_path / "b.json") == 0
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()
