"""Vector search: cells against exact search, recall, parameters, and truncated GPU top-k."""

from __future__ import annotations

import numpy as np
import pytest

from kocurate.curate import index as index_mod
from kocurate.curate.index import (
    CellIndex,
    Pairs,
    build_index,
    ivf_params,
    knn_range,
    pair_recall,
    range_pairs,
    recall_sample,
)


def _unit(rng, n, dim):
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _planted(n=3000, dim=32, seed=0):
    rng = np.random.default_rng(seed)
    base = _unit(rng, n, dim)
    dup = base[: n // 4] + 0.15 * _unit(rng, n // 4, dim)
    return np.concatenate([base, dup / np.linalg.norm(dup, axis=1, keepdims=True)])


def _pair_set(pairs: Pairs) -> set[tuple[int, int]]:
    return set(zip(pairs.query_index().tolist(), pairs.ids.tolist()))


def test_cells_probing_every_cell_equal_exact_search():
    vectors = _planted()
    exact = range_pairs(build_index(vectors, method="exact"), vectors, 0.9)
    cells = CellIndex(vectors, nlist=16, nprobe=16)
    found = range_pairs(cells, vectors, 0.9, method="ivf")
    assert _pair_set(found) == _pair_set(exact)
    assert exact.ids.size > len(vectors)  # not only self pairs: the test can fail


def test_pair_recall_is_one_with_all_cells_and_drops_with_one_probe():
    vectors = _planted(n=4000, dim=48)
    cells = CellIndex(vectors, nlist=64, nprobe=64)
    assert pair_recall(vectors, 0.85, sample=500, index=cells) == 1.0
    low = pair_recall(vectors, 0.85, sample=500, index=cells, nprobe=1)
    assert low < 1.0
    assert cells.nprobe == 64  # the override is for the measurement only


def test_recall_sample_is_seeded_and_sorted():
    a, b = recall_sample(1000, 100, seed=3), recall_sample(1000, 100, seed=3)
    assert np.array_equal(a, b) and np.all(np.diff(a) > 0)
    assert len(recall_sample(50, 100)) == 50


def test_default_probes_grow_with_the_rows():
    small_nlist, small_nprobe = ivf_params(100_000)
    big_nlist, big_nprobe = ivf_params(3_000_000)
    assert big_nlist > small_nlist
    assert big_nprobe > small_nprobe and small_nprobe == 32
    assert ivf_params(10)[0] <= 10 and ivf_params(10)[1] <= ivf_params(10)[0]
    assert ivf_params(100_000, 8)[1] == 8  # an explicit nprobe wins


class TopKOnly:
    """A flat index without range search, like FAISS's GPU indexes."""

    def __init__(self, vectors):
        self.inner = build_index(vectors, method="exact", gpu=False)
        self.ntotal = self.inner.ntotal

    def search(self, queries, k):
        return self.inner.search(queries, k)

    def range_search(self, queries, radius):
        raise RuntimeError("range search not implemented on GPU")


def test_topk_range_search_reports_queries_it_cut():
    rng = np.random.default_rng(1)
    crowd = np.repeat(_unit(rng, 1, 16), 300, axis=0) + 1e-3 * rng.standard_normal((300, 16)).astype(np.float32)
    vectors = np.concatenate([crowd / np.linalg.norm(crowd, axis=1, keepdims=True), _unit(rng, 100, 16)])
    index = TopKOnly(vectors)
    pairs = range_pairs(index, vectors, 0.9)
    assert pairs.truncated == 0  # 300 neighbours fit under the largest k (2048)
    before = knn_range.truncated
    lims, _scores, _ids, cut = knn_range(index, vectors, 0.9, k=8, max_k=64, with_truncated=True)
    assert cut == 300 and knn_range.truncated == before + 300
    assert np.all(np.diff(lims)[:300] == 64)


def test_range_pairs_carries_truncation_into_pairs(monkeypatch):
    rng = np.random.default_rng(2)
    crowd = np.repeat(_unit(rng, 1, 8), 100, axis=0)
    index = TopKOnly(crowd)
    original = index_mod.knn_range

    def small_k(*args, **kwargs):
        return original(*args, **{**kwargs, "max_k": 16})

    small_k.truncated = 0
    monkeypatch.setattr(index_mod, "knn_range", small_k)
    pairs = range_pairs(index, crowd, 0.9)
    assert pairs.truncated == 100
    cpu = range_pairs(build_index(crowd, method="exact"), crowd, 0.9)
    assert cpu.truncated == 0 and cpu.ids.size == 100 * 100


def test_cell_index_rejects_nothing_on_tiny_inputs():
    vectors = _planted(n=20, dim=8)
    cells = CellIndex(vectors)
    assert cells.nlist <= len(vectors) and cells.nprobe <= cells.nlist
    found = range_pairs(cells, vectors, 0.99, method="ivf")
    assert found.n_queries == len(vectors)


@pytest.mark.parametrize("threshold", [0.8, 0.95])
def test_pairs_above_threshold_only(threshold):
    vectors = _planted(n=1000, dim=16)
    pairs = range_pairs(build_index(vectors, method="exact"), vectors, threshold)
    assert np.all(pairs.scores >= np.float32(threshold) - 1e-6)


def test_spilled_cells_find_each_pair_once_and_at_least_as_many():
    vectors = _planted(n=3000, dim=32, seed=4)
    exact = _pair_set(range_pairs(build_index(vectors, method="exact"), vectors, 0.85))
    plain = range_pairs(CellIndex(vectors, nlist=40, nprobe=2, spill=1), vectors, 0.85, method="ivf")
    spilled = range_pairs(CellIndex(vectors, nlist=40, nprobe=2, spill=3), vectors, 0.85, method="ivf")
    pairs = list(zip(spilled.query_index().tolist(), spilled.ids.tolist()))
    assert len(pairs) == len(set(pairs))  # no pair twice
    assert _pair_set(plain) <= _pair_set(spilled) <= exact
    assert len(_pair_set(spilled)) > len(_pair_set(plain))


def test_queries_probed_in_chunks_give_the_same_pairs_and_neighbours(monkeypatch):
    """Bounded probe lists (`PROBE_VISITS`) change the memory, never the answer."""
    vectors = _planted(2400, seed=5)  # 3,000 rows
    cells = CellIndex(vectors, nlist=40, nprobe=6)
    radius = 0.85
    whole = cells.range_search(vectors, radius)
    whole_knn = cells.search(vectors[:700], 5)
    monkeypatch.setattr(index_mod, "PROBE_VISITS", 6 * 257)  # 257 queries a chunk: 12 chunks, a ragged last one
    assert len(cells._query_chunks(len(vectors))) == 12
    chunked = cells.range_search(vectors, radius)
    assert np.array_equal(chunked[0], whole[0]) and np.array_equal(chunked[2], whole[2])  # lims, ids
    assert np.allclose(chunked[1], whole[1], atol=1e-6)  # BLAS sums differ in the last bit with the product's shape
    assert whole[0][-1] > len(vectors)  # pairs beyond self-matches were found
    chunked_knn = cells.search(vectors[:700], 5)
    assert np.array_equal(chunked_knn[1], whole_knn[1]) and np.allclose(chunked_knn[0], whole_knn[0])
