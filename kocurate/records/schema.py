"""The canonical row schema every step reads and writes."""

from __future__ import annotations

import polars as pl

#: Columns every dataset folder has, in this order.
CANONICAL = ("id", "instruction", "input", "output", "source")
#: Columns CoT-style rows may add.
OPTIONAL = ("task", "rationale", "target")
#: Columns that must hold non-empty text for a row to be usable.
REQUIRED_TEXT = ("instruction", "output")
#: Columns a step adds to every row it drops (written to removed/).
#: dup_of is the id of what caused the removal (the kept twin, or a benchmark item such as
#: "kobest/copa/test/17"); similarity is the score that decided it; detail is free text.
REMOVAL = ("step", "reason", "dup_of", "similarity", "detail")

REMOVAL_SCHEMA = {
    "step": pl.String,
    "reason": pl.String,
    "dup_of": pl.String,
    "similarity": pl.Float64,
    "detail": pl.String,
}


def canonical_order(frame: pl.DataFrame) -> pl.DataFrame:
    """Put canonical columns first, then optional ones, then the rest in their order."""
    first = [c for c in (*CANONICAL, *OPTIONAL) if c in frame.columns]
    rest = [c for c in frame.columns if c not in first and c not in REMOVAL]
    tail = [c for c in REMOVAL if c in frame.columns]
    return frame.select(first + rest + tail)


def removal_frame(
    rows: pl.DataFrame,
    step: str,
    reason: str | pl.Expr,
    dup_of: str | pl.Expr | None = None,
    similarity: float | pl.Expr | None = None,
    detail: str | pl.Expr | None = None,
) -> pl.DataFrame:
    """Mark `rows` as dropped by `step` for `reason` (constants or per-row expressions)."""

    def lit(value, dtype):
        return value if isinstance(value, pl.Expr) else pl.lit(value, dtype=dtype)

    rows = rows.drop([c for c in REMOVAL if c in rows.columns])
    return rows.with_columns(
        lit(step, pl.String).alias("step"),
        lit(reason, pl.String).alias("reason"),
        lit(dup_of, pl.String).cast(pl.String).alias("dup_of"),
        lit(similarity, pl.Float64).cast(pl.Float64).alias("similarity"),
        lit(detail, pl.String).cast(pl.String).alias("detail"),
    )


def empty_removed(like: pl.DataFrame) -> pl.DataFrame:
    """A removed/ frame with no rows but the right columns."""
    return removal_frame(like.head(0), "", "")


def concat_removed(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """Stack removed/ frames of different steps (columns may differ: missing ones become null)."""
    frames = [f for f in frames if f.height]
    if not frames:
        return pl.DataFrame(schema=REMOVAL_SCHEMA)
    return canonical_order(pl.concat(frames, how="diagonal_relaxed"))
