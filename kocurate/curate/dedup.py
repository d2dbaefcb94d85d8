"""Exact and semantic near-duplicate removal (the Platypus refinement, done properly).

`ExactDedup`: rows whose normalised key (NFKC, zero-width characters dropped, whitespace
folded; ``instruction + input`` by default) is equal form a group; one row per group stays:
the one with the longest output (Platypus) or the first one. Removed rows point at it.

`SemanticDedup`: greedy in input order, a row stays only if its maximum cosine to the rows
already kept is <= threshold (Platypus: instruction + " " + input, threshold 0.7 with MiniLM).
Every pair above the threshold is found by FAISS (exact or IVF, see `index.py`), then the
greedy pass is exact over those pairs: a removed row's `dup_of` is the kept row it is most
similar to, and `similarity` is that cosine. `SemanticResult` keeps the pairs, so it can
explain each removal and be re-thresholded (any threshold >= the searched one) without
embedding or searching again, as semhash's result does.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import ClassVar, Sequence

import numpy as np
import polars as pl

from ..errors import InputError
from ..records import removal_frame
from .embed import Embedder, embed_texts, load_embedder, normalize_text
from .index import Pairs, choose_method, nearest, pair_recall, search_pairs
from .pipeline import RunContext, Step, StepResult

#: Calibrated default thresholds per embedder family (see benchmarks/results/dedup.md).
DEFAULT_THRESHOLDS = {"use": 0.8, "lexical": 0.8, "st": 0.9}
#: Thresholds `--analyze` reports.
ANALYZE_THRESHOLDS = (0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.98)
KEEP_POLICIES = ("longest-output", "first")


def check_threshold(value: float | None, flag: str = "--threshold") -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{flag} {value!r}: not a number; give a cosine in (0, 1], e.g. 0.85") from None
    if not (0.0 < number <= 1.0) or number != number:
        raise InputError(f"{flag} {value}: must be in (0, 1] (a cosine similarity); e.g. {flag} 0.85")
    return number


def default_threshold(embedder: str | Embedder) -> float:
    """The calibrated default for an embedder spec or instance."""
    name = embedder if isinstance(embedder, str) else embedder.name
    if name in ("default", "") or name.startswith("use"):
        return DEFAULT_THRESHOLDS["use"]
    if name.startswith("lexical"):
        return DEFAULT_THRESHOLDS["lexical"]
    return DEFAULT_THRESHOLDS["st"]


def _param(value):
    """A step parameter as the manifest records it (an Embedder instance by its name)."""
    return value.name if isinstance(value, Embedder) else value


def row_texts(frame: pl.DataFrame, columns: Sequence[str], separator: str = " ") -> list[str]:
    """Normalised `columns` joined by `separator` (missing columns and nulls count as empty)."""
    parts = [pl.col(c).fill_null("") if c in frame.columns else pl.lit("") for c in columns]
    joined = frame.select(pl.concat_str(parts, separator=separator).alias("t"))["t"].to_list()
    return [normalize_text(t) for t in joined]


def split_empty(frame: pl.DataFrame, texts: list[str], step: str, columns: Sequence[str]):
    """Rows whose text is empty after normalisation go to removed/ (reason `empty-text`)."""
    empty = np.array([not t for t in texts], dtype=bool)
    if not empty.any():
        return frame, texts, frame.head(0)
    mask = pl.Series(empty)
    removed = removal_frame(
        frame.filter(mask), step, "empty-text",
        detail=f"{'+'.join(columns)} is empty after NFKC and whitespace folding",
    )
    return frame.filter(~mask), [t for t, e in zip(texts, empty) if not e], removed


# --------------------------------------------------------------------------------------------
# exact


@dataclass
class ExactDedup(Step):
    """Drop rows whose normalised instruction+input repeats another row's.

    keep: `longest-output` keeps the row with the longest output in each group (Platypus;
    ties: the first), `first` keeps the first row in input order.
    """

    columns: tuple[str, ...] = ("instruction", "input")
    keep: str = "longest-output"
    name: ClassVar[str] = "exact-dedup"

    def __post_init__(self):
        if self.keep not in KEEP_POLICIES:
            raise InputError(f"--keep {self.keep}: unknown policy; use one of {', '.join(KEEP_POLICIES)}")
        self.columns = tuple(self.columns)

    def run(self, frame: pl.DataFrame, ctx: RunContext) -> StepResult:
        if not frame.height:
            return self.keep_all(frame, groups=0)
        keys = row_texts(frame, self.columns, separator="\n")
        frame, keys, empty = split_empty(frame, keys, self.name, self.columns)
        work = frame.with_columns(
            pl.Series("_key", keys),
            pl.int_range(pl.len(), dtype=pl.Int64).alias("_pos"),
            pl.col("output").fill_null("").str.len_chars().alias("_olen") if "output" in frame.columns else pl.lit(0).alias("_olen"),
        )
        if self.keep == "longest-output":
            ranked = work.sort(["_key", "_olen", "_pos"], descending=[False, True, False])
        else:
            ranked = work.sort(["_key", "_pos"])
        winners = ranked.group_by("_key", maintain_order=True).first().select("_key", pl.col("id").alias("_keep_id"), pl.col("_pos").alias("_keep_pos"))
        work = work.join(winners, on="_key", how="left").sort("_pos")
        is_kept = pl.col("_pos") == pl.col("_keep_pos")
        helper = ["_key", "_pos", "_olen", "_keep_id", "_keep_pos"]
        kept = work.filter(is_kept).drop(helper)
        dropped = work.filter(~is_kept)
        removed = removal_frame(
            dropped, self.name, "exact-duplicate", dup_of=pl.col("_keep_id"), similarity=1.0,
            detail=pl.lit(f"same normalised {'+'.join(self.columns)}; keep={self.keep}"),
        ).drop(helper)
        removed = pl.concat([empty, removed], how="diagonal_relaxed") if empty.height else removed
        groups = int(winners.height)
        return StepResult(kept, removed, {"groups": groups, "exact_duplicates": dropped.height, "empty_text": empty.height})


# --------------------------------------------------------------------------------------------
# semantic


@dataclass
class SemanticResult:
    """The outcome of a greedy semantic dedup, with what it needs to explain and re-threshold.

    `pairs` holds every (row, neighbour, cosine) at or above `searched_threshold`, so
    `rethreshold(t)` for any t >= searched_threshold reruns only the greedy pass.
    """

    ids: list[str]
    pairs: Pairs
    searched_threshold: float
    threshold: float = 0.0
    kept: np.ndarray = field(default=None, repr=False)
    dup_of: np.ndarray = field(default=None, repr=False)  # row index of the kept twin, -1 if kept
    similarity: np.ndarray = field(default=None, repr=False)  # cosine to that twin, nan if kept
    _earlier: tuple | None = field(default=None, repr=False)

    @classmethod
    def from_pairs(cls, ids: list[str], pairs: Pairs, threshold: float) -> "SemanticResult":
        result = cls(ids=list(ids), pairs=pairs, searched_threshold=pairs.threshold)
        result.rethreshold(threshold)
        return result

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def removed_count(self) -> int:
        return int((~self.kept).sum())

    @property
    def duplicate_ratio(self) -> float:
        return self.removed_count / self.n if self.n else 0.0

    def _earlier_pairs(self):
        """(row, earlier row, cosine) for every pair, sorted by row then cosine descending."""
        if self._earlier is None:
            q = self.pairs.query_index()
            j = self.pairs.ids
            s = self.pairs.scores
            mask = (j >= 0) & (j < q)
            q, j, s = q[mask], j[mask], s[mask]
            order = np.lexsort((-s, q))
            self._earlier = (q[order], j[order], s[order])
        return self._earlier

    def rethreshold(self, threshold: float) -> "SemanticResult":
        """Rerun the greedy pass at `threshold` (>= the searched threshold); returns self."""
        threshold = check_threshold(threshold)
        if threshold < self.searched_threshold - 1e-9:
            raise InputError(
                f"--threshold {threshold}: below the searched threshold {self.searched_threshold}; "
                "pairs under it were never collected; rerun the search with the lower threshold"
            )
        q, j, s = self._earlier_pairs()
        above = s > threshold  # kept only if max cosine to kept rows <= threshold
        q, j, s = q[above], j[above], s[above]
        kept = np.ones(self.n, dtype=bool)
        dup_of = np.full(self.n, -1, dtype=np.int64)
        similarity = np.full(self.n, np.nan, dtype=np.float32)
        if q.size:
            starts = np.r_[0, np.flatnonzero(np.diff(q)) + 1]
            ends = np.r_[starts[1:], q.size]
            qs, js, ss = q.tolist(), j.tolist(), s.tolist()
            for a, b in zip(starts.tolist(), ends.tolist()):
                row = qs[a]
                for k in range(a, b):  # candidates sorted by cosine, best first
                    if kept[js[k]]:
                        kept[row] = False
                        dup_of[row] = js[k]
                        similarity[row] = ss[k]
                        break
        self.threshold, self.kept, self.dup_of, self.similarity = threshold, kept, dup_of, similarity
        return self

    def removals(self) -> list[tuple[str, str, float]]:
        """(removed id, kept twin id, cosine) for every removed row, in input order."""
        rows = np.flatnonzero(~self.kept)
        return [(self.ids[r], self.ids[self.dup_of[r]], float(self.similarity[r])) for r in rows]

    def explain(self, row_id: str) -> str:
        index = self.ids.index(row_id)
        if self.kept[index]:
            return f"{row_id}: kept (no earlier kept row above cosine {self.threshold})"
        return (f"{row_id}: removed, cosine {self.similarity[index]:.4f} to kept row {self.ids[self.dup_of[index]]} "
                f"(> threshold {self.threshold})")

    def counts_at(self, thresholds: Sequence[float]) -> dict[float, int]:
        """Rows the greedy pass would remove at each threshold (each >= searched_threshold)."""
        current = self.threshold
        counts = {}
        for t in sorted(thresholds):
            if t >= self.searched_threshold - 1e-9:
                counts[t] = self.rethreshold(t).removed_count
        self.rethreshold(current)
        return counts


@dataclass
class SemanticDedup(Step):
    """Greedy semantic dedup: keep a row only if its max cosine to kept rows is <= threshold.

    threshold None means the calibrated default of the embedder (DEFAULT_THRESHOLDS).
    search: `auto` (exact up to index.EXACT_MAX_ROWS rows, IVF above), `exact` or `ivf`.
    """

    threshold: float | None = None
    embedder: str = "default"
    columns: tuple[str, ...] = ("instruction", "input")
    search: str = "auto"
    measure_recall: bool = False
    name: ClassVar[str] = "semantic-dedup"

    def __post_init__(self):
        self.threshold = check_threshold(self.threshold)
        self.columns = tuple(self.columns)
        if self.search not in ("auto", "exact", "ivf"):
            raise InputError(f"--search {self.search}: unknown; use auto, exact or ivf")
        self.result: SemanticResult | None = None

    def params(self) -> dict:
        # not dataclasses.asdict: it would deep-copy an Embedder instance passed as `embedder`
        return {f.name: _param(getattr(self, f.name)) for f in fields(self)}

    def embed(self, frame: pl.DataFrame, ctx: RunContext) -> tuple[pl.DataFrame, list[str], np.ndarray, pl.DataFrame, Embedder]:
        texts = row_texts(frame, self.columns)
        frame, texts, empty = split_empty(frame, texts, self.name, self.columns)
        model = load_embedder(self.embedder)
        vectors = embed_texts(texts, model, cache_dir=ctx.cache_dir, track=ctx.track if ctx.show_progress else None)
        return frame, texts, vectors, empty, model

    def run(self, frame: pl.DataFrame, ctx: RunContext) -> StepResult:
        if not frame.height:
            return self.keep_all(frame)
        frame, _, vectors, empty, model = self.embed(frame, ctx)
        threshold = self.threshold if self.threshold is not None else default_threshold(model)
        track = ctx.track if ctx.show_progress else None
        method = choose_method(len(vectors), self.search)
        pairs = search_pairs(vectors, threshold, method=method, seed=ctx.seed, track=track)
        result = SemanticResult.from_pairs(frame["id"].to_list(), pairs, threshold)
        self.result = result
        stats = {"embedder": model.name, "threshold": threshold, "search": method, "pairs": int(pairs.ids.size),
                 "semantic_duplicates": result.removed_count, "empty_text": empty.height}
        if self.measure_recall and method == "ivf":
            stats["recall_vs_exact"] = round(pair_recall(vectors, threshold, seed=ctx.seed), 4)
        return StepResult(*self.split(frame, result, empty), stats)

    def split(self, frame: pl.DataFrame, result: SemanticResult, empty: pl.DataFrame):
        kept_mask = pl.Series(result.kept)
        removed_rows = np.flatnonzero(~result.kept)
        twins = [result.ids[i] for i in result.dup_of[removed_rows]]
        removed = frame.filter(~kept_mask)
        removed = removal_frame(
            removed, self.name, "semantic-duplicate",
            dup_of=pl.Series(twins, dtype=pl.String),
            similarity=pl.Series(result.similarity[removed_rows].astype(np.float64)),
            detail=pl.lit(f"cosine > {result.threshold}"),
        )
        if empty.height:
            removed = pl.concat([empty, removed], how="diagonal_relaxed")
        return frame.filter(kept_mask), removed


@dataclass
class Analysis:
    """What `--analyze` prints: the nearest-earlier-row cosine distribution and counts per threshold."""

    rows: int
    embedder: str
    histogram: list[tuple[float, float, int]]  # (low, high, rows)
    would_remove: dict[float, int]
    exact_duplicates: int
    empty_text: int
    search: str


def analyze(frame: pl.DataFrame, ctx: RunContext, *, embedder: str = "default",
            columns: Sequence[str] = ("instruction", "input"), thresholds: Sequence[float] = ANALYZE_THRESHOLDS,
            search: str = "auto", exact_step: ExactDedup | None = None) -> Analysis:
    """Embed once, search once at the lowest threshold, and count removals at each threshold."""
    exact_removed = 0
    empty_count = 0
    if exact_step is not None:
        res = exact_step.run(frame, ctx)
        frame = res.kept
        exact_removed = res.stats.get("exact_duplicates", 0)
        empty_count += res.stats.get("empty_text", 0)
    step = SemanticDedup(threshold=min(thresholds), embedder=embedder, columns=tuple(columns), search=search)
    frame, _, vectors, empty, model = step.embed(frame, ctx)
    empty_count += empty.height
    method = choose_method(len(vectors), search)
    track = ctx.track if ctx.show_progress else None
    pairs = search_pairs(vectors, min(thresholds), method=method, seed=ctx.seed, track=track)
    result = SemanticResult.from_pairs(frame["id"].to_list(), pairs, min(thresholds))
    # nearest-neighbour cosine of every row (to any other row) for the distribution
    if len(vectors) > 1:
        scores, _ = nearest(vectors, k=1, method=method, seed=ctx.seed, exclude_self=True)
        best = scores[:, 0]
    else:
        best = np.zeros(len(vectors), dtype=np.float32)
    edges = [-1.0, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.98, 1.0001]
    counts, _ = np.histogram(best, bins=edges)
    histogram = [(max(lo, -1.0), min(hi, 1.0), int(c)) for lo, hi, c in zip(edges[:-1], edges[1:], counts)]
    return Analysis(
        rows=len(vectors), embedder=model.name, histogram=histogram, would_remove=result.counts_at(thresholds),
        exact_duplicates=exact_removed, empty_text=empty_count, search=method,
    )


__all__ = [
    "ANALYZE_THRESHOLDS", "DEFAULT_THRESHOLDS", "KEEP_POLICIES", "Analysis", "ExactDedup", "SemanticDedup",
    "SemanticResult", "analyze", "check_threshold", "default_threshold", "row_texts",
]
