"""Clustering for selection: length groups, then k-means inside each group on prompt embeddings.

Two steps a recipe can show on their own (``embed`` -> ``cluster`` -> ``select``), and the
building blocks ``select`` runs itself when its input has not been clustered yet:

1. `len` = characters of the prompt (instruction, plus " " + input when there is one, as
   KoQuality joined KULLM's input onto its instruction).
2. `len_group` = L groups cut at the quantiles of `len` (right-closed intervals like pandas'
   qcut; equal cut points merge groups, so fewer than L groups can result).
3. k-means (seeded) with K clusters inside each group on the prompt embeddings; a group
   with fewer rows than K gets one cluster per row. `cluster_dist` is the squared distance to
   the assigned centre (``centroid`` / ``hard`` selection use it). The default k-means
   over-seeds k-means++ on a sample, merges the seeds down to K by Ward's criterion, and runs
   Lloyd's iterations (FAISS search) on the sample, then on all rows: see `kmeans`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import polars as pl

from ..errors import InputError
from .pipeline import RunContext, Step, StepResult
from .score import prompt_texts

#: Columns the cluster step adds. `cluster_dist` marks a frame clustered by this step: select
#: reuses such clusters and drops the column from what it writes.
CLUSTER_COLUMNS = ("len", "len_group", "cluster", "cluster_dist")
KMEANS_BACKENDS = ("faiss", "sklearn")
INITS = ("k-means++", "random")


def length_groups(lengths: np.ndarray, groups: int) -> tuple[np.ndarray, list[float]]:
    """Group index per row at the quantile cut points (pandas qcut semantics, duplicates dropped)."""
    if len(lengths) == 0:
        return np.zeros(0, dtype=np.int64), []
    edges = np.unique(np.quantile(lengths.astype(np.float64), np.linspace(0, 1, groups + 1)))
    inner = edges[1:-1]
    # (a, b] intervals: a length equal to a cut point belongs to the lower group
    return np.searchsorted(inner, lengths, side="left").astype(np.int64), edges.tolist()


def kmeans_plusplus(x: np.ndarray, k: int, rng: np.random.Generator, trials: int | None = None) -> np.ndarray:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii; scikit-learn's variant with 2 + ln k
    candidates per step, the one that lowers the potential most wins). One pass over `x` per
    centre: each step's candidates are scored with a single (trials x d) @ (d x n) product."""
    n, d = x.shape
    trials = trials or 2 + int(np.log(k))
    sq = np.einsum("ij,ij->i", x, x)
    centres = np.empty((k, d), dtype=np.float32)
    first = int(rng.integers(n))
    centres[0] = x[first]
    closest = np.maximum(sq + sq[first] - 2.0 * (x @ x[first]), 0.0)
    potential = float(closest.sum())
    for c in range(1, k):
        if potential <= 0:  # fewer distinct points than k: any remaining point will do
            centres[c] = x[int(rng.integers(n))]
            continue
        cand = np.minimum(np.searchsorted(np.cumsum(closest), rng.random(trials) * potential), n - 1)
        dist = np.maximum(sq[None, :] + sq[cand][:, None] - 2.0 * (x[cand] @ x.T), 0.0)
        np.minimum(dist, closest[None, :], out=dist)
        pots = dist.sum(axis=1)
        best = int(np.argmin(pots))
        closest, potential = dist[best], float(pots[best])
        centres[c] = x[cand[best]]
    return centres


#: k-means++ path: the seeding and restarts run on a seeded sample of this many rows per centre
SAMPLE_PER_CENTROID = 100
#: ... seeded with this many times K centres, then merged down to K (Ward's criterion)
OVERSEED = 2
#: Lloyd iterations stop when the inertia improves by less than this share (or at `niter`)
TOL = 1e-5


def kmeans(x: np.ndarray, k: int, seed: int, niter: int = 20, n_init: int = 1, backend: str = "faiss",
           init: str = "k-means++") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """k-means in Euclidean space. Returns labels, squared distances to the assigned centre,
    and the centres (every row's label is its nearest centre); k >= rows gives one cluster per row.

    backend "faiss", init "k-means++" (the default): on a seeded sample of SAMPLE_PER_CENTROID x k
    rows, greedy k-means++ seeds OVERSEED x k centres (scikit-learn's variant), Lloyd iterations
    settle them, and Ward's criterion merges the closest pair (weighted by cluster sizes) until k
    remain: over-seeding puts a centre into every small group, which plain k-means++ misses on
    skewed sizes, and the merge joins the pieces of big groups. Lloyd on the sample, then on all
    rows (at most `niter` iterations each, stopping when the inertia improves by less than TOL).
    `n_init` restarts repeat the sample part with other seeds; the lowest sample inertia wins.
    See benchmarks/results/select.md: within 0.1% of scikit-learn's KMeans(n_init=10) inertia
    (lower on planted topics) at a fraction of its time.
    init "random": FAISS's own k-means (random seeds, `niter` iterations; much worse on skewed
    sizes). backend "sklearn": KoQuality's own KMeans (k-means++, n_init restarts,
    random_state = seed): exact, and far slower.
    """
    n, d = x.shape
    x = np.ascontiguousarray(x, dtype=np.float32)
    if k >= n:
        return np.arange(n, dtype=np.int64), np.zeros(n, dtype=np.float32), x.copy()
    if k == 1:
        centre = x.mean(axis=0, keepdims=True)
        return np.zeros(n, dtype=np.int64), ((x - centre) ** 2).sum(axis=1), centre
    if backend == "sklearn":
        from sklearn.cluster import KMeans

        sk = KMeans(k, n_init=max(1, int(n_init)), random_state=int(seed) % (2**32)).fit(x)
        centres = sk.cluster_centers_.astype(np.float32)
        labels = sk.labels_.astype(np.int64)
        return labels, ((x - centres[labels]) ** 2).sum(axis=1), centres
    import faiss

    # Small problems: one thread. OpenMP's thread start-up and barriers cost more than the work,
    # badly so on a busy machine.
    threads = faiss.omp_get_max_threads()
    if n * k * d < 200_000_000:
        faiss.omp_set_num_threads(1)
    try:
        if init == "random":
            return _faiss_kmeans(faiss, x, k, seed, niter, n_init)
        return _merged_kmeans(faiss, x, k, seed, niter, n_init)
    finally:
        faiss.omp_set_num_threads(threads)


def _faiss_kmeans(faiss, x, k, seed, niter, n_init):
    """FAISS's own k-means (its random seeding), `n_init` restarts, the lowest inertia wins."""
    n, d = x.shape
    best = None
    for restart in range(max(1, int(n_init))):
        run_seed = (int(seed) + restart) % (2**31)
        km = faiss.Kmeans(d, k, niter=niter, seed=run_seed, verbose=False,
                          max_points_per_centroid=max(256, -(-n // k)), min_points_per_centroid=1)
        km.train(x)
        dist, labels = km.index.search(x, 1)
        total = float(dist.sum())
        if best is None or total < best[0]:
            best = (total, labels[:, 0].astype(np.int64), dist[:, 0], km.centroids.copy())
    return best[1], best[2], best[3]


def _assign(faiss, x: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centre of every row (FAISS exact L2 search) and the squared distance to it."""
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(np.ascontiguousarray(centres, dtype=np.float32))
    dist, labels = index.search(x, 1)
    return labels[:, 0].astype(np.int64), np.maximum(dist[:, 0], 0.0)


def _means(x: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster sums divided by sizes (a sparse one-hot product) and the sizes."""
    from scipy.sparse import csr_matrix

    n = len(labels)
    onehot = csr_matrix((np.ones(n, dtype=np.float32), (labels, np.arange(n))), shape=(k, n))
    sums = np.asarray(onehot @ x, dtype=np.float64)
    sizes = np.bincount(labels, minlength=k)
    return sums / np.maximum(sizes, 1)[:, None], sizes


def lloyd(faiss, x: np.ndarray, centres: np.ndarray, niter: int, tol: float = TOL):
    """Lloyd iterations from `centres` until the inertia improves by less than `tol` (relative)
    or `niter` updates: labels, squared distances, centres, inertia, updates made. The labels
    returned are the nearest centres of the centres returned. A centre left without rows moves
    to the row farthest from its own centre (as scikit-learn relocates empty clusters)."""
    k = len(centres)
    centres = np.ascontiguousarray(centres, dtype=np.float32)
    labels, dist = _assign(faiss, x, centres)
    total = float(dist.sum(dtype=np.float64))
    done = 0
    while done < niter:
        means, sizes = _means(x, labels, k)
        empty = np.flatnonzero(sizes == 0)
        if len(empty):
            far = np.argsort(-dist, kind="stable")[: len(empty)]
            means[empty] = x[far]
        new_centres = means.astype(np.float32)
        new_labels, new_dist = _assign(faiss, x, new_centres)
        new_total = float(new_dist.sum(dtype=np.float64))
        done += 1
        if new_total > total:  # float noise at a fixed point: keep the better state
            break
        improved = total - new_total
        centres, labels, dist, total = new_centres, new_labels, new_dist, new_total
        if improved <= tol * total:
            break
    return labels, dist, centres, total, done


def ward_merge(centres: np.ndarray, sizes: np.ndarray, k: int) -> np.ndarray:
    """Merge weighted centres, the pair of least Ward cost n_i n_j / (n_i + n_j) |c_i - c_j|^2
    first (the rise in inertia the merge causes), until `k` remain; each merge is the weighted mean."""
    c = np.asarray(centres, dtype=np.float64).copy()
    w = np.asarray(sizes, dtype=np.float64).copy()
    m = len(c)
    alive = np.ones(m, dtype=bool)
    sq = np.einsum("ij,ij->i", c, c)
    cost = (w[:, None] * w[None, :]) / (w[:, None] + w[None, :]) * np.maximum(sq[:, None] + sq[None, :] - 2 * c @ c.T, 0)
    np.fill_diagonal(cost, np.inf)
    for _ in range(m - k):
        i, j = divmod(int(np.argmin(cost)), m)
        c[i] = (w[i] * c[i] + w[j] * c[j]) / (w[i] + w[j])
        w[i] += w[j]
        alive[j] = False
        cost[j, :] = cost[:, j] = np.inf
        row = w * w[i] / (w + w[i]) * ((c - c[i]) ** 2).sum(axis=1)
        row[~alive] = np.inf
        row[i] = np.inf
        cost[i, :] = cost[:, i] = row
    return c[alive].astype(np.float32)


def _merged_kmeans(faiss, x, k, seed, niter, n_init):
    """kmeans()'s default path: over-seeded k-means++ on a sample, Ward merge, Lloyd on the sample, then on all rows."""
    n = len(x)
    rng = np.random.default_rng(int(seed) % (2**32))
    m = min(n, SAMPLE_PER_CENTROID * k)
    sample = x if m == n else np.ascontiguousarray(x[np.sort(rng.choice(n, m, replace=False))])
    over = min(OVERSEED * k, m)
    best = None
    for restart in range(max(1, int(n_init))):
        seeds = kmeans_plusplus(sample, over, np.random.default_rng((int(seed) + restart) % (2**32)))
        labels, _, centres, _, _ = lloyd(faiss, sample, seeds, niter)
        sizes = np.bincount(labels, minlength=over)
        centres = ward_merge(centres[sizes > 0], sizes[sizes > 0], k) if (sizes > 0).sum() > k else centres[:k]
        labels, dist, centres, total, _ = lloyd(faiss, sample, centres, niter)
        if best is None or total < best[0]:
            best = (total, labels, dist, centres)
    if m == n:
        return best[1], best[2], best[3]
    labels, dist, centres, _, _ = lloyd(faiss, x, best[3], niter)
    return labels, dist, centres


def unit_rows(emb: np.ndarray, block: int = 65_536) -> np.ndarray:
    """float32 rows of unit length; already-unit input (e.g. a memory-mapped .npy) is not copied."""
    norms = np.concatenate([np.linalg.norm(np.asarray(emb[i : i + block], dtype=np.float32), axis=1)
                            for i in range(0, len(emb), block)]) if len(emb) else np.ones(0, dtype=np.float32)
    if emb.dtype == np.float32 and np.allclose(norms, 1.0, atol=1e-3):
        return emb
    out = np.array(emb, dtype=np.float32)
    out /= np.maximum(norms, 1e-12)[:, None]
    return out


def prompt_embeddings(frame: pl.DataFrame, ctx: RunContext, *, embedder: str = "default",
                      embeddings: str | None = None) -> np.ndarray:
    """Unit vectors of each row's prompt: from a column or an .npy file when given, else embedded
    (through the embedding cache, so a rerun or another step's embedding of the same text is free)."""
    if embeddings:
        if embeddings in frame.columns:
            emb = np.asarray(frame[embeddings].to_list(), dtype=np.float32)
            where = f"column '{embeddings}'"
        else:
            path = Path(embeddings)
            if not path.is_file():
                raise InputError(
                    f"--embeddings {embeddings}: neither a column ({', '.join(frame.columns)}) nor an .npy file"
                )
            emb = np.load(path, mmap_mode="r")
            where = str(path)
        if emb.ndim != 2 or emb.shape[0] != frame.height:
            raise InputError(
                f"{where}: embeddings have shape {tuple(emb.shape)} but the input has {frame.height:,} rows; "
                f"pass one vector per row, in the input's order (rows with an empty instruction or output are "
                f"dropped first: embed the folder `kocurate normalize` writes)"
            )
        return unit_rows(emb)
    from .embed import embed_texts  # heavy backends load lazily

    return np.asarray(
        embed_texts(prompt_texts(frame), embedder=embedder, cache_dir=ctx.cache_dir, show_progress=ctx.show_progress),
        dtype=np.float32,
    )


def check_kmeans_params(clusters: int, length_groups: int, niter: int, n_init: int, kmeans: str, init: str) -> None:
    """One place for the clustering parameters' checks (cluster and select share them)."""
    for flag, value in (("--length-groups", length_groups), ("--clusters", clusters), ("--niter", niter),
                        ("--n-init", n_init)):
        if int(value) < 1:
            raise InputError(f"{flag} {value} must be at least 1")
    if kmeans not in KMEANS_BACKENDS:
        raise InputError(f"--kmeans {kmeans}: unknown; use faiss or sklearn")
    if init not in INITS:
        raise InputError(f"--init {init}: unknown; use k-means++ or random")


def assign_clusters(frame: pl.DataFrame, emb: np.ndarray, ctx: RunContext, *, length_groups_n: int, clusters: int,
                    niter: int = 20, n_init: int = 1, kmeans_backend: str = "faiss",
                    init: str = "k-means++") -> tuple[pl.DataFrame, dict]:
    """`frame` with CLUSTER_COLUMNS added, and the per-group statistics."""
    n = frame.height
    if clusters > n:
        raise InputError(
            f"--clusters {clusters} is more than the {n:,} input rows; pass --clusters {max(1, n // 20)} or fewer"
        )
    lengths = np.fromiter((len(t) for t in prompt_texts(frame)), dtype=np.int64, count=n)
    groups, edges = length_groups(lengths, length_groups_n)
    cluster = np.zeros(n, dtype=np.int64)
    dist = np.zeros(n, dtype=np.float32)
    group_ids = np.unique(groups)
    shrunk = []
    for g in ctx.track(group_ids, f"k-means: {len(group_ids)} length groups x {clusters} clusters"):
        members = np.flatnonzero(groups == g)
        k = min(clusters, len(members))
        if k < clusters:
            shrunk.append(int(g))
        labels, d2, _ = kmeans(emb[members], k, seed=ctx.seed, niter=niter, n_init=n_init,
                               backend=kmeans_backend, init=init)
        cluster[members] = labels
        dist[members] = d2
    out = frame.drop([c for c in CLUSTER_COLUMNS if c in frame.columns]).with_columns(
        pl.Series("len", lengths), pl.Series("len_group", groups), pl.Series("cluster", cluster),
        pl.Series("cluster_dist", dist),
    )
    stats = {
        "groups": len(group_ids),
        "clusters_total": int(np.unique(groups * (clusters + 1) + cluster).size),
        "groups_with_fewer_rows_than_clusters": shrunk,
        "length_cut_points": edges,
    }
    return out, stats


@dataclass
class Embed(Step):
    """Embed every row's prompt into the cache (rows unchanged), or into a column with `column`.

    In a recipe it makes the embedding cost visible as its own step; `cluster` and `select`
    then find every vector in the cache."""

    embedder: str = "default"
    #: also write the vectors into this column (list of float32); None: cache only
    column: str | None = None
    name: ClassVar[str] = "embed"

    def run(self, frame: pl.DataFrame, ctx: RunContext) -> StepResult:
        if frame.height == 0:
            return self.keep_all(frame)
        emb = prompt_embeddings(frame, ctx, embedder=self.embedder)
        kept = frame
        if self.column:
            if self.column in frame.columns:
                raise InputError(f"embed column '{self.column}' already exists; pass another name or drop it first")
            kept = frame.with_columns(pl.Series(self.column, emb.tolist(), dtype=pl.List(pl.Float32)))
        return self.keep_all(kept, embedder=self.embedder, dim=int(emb.shape[1]), rows_embedded=frame.height)


@dataclass
class KMeansParams:
    """Length groups x k-means: the parameters `cluster` and `select` (which clusters by itself
    when its input was not clustered) share."""

    length_groups: int = 5
    clusters: int = 100
    embedder: str = "default"
    #: precomputed embeddings: a .npy file (one row per input row, in order) or a column name
    embeddings: str | None = None
    #: most Lloyd iterations per stage (they stop earlier once the inertia settles)
    niter: int = 20
    #: k-means restarts (the lowest inertia wins); KoQuality's sklearn run used 10, which kocurate's
    #: default k-means does not need to match its inertia (benchmarks/results/select.md)
    n_init: int = 1
    #: faiss (default) or sklearn (KoQuality's own KMeans; use with n_init 10 and seed 42 to replicate)
    kmeans: str = "faiss"
    #: seeding: k-means++ (default: over-seeded on a sample, Ward-merged) or random (FAISS's own k-means)
    init: str = "k-means++"

    def check_kmeans(self) -> None:
        check_kmeans_params(self.clusters, self.length_groups, self.niter, self.n_init, self.kmeans, self.init)


@dataclass
class Cluster(KMeansParams, Step):
    """Length groups x k-means on prompt embeddings; adds len, len_group, cluster, cluster_dist."""

    name: ClassVar[str] = "cluster"

    def __post_init__(self):
        self.check_kmeans()

    def assign(self, frame: pl.DataFrame, ctx: RunContext) -> tuple[pl.DataFrame, dict]:
        emb = prompt_embeddings(frame, ctx, embedder=self.embedder, embeddings=self.embeddings)
        out, stats = assign_clusters(frame, emb, ctx, length_groups_n=self.length_groups, clusters=self.clusters,
                                     niter=self.niter, n_init=self.n_init, kmeans_backend=self.kmeans, init=self.init)
        return out, {"embedder": self.embeddings or self.embedder, **stats}

    def run(self, frame: pl.DataFrame, ctx: RunContext) -> StepResult:
        if frame.height == 0:
            return self.keep_all(frame)
        out, stats = self.assign(frame, ctx)
        return self.keep_all(out, **stats)
