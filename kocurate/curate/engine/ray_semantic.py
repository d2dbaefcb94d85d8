"""Semantic dedup on Ray: the same greedy keep-first rule, pairs found cell by cell.

1. per batch (actor pool, the embedder loads once per actor): each row's text vector (through
   the shared embedding cache) and whether its text is empty;
2. the driver gathers a seeded sample of 16 vectors per cell (as `index.CellIndex` trains) and
   runs FAISS spherical k-means on it: `nlist` centroids (`index.ivf_params`);
3. per block: each row's `nprobe` nearest cells; the nearest `spill` of them are its homes.
   One record per (row, probed cell), vector included;
4. a hash shuffle on the cell (``repartition(keys=[cell])``) puts each cell's homes and
   visitors in one partition; per cell one product visitors x homes finds every pair above the
   threshold with the home row earlier in input order (the only pairs the greedy pass reads).
   A pair is found when a cell the query probes is one of the other row's homes, and reported
   by the smallest such cell only (the records carry their probe lists);
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
#: cells each row lives in (its nearest RAY_SPILL probes). The shuffle already carries a record
#: per probed cell, so homes cost no shuffle volume, only larger products per cell; see
#: benchmarks/results/engine.md for the measured agreement with the local path.
RAY_SPILL = 8
CELL = "_kc_cell"
HOME = "_kc_home"
PROBES = "_kc_probes"


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
        columns = {POS: frame[POS].to_numpy(), "id": frame["id"].cast(pl.String).to_arrow(), "empty": empty,
                   "vec": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1), pa.float32()), vecs.shape[1])}
        if getattr(self.step, "rule", "instruction") == "row":  # what the row rule's workers read
            columns.update(_row_columns(frame, self.step))
        return pa.table(columns)


def run_semantic(executor, step, ds, ctx: RunContext, rows: int | None = None):
    import faiss
    import ray

    from ..dedup import SemanticResult, default_threshold
    from ..embed import load_embedder
    from ..index import Pairs, ivf_params
    from .ray_data import RayStepOutput, unwrap
    from .ray_select import _gather_vectors

    start = time.perf_counter()
    row_rule = getattr(step, "rule", "instruction") == "row"
    model = load_embedder(step.embedder) if isinstance(step.embedder, str) else step.embedder
    resolved = step.resolve(model, ctx.cache_dir) if hasattr(step, "resolve") else {"embedder": model.name}
    threshold = resolved.get("threshold") or (step.threshold if step.threshold is not None else default_threshold(model))
    cache = None if ctx.cache_dir is None else str(ctx.cache_dir)
    from .ray_data import map_features

    features = map_features(executor, ds, SemanticFeatures, embedder=step.embedder, step=step, cache_dir=cache)
    refs = features.to_arrow_refs()
    meta = ray.get([_r_sem("_positions").remote(r) for r in refs])
    pos = np.sort(np.concatenate([m[0] for m in meta]))
    empty_pos = np.sort(np.concatenate([m[1] for m in meta]))
    live = np.setdiff1d(pos, empty_pos, assume_unique=True)
    n = len(live)

    pairs_q = pairs_j = np.zeros(0, np.int64)
    pairs_s = np.zeros(0, np.float32)
    pairs_id: list[str] = []
    nlist = nprobe = spill = 0
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
        spill = int(min(getattr(executor, "spill", None) or RAY_SPILL, nprobe))
        centroids = ray.put((np.ascontiguousarray(kmeans.centroids, dtype=np.float32), nprobe, spill))
    if row_rule:
        table = _row_rule_pairs(executor, step, features, centroids, nlist, nprobe, spill, n, threshold) if n > 1 else None
        removed_pos, twins, sims, details, counted = _resolve_row_rule(table, threshold, step.row_check().max_edges)
        decision = ray.put((removed_pos, twins, sims, empty_pos, float(threshold), details))
        out = ds.map_batches(_mark_semantic, batch_format="pyarrow", fn_kwargs={"shared": decision, "step": step})
        output = executor.split(step, out, start, f"cells by a hash shuffle: nlist {nlist}, nprobe {nprobe}; "
                                                  "second stage in the workers")
        stats = {**resolved, "threshold": threshold, "search": f"ray-ivf (nlist {nlist}, nprobe {nprobe}, spill {spill})",
                 "passing_pairs": counted, "semantic_duplicates": int(len(removed_pos)), "empty_text": int(len(empty_pos))}
        output.record.stats = {**stats, "engine": output.record.stats.get("engine")}
        out = RayStepOutput(output.kept, output.removed, output.record, output.record.stats)
        out.pairs = None if table is None else (table.column("q").to_numpy(), table.column("j").to_numpy(),  # type: ignore[attr-defined]
                                                table.column("s").to_numpy())
        return out
    if n > 1:
        records = features.map_batches(_probe_cells, batch_format="pyarrow", fn_kwargs={"shared": centroids})
        parts = max(2, min(nlist, -(-n * nprobe // executor.partition_rows)))
        radius = float(np.nextafter(np.float32(threshold), np.float32(-1)))
        found = records.repartition(parts, keys=[CELL]).map_batches(
            _cell_pairs, batch_size=None, batch_format="pyarrow", fn_kwargs={"radius": radius, "spill": spill})
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
    stats = {**resolved, "threshold": threshold, "search": f"ray-ivf (nlist {nlist}, nprobe {nprobe}, spill {spill})",
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

    centroids, nprobe, spill = resolve(shared)
    table = batch.filter(pc.invert(batch.column("empty")))
    probes_of = lambda cells: pa.FixedSizeListArray.from_arrays(pa.array(cells.reshape(-1), pa.int32()), nprobe)  # noqa: E731
    if not table.num_rows:
        return pa.table({CELL: pa.array([], pa.int64()), HOME: pa.array([], pa.bool_()), POS: pa.array([], pa.int64()),
                         "id": pa.array([], pa.large_string()),
                         "vec": pa.FixedSizeListArray.from_arrays(pa.array([], pa.float32()), centroids.shape[1]),
                         PROBES: probes_of(np.zeros((0, nprobe), np.int32))})
    vecs = np.ascontiguousarray(_vectors(table))
    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(centroids)
    _, cells = index.search(vecs, nprobe)  # nearest first; -1 only when there are fewer cells
    rank = np.tile(np.arange(nprobe), len(vecs))
    rows = np.repeat(np.arange(len(vecs)), nprobe)
    flat = cells.reshape(-1)
    valid = flat >= 0
    rows, flat, rank = rows[valid], flat[valid], rank[valid]
    taken = table.take(pa.array(rows))
    columns = {CELL: flat.astype(np.int64), HOME: rank < spill, POS: taken.column(POS),
               "id": taken.column("id").cast(pa.large_string()), "vec": taken.column("vec"),
               PROBES: probes_of(cells[rows].astype(np.int32))}
    for name in (*TEXT, NKEY):  # the row rule checks pairs in the cell: the rows' texts ride along
        if name in taken.column_names:
            columns[name] = taken.column(name)
    return pa.table(columns)


def _cell_hits(cell: np.ndarray, home: np.ndarray, vecs: np.ndarray, radius: float, probes: np.ndarray, spill: int):
    """Per cell (rows sorted by `cell`): (row, home row, cosine) for every row whose cosine to a
    row that lives in the cell exceeds `radius`; one matrix product per cell.

    `probes[r]`: record r's row's probed cells, nearest first; its homes are the first `spill`.
    A pair can meet in several cells when rows live in more than one: it is reported by the
    smallest cell that the query probes and the other row lives in, so exactly once."""
    starts = np.r_[0, np.flatnonzero(np.diff(cell)) + 1, len(cell)]
    for lo, hi in zip(starts[:-1], starts[1:]):
        homes = lo + np.flatnonzero(home[lo:hi])
        if not homes.size:
            continue
        sims = vecs[lo:hi] @ vecs[homes].T
        r, k = np.nonzero(sims > radius)
        a, b, sim = lo + r, homes[k], sims[r, k]
        if spill > 1 and a.size:
            visited, lives = probes[a], probes[b, :spill]
            met = (visited[:, :, None] == lives[:, None, :]).any(axis=2)
            first = np.where(met & (visited >= 0), visited, np.iinfo(np.int32).max).min(axis=1)
            once = first == cell[lo]
            a, b, sim = a[once], b[once], sim[once]
        yield a, b, sim


def _probe_lists(batch, order: np.ndarray) -> np.ndarray:
    """The PROBES column of a batch as an int32 (records x nprobe) array, in `order`."""
    column = batch.column(PROBES).combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, column.type.list_size)[order]


def _cell_pairs(batch, radius: float, spill: int):
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
    qs, js, ss, jid = [], [], [], []
    for a, b, sim in _cell_hits(cell, home, vecs, radius, _probe_lists(batch, order), spill):
        q, j = pos[a], pos[b]
        earlier = j < q
        qs.append(q[earlier])
        js.append(j[earlier])
        ss.append(sim[earlier])
        jid.extend(ids[i] for i in b[earlier])
    if not qs:
        return empty
    return pa.table({"q": np.concatenate(qs), "j": np.concatenate(js), "s": np.concatenate(ss).astype(np.float32),
                     "j_id": pa.array(jid, pa.large_string())})


def _mark_semantic(batch, shared, step):
    from ..step import StepResult
    from .ray_data import POS, _as_frame, combine, resolve

    removed_pos, twins, sims, empty_pos, threshold, *details = resolve(shared)
    details = details[0] if details else None
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
        detail=(pl.Series([details[i] for i in where[dup_rows]], dtype=pl.String) if details is not None
                else pl.lit(f"cosine > {threshold}")),
    )
    empties = removal_frame(frame.filter(pl.Series(is_empty)), step.name, "empty-text",
                            detail=f"{'+'.join(step.columns)} is empty after NFKC and whitespace folding")
    removed = pl.concat([empties, dups], how="diagonal_relaxed")
    kept = frame.filter(pl.Series(~is_dup & ~is_empty))
    return combine(StepResult(kept, removed, {}), frame.height)


# --------------------------------------------------------------------------------------------
# the `row` rule: candidates and the second-stage check in the workers, greedy on the driver

#: the texts and keys the row rule's workers read, carried beside each row's vector
TEXT = ("_kc_prompt", "_kc_input", "_kc_output")
NKEY = "_kc_nkey"
GKEY = "_kc_gkey"
_KIND_SALT = np.uint64(0x9E3779B97F4A7C15)


def _row_columns(frame: pl.DataFrame, step) -> dict:
    """The row rule's per-row columns of a batch: joined prompt, input, output, number key, and
    the exact-text keys (prompt; long output), computed as the local step computes them."""
    from ..dedup import row_keys

    check = step.row_check()
    keys = row_keys(frame, step.columns, check, step.output_column)
    blank = pl.Series([""] * frame.height, dtype=pl.String)
    inputs = frame["input"].fill_null("") if "input" in step.columns and "input" in frame.columns else blank
    outputs = frame[step.output_column].fill_null("") if step.output_column in frame.columns else blank
    return {"_kc_prompt": keys["prompts"].fill_null("").to_arrow(), "_kc_input": inputs.to_arrow(),
            "_kc_output": outputs.to_arrow(), NKEY: keys["number_key"].view(np.int64),
            "_kc_pkey": keys["prompt_key"].view(np.int64), "_kc_okey": keys["output_key"].view(np.int64),
            "_kc_long": keys["output_long"]}


def _candidate_table(q, j, s, src, checks, j_id) -> "pa.Table":  # noqa: F821
    import pyarrow as pa

    return pa.table({"q": np.asarray(q, np.int64), "j": np.asarray(j, np.int64), "s": np.asarray(s, np.float32),
                     "src": np.asarray(src, np.int8), "ok": checks.passing,
                     "oo": checks.output_overlap, "oj": checks.output_jaccard, "io": checks.input_overlap,
                     "po": checks.prompt_overlap, "path": checks.path, "j_id": pa.array(j_id, pa.large_string())})


def _empty_candidates():
    from ..dedup import PairChecks

    none = np.zeros(0)
    return _candidate_table([], [], [], [], PairChecks(np.zeros(0, bool), none, none, none, none, none,
                                                       np.zeros(0, np.int8)), [])


def _check_batch(rows: pl.DataFrame, a: np.ndarray, b: np.ndarray, s: np.ndarray, check):
    """The second stage on pairs of rows of one partition (a, b: row numbers in `rows`)."""
    from ..dedup import RowFeatures, check_pair_index

    features = RowFeatures(rows["_kc_prompt"], rows["_kc_input"], rows["_kc_output"], check)
    return check_pair_index(features, b, a, s, check)  # the earlier row (b) first, as the local pass


def _cell_row_pairs(batch, radius: float, check, spill: int):
    """Per cell: visitors x homes above the radius with the home earlier, numbers equal, checked."""
    from .ray_data import POS
    from .ray_select import _vectors

    if not batch.num_rows:
        return _empty_candidates()
    frame = _as_rows(batch)
    order = np.argsort(frame[CELL].to_numpy(), kind="stable")
    frame = frame[order]
    cell, home = frame[CELL].to_numpy(), frame[HOME].to_numpy()
    pos, nkey = frame[POS].to_numpy(), frame[NKEY].to_numpy()
    vecs = np.ascontiguousarray(_vectors(batch.take(order)))
    ra, rb, ss = [], [], []
    for a, b, sim in _cell_hits(cell, home, vecs, radius, _probe_lists(batch, order), spill):
        keep = (pos[b] < pos[a]) & (nkey[a] == nkey[b])
        ra.append(a[keep])
        rb.append(b[keep])
        ss.append(sim[keep])
    if not ra:
        return _empty_candidates()
    a, b, s = np.concatenate(ra), np.concatenate(rb), np.concatenate(ss).astype(np.float32)
    checks = _check_batch(frame, a, b, s, check)
    ids = frame["id"].to_list()
    return _candidate_table(pos[a], pos[b], s, np.zeros(a.size, np.int8), checks, [ids[x] for x in b.tolist()])


def _group_records(batch):
    """One record per (row, exact-text key): every row under its prompt key, rows with a long
    output under their output key too; GKEY (kind and key) is the shuffle key."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = batch.filter(pc.invert(batch.column("empty")))
    keep = [c for c in table.column_names if c not in ("_kc_pkey", "_kc_okey", "_kc_long", "vec_norm")]
    prompt = table.select(keep).append_column("kind", pa.array(np.zeros(table.num_rows, np.int8)))
    prompt = prompt.append_column("key", table.column("_kc_pkey"))
    longs = table.filter(table.column("_kc_long"))
    output = longs.select(keep).append_column("kind", pa.array(np.ones(longs.num_rows, np.int8)))
    output = output.append_column("key", longs.column("_kc_okey"))
    out = pa.concat_tables([prompt, output])
    gkey = (out.column("key").to_numpy().view(np.uint64) ^ (out.column("kind").to_numpy().astype(np.uint64) * _KIND_SALT))
    return out.append_column(GKEY, pa.array(gkey.view(np.int64)))


def _group_row_pairs(batch, check, limit: int):
    """Per exact-text group: each row against the group's first `limit` rows before it
    (numbers equal), its cosine, checked."""
    from .ray_data import POS
    from .ray_select import _vectors

    if not batch.num_rows:
        return _empty_candidates()
    frame = _as_rows(batch)
    order = np.lexsort((frame[POS].to_numpy(), frame["key"].to_numpy(), frame["kind"].to_numpy()))
    frame = frame[order]
    vecs = np.ascontiguousarray(_vectors(batch.take(order)))
    kind, key, pos, nkey = (frame[c].to_numpy() for c in ("kind", "key", POS, NKEY))
    starts = np.r_[0, np.flatnonzero((np.diff(kind) != 0) | (np.diff(key) != 0)) + 1, len(key)]
    ra, rb, src = [], [], []
    for lo, hi in zip(starts[:-1], starts[1:]):
        if hi - lo < 2:
            continue
        members = np.arange(lo, min(hi, lo + limit))
        for a in range(lo + 1, hi):
            b = members[members < a]
            b = b[nkey[b] == nkey[a]]
            ra.extend([a] * b.size)
            rb.extend(b.tolist())
            src.extend([int(kind[lo]) + 1] * b.size)
    if not ra:
        return _empty_candidates()
    a, b = np.asarray(ra, np.int64), np.asarray(rb, np.int64)
    s = np.array([float(vecs[x] @ vecs[y]) for x, y in zip(a.tolist(), b.tolist())], dtype=np.float32)
    checks = _check_batch(frame, a, b, s, check)
    ids = frame["id"].to_list()
    return _candidate_table(pos[a], pos[b], s, src, checks, [ids[x] for x in b.tolist()])


def _rank_row_pairs(batch, max_checks: int):
    """Per row (all its candidates in this partition): one per (q, j), best cosine first, at
    most max_checks; only the passing ones go on, with their rank and whether they are forced."""
    import pyarrow as pa

    from ..dedup import select_candidates

    if not batch.num_rows:
        return _empty_candidates().append_column("rank", pa.array([], pa.int64())).append_column(
            "forced", pa.array([], pa.bool_()))
    q, j = batch.column("q").to_numpy(), batch.column("j").to_numpy()
    s, src = batch.column("s").to_numpy(), batch.column("src").to_numpy()
    sel, forced, rank = select_candidates(q, j, s, src, j, np.ones(q.size, dtype=bool), max_checks)
    ok = batch.column("ok").to_numpy(zero_copy_only=False)[sel]
    table = batch.take(pa.array(sel[ok]))
    return table.append_column("rank", pa.array(rank[ok])).append_column("forced", pa.array(forced[ok]))


def _as_rows(batch) -> pl.DataFrame:
    frame = pl.from_arrow(batch.drop_columns([c for c in ("vec", PROBES) if c in batch.column_names]))
    return frame if isinstance(frame, pl.DataFrame) else frame.to_frame()


def _row_rule_pairs(executor, step, features, centroids, nlist: int, nprobe: int, spill: int, n: int,
                    threshold: float):
    """The passing pairs of the row rule, gathered (a table: q, j, s, rank, forced, signals, j_id)."""
    import pyarrow as pa
    import ray

    from .ray_data import unwrap

    check = step.row_check()
    radius = float(np.nextafter(np.float32(threshold), np.float32(-1)))
    parts = max(2, min(nlist, -(-n * nprobe // executor.partition_rows)))
    cells = features.map_batches(_probe_cells, batch_format="pyarrow", fn_kwargs={"shared": centroids})
    try:  # one shuffle at a time: each holds its own aggregators
        cos = cells.repartition(parts, keys=[CELL]).map_batches(
            _cell_row_pairs, batch_size=None, batch_format="pyarrow",
            fn_kwargs={"radius": radius, "check": check, "spill": spill}).materialize()
        groups = features.map_batches(_group_records, batch_format="pyarrow").repartition(
            max(2, -(-n // executor.partition_rows)), keys=[GKEY])
        twins = groups.map_batches(_group_row_pairs, batch_size=None, batch_format="pyarrow",
                                   fn_kwargs={"check": check, "limit": check.group_limit}).materialize()
        ranked = cos.union(twins).repartition(max(2, -(-n // executor.partition_rows)), keys=["q"]).map_batches(
            _rank_row_pairs, batch_size=None, batch_format="pyarrow", fn_kwargs={"max_checks": check.max_checks})
        tables = [t for t in ray.get(ranked.materialize().to_arrow_refs()) if t.num_rows]
    except Exception as exc:
        raise unwrap(exc) from None
    return pa.concat_tables(tables) if tables else None


def _resolve_row_rule(table, threshold: float, max_edges: int):
    """Greedy keep-first over the gathered passing pairs, as `stream_dedup`: (removed positions,
    twin ids, cosines, details, passing pairs counted)."""
    from ..dedup import PairChecks, describe_signals, resolve_row_pairs

    if table is None:
        return np.zeros(0, np.int64), [], np.zeros(0), [], 0
    q, j = table.column("q").to_numpy(), table.column("j").to_numpy()
    rank = table.column("rank").to_numpy()
    order = np.lexsort((rank, q))
    q, j, rank = q[order], j[order], rank[order]
    s = table.column("s").to_numpy()[order]
    involved = np.unique(np.concatenate([q, j]))
    qc, jc = np.searchsorted(involved, q), np.searchsorted(involved, j)
    kept = np.ones(involved.size, dtype=bool)
    dup_of = np.full(involved.size, -1, dtype=np.int64)
    similarity = np.full(involved.size, np.nan, dtype=np.float32)
    decisive, _, _, _, counted = resolve_row_pairs(kept, dup_of, similarity, qc, jc, s, rank, max_edges)
    col = lambda name: table.column(name).to_numpy(zero_copy_only=False)[order]  # noqa: E731
    checks = PairChecks(np.ones(q.size, dtype=bool), s.astype(np.float64), col("oo"), col("oj"), col("io"), col("po"),
                        col("path"))
    ids = table.column("j_id").to_pylist()
    rows = sorted(decisive)
    removed = involved[rows]
    twins = [ids[order[decisive[r]]] for r in rows]
    sims = np.array([s[decisive[r]] for r in rows], dtype=np.float32).astype(np.float64)
    details = []
    for r in rows:
        sig = checks.signals(decisive[r])
        details.append(f"row rule ({sig['why']}): {describe_signals(sig)}; candidate threshold {threshold}")
    return removed, twins, sims, details, counted


_REMOTES: dict = {}


def _r_sem(name: str):
    if name not in _REMOTES:
        import ray

        _REMOTES[name] = ray.remote({"_positions": _positions_fn}[name])
    return _REMOTES[name]
