"""KoQuality-style selection: length groups, k-means inside each group, a method per cluster.

1. `len` = characters of the instruction (plus " " + input when there is one, as KoQuality
   joined KULLM's input onto its instruction).
2. `len_group` = L groups cut at the quantiles of `len` (right-closed intervals like pandas'
   qcut; equal cut points merge groups, so fewer than L groups can result).
3. k-means (FAISS, seeded) with K clusters inside each group on the instruction embeddings;
   a group with fewer rows than K gets one cluster per row.
4. Per cluster, a method picks rows:

   ============ ================================================================ ===============
   method       picks                                                            budget (--ratio)
   ============ ================================================================ ===============
   ppl          KoQuality's released method: sort by score ascending, take       ceil(n / step),
                positions 0, step, 2*step, ... (step = int(1/ratio))             step=int(1/r)
   ppl-h        KoQuality's ppl_h: sort descending, drop duplicate instructions, int(r * n)
                take the first int(ratio * n)
   random       seeded sample (KoQuality's rand: pandas sample(frac=ratio))      round(r * n)
   centroid     nearest to the cluster centre                                    quota
   hard         farthest from the centre (NeMo SemDeDup's `hard`)                quota
   diverse      DEITA: by score ascending, add a row only if its max cosine to   quota
                the rows already picked in the cluster is <= tau
   ============ ================================================================ ===============

   `quota` is round(r * N) rows split over the clusters in proportion to their sizes (largest
   remainders). With `--size S` every method uses such quotas and returns exactly S rows
   (`ppl` then samples systematically at positions floor(i * n / q)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import polars as pl

from ..errors import InputError
from ..records import removal_frame
from .cluster import (CLUSTER_COLUMNS, KMeansParams, assign_clusters, check_kmeans_params, kmeans, kmeans_plusplus,  # noqa: F401 (re-exported)
                      length_groups, prompt_embeddings, unit_rows)
from .pipeline import RunContext, Step, StepResult
from .score import CHARLM, METRICS, prompt_texts

METHODS = ("ppl", "ppl-h", "random", "centroid", "hard", "diverse")
SCORED = ("ppl", "ppl-h", "diverse")
ADDED = ("len", "len_group", "cluster")


# --------------------------------------------------------------------------------------------
# building blocks (pure functions, tested directly)


def quotas(sizes: np.ndarray, total: int) -> np.ndarray:
    """Split `total` over clusters in proportion to `sizes` (largest remainders; never above a size)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    n = int(sizes.sum())
    total = min(int(total), n)
    if n == 0 or total <= 0:
        return np.zeros_like(sizes)
    exact = sizes * (total / n)
    base = np.minimum(np.floor(exact).astype(np.int64), sizes)
    left = total - int(base.sum())
    if left > 0:
        room = base < sizes
        order = np.lexsort((np.arange(len(sizes)), -(exact - base)))  # largest remainder, then index
        for i in order:
            if left == 0:
                break
            if room[i]:
                base[i] += 1
                left -= 1
    return base


def systematic(n: int, step: int) -> np.ndarray:
    """KoQuality's ppl positions: 0, step, 2*step, ... < n."""
    return np.arange(0, n, max(1, step))


def pick(
    method: str,
    idx: np.ndarray,
    *,
    ratio: float | None,
    quota: int | None,
    scores: np.ndarray | None,
    dist: np.ndarray,
    emb: np.ndarray,
    texts: list[str],
    rng: np.random.Generator,
    tau: float,
) -> np.ndarray:
    """Rows (positions into the frame) that `method` keeps from one cluster's rows `idx`."""
    n = len(idx)
    if method == "ppl":
        order = idx[np.argsort(scores[idx], kind="stable")]
        if quota is None:
            return order[systematic(n, int(1 / ratio))]
        return order[np.floor(np.arange(quota) * n / quota).astype(np.int64)] if quota else idx[:0]
    if method == "ppl-h":
        order = idx[np.argsort(-scores[idx], kind="stable")]
        seen, unique = set(), []
        for i in order:
            if texts[i] not in seen:
                seen.add(texts[i])
                unique.append(i)
        take = int(ratio * n) if quota is None else quota
        return np.array(unique[:take], dtype=np.int64)
    if method == "random":
        take = int(round(ratio * n)) if quota is None else quota
        return np.sort(rng.choice(idx, size=min(take, n), replace=False)) if take else idx[:0]
    if method in ("centroid", "hard"):
        key = dist[idx] if method == "centroid" else -dist[idx]
        return idx[np.argsort(key, kind="stable")[:quota]]
    if method == "diverse":
        order = idx[np.argsort(scores[idx], kind="stable")]
        chosen: list[int] = []
        for i in order:
            if len(chosen) >= quota:
                break
            if chosen and float((emb[chosen] @ emb[i]).max()) > tau:
                continue
            chosen.append(int(i))
        return np.array(chosen, dtype=np.int64)
    raise InputError(f"--method {method}: unknown; use one of {', '.join(METHODS)}")


# --------------------------------------------------------------------------------------------
# the step


@dataclass
class Select(KMeansParams, Step):
    """KoQuality selection: length groups -> k-means per group -> a method per cluster.

    The length-group and k-means parameters are KMeansParams' (shared with `cluster`)."""

    ratio: float | None = None
    size: int | None = None
    method: str = "ppl"
    #: column holding the scores (`ppl` from `kocurate score`); scored on the fly with `scorer`.
    #: None: `ifd` when the scorer is "ifd:MODEL", else `ppl`
    score_column: str | None = None
    #: score missing rows on the fly: a model id/path (ppl), "ifd:MODEL", or "charlm" (offline)
    scorer: str | None = None
    tau: float = 0.9
    name: ClassVar[str] = "select"

    def __post_init__(self):
        if self.score_column is None:
            self.score_column = "ifd" if str(self.scorer or "").startswith("ifd:") else "ppl"
        if (self.ratio is None) == (self.size is None):
            raise InputError("give exactly one of --ratio (e.g. 0.01) or --size (rows to keep)")
        if self.ratio is not None and not (0 < float(self.ratio) < 1):
            raise InputError(f"--ratio {self.ratio} is outside (0, 1); pass a fraction such as 0.01 for 1%")
        if self.size is not None and int(self.size) < 1:
            raise InputError(f"--size {self.size} must be at least 1 row")
        if self.method not in METHODS:
            raise InputError(f"--method {self.method}: unknown; use one of {', '.join(METHODS)}")
        self.check_kmeans()
        if not (-1.0 <= self.tau <= 1.0):
            raise InputError(f"--tau {self.tau} is a cosine and must lie in [-1, 1]")

    # ---- inputs: embeddings and scores --------------------------------------------------------

    def _scores(self, frame: pl.DataFrame, ctx: RunContext) -> tuple[pl.DataFrame, np.ndarray | None, dict]:
        if self.method not in SCORED:
            return frame, None, {}
        column = self.score_column
        have = column in frame.columns
        if have and not frame[column].dtype.is_numeric():
            raise InputError(
                f"score column '{column}' holds {frame[column].dtype}, not numbers; rescore with `kocurate score` "
                f"or name another column with --score-column"
            )
        missing = int(frame[column].cast(pl.Float64).fill_nan(None).is_null().sum()) if have else frame.height
        stats: dict = {}
        if missing and self.scorer:
            from .score import compute_scores

            metric, model = ("ifd", self.scorer[4:]) if self.scorer.startswith("ifd:") else ("ppl", self.scorer)
            holes = (frame[column].cast(pl.Float64).fill_nan(None).is_null() if have
                     else pl.Series([True] * frame.height)).to_numpy()
            values, stats = compute_scores(frame.filter(pl.Series(holes)), model, metric,
                                           cache_dir=None if ctx.cache_dir is None else Path(ctx.cache_dir) / "scores", ctx=ctx)
            filled = np.full(frame.height, np.nan)
            if have:
                filled[:] = frame[column].cast(pl.Float64).fill_null(np.nan).to_numpy()
            filled[holes] = values
            frame = frame.with_columns(pl.Series(column, filled, dtype=pl.Float64).fill_nan(None))
            stats = {"scored_on_the_fly": int(holes.sum()), "scorer": self.scorer}
            missing = int(frame[column].is_null().sum())
            have = True
        if missing:
            metric = "ifd" if column == "ifd" else "ppl"
            fix = (f"run `kocurate score IN -o SCORED --model MODEL --metric {metric}` first (e.g. --model "
                   f"EleutherAI/polyglot-ko-1.3b, or --model charlm offline), or pass --scorer MODEL to score on the fly")
            if not have:
                raise InputError(
                    f"--method {self.method} needs a '{column}' score column and the input has none "
                    f"(columns: {', '.join(frame.columns)}); {fix}"
                )
            bad = frame.with_row_index("_row").filter(pl.col(column).cast(pl.Float64).fill_nan(None).is_null())
            raise InputError(
                f"--method {self.method}: score column '{column}' is empty for {missing:,} of {frame.height:,} rows "
                f"(first: row {bad['_row'][0] + 1}, id {bad['id'][0]}); {fix}"
            )
        return frame, frame[column].cast(pl.Float64).to_numpy(), stats

    # ---- run ----------------------------------------------------------------------------------

    def run(self, frame: pl.DataFrame, ctx: RunContext) -> StepResult:
        n = frame.height
        if n == 0:
            return self.keep_all(frame.with_columns(*(pl.lit(None, pl.Int64).alias(c) for c in ADDED)))
        if self.clusters > n:
            raise InputError(
                f"--clusters {self.clusters} is more than the {n:,} input rows; pass --clusters {max(1, n // 20)} or fewer"
            )
        if self.size is not None and self.size > n:
            raise InputError(f"--size {self.size:,} is more than the {n:,} input rows; pass --size {n:,} or fewer "
                             f"(or --ratio for a share)")
        frame, scores, score_stats = self._scores(frame, ctx)
        reused = "cluster_dist" in frame.columns and frame["cluster_dist"].null_count() == 0
        emb = None
        if reused:  # clustered by a `cluster` step upstream: use its clusters as they are
            cluster_stats = {"clusters_from": "input (cluster step)"}
            clustered = frame
        else:
            emb = prompt_embeddings(frame, ctx, embedder=self.embedder, embeddings=self.embeddings)
            clustered, cluster_stats = assign_clusters(
                frame, emb, ctx, length_groups_n=self.length_groups, clusters=self.clusters, niter=self.niter,
                n_init=self.n_init, kmeans_backend=self.kmeans, init=self.init)
        if emb is None and self.method == "diverse":
            emb = prompt_embeddings(frame, ctx, embedder=self.embedder, embeddings=self.embeddings)
        groups = clustered["len_group"].to_numpy()
        cluster = clustered["cluster"].to_numpy()
        dist = clustered["cluster_dist"].to_numpy()
        edges = cluster_stats.get("length_cut_points") or []
        texts = prompt_texts(frame)

        members_of, quota = cells_and_quotas(groups, cluster, self.clusters, method=self.method, ratio=self.ratio,
                                             size=self.size)
        rng = np.random.default_rng(ctx.seed)
        picked = [
            pick(self.method, m, ratio=self.ratio, quota=None if quota is None else int(quota[j]), scores=scores,
                 dist=dist, emb=emb, texts=texts, rng=rng, tau=self.tau)
            for j, m in enumerate(members_of)
        ]
        chosen = np.zeros(n, dtype=bool)
        for p in picked:
            chosen[p] = True

        annotated = clustered.drop("cluster_dist")
        kept = annotated.filter(pl.Series(chosen))
        dropped = annotated.filter(~pl.Series(chosen))
        removed = removal_frame(
            dropped, self.name, "not-selected",
            detail=pl.format("len_group {} cluster {} ({})", pl.col("len_group"), pl.col("cluster"), pl.lit(self.method)),
        )
        stats = selection_stats(self, quota, members_of, groups, cluster, chosen, edges,
                                clustering={k: v for k, v in cluster_stats.items() if k not in ("groups", "clusters_total")},
                                after=score_stats)
        if self.method == "diverse" and quota is not None and int(quota.sum()) > int(chosen.sum()):
            stats["diverse_shortfall"] = int(quota.sum()) - int(chosen.sum())
        return StepResult(kept, removed, stats)


def selection_stats(step, quota, members_of, groups: np.ndarray, cluster: np.ndarray, chosen: np.ndarray, edges,
                    clustering: dict, after: dict) -> dict:
    """The manifest stats of a selection, one shape on every engine: budget, clusters, the
    engine's own clustering facts (`clustering`), per-group picks, the share, `after`, a note."""
    stats = {
        "method": step.method,
        "budget": "koquality formula" if quota is None else f"quota {int(quota.sum()):,}",
        "clusters_total": len(members_of),
        "groups": len(np.unique(groups)),
        **clustering,
        "per_group": per_group_stats(groups, cluster, chosen, edges),
        "selected": int(chosen.sum()),
        "selected_share": round(float(chosen.mean()), 6),
        **after,
    }
    note = share_note(step.ratio, float(chosen.mean()), len(members_of), len(chosen), step.method)
    if note:
        stats["note"] = note
    return stats


def per_group_stats(groups: np.ndarray, cluster: np.ndarray, chosen: np.ndarray, edges) -> list[dict]:
    """Rows, clusters and picks of every length group, with its length span (the summary table)."""
    out = []
    for g in np.unique(groups):
        in_g = groups == g
        lo = edges[int(g)] if int(g) < len(edges) else None
        hi = edges[int(g) + 1] if int(g) + 1 < len(edges) else None
        out.append({"len_group": int(g), "len_from": lo, "len_to": hi, "rows": int(in_g.sum()),
                    "clusters": int(np.unique(cluster[in_g]).size), "selected": int(chosen[in_g].sum())})
    return out


def cells_and_quotas(groups: np.ndarray, cluster: np.ndarray, clusters: int, *, method: str, ratio: float | None,
                     size: int | None) -> tuple[list[np.ndarray], np.ndarray | None]:
    """The rows of every (length group, cluster) cell, in a stable order, and each cell's quota
    (None where the method's own per-cluster rule sets the count, as KoQuality's ppl does)."""
    n = len(groups)
    key = groups * (clusters + 1) + cluster
    order = np.lexsort((np.arange(n), key))
    members_of = np.split(order, np.flatnonzero(np.diff(key[order])) + 1)
    sizes = np.array([len(m) for m in members_of])
    if size is not None:
        return members_of, quotas(sizes, size)
    if method in ("centroid", "hard", "diverse"):
        return members_of, quotas(sizes, int(round(ratio * n)))
    return members_of, None


def share_note(ratio: float | None, share: float, n_clusters: int, n: int, method: str) -> str | None:
    """Why the kept share is far (over 1.5x or under half) from --ratio, when it is; else None.

    KoQuality's ppl rule keeps ceil(size / int(1/ratio)) rows of every cluster, so each cluster
    gives at least one row: with many small clusters the share climbs far above the ratio."""
    if ratio is None or (ratio / 2 <= share <= ratio * 1.5):
        return None
    why = (f"{method} keeps at least one row of each of the {n_clusters:,} (length group, cluster) cells of "
           f"{n:,} rows" if method in ("ppl", "ppl-h") and share > ratio else
           f"the {method} rule rounds per cluster")
    return (f"kept {share:.1%} of the rows for --ratio {ratio:g}: {why}; pass fewer --clusters or "
            f"--length-groups, or --size N for an exact count")


def koquality_count(cluster_sizes: np.ndarray, ratio: float) -> int:
    """Rows the `ppl` method keeps for given cluster sizes: sum of ceil(n / int(1/ratio))."""
    step = int(1 / ratio)
    return int(sum(math.ceil(int(s) / step) for s in cluster_sizes))


__all__ = ["METHODS", "Select", "kmeans", "koquality_count", "length_groups", "pick", "quotas", "selection_stats", "systematic",
           "CHARLM", "METRICS"]
