"""Semantic dedup on Ray: the same greedy keep-first rule, pairs found cell by cell.

1. per batch (actor pool, the embedder loads once per actor): each row's text vector (through
   the shared embedding cache) and whether its text is empty;
2. the driver gathers a seeded sample of 16 vectors per cell (as `index.CellIndex` trains) and
   runs FAISS spherical k-means on it: `nlist` centroids (`index.ivf_params`);
3. per block: each row's `nprobe` nearest cells; the nearest is its home. One record per
   (row, probed cell), vector included;
4. a hash shuffle on the cell (``repartition(keys=[cell])``) puts each cell's homes and
   visitors in one partition; per cell one product visitors x homes finds every pair above the
   threshold with the home row earlier in input order (the only pairs the greedy pass reads);
5. the driver gathers the pairs (positions, score, the earlier row's id) and resolves them with
   `dedup.SemanticResult` (greedy in input order, keep-first), then a filter marks the rows.

With ``nprobe = nlist`` every cell is probed and the pairs are exactly those of exact search.
"""

from __future__ import annotations

import time

import numpy as np
import polars as pl

from ...records import removal_frame
from ..step import RunContext

#: cells each row visits on Ray (CellIndex visits 32; 8 keeps the shuffle at 8 copies of a vector)
RAY_NPROBE = 8
CELL = "_kc_cell"
HOME = "_kc_home"


class SemanticFeatures:
    def __init__(self, step, cache_dir: str | None):
        self.step, self.cache_dir, self.model = step, cache_dir, None

    def __call__(self, batch):
        from pathlib import Path

        import pyarrow as pa

        from ..dedup import row_texts
        from ..embed import embed_texts, load_embedder
        from .ray_data import POS, _as_frame

        if self.model is None:
            self.model = load_embedder(self.step.embedder)
        frame = _as_frame(batch)
        texts = row_texts(frame, self.step.columns)
        empty = np.array([not t for t in texts], dtype=bool)
        vecs = np.asarray(embed_texts(texts, self.model, cache_dir=None if self.cache_dir is None else Path(self.cache_dir)),
                          dtype=np.float32)
        return pa.table({POS: frame[POS].to_numpy(), "id": frame["id"].cast(pl.String).to_arrow(), "empty": empty,
                         "vec": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1), pa.float32()), vecs.shape[1])})


def run_semantic(executor, step, ds, ctx: RunContext, rows: int | None = None):
    import faiss
    import ray

    from ..dedup import SemanticResult, default_threshold
    from ..embed import load_embedder
    from ..index import Pairs, ivf_params
    from .ray_data import RayStepOutput, unwrap
    from .ray_select import _gather_vectors

    start = time.perf_counter()
    if getattr(step, "rule", "instruction") != "instruction":
        # the `row` rule's second stage (exact-text candidates, jamo n-gram checks) is a sequential
        # pass over the rows: it runs on the driver until dedup.py offers a per-pair check
        return executor._on_driver(step, ds, ctx)
    model = load_embedder(step.embedder) if isinstance(step.embedder, str) else step.embedder
    resolved = step.resolve(model) if hasattr(step, "resolve") else {"embedder": model.name}
    threshold = resolved.get("threshold") or (step.threshold if step.threshold is not None else default_threshold(model))
    cache = None if ctx.cache_dir is None else str(ctx.cache_dir)
    from .ray_data import map_features

    features = map_features(executor, ds, SemanticFeatures, step=step, cache_dir=cache)
    refs = features.to_arrow_refs()
    meta = ray.get([_r_sem("_positions").remote(r) for r in refs])
    pos = np.sort(np.concatenate([m[0] for m in meta]))
    empty_pos = np.sort(np.concatenate([m[1] for m in meta]))
    live = np.setdiff1d(pos, empty_pos, assume_unique=True)
    n = len(live)

    pairs_q = pairs_j = np.zeros(0, np.int64)
    pairs_s = np.zeros(0, np.float32)
    pairs_id: list[str] = []
    nlist = nprobe = 0
    if n > 1:
        nlist = int(min(executor.nlist or ivf_params(n, RAY_NPROBE)[0], n))
        nprobe = int(min(executor.nprobe or RAY_NPROBE, nlist))
        rng = np.random.default_rng(ctx.seed)
        per_cell = 16
        sample = live if n <= per_cell * nlist else np.sort(rng.choice(live, per_cell * nlist, replace=False))
        vecs = _gather_vectors(refs, sample)
        dim = vecs.shape[1]
        kmeans = faiss.Kmeans(dim, nlist, niter=6, seed=ctx.seed, spherical=True, max_points_per_centroid=per_cell,
                              min_points_per_centroid=1, verbose=False)
        kmeans.train(vecs)
        centroids = ray.put((np.ascontiguousarray(kmeans.centroids, dtype=np.float32), nprobe))
        records = features.map_batches(_probe_cells, batch_format="pyarrow", fn_kwargs={"shared": centroids})
        parts = max(2, min(nlist, -(-n * nprobe // executor.partition_rows)))
        radius = float(np.nextafter(np.float32(threshold), np.float32(-1)))
        found = records.repartition(parts, keys=[CELL]).map_batches(
            _cell_pairs, batch_size=None, batch_format="pyarrow", fn_kwargs={"radius": radius})
        try:
            tables = [t for t in ray.get(found.materialize().to_arrow_refs()) if t.num_rows]
        except Exception as exc:
            raise unwrap(exc) from None
        if tables:
            import pyarrow as pa

            table = pa.concat_tables(tables)
            pairs_q, pairs_j = table.column("q").to_numpy(), table.column("j").to_numpy()
            pairs_s = table.column("s").to_numpy().astype(np.float32)
            pairs_id = table.column("j_id").to_pylist()

    # greedy keep-first over the rows that have pairs (a row with none is kept and blocks nothing)
    involved = np.unique(np.concatenate([pairs_q, pairs_j])) if pairs_q.size else np.zeros(0, np.int64)
    q_c = np.searchsorted(involved, pairs_q)
    j_c = np.searchsorted(involved, pairs_j)
    order = np.lexsort((-pairs_s, q_c))
    q_c, j_c, s_c = q_c[order], j_c[order], pairs_s[order]
    lims = np.zeros(len(involved) + 1, dtype=np.int64)
    np.cumsum(np.bincount(q_c, minlength=len(involved)), out=lims[1:])
    id_of = dict(zip(pairs_j.tolist(), pairs_id))
    result = SemanticResult.from_pairs([str(p) for p in involved.tolist()],
                                       Pairs(lims, j_c.astype(np.int64), s_c, threshold, "ray-ivf"), threshold)
    gone = np.flatnonzero(~result.kept)
    removed_pos = involved[gone]
    twin_pos = involved[result.dup_of[gone]]
    decision = ray.put((removed_pos, [id_of[int(t)] for t in twin_pos], result.similarity[gone].astype(np.float64),
                        empty_pos, float(threshold)))
    out = ds.map_batches(_mark_semantic, batch_format="pyarrow", fn_kwargs={"shared": decision, "step": step})
    output = executor.split(step, out, start, f"cells by a hash shuffle: nlist {nlist}, nprobe {nprobe}")
    stats = {**resolved, "threshold": threshold, "search": f"ray-ivf (nlist {nlist}, nprobe {nprobe})",
             "pairs_earlier": int(pairs_q.size), "semantic_duplicates": int(len(removed_pos)),
             "empty_text": int(len(empty_pos))}
    output.record.stats = {**stats, "engine": output.record.stats.get("engine")}
    out = RayStepOutput(output.kept, output.removed, output.record, output.record.stats)
    out.pairs = (pairs_q, pairs_j, pairs_s)  # type: ignore[attr-defined]  (the result carries them, not the step)
    return out


def _positions_fn(table):
    from .ray_data import POS

    pos = table.column(POS).to_numpy()
    empty = table.column("empty").to_numpy(zero_copy_only=False)
    return pos, pos[empty]


def _probe_cells(batch, shared):
    import faiss
    import pyarrow as pa
    import pyarrow.compute as pc

    from .ray_data import POS, resolve
    from .ray_select import _vectors

    centroids, nprobe = resolve(shared)
    table = batch.filter(pc.invert(batch.column("empty")))
    if not table.num_rows:
        return pa.table({CELL: pa.array([], pa.int64()), HOME: pa.array([], pa.bool_()), POS: pa.array([], pa.int64()),
                         "id": pa.array([], pa.large_string()),
                         "vec": pa.FixedSizeListArray.from_arrays(pa.array([], pa.float32()), centroids.shape[1])})
    vecs = np.ascontiguousarray(_vectors(table))
    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(centroids)
    _, cells = index.search(vecs, nprobe)
    rows = np.repeat(np.arange(len(vecs)), nprobe)
    flat = cells.reshape(-1)
    valid = flat >= 0
    rows, flat = rows[valid], flat[valid]
    home = np.zeros(len(flat), dtype=bool)
    home[np.r_[0, np.flatnonzero(np.diff(rows)) + 1]] = True  # the first (nearest) probe is the home
    taken = table.take(pa.array(rows))
    return pa.table({CELL: flat.astype(np.int64), HOME: home, POS: taken.column(POS),
                     "id": taken.column("id").cast(pa.large_string()), "vec": taken.column("vec")})


def _cell_pairs(batch, radius: float):
    import pyarrow as pa

    from .ray_data import POS
    from .ray_select import _vectors

    empty = pa.table({"q": pa.array([], pa.int64()), "j": pa.array([], pa.int64()), "s": pa.array([], pa.float32()),
                      "j_id": pa.array([], pa.large_string())})
    if not batch.num_rows:
        return empty
    cell = batch.column(CELL).to_numpy()
    order = np.argsort(cell, kind="stable")
    cell = cell[order]
    home = batch.column(HOME).to_numpy(zero_copy_only=False)[order]
    pos = batch.column(POS).to_numpy()[order]
    ids = batch.column("id").to_pylist()
    ids = [ids[i] for i in order]
    vecs = np.ascontiguousarray(_vectors(batch)[order])
    starts = np.r_[0, np.flatnonzero(np.diff(cell)) + 1, len(cell)]
    qs, js, ss, jid = [], [], [], []
    for a, b in zip(starts[:-1], starts[1:]):
        homes = a + np.flatnonzero(home[a:b])
        if not homes.size:
            continue
        sims = vecs[a:b] @ vecs[homes].T
        r, k = np.nonzero(sims > radius)
        q, j = pos[a + r], pos[homes[k]]
        earlier = j < q
        qs.append(q[earlier])
        js.append(j[earlier])
        ss.append(sims[r, k][earlier])
        jid.extend(ids[i] for i in homes[k][earlier])
    if not qs:
        return empty
    return pa.table({"q": np.concatenate(qs), "j": np.concatenate(js), "s": np.concatenate(ss).astype(np.float32),
                     "j_id": pa.array(jid, pa.large_string())})


def _mark_semantic(batch, shared, step):
    from ..step import StepResult
    from .ray_data import POS, _as_frame, combine, resolve

    removed_pos, twins, sims, empty_pos, threshold = resolve(shared)
    frame = _as_frame(batch)
    pos = frame[POS].to_numpy()
    where = np.searchsorted(removed_pos, pos)
    where = np.minimum(where, max(len(removed_pos) - 1, 0))
    is_dup = (removed_pos[where] == pos) if len(removed_pos) else np.zeros(len(pos), dtype=bool)
    is_empty = np.isin(pos, empty_pos)
    dup_rows = np.flatnonzero(is_dup)
    dups = removal_frame(
        frame.filter(pl.Series(is_dup)), step.name, "semantic-duplicate",
        dup_of=pl.Series([twins[i] for i in where[dup_rows]], dtype=pl.String),
        similarity=pl.Series(sims[where[dup_rows]]),
        detail=pl.lit(f"cosine > {threshold}"),
    )
    empties = removal_frame(frame.filter(pl.Series(is_empty)), step.name, "empty-text",
                            detail=f"{'+'.join(step.columns)} is empty after NFKC and whitespace folding")
    removed = pl.concat([empties, dups], how="diagonal_relaxed")
    kept = frame.filter(pl.Series(~is_dup & ~is_empty))
    return combine(StepResult(kept, removed, {}), frame.height)


_REMOTES: dict = {}


def _r_sem(name: str):
    if name not in _REMOTES:
        import ray

        _REMOTES[name] = ray.remote({"_positions": _positions_fn}[name])
    return _REMOTES[name]
