"""`select` on Ray: exact length quantiles, k-means per length group on a sample, assignment per
batch, picks per (length group, cluster).

1. per batch (an actor pool: the embedder loads once per actor): each row's prompt length, its
   prompt vector (embedded through the shared cache, or read from the .npy / column given) and its
   score; kept in the object store, never on the driver;
2. the driver gathers the lengths (one integer per row) and cuts the length groups at their exact
   quantiles (`cluster.length_groups`), then gathers a seeded sample of each group's vectors
   (all of them when the group has at most `sample_rows` rows, the default 256 per cluster) and
   runs `cluster.kmeans` on it, the local step's k-means (it seeds on 100 rows per cluster of what
   it is given and refines on all of it): the centroids;
3. per block: each row goes to its length group's nearest centroid (squared L2, as FAISS assigns);
4. the driver gathers (group, cluster, distance, score, text hash) per row, numbers only, and
   runs `select.quotas` / `select.pick` per (group, cluster) exactly as the local step does;
5. per batch: rows marked kept or removed (`not-selected`), annotated with len, len_group, cluster.

With every row of a group in its sample the centroids are the local step's, so the kept ids are
identical (tests/test_engine.py). `diverse` needs the vectors of a cell together and runs on
the driver (gathered); a `cluster` step's clusters in the input are reused as the local step does.
"""

from __future__ import annotations

import time

import numpy as np
import polars as pl

from ...errors import InputError
from ...records import removal_frame
from ..step import RunContext

POINTS_PER_CENTROID = 256


class Features:
    """Per batch: position, prompt length, prompt vector, score and prompt hash of every row."""

    def __init__(self, step, seed: int, cache_dir: str | None):
        self.step, self.seed, self.cache_dir = step, seed, cache_dir
        self.model = None
        self.matrix = None

    def __call__(self, batch):
        from pathlib import Path

        from ..embed import embed_texts, load_embedder, text_keys
        from ..score import prompt_texts
        from .ray_data import POS, _as_frame

        frame = _as_frame(batch)
        step = self.step
        texts = prompt_texts(frame)
        lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=frame.height)
        if step.embeddings and step.embeddings in frame.columns:
            from ..cluster import unit_rows

            emb = unit_rows(np.asarray(frame[step.embeddings].to_list(), dtype=np.float32))
        elif step.embeddings:
            from ..cluster import unit_rows

            if self.matrix is None:
                self.matrix = np.load(step.embeddings, mmap_mode="r")
            emb = unit_rows(np.asarray(self.matrix[frame[POS].to_numpy()], dtype=np.float32))
        else:
            if self.model is None:
                self.model = load_embedder(step.embedder)
            emb = np.asarray(embed_texts(texts, self.model, cache_dir=None if self.cache_dir is None else Path(self.cache_dir)),
                             dtype=np.float32)
        if step.method in ("ppl", "ppl-h", "diverse"):
            scores = frame[step.score_column].cast(pl.Float64).fill_nan(None).to_numpy()
        else:
            scores = np.zeros(frame.height)
        import pyarrow as pa

        return pa.table({
            POS: frame[POS].to_numpy(), "len": lengths, "score": scores,
            "hash": text_keys(texts).view(np.int64),
            "vec": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), pa.float32()), emb.shape[1]),
        })


def _vectors(table) -> np.ndarray:
    column = table.column("vec").combine_chunks()
    dim = column.type.list_size
    return column.values.to_numpy(zero_copy_only=False).reshape(-1, dim)


def run_select(executor, step, ds, ctx: RunContext, rows: int | None = None):
    import ray

    from ..cluster import kmeans, length_groups
    from ..select import cells_and_quotas, pick, selection_stats
    from .ray_data import RayStepOutput

    start = time.perf_counter()
    if step.method == "diverse" or "cluster_dist" in ds.columns():
        return executor._on_driver(step, ds, ctx)
    if step.method in ("ppl", "ppl-h") and step.score_column not in ds.columns():
        if step.scorer:  # scoring on the fly: the local step's model loading, on the driver
            return executor._on_driver(step, ds, ctx)
        raise InputError(
            f"--method {step.method} needs a '{step.score_column}' score column and the input has none "
            f"(columns: {', '.join(c for c in ds.columns() if not c.startswith('_kc_'))}); run `kocurate score` first"
        )
    cache = None if ctx.cache_dir is None else str(ctx.cache_dir)
    from .ray_data import map_features

    embedder = None if step.embeddings else step.embedder  # precomputed vectors need no model
    refs = map_features(executor, ds, Features, embedder=embedder, step=step, seed=ctx.seed,
                        cache_dir=cache).to_arrow_refs()

    # 2. lengths (and the other per-row numbers) to the driver, in input order
    narrow = ray.get([_r("_narrow").remote(r) for r in refs])
    pos = np.concatenate([n[0] for n in narrow])
    order = np.argsort(pos, kind="stable")
    pos = pos[order]
    lengths, scores, hashes = (np.concatenate([n[i] for n in narrow])[order] for i in (1, 2, 3))
    n = len(pos)
    if n == 0:
        return executor._on_driver(step, ds, ctx)
    if step.clusters > n:
        raise InputError(f"--clusters {step.clusters} is more than the {n:,} input rows; pass --clusters {max(1, n // 20)} or fewer")
    if step.size is not None and step.size > n:
        raise InputError(f"--size {step.size:,} is more than the {n:,} input rows; pass --size {n:,} or fewer (or --ratio for a share)")
    if step.method in ("ppl", "ppl-h") and np.isnan(scores).any():
        bad = int(np.flatnonzero(np.isnan(scores))[0])
        raise InputError(f"--method {step.method}: score column '{step.score_column}' is empty for "
                         f"{int(np.isnan(scores).sum()):,} of {n:,} rows (first: input row {int(pos[bad]) + 1}); "
                         f"run `kocurate score` first")
    groups, edges = length_groups(lengths, step.length_groups)

    # 3. centroids per group from a sample of its vectors
    rng = np.random.default_rng(ctx.seed)
    centroids: dict[int, np.ndarray] = {}
    identity: dict[int, np.ndarray] = {}
    shrunk = []
    limit = executor.sample_rows
    for g in np.unique(groups).tolist():
        members = pos[groups == g]
        k = min(step.clusters, len(members))
        if k < step.clusters:
            shrunk.append(int(g))
        cap = limit if limit is not None else POINTS_PER_CENTROID * k
        sample = members if len(members) <= cap else np.sort(rng.choice(members, cap, replace=False))
        vecs = _gather_vectors(refs, sample)
        if k >= len(members):  # one cluster per row, numbered in input order (as the local step does)
            identity[g] = members
            centroids[g] = vecs
            continue
        _, _, centres = kmeans(vecs, k, seed=ctx.seed, niter=step.niter, n_init=step.n_init, backend=step.kmeans,
                               init=step.init)
        centroids[g] = np.ascontiguousarray(centres, dtype=np.float32)

    # 4. assignment per block
    inner = np.asarray(edges[1:-1], dtype=np.float64)
    shared = ray.put((inner, centroids, identity))
    assigned = ray.get([_r("_assign").remote(r, shared) for r in refs])
    a_pos = np.concatenate([a[0] for a in assigned])
    a_order = np.argsort(a_pos, kind="stable")
    cluster = np.concatenate([a[1] for a in assigned])[a_order]
    dist = np.concatenate([a[2] for a in assigned])[a_order]

    # 5. picks per (group, cluster), as Select.run makes them
    members_of, quota = cells_and_quotas(groups, cluster, step.clusters, method=step.method, ratio=step.ratio,
                                         size=step.size)
    pick_rng = np.random.default_rng(ctx.seed)
    texts = hashes.tolist()  # ppl-h compares prompt texts for equality: their hashes do the same
    chosen = np.zeros(n, dtype=bool)
    for j, m in enumerate(members_of):
        p = pick(step.method, m, ratio=step.ratio, quota=None if quota is None else int(quota[j]), scores=scores,
                 dist=dist, emb=None, texts=texts, rng=pick_rng, tau=step.tau)
        chosen[p] = True

    # 6. mark rows
    top = int(pos.max()) + 1
    by_pos = np.full((3, top), -1, dtype=np.int64)
    by_pos[0, pos], by_pos[1, pos], by_pos[2, pos] = groups, cluster, chosen
    table = ray.put((by_pos, lengths_by_pos(pos, lengths, top)))
    out = ds.map_batches(_mark, batch_format="pyarrow", fn_kwargs={"shared": table, "step": step, "seed": ctx.seed})

    group_ids = np.unique(groups)
    stats = selection_stats(step, quota, members_of, groups, cluster, chosen, edges, clustering={
        "groups_with_fewer_rows_than_clusters": shrunk,
        "length_cut_points": edges,
    }, after={
        "kmeans_sample_rows": {str(g): int(min(len(pos[groups == g]), limit if limit is not None else
                                               POINTS_PER_CENTROID * min(step.clusters, int((groups == g).sum()))))
                               for g in group_ids.tolist()},
    })
    output = executor.split(step, out, start, "lengths and centroids gathered; assignment per block")
    output.record.stats = {**stats, "engine": output.record.stats.get("engine")}
    return RayStepOutput(output.kept, output.removed, output.record, output.record.stats)


def lengths_by_pos(pos: np.ndarray, lengths: np.ndarray, top: int) -> np.ndarray:
    out = np.zeros(top, dtype=np.int64)
    out[pos] = lengths
    return out


def _narrow_fn(table):
    from .ray_data import POS

    return (table.column(POS).to_numpy(), table.column("len").to_numpy(), table.column("score").to_numpy(),
            table.column("hash").to_numpy())


def _take_fn(table, positions):
    import pyarrow as pa
    import pyarrow.compute as pc

    from .ray_data import POS

    mask = pc.is_in(table.column(POS), value_set=pa.array(positions))
    part = table.filter(mask)
    return part.column(POS).to_numpy(), _vectors(part) if part.num_rows else np.zeros((0, 0), np.float32)


def _gather_vectors(refs, positions: np.ndarray) -> np.ndarray:
    import ray

    parts = [p for p in ray.get([_r("_take").remote(r, positions) for r in refs]) if len(p[0])]
    got = np.concatenate([p[0] for p in parts])
    vecs = np.concatenate([p[1] for p in parts])
    return np.ascontiguousarray(vecs[np.argsort(got, kind="stable")], dtype=np.float32)


def _assign_fn(table, shared):
    import faiss

    from .ray_data import POS

    inner, centroids, identity = shared
    pos = table.column(POS).to_numpy()
    lengths = table.column("len").to_numpy()
    groups = np.searchsorted(inner, lengths, side="left")
    vecs = _vectors(table) if table.num_rows else None
    cluster = np.zeros(len(pos), dtype=np.int64)
    dist = np.zeros(len(pos), dtype=np.float32)
    for g in np.unique(groups).tolist():
        rows = np.flatnonzero(groups == g)
        if g in identity:
            cluster[rows] = np.searchsorted(identity[g], pos[rows])
            continue
        centres = centroids[g]
        if len(centres) == 1:
            cluster[rows] = 0
            dist[rows] = ((vecs[rows] - centres[0]) ** 2).sum(axis=1)
            continue
        index = faiss.IndexFlatL2(centres.shape[1])
        index.add(centres)
        d, label = index.search(np.ascontiguousarray(vecs[rows]), 1)
        cluster[rows], dist[rows] = label[:, 0], d[:, 0]
    return pos, cluster, dist


def _mark(batch, shared, step, seed):
    from ..step import StepResult
    from .ray_data import POS, _as_frame, combine, resolve

    by_pos, lengths = resolve(shared)
    frame = _as_frame(batch)
    pos = frame[POS].to_numpy()
    annotated = frame.drop([c for c in ("len", "len_group", "cluster", "cluster_dist") if c in frame.columns]).with_columns(
        pl.Series("len", lengths[pos]), pl.Series("len_group", by_pos[0, pos]), pl.Series("cluster", by_pos[1, pos]))
    keep = pl.Series(by_pos[2, pos] == 1)
    kept = annotated.filter(keep)
    removed = removal_frame(
        annotated.filter(~keep), step.name, "not-selected",
        detail=pl.format("len_group {} cluster {} ({})", pl.col("len_group"), pl.col("cluster"), pl.lit(step.method)),
    )
    return combine(StepResult(kept, removed, {}), frame.height)


_REMOTES: dict = {}


def _r(name: str):
    """A Ray remote function of this module, made on first use (Ray is imported lazily)."""
    if name not in _REMOTES:
        import ray

        _REMOTES[name] = ray.remote({"_narrow": _narrow_fn, "_take": _take_fn, "_assign": _assign_fn}[name])
    return _REMOTES[name]
