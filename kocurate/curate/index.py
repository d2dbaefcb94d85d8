"""Vector search for dedup and decontamination: every pair above a cosine threshold.

Rows are unit vectors, so inner product is cosine. Two paths:

* ``exact``: FAISS ``IndexFlatIP`` range search (BLAS matrix products, every pair found).
  Used up to `EXACT_MAX_ROWS` indexed rows, where it takes seconds.
* ``ivf``: `CellIndex`, an IVF index (k-means cells by FAISS, ``nlist`` = sqrt(32 n),
  ``nprobe`` = 32 cells visited per query up to 100k rows, more above: `default_nprobe`)
  searched with one BLAS product per cell. Near-duplicates sit in the same or
  a neighbouring cell, so recall of pairs above a high threshold stays near 1 with a small
  ``nprobe``; `pair_recall` measures it against exact search on a sample of queries.

GPU FAISS is used when the installed faiss has GPUs (faiss-gpu); faiss-cpu otherwise.
Results come back as CSR-style `Pairs`: for query q, ``ids[lims[q]:lims[q+1]]`` and their
scores.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

#: Above this many indexed rows, `method="auto"` uses the IVF index.
EXACT_MAX_ROWS = 20_000
#: Queries per range-search call (bounds the memory of one call's results).
QUERY_BATCH = 8192
#: (query, cell) visits `CellIndex` probes at once (~40 bytes each with the sort: ~1.3 GiB).
PROBE_VISITS = 1 << 25


@dataclass
class Pairs:
    """Neighbours above a threshold per query, CSR layout (lims has n_queries + 1 entries)."""

    lims: np.ndarray
    ids: np.ndarray
    scores: np.ndarray
    threshold: float
    method: str
    #: Queries whose neighbours were cut off (GPU top-k search beyond its largest k; see
    #: `knn_range`): their lists hold only the best `max_k`. 0 on the CPU paths, which are complete.
    truncated: int = 0

    @property
    def n_queries(self) -> int:
        return len(self.lims) - 1

    def of(self, q: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.lims[q], self.lims[q + 1]
        return self.ids[a:b], self.scores[a:b]

    def query_index(self) -> np.ndarray:
        """The query of every pair (expands lims)."""
        return np.repeat(np.arange(self.n_queries, dtype=np.int64), np.diff(self.lims))

    def max_per_query(self) -> np.ndarray:
        """Best score per query (nan where a query has no pair above the threshold)."""
        best = np.full(self.n_queries, np.nan, dtype=np.float32)
        if self.ids.size:
            q = self.query_index()
            order = np.lexsort((self.scores, q))
            last = np.r_[np.flatnonzero(np.diff(q[order])), len(order) - 1]
            best[q[order][last]] = self.scores[order][last]
        return best


def _faiss():
    import faiss

    threads = int(os.environ.get("KOCURATE_THREADS", "0") or 0)
    if threads > 0:
        faiss.omp_set_num_threads(threads)
    return faiss


def worker_threads() -> int:
    """$KOCURATE_THREADS, else the number of CPUs."""
    return max(1, int(os.environ.get("KOCURATE_THREADS", "0") or 0) or (os.cpu_count() or 1))


def gpu_count() -> int:
    try:
        faiss = _faiss()
        return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0
    except Exception:  # pragma: no cover - no faiss
        return 0


def choose_method(n_indexed: int, method: str = "auto") -> str:
    if method not in ("auto", "exact", "ivf"):
        raise ValueError(f"unknown search method '{method}'; use auto, exact or ivf")
    if method != "auto":
        return method
    return "exact" if n_indexed <= EXACT_MAX_ROWS else "ivf"


#: Cells each indexed row is stored in for range search (see `CellIndex`). 1: at equal cost
#: (rows compared per query) more probes beat more copies above recall 0.99 (dedup.md).
DEFAULT_SPILL = 1
#: Probes per query up to `NPROBE_ROWS` indexed rows; more above (see `ivf_params`).
BASE_NPROBE = 32
NPROBE_ROWS = 100_000
NPROBE_GROWTH = 0.4


def default_nprobe(n: int) -> int:
    """Probes for n indexed rows: 32 up to 100k rows, then 32 * (n / 100k) ** 0.4.

    With nlist = sqrt(32 n) the cells get smaller as n grows, and a near-duplicate falls
    outside a query's 32 nearest cells more often: pair recall against exact search (2,000
    sampled queries, threshold 0.9, random 256-d unit vectors with planted near-duplicates,
    the hard case) was 0.986 at 300k and 0.982 at 1M with 32 probes, 0.992 with 64 and 0.999
    with 96 at 1M. The growth keeps recall >= 0.99 at 1M (80 probes) and 3M (125): see
    benchmarks/results/dedup.md, section 2.
    """
    if n <= NPROBE_ROWS:
        return BASE_NPROBE
    return int(round(BASE_NPROBE * (n / NPROBE_ROWS) ** NPROBE_GROWTH))


def ivf_params(n: int, nprobe: int | None = None) -> tuple[int, int]:
    """(nlist, nprobe) for n indexed rows: nlist = sqrt(32 n) cells, nprobe = `default_nprobe(n)`.

    That nlist balances the two costs of `CellIndex` (assigning rows to cells: n * nlist
    products; comparing rows inside probed cells: n * nprobe * n / nlist products).
    An explicit `nprobe` is used as given and sets nlist = sqrt(n * nprobe) (the Ray engine
    passes its own).
    """
    nlist = int(max(1, min(65536, np.sqrt(max(n, 1) * (nprobe or BASE_NPROBE)), n)))
    return nlist, int(min(nprobe or default_nprobe(n), nlist))


class CellIndex:
    """IVF search done as one BLAS matrix product per cell.

    k-means cells (FAISS, spherical, trained on 16 rows per cell, 6 iterations); each indexed row lives in
    its nearest cell; each query visits its `nprobe` nearest cells. Where FAISS's
    IndexIVFFlat scans the lists of every query one by one, this gathers all queries that
    visit a cell and compares them with the cell's rows in one GEMM, which is what makes the
    search fast on a CPU. Same candidates as IndexIVFFlat with the same cells and nprobe.

    `spill` > 1 also files every row under its next-nearest cells for range search (a pair is
    then found when any of the row's cells is probed; reported once). It costs as much as
    more probes and measured no better above recall 0.99, so the default is 1.
    """

    def __init__(self, vectors: np.ndarray, nlist: int | None = None, nprobe: int | None = None, seed: int = 42,
                 spill: int | None = None):
        faiss = _faiss()
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n, dim = self.vectors.shape
        default_nlist, default_nprobe = ivf_params(n, nprobe)
        self.nlist = int(min(nlist or default_nlist, n))
        self.nprobe = int(min(nprobe or default_nprobe, self.nlist))
        self.spill = int(min(spill or DEFAULT_SPILL, self.nlist))
        self.ntotal = n
        rng = np.random.default_rng(seed)
        # Coarse cells need no precise k-means: 16 points per cell and 6 iterations keep training
        # (per_cell * nlist**2 * dim products per iteration) well below the search itself.
        per_cell = 16
        sample = self.vectors if n <= per_cell * self.nlist else self.vectors[np.sort(rng.choice(n, per_cell * self.nlist, replace=False))]
        kmeans = faiss.Kmeans(dim, self.nlist, niter=6, seed=seed, spherical=True, max_points_per_centroid=per_cell,
                              min_points_per_centroid=1, verbose=False)
        kmeans.train(sample)
        self.quantizer = faiss.IndexFlatIP(dim)
        self.quantizer.add(kmeans.centroids)
        _, cells = self.quantizer.search(self.vectors, self.spill)
        cell = cells[:, 0]
        self.order = np.argsort(cell, kind="stable")
        self.bounds = np.searchsorted(cell[self.order], np.arange(self.nlist + 1))
        if self.spill > 1:  # range search: every row also in its next-nearest cells
            flat = cells.reshape(-1)
            rows = np.repeat(np.arange(n, dtype=np.int64), self.spill)
            valid = flat >= 0
            flat, rows = flat[valid], rows[valid]
            order = np.argsort(flat, kind="stable")
            self.range_order = rows[order]
            self.range_bounds = np.searchsorted(flat[order], np.arange(self.nlist + 1))
        else:
            self.range_order, self.range_bounds = self.order, self.bounds

    def _probe(self, queries: np.ndarray):
        """Per cell, the queries that visit it (CSR over cells)."""
        _, cells = self.quantizer.search(queries, self.nprobe)
        flat = cells.reshape(-1)
        qidx = np.repeat(np.arange(len(queries), dtype=np.int64), self.nprobe)
        valid = flat >= 0
        flat, qidx = flat[valid], qidx[valid]
        order = np.argsort(flat, kind="stable")
        return qidx[order], np.searchsorted(flat[order], np.arange(self.nlist + 1))

    def _query_chunks(self, n: int) -> list[tuple[int, int]]:
        """Query ranges probed one at a time: at most `PROBE_VISITS` (query, cell) visits each."""
        step = max(1, PROBE_VISITS // max(1, self.nprobe))
        return [(s, min(n, s + step)) for s in range(0, n, step)]

    def _map_cells(self, queries: np.ndarray, fn, track=None, description: str = "searching cells"):
        """fn(cell, visitors) over every cell, per chunk of queries (visitors: query indices); the
        results that are not None.

        The probe lists of one chunk of queries live at a time: all n queries at once would
        take n x nprobe x ~40 bytes (15 GiB at 3M rows and 125 probes). Within a chunk, single-threaded
        BLAS per product and cells spread over threads: small products gain nothing from BLAS
        threads and suffer badly when the CPU is shared; numpy releases the GIL inside matmul.
        """
        from concurrent.futures import ThreadPoolExecutor

        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover
            import contextlib

            threadpool_limits = lambda *a, **k: contextlib.nullcontext()
        chunks = self._query_chunks(len(queries))

        def results(pool):
            for start, stop in chunks:  # the next chunk is probed once this one's cells are done
                q_of, q_bounds = self._probe(queries[start:stop])
                yield from pool.map(lambda c: fn(c, q_of[q_bounds[c]:q_bounds[c + 1]] + start), range(self.nlist))

        with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(worker_threads()) as pool:
            found = results(pool)
            if track:
                found = track(found, description, self.nlist * len(chunks))
            return [r for r in found if r is not None]

    def range_search(self, queries: np.ndarray, radius: float, track=None, description: str = "searching cells"):
        queries = np.ascontiguousarray(queries, dtype=np.float32)

        def one_cell(c, visitors):
            members = self.range_order[self.range_bounds[c]:self.range_bounds[c + 1]]
            if not members.size or not visitors.size:
                return None
            sims = queries[visitors] @ self.vectors[members].T
            r, k = np.nonzero(sims > radius)
            return visitors[r], members[k], sims[r, k]

        found = self._map_cells(queries, one_cell, track, description)
        qs, js, ss = [f[0] for f in found], [f[1] for f in found], [f[2] for f in found]
        q = np.concatenate(qs) if qs else np.zeros(0, np.int64)
        j = np.concatenate(js) if js else np.zeros(0, np.int64)
        sc = np.concatenate(ss) if ss else np.zeros(0, np.float32)
        if self.spill > 1 and q.size:  # a row met in two probed cells is one pair
            _, first = np.unique(q * np.int64(self.ntotal) + j, return_index=True)
            q, j, sc = q[first], j[first], sc[first]
        order = np.argsort(q, kind="stable")
        lims = np.zeros(len(queries) + 1, dtype=np.int64)
        np.cumsum(np.bincount(q, minlength=len(queries)), out=lims[1:])
        return lims, sc[order], j[order]

    def search(self, queries: np.ndarray, k: int):
        """Top-k (scores, ids) over the probed cells; -1 / -inf where fewer were seen."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        n = len(queries)
        best_s = np.full((n, k), -np.inf, dtype=np.float32)
        best_i = np.full((n, k), -1, dtype=np.int64)
        for start, stop in self._query_chunks(n):  # one chunk's probe lists at a time
            q_of, q_bounds = self._probe(queries[start:stop])
            for c in range(self.nlist):
                members = self.order[self.bounds[c]:self.bounds[c + 1]]
                visitors = q_of[q_bounds[c]:q_bounds[c + 1]] + start
                if not members.size or not visitors.size:
                    continue
                sims = queries[visitors] @ self.vectors[members].T
                all_s = np.concatenate([best_s[visitors], sims], axis=1)
                all_i = np.concatenate([best_i[visitors], np.broadcast_to(members, sims.shape)], axis=1)
                top = np.argsort(-all_s, axis=1)[:, :k]
                best_s[visitors] = np.take_along_axis(all_s, top, axis=1)
                best_i[visitors] = np.take_along_axis(all_i, top, axis=1)
        return best_s, best_i


def build_index(vectors: np.ndarray, method: str = "auto", seed: int = 42, nlist: int | None = None,
                nprobe: int | None = None, gpu: bool | None = None):
    """An inner-product index over `vectors` (float32, unit rows): FAISS flat, or a `CellIndex`."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    method = choose_method(n, method)
    if method == "ivf":
        return CellIndex(vectors, nlist=nlist, nprobe=nprobe, seed=seed)
    faiss = _faiss()
    index = faiss.IndexFlatIP(dim)
    index.add(vectors)
    use_gpu = gpu_count() > 0 if gpu is None else gpu
    if use_gpu:  # GPU flat search; range search then goes through knn_range
        index = faiss.index_cpu_to_all_gpus(index)
    return index


def range_pairs(
    index,
    queries: np.ndarray,
    threshold: float,
    *,
    method: str = "exact",
    track: Callable[[Iterable, str, int], Iterable] | None = None,
    description: str = "searching",
) -> Pairs:
    """Every indexed row with cosine >= `threshold` to each query."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    n = len(queries)
    if isinstance(index, CellIndex):
        radius = float(np.nextafter(np.float32(threshold), np.float32(-1)))
        lims, scores, ids = index.range_search(queries, radius, track=track, description=description)
        return Pairs(lims, ids.astype(np.int64), scores.astype(np.float32), threshold, method)
    starts = list(range(0, n, QUERY_BATCH))
    iterator = track(starts, description, len(starts)) if track else starts
    lims_parts, ids_parts, score_parts, offset, truncated = [np.zeros(1, dtype=np.int64)], [], [], 0, 0
    for start in iterator:
        lims, scores, ids, cut = _range_search(index, queries[start:start + QUERY_BATCH], threshold)
        truncated += cut
        lims_parts.append(lims[1:].astype(np.int64) + offset)
        offset += int(lims[-1])
        ids_parts.append(ids.astype(np.int64))
        score_parts.append(scores.astype(np.float32))
    return Pairs(
        np.concatenate(lims_parts),
        np.concatenate(ids_parts) if ids_parts else np.zeros(0, np.int64),
        np.concatenate(score_parts) if score_parts else np.zeros(0, np.float32),
        threshold,
        method,
        truncated,
    )


def _range_search(index, queries: np.ndarray, threshold: float):
    """(lims, scores, ids, queries truncated) for one batch of queries."""
    # FAISS keeps pairs with score > radius for inner product; step just below the threshold
    # so that a pair exactly at it is returned (callers compare with >= or > themselves).
    radius = float(np.nextafter(np.float32(threshold), np.float32(-1)))
    try:
        lims, scores, ids = index.range_search(queries, radius)
        return lims, scores, ids, 0
    except RuntimeError:  # GPU indexes have no range search: top-k with a growing k
        return knn_range(index, queries, radius, with_truncated=True)


def knn_range(index, queries: np.ndarray, radius: float, k: int = 64, max_k: int = 2048, *,
              with_truncated: bool = False):
    """Range search built from top-k search (GPU FAISS has no range_search).

    Queries whose k-th neighbour is still above `radius` are searched again with 4k, up to
    `max_k` (the GPU limit); beyond that the remaining neighbours are cut off. The number of
    queries cut is returned as a fourth value with `with_truncated` (`range_pairs` puts it in
    `Pairs.truncated`, and dedup / decontamination report it in their stats), and is also
    added to `knn_range.truncated` (a process-wide total, kept for old callers).
    """
    cut = 0
    n = len(queries)
    k = min(k, index.ntotal)
    scores, ids = index.search(queries, k)
    rows_s, rows_i = [None] * n, [None] * n
    todo = np.arange(n)
    while True:
        full = scores[:, -1] > radius if k < index.ntotal else np.zeros(len(todo), dtype=bool)
        for q, s, i in zip(todo[~full], scores[~full], ids[~full]):
            keep = (s > radius) & (i >= 0)
            rows_s[q], rows_i[q] = s[keep], i[keep]
        todo = todo[full]
        if not todo.size:
            break
        if k >= min(max_k, index.ntotal):
            cut = int(todo.size)
            knn_range.truncated += cut
            for q, s, i in zip(todo, scores[full], ids[full]):
                rows_s[q], rows_i[q] = s, i
            break
        k = min(k * 4, max_k, index.ntotal)
        scores, ids = index.search(np.ascontiguousarray(queries[todo]), k)
    lims = np.zeros(n + 1, dtype=np.int64)
    np.cumsum([len(x) for x in rows_i], out=lims[1:])
    result = (lims, np.concatenate(rows_s) if n else np.zeros(0, np.float32),
              np.concatenate(rows_i) if n else np.zeros(0, np.int64))
    return (*result, cut) if with_truncated else result


knn_range.truncated = 0


def search_pairs(
    vectors: np.ndarray,
    threshold: float,
    queries: np.ndarray | None = None,
    *,
    method: str = "auto",
    seed: int = 42,
    track: Callable[[Iterable, str, int], Iterable] | None = None,
    index=None,
) -> Pairs:
    """Pairs above `threshold` between `queries` (default: `vectors` themselves) and `vectors`."""
    method = choose_method(len(vectors), method)
    index = index if index is not None else build_index(vectors, method=method, seed=seed)
    q = vectors if queries is None else queries
    return range_pairs(index, q, threshold, method=method, track=track,
                       description=f"searching {len(q):,} x {len(vectors):,} ({method})")


def nearest(vectors: np.ndarray, queries: np.ndarray | None = None, k: int = 1, *, method: str = "auto",
            seed: int = 42, exclude_self: bool = False, index=None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k neighbours (scores, ids); with `exclude_self` the query's own row is skipped."""
    method = choose_method(len(vectors), method)
    index = index if index is not None else build_index(vectors, method=method, seed=seed)
    q = np.ascontiguousarray(vectors if queries is None else queries, dtype=np.float32)
    extra = 1 if exclude_self else 0
    scores, ids = index.search(q, min(k + extra, index.ntotal))
    if exclude_self:
        own = ids == np.arange(len(q))[:, None]
        keep = ~own
        # drop the self hit (or the last column when self was not returned)
        drop_last = ~own.any(axis=1)
        keep[drop_last, -1] = False
        scores = scores[keep].reshape(len(q), -1)
        ids = ids[keep].reshape(len(q), -1)
    return scores, ids


def pair_recall(vectors: np.ndarray, threshold: float, *, sample: int = 2000,
                seed: int = 42, index=None, nprobe: int | None = None, exact=None) -> float:
    """Share of the exact pairs (score >= threshold) that the IVF path finds, on a query sample.

    `sample` queries are drawn with `seed`; for each, the rows exact flat search finds above
    the threshold (itself excluded) are compared with those `index` (a `CellIndex`, built when
    not given) returns. `nprobe` overrides the index's probes for this measurement; `exact`
    reuses a previous call's exact `Pairs` for the same sample (see `recall_sample`).
    """
    picks = recall_sample(len(vectors), sample, seed)
    exact = exact if exact is not None else range_pairs(build_index(vectors, method="exact"), vectors[picks], threshold)
    ivf_index = index if index is not None else build_index(vectors, method="ivf", seed=seed)
    before = ivf_index.nprobe
    if nprobe:
        ivf_index.nprobe = int(min(nprobe, ivf_index.nlist))
    try:
        found = range_pairs(ivf_index, vectors[picks], threshold, method="ivf")
    finally:
        ivf_index.nprobe = before
    n = len(vectors)
    want = exact.query_index() * n + exact.ids
    want = want[exact.ids != picks[exact.query_index()]]  # a row is not its own duplicate
    got = found.query_index() * n + found.ids
    return float(np.isin(want, got).mean()) if want.size else 1.0


def recall_sample(n: int, sample: int = 2000, seed: int = 42) -> np.ndarray:
    """The query rows `pair_recall` draws (sorted)."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, min(sample, n), replace=False))


__all__ = [
    "DEFAULT_SPILL", "EXACT_MAX_ROWS", "CellIndex", "Pairs", "knn_range", "build_index", "choose_method", "default_nprobe",
    "gpu_count", "ivf_params", "nearest",
    "pair_recall", "range_pairs", "recall_sample", "search_pairs",
]
